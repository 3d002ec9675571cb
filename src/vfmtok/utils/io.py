"""Atomic file writes and the checkpoint format: `model.safetensors` + `config.json` in one folder."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import save_file

from vfmtok.utils.errors import VFMTokError

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
TRAIN_STATE_NAME = "train_state.pt"
# Version of the checkpoint folder layout (config.json "format_version"); raise it when old readers would misread.
FORMAT_VERSION = 1
# mkstemp creates files readable by the owner only; finished files get the permissions a plain open() would give.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def cache_root() -> Path:
    """vfmtok's cache folder: $VFMTOK_CACHE, else ~/.cache/vfmtok."""
    return Path(os.environ["VFMTOK_CACHE"]) if os.environ.get("VFMTOK_CACHE") else Path.home() / ".cache" / "vfmtok"


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        if os.stat(tmp).st_mode & 0o777 == 0o600:  # still mkstemp's file (not one the block recreated)
            os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write text atomically (readers never see a half-written file)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (indent 2, sorted insertion order kept)."""
    write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON with a one-line error for a missing or broken file."""
    path = Path(path)
    if not path.is_file():
        raise VFMTokError(f"file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise VFMTokError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None


def save_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save contiguous, unshared copies of tensors atomically."""
    clean = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp), metadata=metadata)


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str,
                      exclude_prefixes: tuple[str, ...] = (), assign: bool = False) -> None:
    """Strict load (ignoring keys under `exclude_prefixes`, e.g. a frozen encoder) with a one-line mismatch error.

    assign=True hands the checkpoint's tensors to the module (cast to the module's dtypes) instead of copying
    into its own: the way to fill a module built on the meta device."""
    own = {k: v for k, v in module.state_dict().items() if not k.startswith(exclude_prefixes)}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in state if k in own and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {unexpected[0]})")
        if shape:
            k = shape[0]
            parts.append(f"shape mismatch for {k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}")
        raise VFMTokError(f"{source} does not match this architecture: " + "; ".join(parts))
    if assign:
        state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    module.load_state_dict(state, strict=not exclude_prefixes, assign=assign)


def file_sha256(path: str | os.PathLike, n_chars: int = 16) -> str:
    """Short SHA-256 of a file, used to identify checkpoints in result records."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n_chars]


def save_train_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """torch.save a dict of tensors/primitives only, so `torch.load(weights_only=True)` reads it."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_train_state(path: str | os.PathLike) -> dict[str, Any]:
    """Load resume state with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise VFMTokError(f"no training state to resume from: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt files
        raise VFMTokError(f"cannot read training state {path}: {str(e).splitlines()[0]}") from None
