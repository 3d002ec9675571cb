"""vfmtok.utils.io: atomic writes leave either the old file or the whole new one, with ordinary permissions."""

import os

import pytest

from vfmtok.utils.io import atomic_path, write_text


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.txt"
    write_text(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]


def test_finished_file_gets_umask_permissions(tmp_path):
    import vfmtok.utils.atomic as io

    write_text(tmp_path / "a.txt", "x")  # mkstemp's temporary is owner-only (0600); the result follows the umask
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~io._UMASK
