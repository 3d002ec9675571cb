"""Run-folder locks: one process at a time writes a run folder; a dead owner's lock is taken over.

The lock is `<folder>/.vfmtok.lock`, a JSON file holding pid, host, the process start time and the command. It is
created complete (written under a temporary name, then hard-linked into place, which fails if one exists), so a
reader never sees half a lock. Whoever takes the lock owns the folder, so it sweeps the temporaries that killed
writers left there (utils/atomic.py).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from vfmtok.utils.atomic import disk_full, make_dirs, sweep_temporaries, temp_name
from vfmtok.utils.errors import VFMTokError

LOCK_NAME = ".vfmtok.lock"


def process_start(pid: int) -> str | None:
    """Start time of `pid` in clock ticks since boot (Linux /proc), to tell a reused pid from the owner; None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the parenthesised command name


def pid_alive(pid: int, start: str | None = None) -> bool:
    """Whether process `pid` runs (and, when `start` is given and readable, is the same process that wrote it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    now = process_start(pid)
    if start is not None and now is not None and now != start:
        return False
    try:  # a zombie (killed, not yet reaped by its parent) no longer runs
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def read_lock(path: Path) -> dict[str, Any] | None:
    """The lock's JSON, or None when it is gone or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _describe(owner: dict[str, Any]) -> str:
    return (f"pid {owner.get('pid')} on {owner.get('host')}, `{owner.get('command', '?')}`, "
            f"since {owner.get('started', '?')}")


class RunLock:
    """Exclusive use of a run folder by this process; `with RunLock(folder):` or acquire()/release()."""

    def __init__(self, folder: str | os.PathLike, command: str = ""):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.command = command or " ".join(["vfmtok", *sys.argv[1:]])[:200]
        self._created: list[Path] = []
        self.held = False

    def _make_dirs(self) -> None:
        missing = []
        p = self.folder.absolute()
        while not p.exists():
            missing.append(p)
            p = p.parent
        try:
            make_dirs(self.folder)
        except (OSError, VFMTokError) as e:  # a full disk, a dangling symlink, a file in the way, a read-only parent
            self._created = missing
            self._cleanup_dirs()
            if isinstance(e, VFMTokError):  # make_dirs' one line for a full disk
                raise
            raise VFMTokError(f"cannot create the run folder {self.folder}: {e.strerror or e}"
                              f"{f' ({e.filename})' if e.filename and str(e.filename) != str(self.folder) else ''}") from None
        self._created = missing  # deepest first: removed in this order if left empty

    def acquire(self) -> "RunLock":
        """Take the lock or raise a one-line VFMTokError naming the process that holds it."""
        self._make_dirs()
        me = {"pid": os.getpid(), "host": socket.gethostname(), "start": process_start(os.getpid()),
              "command": self.command, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        tmp = temp_name(self.path)
        try:
            try:
                tmp.write_text(json.dumps(me) + "\n")
            except OSError as e:
                tmp.unlink(missing_ok=True)
                self._cleanup_dirs()
                raise disk_full(e, self.folder) or e from None
            for _ in range(5):
                try:
                    os.link(tmp, self.path)
                    self.held = True
                    sweep_temporaries(self.folder)  # the folder is ours now: what killed writers left goes
                    return self
                except FileExistsError:
                    pass
                owner = read_lock(self.path)
                if owner is None:  # removed meanwhile, or foreign junk: retry, then treat as stale
                    time.sleep(0.05)
                    owner = read_lock(self.path)
                    if owner is None and self.path.exists():
                        self._take_over({"pid": "?", "host": "?"})
                    continue
                if owner.get("host") != me["host"]:
                    self._cleanup_dirs()
                    raise VFMTokError(f"{self.folder} is locked by a vfmtok run on another host ({_describe(owner)}); "
                                      f"if that run is over, delete {self.path}")
                if pid_alive(int(owner.get("pid", -1)), owner.get("start")):
                    self._cleanup_dirs()
                    raise VFMTokError(f"{self.folder} is in use by another vfmtok run ({_describe(owner)}); "
                                      "wait for it to finish or choose another --out")
                self._take_over(owner)
            raise VFMTokError(f"could not lock {self.folder}: its lock file keeps changing")
        finally:
            tmp.unlink(missing_ok=True)

    def _take_over(self, owner: dict[str, Any]) -> None:
        print(f"vfmtok: note: taking over the stale lock of {self.folder} "
              f"(pid {owner.get('pid')} on {owner.get('host')} is no longer running)", file=sys.stderr)
        grave = self.path.with_name(f"{LOCK_NAME}.stale.{os.getpid()}")
        try:  # renaming (not deleting) lets exactly one of several takers win
            os.replace(self.path, grave)
            grave.unlink(missing_ok=True)
        except FileNotFoundError:
            pass

    def release(self) -> None:
        """Remove the lock if it is still ours; remove folders the lock created if they stayed empty."""
        if self.held:
            owner = read_lock(self.path)
            if owner is not None and owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False
        self._cleanup_dirs()

    def _cleanup_dirs(self) -> None:
        for d in self._created:
            try:
                d.rmdir()  # only succeeds when empty: a failed run leaves nothing behind
            except OSError:
                break
        self._created = []

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
