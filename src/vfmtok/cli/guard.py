"""Checks every CLI command gets before it runs: outputs writable and outside the package; run folders locked."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
import contextlib
import os
import shutil
from pathlib import Path
import tempfile

from vfmtok.utils.atomic import disk_full
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.runlock import RunLock

# Options naming something a command writes (a file or a folder), as argparse `dest` names.
OUTPUT_OPTIONS = ("out", "save_samples", "save_ref_stats", "dest")
# Files that make a locked --out resumable (a run's checkpoint pointer, a shard plan, a codes index): a run that
# started with none of them and fails before writing latest.txt leaves its --out as it found it.
RESUMABLE = {"latest.txt", "prepare.json", "index.json"}
# Commands whose --out is a folder they fill over a long run: one process at a time.
LOCKED_COMMANDS = ("train-tokenizer", "train-generator", "extract-codes", "prepare-data", "sample", "demo")


def package_dir() -> Path:
    """The installed vfmtok package folder (never an output location)."""
    return Path(__file__).resolve().parent.parent


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def check_output(value: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse an output inside the package or in a place that cannot be written, before any work starts."""
    path = Path(value).expanduser()
    full = Path(os.path.realpath(path))
    if _inside(full, package_dir()):
        raise VFMTokError(f"{option} {value} lies inside the installed vfmtok package ({package_dir()}); "
                          "choose a folder elsewhere")
    if full.exists() and not (full.is_dir() or full.is_file()):  # replacing /dev/null or a FIFO would be harm
        raise VFMTokError(f"{option} {value} is a special file (a device, FIFO or socket), not a file or folder")
    probe = path.absolute()  # unresolved: a dangling link on the way is seen and named
    while not probe.exists():
        if probe.is_symlink():  # a dangling link (e.g. to a folder of another machine): nothing can be made below it
            raise VFMTokError(f"{option} {value}: {probe} is a symbolic link to {os.readlink(probe)}, which does not "
                              "exist; remove the link or choose another folder")
        if probe.parent == probe:
            break
        probe = probe.parent
    probe = Path(os.path.realpath(probe))
    if probe.exists() and not probe.is_dir():
        if probe == full:  # an existing file to be replaced: its folder must take the new one
            probe = full.parent
        else:
            raise VFMTokError(f"{option} {value}: {probe} is a file, not a folder")
    try:  # a real write, not os.access: root passes access checks on read-only mounts
        fd, tmp = tempfile.mkstemp(prefix=".vfmtok-write-test.", dir=probe)
        os.close(fd)
        os.remove(tmp)
    except OSError as e:
        raise VFMTokError(f"{option} {value}: cannot write in {probe} ({e.strerror or e})") from None
    return path


def check_outputs(args: argparse.Namespace) -> None:
    """check_output on each output option the parsed command has."""
    for name in OUTPUT_OPTIONS:
        value = getattr(args, name, None)
        if value is not None and value != "":
            check_output(value, "--" + name.replace("_", "-"))


@contextlib.contextmanager
def command_guard(args: argparse.Namespace) -> Iterator[None]:
    """Outputs checked, and the run folder locked for commands that fill one (rank 0 of a distributed run only);
    errors that reach here in a form the CLI would print as a traceback become one line."""
    check_outputs(args)
    command = getattr(args, "command", None)
    out = getattr(args, "out", None)
    if command not in LOCKED_COMMANDS or not out or int(os.environ.get("RANK", "0")) != 0:
        with one_line_errors(out or "."):
            yield
        return
    with RunLock(out) as lock:
        before = set(os.listdir(out))
        try:
            with one_line_errors(out):
                yield
        except VFMTokError:
            if not before & RESUMABLE and not (Path(out) / "latest.txt").exists():
                _remove_new(Path(out), before | {lock.path.name})
            raise


def _remove_new(folder: Path, keep: set[str]) -> None:
    """A new run that failed before it had anything to resume from: what it wrote goes, the rest stays."""
    for name in set(os.listdir(folder)) - keep:
        p = folder / name
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)


@contextlib.contextmanager
def one_line_errors(out: str | os.PathLike) -> Iterator[None]:
    """A full disk anywhere (a log line, a metrics line, a library's own file) as one line naming `out`; a
    VFMTokError a DataLoader worker raised, which the loader re-raises with the worker's traceback in its message,
    as its own one line."""
    try:
        yield
    except VFMTokError as e:
        text = str(e)
        if "Traceback" in text:  # torch's ExceptionWrapper: the original message is the last line
            last = text.strip().splitlines()[-1]
            raise VFMTokError(last.split("VFMTokError: ", 1)[-1]) from None
        raise
    except (OSError, RuntimeError) as e:
        err = disk_full(e, out)
        if err is None:
            raise
        raise err from None
