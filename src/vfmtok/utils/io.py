"""JSON, safetensors and train-state files (all written by utils/atomic.py) and the checkpoint folder format."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vfmtok.utils.atomic import atomic_path, make_dirs, write_bytes, write_with
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


def save_pretrained(folder: str | os.PathLike, state_dict: dict[str, torch.Tensor] | None, config: dict[str, Any],
                    model_type: str, card: dict[str, Any] | None = None) -> Path:
    """Write `model.safetensors` + `config.json` (with `model_type`) + a README.md model card into `folder`; each
    file atomic. `card` (what, data, command, metrics) defaults to what config and the command line tell.
    `state_dict` None: no weights file (a sharded training checkpoint keeps its weights in its shards)."""
    from vfmtok import __version__
    from vfmtok.utils.hub import write_model_card

    folder = make_dirs(folder)
    if state_dict is not None:
        save_safetensors(folder / WEIGHTS_NAME, state_dict, metadata={"model_type": model_type})
    write_json(folder / CONFIG_NAME, {"model_type": model_type, "format_version": FORMAT_VERSION,
                                      "vfmtok_version": __version__, "config": config})
    write_model_card(folder, model_type, config, card)
    return folder


def cast_floats(state: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Floating tensors of a state dict as `dtype` (None: unchanged); loading casts them back to the model's dtype."""
    if dtype is None:
        return state
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder, a run folder (-> its latest checkpoint), or a Hugging Face Hub id
    ('owner/name[/subfolder][@revision]', or 'hf:...') that is not a local path (-> its cached snapshot)."""
    from vfmtok.utils.hub import parse_hub_id, resolve_hub_checkpoint

    p = Path(path)
    text = str(path)
    if text.startswith("hf:") or (not p.exists() and parse_hub_id(text) is not None):
        return resolve_hub_checkpoint(text)
    if (p / CONFIG_NAME).is_file():
        return p
    latest = p / "latest.txt"
    if latest.is_file():
        folder = p / "checkpoints" / latest.read_text().strip()
        if (folder / CONFIG_NAME).is_file():
            return folder
    if not p.exists():
        raise VFMTokError(f"checkpoint not found: {p}")
    raise VFMTokError(f"{p} is neither a checkpoint folder (no {CONFIG_NAME}) nor a run folder (no latest.txt)")


def load_pretrained(folder: str | os.PathLike, model_types: str | tuple[str, ...],
                    required: tuple[str, ...] = ()) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """Read a checkpoint folder; returns (state_dict, config, model_type); clear errors for wrong kinds and versions.

    `required`: sections of the config that must be present (mappings)."""
    folder = Path(folder)
    if isinstance(model_types, str):
        model_types = (model_types,)
    if not folder.exists():
        raise VFMTokError(f"checkpoint not found: {folder}")
    if folder.is_file():
        raise VFMTokError(f"checkpoint must be a folder holding {WEIGHTS_NAME} and {CONFIG_NAME}, got a file: {folder}")
    meta = read_json(folder / CONFIG_NAME)
    mtype = meta.get("model_type") if isinstance(meta, dict) else None
    if mtype not in model_types:
        raise VFMTokError(f"{folder} holds a '{mtype}' checkpoint, expected one of: {', '.join(model_types)}")
    version = meta.get("format_version", 1)  # folders written before versioning are version 1
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise VFMTokError(f"{folder} is checkpoint format version {version} (written by vfmtok "
                          f"{meta.get('vfmtok_version', '?')}); this vfmtok reads up to version {FORMAT_VERSION}: upgrade vfmtok")
    config = meta.get("config")
    absent = ["config"] if not isinstance(config, dict) else [k for k in required if not isinstance(config.get(k), dict)]
    if absent:
        raise VFMTokError(f"{folder / CONFIG_NAME} lacks its '{absent[0]}' section (an incomplete or foreign config)")
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise VFMTokError(f"checkpoint folder {folder} has no {WEIGHTS_NAME}")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise VFMTokError(f"cannot read {weights}: {e}") from None
    return state, config, mtype


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str,
                      exclude_prefixes: tuple[str, ...] = ()) -> None:
    """Strict load (ignoring keys under `exclude_prefixes`, e.g. a frozen encoder) with a one-line mismatch error."""
    own = {k: v for k, v in module.state_dict().items() if not k.startswith(exclude_prefixes)}
    check_state_dict(own, state, source)
    module.load_state_dict(state, strict=not exclude_prefixes)


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
