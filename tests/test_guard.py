"""Issue 15 item 1: run-folder locks, unwritable or in-package outputs refused up front, export's target, wnid names."""

import json
import os
import socket
import subprocess
import sys

import pytest

from vfmtok.cli import main
from vfmtok.generator.sample import parse_labels
from vfmtok.cli import guard
from vfmtok.utils.classnames import display_name
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.runlock import LOCK_NAME, RunLock, read_lock


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_lock_names_the_holder_and_is_released(tmp_path):
    run = tmp_path / "run"
    with RunLock(run, command="vfmtok train-generator --out run"):
        owner = read_lock(run / LOCK_NAME)
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(VFMTokError, match=rf"in use by another vfmtok run \(pid {os.getpid()} on .*train-generator"):
            RunLock(run).acquire()
    assert not (run / LOCK_NAME).exists()
    assert not run.exists()  # created for the lock, empty again: removed


def test_lock_held_by_another_live_process_refuses_the_cli(tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run.mkdir()
        (run / LOCK_NAME).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "command": "x"}))
        rc = main(["train-generator", "--codes", str(tmp_path / "none"), "--out", str(run)])
        err = capsys.readouterr().err
        assert rc == 2 and f"pid {holder.pid}" in err and len(err.strip().splitlines()) == 1, err
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    dead = _dead_pid()
    (run / LOCK_NAME).write_text(json.dumps({"pid": dead, "host": socket.gethostname(), "command": "old"}))
    with RunLock(run):
        assert read_lock(run / LOCK_NAME)["pid"] == os.getpid()
    assert f"stale lock of {run} (pid {dead}" in capsys.readouterr().err


def test_lock_from_another_host_is_refused(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "command": "x"}))
    with pytest.raises(VFMTokError, match="another host"):
        RunLock(tmp_path).acquire()


def test_failed_command_leaves_no_run_folder(tmp_path, capsys):
    run = tmp_path / "a" / "b"
    assert main(["train-generator", "--codes", str(tmp_path / "missing"), "--out", str(run)]) == 2
    assert "not a codes folder" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(VFMTokError, match="cannot write in"):
            guard.check_output(ro / "run")
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("command", ["train-tokenizer", "eval-tokenizer", "reconstruct", "train-generator", "sample"])
def test_unwritable_out_refused_up_front_by_every_command(tmp_path, capsys, command):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    extra = {"reconstruct": ["--tokenizer", "t", "img.png"], "eval-tokenizer": ["t"],
             "train-generator": ["--codes", "c"]}.get(command, [])
    rc = main([command, *extra, "--out", str(blocker / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "is a file, not a folder" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_unwritable_system_folder_is_refused():
    if os.access("/proc", os.W_OK) and not os.path.isdir("/proc/self"):
        pytest.skip("no /proc")
    with pytest.raises(VFMTokError, match="cannot write in /proc"):
        guard.check_output("/proc/vfmtok-out")


def test_output_inside_the_package_is_refused(capsys):
    target = guard.package_dir() / "assets" / "models" / "imagenette64"
    rc = main(["export", "--gpt", "whatever", "--out", str(target)])
    assert rc == 2 and "inside the installed vfmtok package" in capsys.readouterr().err


def test_export_without_out_writes_a_new_folder_in_cwd(tmp_path, monkeypatch):
    import vfmtok.cli.export as ex

    seen = {}
    monkeypatch.setattr(ex, "export_pair", lambda gpt, out, *a: seen.setdefault("out", out))
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--gpt", "g"]) == 0 and str(seen["out"]) == ex.DEFAULT_EXPORT_NAME
    (tmp_path / ex.DEFAULT_EXPORT_NAME).mkdir()
    assert main(["export", "--gpt", "g"]) == 2  # never replaced without --out


def test_export_refuses_to_replace_a_folder_that_is_not_an_export(tmp_path):
    from vfmtok.export import export_pair
    from vfmtok.generator.gpt import create_gpt
    from helpers import build_tiny_tokenizer
    from vfmtok.tokenizer.api import load_tokenizer

    tok = load_tokenizer(build_tiny_tokenizer(tmp_path / "tok"))
    gpt = create_gpt("GPT-nano", vocab_size=tok.codebook_size, num_tokens=tok.num_tokens, token_grid=tok.token_grid,
                     num_classes=10)
    gpt.tokenizer_info = {"checkpoint_path": str(tok.checkpoint_path), "checkpoint_hash": tok.checkpoint_hash}
    gpt.save_pretrained(tmp_path / "gpt")
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("keep")
    with pytest.raises(VFMTokError, match="not an exported model"):
        export_pair(tmp_path / "gpt", precious)
    assert (precious / "thesis.tex").read_text() == "keep"


def test_imagenet_wnids_get_names_and_class_accepts_either():
    assert display_name("n02088364") == "beagle" and display_name("n03445777") == "golf ball"
    assert display_name("n99999999") == "n99999999" and display_name("cats") == "cats"
    names = ["beagle", "n02099601", "cats"]  # a model saved with a raw wnid still matches its common name
    assert parse_labels(["n02088364", "Beagle", "golden retriever", "n02099601", "cats", "2"], names, 3) == [0, 0, 1, 1, 2, 2]
    with pytest.raises(VFMTokError, match="unknown class 'tabby'"):
        parse_labels(["tabby"], names, 3)
