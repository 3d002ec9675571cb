"""JSON, safetensors and train-state files (all written by utils/atomic.py) and the checkpoint folder format."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from vfmtok.utils.atomic import atomic_path, write_bytes, write_with
from vfmtok.utils.errors import VFMTokError

__all__ = ["atomic_path"]  # re-exported: the one writer lives in utils/atomic.py

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
TRAIN_STATE_NAME = "train_state.pt"
# Version of the checkpoint folder layout (config.json "format_version"); raise it when old readers would misread.
FORMAT_VERSION = 1


def cache_root() -> Path:
    """vfmtok's cache folder: $VFMTOK_CACHE, else ~/.cache/vfmtok."""
    return Path(os.environ["VFMTOK_CACHE"]) if os.environ.get("VFMTOK_CACHE") else Path.home() / ".cache" / "vfmtok"


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write text atomically (readers never see a half-written file)."""
    write_bytes(path, text.encode())


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


def save_npz(path: str | os.PathLike, **arrays: Any) -> Path:
    """np.savez atomically (to a file object, so numpy does not append '.npz' to the temporary name)."""
    return write_with(path, lambda f: np.savez(f, **arrays), needed=sum(np.asarray(a).nbytes for a in arrays.values()))


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
    with atomic_path(path, needed=sum(v.nbytes for v in clean.values())) as tmp:
        save_file(clean, str(tmp), metadata=metadata)


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str,
                      exclude_prefixes: tuple[str, ...] = (), assign: bool = False) -> None:
    """Strict load (ignoring keys under `exclude_prefixes`, e.g. a frozen encoder) with a one-line mismatch error.

    assign=True hands the checkpoint's tensors to the module (cast to the module's dtypes) instead of copying
    into its own: the way to fill a module built on the meta device."""
    own = {k: v for k, v in module.state_dict().items() if not k.startswith(exclude_prefixes)}
    check_state_dict(own, state, source)
    if assign:
        state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    module.load_state_dict(state, strict=not exclude_prefixes, assign=assign)


def loadable_dtype(expected: torch.dtype, found: torch.dtype) -> bool:
    """Whether a stored tensor of dtype `found` loads into one of dtype `expected`: equal dtypes, or floating point
    into floating point (fp16 / bf16 exports load into fp32 models); never an integer or bool into a float, or back."""
    return found == expected or (found.is_floating_point and expected.is_floating_point)


def check_state_dict(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], where: str) -> None:
    """One-line VFMTokError unless `found` (a checkpoint's tensors) has exactly the names of `expected` (a model's,
    real or meta tensors), each with the same shape and a dtype that loads into it (`loadable_dtype`)."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shape = [k for k in found if k in expected and tuple(expected[k].shape) != tuple(found[k].shape)]
    dtype = [k for k in found if k in expected and not loadable_dtype(expected[k].dtype, found[k].dtype)]
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} keys (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} keys (e.g. {unexpected[0]})")
    if shape:
        k = shape[0]
        parts.append(f"shape mismatch for {k}: checkpoint {tuple(found[k].shape)} vs model {tuple(expected[k].shape)}")
    if dtype:
        k = dtype[0]
        more = f" (and {len(dtype) - 1} more tensors)" if len(dtype) > 1 else ""
        parts.append(f"dtype mismatch for {k}: expected {_dtype_name(expected[k].dtype)}, found "
                     f"{_dtype_name(found[k].dtype)}{more}")
    if parts:
        raise VFMTokError(f"{where} does not match this architecture: " + "; ".join(parts))


def _dtype_name(d: torch.dtype) -> str:
    return str(d).replace("torch.", "")


def file_sha256(path: str | os.PathLike, n_chars: int = 16) -> str:
    """Short SHA-256 of a file, used to identify checkpoints in result records."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n_chars]


def save_train_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """torch.save a dict of tensors/primitives only, so `torch.load(weights_only=True)` reads it."""
    write_with(path, lambda f: torch.save(state, f), needed=_tensor_bytes(state))


def _tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors inside nested dicts / lists / tuples (what a torch.save of them needs, roughly)."""
    if isinstance(obj, torch.Tensor):
        return obj.nbytes
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def load_train_state(path: str | os.PathLike) -> dict[str, Any]:
    """Load resume state with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise VFMTokError(f"no training state to resume from: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt files
        raise VFMTokError(f"cannot read training state {path}: {str(e).splitlines()[0]}") from None
