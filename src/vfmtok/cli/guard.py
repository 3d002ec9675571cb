"""Checks every CLI command gets before it runs: outputs writable and outside the package; run folders locked."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
import contextlib
import os
from pathlib import Path
import tempfile

from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.runlock import RunLock

# Options naming something a command writes (a file or a folder), as argparse `dest` names.
OUTPUT_OPTIONS = ("out", "save_samples", "save_ref_stats", "dest")
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
    probe = full
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
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
    """Outputs checked, and the run folder locked for commands that fill one (rank 0 of a distributed run only)."""
    check_outputs(args)
    command = getattr(args, "command", None)
    out = getattr(args, "out", None)
    if command not in LOCKED_COMMANDS or not out or int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    with RunLock(out):
        yield
