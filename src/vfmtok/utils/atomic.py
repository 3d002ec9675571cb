"""The one writer of every output file or folder: a temporary name beside the target, fsync, rename.

A temporary is named `.<target name>.<8 random characters>.tmp` (files and folders alike) in the target's folder, so
readers never see a half-written output, and the process that owns a folder (the holder of its run lock) can sweep
what a killed writer left there (`sweep_temporaries`). On any exception the temporary is removed; a full disk
becomes one VFMTokError line naming the folder, the bytes free and, when known, the bytes needed.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import shutil
import string
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from vfmtok.utils.errors import VFMTokError

TEMP_PATTERN = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
# Names older vfmtok versions gave checkpoints being built or replaced; swept alike.
LEGACY_PATTERN = re.compile(r"^\.step_\d{7}\.(tmp|old)$")
_ALPHABET = string.ascii_lowercase + string.digits + "_"
# Finished files get the permissions a plain open() would give, also where a library recreated them owner-only.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# How libraries that hide errno word a full disk (safetensors, Rust I/O); torch only says "unexpected pos".
_FULL_TEXT = ("No space left", "os error 28", "StorageFull", "Disk quota exceeded", "os error 122")
_NEARLY_FULL = 1 << 20


def temp_name(path: str | os.PathLike) -> Path:
    """A fresh temporary name beside `path` (nothing is created)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{''.join(secrets.choice(_ALPHABET) for _ in range(8))}.tmp")


def is_temporary(name: str) -> bool:
    """Whether a file or folder name is one this writer (or an older vfmtok) gives temporaries."""
    return bool(TEMP_PATTERN.match(name) or LEGACY_PATTERN.match(name))


def sweep_temporaries(folder: str | os.PathLike, depth: int = 3) -> list[Path]:
    """Remove temporaries left by killed writers in `folder` and its sub-folders (`depth` levels, links not
    followed); call only while owning the folder (no writer of another process can be at work there)."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        try:
            is_dir = e.is_dir(follow_symlinks=False)
        except OSError:
            continue
        if is_temporary(e.name):
            _remove(Path(e.path))
            removed.append(Path(e.path))
        elif is_dir and depth > 1:
            removed += sweep_temporaries(e.path, depth - 1)
    return removed


def disk_full(exc: BaseException, folder: str | os.PathLike, needed: int | None = None) -> VFMTokError | None:
    """The one-line error for `exc` when it means the file system of `folder` is full, else None."""
    free = free_bytes(folder)
    full = (isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS) or any(t in str(exc) for t in _FULL_TEXT) or \
        (isinstance(exc, RuntimeError) and free is not None and free < max(_NEARLY_FULL, needed or 0))
    if not full:
        return None
    want = f"about {human_bytes(needed)} needed, " if needed else ""
    have = f"{human_bytes(free)} free" if free is not None else "free space unknown"
    return VFMTokError(f"no space left in {folder} ({want}{have}); free some space or choose another --out")


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Bytes an unprivileged writer may still use on the file system of `folder` (None if unknown)."""
    p = Path(folder)
    while not p.exists() and p.parent != p:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def human_bytes(n: int | None) -> str:
    """1536 -> '1.5 KiB'."""
    x = float(n or 0)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if x < 1024 or unit == "TiB":
            return f"{int(x)} bytes" if unit == "bytes" else f"{x:.1f} {unit}"
        x /= 1024
    return f"{x:.1f} TiB"


def make_dirs(folder: str | os.PathLike) -> Path:
    """mkdir -p, with a full disk as one line."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise disk_full(e, folder) or e from None
    return folder


@contextmanager
def atomic_path(path: str | os.PathLike, needed: int | None = None, folder: bool = False,
                sync_dir: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path` (an empty file, or with `folder` an empty folder); when the block
    succeeds, fsync it and rename it over `path` (a folder replaces an existing one). On any exception the temporary
    is removed, and a full disk is re-raised as one VFMTokError line. `needed`: bytes expected, for that line.
    `sync_dir=False` leaves the fsync of the containing folder (which makes the rename durable) to the caller, who
    writes many files there and calls `fsync_dir` once."""
    path = Path(path)
    parent = path.parent
    created = [p for p in (parent, *parent.parents) if not p.exists()]  # deepest first
    make_dirs(parent)
    tmp = temp_name(path)
    try:
        if folder:
            tmp.mkdir()
        else:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~_UMASK))
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(errno.ENOENT, "the temporary of an atomic write vanished", str(tmp))
        if not folder and tmp.stat().st_mode & 0o777 == 0o600:  # recreated owner-only (safetensors does that)
            os.chmod(tmp, 0o666 & ~_UMASK)
        _fsync_tree(tmp)
        if folder and path.exists():  # a folder cannot be renamed over a non-empty one: move the old one aside
            aside = temp_name(path)
            os.replace(path, aside)
            os.replace(tmp, path)
            _remove(aside)
        else:
            os.replace(tmp, path)
        if sync_dir:
            _fsync(parent)
    except BaseException as e:
        err = disk_full(e, _visible(parent), needed) if isinstance(e, Exception) else None
        _remove(tmp)
        for d in created:  # folders made for this file alone go with it
            try:
                d.rmdir()
            except OSError:
                break
        if err is not None:
            raise err from None
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes atomically."""
    with atomic_path(path, needed=len(data)) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(path)


def write_with(path: str | os.PathLike, write: Callable[[object], None], needed: int | None = None,
               sync_dir: bool = True) -> Path:
    """Atomically write what `write(file_object)` writes (np.savez, torch.save, PIL's save take one)."""
    with atomic_path(path, needed=needed, sync_dir=sync_dir) as tmp:
        with open(tmp, "wb") as f:
            write(f)
    return Path(path)


def preallocate(path: str | os.PathLike, size: int) -> None:
    """Reserve `size` bytes for a file now, so that writes through a memory map later cannot find the disk full
    (a full disk under a memory map is SIGBUS, not an error)."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # file systems without fallocate: written sparse
            raise
    finally:
        os.close(fd)


class LogFileHandler(logging.FileHandler):
    """A log file appended line by line (the one kind of output not written whole): a full disk stops the command
    with one line instead of logging's own traceback on stderr."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(path, delay=True)  # created at the first line: a run refused before it logs leaves none

    def _open(self):  # noqa: ANN202 (logging's own signature)
        make_dirs(Path(self.baseFilename).parent)
        return super()._open()

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        err = disk_full(exc, Path(self.baseFilename).parent) if isinstance(exc, Exception) else None
        if err is not None:
            raise err from None
        super().handleError(record)


def _visible(folder: Path) -> Path:
    """`folder`, or the folder a temporary folder it lies in will be renamed into: what a user knows by name."""
    parts = folder.parts
    for i, name in enumerate(parts):
        if is_temporary(name):
            return Path(*parts[:i])
    return folder


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make the renames into `folder` durable (after writes with sync_dir=False)."""
    _fsync(Path(folder))


def _fsync(p: Path) -> None:
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EBADF):  # some file systems cannot fsync a folder
            raise
    finally:
        os.close(fd)


def _fsync_tree(p: Path) -> None:
    if p.is_dir():
        for root, _, files in os.walk(p):
            for f in files:
                _fsync(Path(root) / f)
            _fsync(Path(root))
    else:
        _fsync(p)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            p.unlink()
        except FileNotFoundError:
            pass
