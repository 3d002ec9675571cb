"""Named datasets: the embedded sample shipped in the package, and the shared Imagenette/CIFAR zips."""

from __future__ import annotations

import os
from pathlib import Path

from vfmtok.utils.errors import VFMTokError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
EMBEDDED_SAMPLE = ASSETS / "imagenette_sample.zip"

_SHARED_FILES = {"imagenette": "imagenette2-224.zip", "cifar10": "cifar10-jpeg.zip"}


def shared_data_dir() -> Path | None:
    """`../shared/data` seen from the repo root or the working directory, or $VFMTOK_SHARED_DATA."""
    cands = []
    if os.environ.get("VFMTOK_SHARED_DATA"):
        cands.append(Path(os.environ["VFMTOK_SHARED_DATA"]))
    repo_root = Path(__file__).resolve().parents[3]
    cands += [repo_root.parent / "shared" / "data", Path.cwd().parent / "shared" / "data", Path.cwd() / "shared" / "data"]
    for c in cands:
        if c.is_dir():
            return c
    return None


def resolve_dataset(spec: str | os.PathLike) -> Path:
    """'sample' | 'imagenette' | 'cifar10' | a path -> a folder or zip path; clear error when missing."""
    s = str(spec)
    if s == "sample":
        if not EMBEDDED_SAMPLE.is_file():
            raise VFMTokError(f"embedded sample missing from the package: {EMBEDDED_SAMPLE}")
        return EMBEDDED_SAMPLE
    if s in _SHARED_FILES:
        d = shared_data_dir()
        if d is None or not (d / _SHARED_FILES[s]).is_file():
            raise VFMTokError(f"dataset '{s}' needs {_SHARED_FILES[s]} in ../shared/data (or set VFMTOK_SHARED_DATA)")
        return d / _SHARED_FILES[s]
    p = Path(s)
    if not p.exists():
        raise VFMTokError(f"dataset not found: {p} (give a folder of class sub-folders, a zip of one, or 'sample'/'imagenette'/'cifar10')")
    return p
