"""Issue 34: a full disk under every writing command is one line (exit 2) and leaves no temporary or partial file.

Two ways to fill the disk: ENOSPC injected into the one writer (utils/atomic.py) at its n-th file, and (as root) a
real small tmpfs as --out, nearly filled first, so the libraries' own write calls (safetensors, torch.save, PIL,
numpy, tarfile) meet the error mid-file.
"""

import errno
import os
import subprocess

import pytest

from vfmtok.cli import main
from vfmtok.utils.atomic import is_temporary


def commands(w, out):
    """argv of each writing command, writing into `out`."""
    return {
        "train-tokenizer": ["train-tokenizer", "--preset", "tiny", "--data", str(w["data"]), "--steps", "2",
                            "--batch-size", "4", "--set", "model.encoder_pretrained=false", "--set", "train.save_every=1"],
        "train-generator": ["train-generator", "--codes", str(w["codes"]), "--preset", "GPT-nano", "--steps", "2",
                            "--save-every", "1", "--batch-size", "4"],
        "prepare-data": ["prepare-data", str(w["data"]), "--shard-size", "2"],
        "sample": ["sample", "--gpt", str(w["gpt"]), "--tokenizer", str(w["tokenizer"]), "--per-class", "2",
                   "--batch-size", "2"],
        "extract-codes": ["extract-codes", "--tokenizer", str(w["tokenizer"]), "--data", str(w["data"]),
                          "--batch-size", "2", "--shard-size", "3"],
    }


WRITERS = ("train-tokenizer", "train-generator", "prepare-data", "sample", "extract-codes")


def _argv(w, name, out):
    argv = commands(w, out)[name] + ["--out", str(out)]
    return argv if name == "prepare-data" else argv + ["--device", "cpu"]


def _assert_full_disk_reported(rc, err, root, load_benchmark):
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "no space left in" in err, err
    assert ".tmp" not in err and "free" in err, err  # names a folder the user knows, and what is left
    left = [p for p in root.rglob("*") if is_temporary(p.name) or p.name.endswith(".tmp")]
    assert left == [], left
    checks = load_benchmark("fault_checks")
    _, problems = checks.check_files(root)
    assert problems == [], problems  # every file there is whole


@pytest.mark.parametrize("nth", [1, 4])
@pytest.mark.parametrize("name", WRITERS)
def test_enospc_in_the_writer(cli_world, tmp_path, capsys, monkeypatch, load_benchmark, name, nth):
    import vfmtok.utils.atomic as atomic

    calls = {"n": 0}
    real = atomic._fsync_tree

    def failing(p):
        calls["n"] += 1
        if calls["n"] == nth:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(p)

    monkeypatch.setattr(atomic, "_fsync_tree", failing)
    out = tmp_path / "out"
    rc = main(_argv(cli_world, name, out))
    err = capsys.readouterr().err.strip()
    assert calls["n"] >= nth, f"{name} wrote fewer than {nth} files"
    _assert_full_disk_reported(rc, err, tmp_path, load_benchmark)
    if name == "extract-codes":
        assert not out.exists()  # a new codes folder that could not be made is not left half made


# free bytes left on the tmpfs before the command runs: less than its output needs (4000: not even the run lock)
FREE = [("train-tokenizer", 600_000), ("train-generator", 400_000), ("prepare-data", 40_000), ("sample", 20_000),
        ("extract-codes", 8_000), ("extract-codes", 4_000)]


@pytest.fixture
def small_fs(tmp_path):
    """A 4 MiB tmpfs mounted on tmp_path/fs (root only); unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the injected-ENOSPC tests cover the writer without it)")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.slow
@pytest.mark.parametrize("name,free", FREE)
def test_real_full_tmpfs(cli_world, small_fs, capsys, load_benchmark, name, free):
    st = os.statvfs(small_fs)
    with open(small_fs / "filler", "wb") as f:
        f.write(b"\0" * (st.f_bavail * st.f_frsize - free))
    rc = main(_argv(cli_world, name, small_fs / "out"))
    err = capsys.readouterr().err.strip()
    _assert_full_disk_reported(rc, err, small_fs, load_benchmark)
    if name == "extract-codes":
        assert sorted(p.name for p in small_fs.iterdir()) == ["filler"]
