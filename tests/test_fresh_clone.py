"""Issue 31 item 1: nothing tracked points outside the checkout or names one machine's folders, and a run folder
that cannot be created is refused with one line naming it (through the CLI and through the lock itself)."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vfmtok.cli import main
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.runlock import RunLock

ROOT = Path(__file__).resolve().parents[1]
# An absolute path of one machine: a home or work folder. Placeholders (<runs>/..., ~/.cache) are what records use.
MACHINE_PATH = re.compile(r"(?<![\w.<>~$}-])/(?:work|root|home|Users)/[\w.-]")


def _git(*args: str) -> str:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (an installed copy): nothing tracked to check")
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout


def symlinks_leaving(root: Path, ls_files: str) -> list[str]:
    """Tracked symbolic links (mode 120000 in `git ls-files -s`) whose target resolves outside `root`."""
    bad = []
    for line in ls_files.splitlines():
        meta, _, name = line.partition("\t")
        if meta.split()[0] != "120000":
            continue
        target = os.readlink(root / name) if (root / name).is_symlink() else ""
        full = Path(os.path.normpath((root / name).parent / target))
        if os.path.isabs(target) or not full.is_relative_to(root):
            bad.append(f"{name} -> {target}")
    return bad


def test_no_tracked_symlink_leaves_the_checkout():
    assert symlinks_leaving(ROOT, _git("ls-files", "-s")) == []


def test_the_symlink_check_catches_a_link_out(tmp_path):
    (tmp_path / "inside").mkdir()
    os.symlink("/somewhere/else", tmp_path / "runs")
    os.symlink("inside", tmp_path / "ok")
    os.symlink("../../etc", tmp_path / "inside" / "up")
    listing = "\n".join(f"120000 {'0' * 40} 0\t{n}" for n in ("runs", "ok", "inside/up")) + f"\n100644 {'0' * 40} 0\tx.py"
    assert symlinks_leaving(tmp_path, listing) == ["runs -> /somewhere/else", "inside/up -> ../../etc"]


def test_no_tracked_text_names_a_machine_folder():
    hits = []
    for name in _git("ls-files").splitlines():
        path = ROOT / name
        if path.is_symlink() or not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary: weights, images, zips
        for i, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if MACHINE_PATH.search(line) and name != "tests/test_fresh_clone.py":
                hits.append(f"{name}:{i}: {line.strip()[:120]}")
    assert hits == [], "machine-specific paths (use <runs>/..., <data>/..., repo-relative paths):\n" + "\n".join(hits[:20])


def test_machine_path_pattern():
    assert MACHINE_PATH.search("--model bundled=/work/runs/exp/x") and MACHINE_PATH.search('"/root/.cache/torch"')
    assert MACHINE_PATH.search("see /home/ann/data")
    assert not MACHINE_PATH.search("--work <scratch>/work --results x") and not MACHINE_PATH.search("<runs>/bundle/x")
    assert not MACHINE_PATH.search("~/.cache/vfmtok and src/vfmtok/work/x.py")


def _one_line_error(capsys, argv: list[str], *needles: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("vfmtok: error:") and "Traceback" not in err, err
    for n in needles:
        assert n in err, err


def test_out_below_a_dangling_symlink_is_one_line(tmp_path, capsys, monkeypatch):
    # what `make demo` met on a fresh clone: runs -> a folder of another machine
    monkeypatch.chdir(tmp_path)
    os.symlink(tmp_path / "gone" / "runs", tmp_path / "runs")
    _one_line_error(capsys, ["demo", "--out", "runs/demo"], "runs", "symbolic link", str(tmp_path / "gone" / "runs"))
    _one_line_error(capsys, ["sample", "--out", "runs/s"], "symbolic link")
    assert not (tmp_path / "gone").exists()


def test_out_below_a_regular_file_is_one_line(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    _one_line_error(capsys, ["demo", "--out", str(tmp_path / "afile" / "demo")], str(tmp_path / "afile"), "not a folder")


def test_out_in_an_unwritable_folder_is_one_line(capsys):
    # /proc refuses new files even to root (a chmod'ed folder would not stop root)
    _one_line_error(capsys, ["demo", "--out", "/proc/vfmtok-demo"], "/proc", "cannot write")


def test_runlock_that_cannot_create_its_folder_raises_one_line(tmp_path):
    os.symlink(tmp_path / "missing", tmp_path / "runs")
    (tmp_path / "afile").write_text("x")
    for folder in (tmp_path / "runs" / "demo", tmp_path / "afile" / "demo", Path("/proc/vfmtok-lock/x")):
        with pytest.raises(VFMTokError, match="cannot create the run folder") as e:
            RunLock(folder).acquire()
        assert str(folder) in str(e.value) and "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "runs"]  # nothing half-made
