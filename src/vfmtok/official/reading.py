"""Read official `.pt`/`.pth` files without executing pickled code, and pick the state dict inside."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import torch

from vfmtok.utils.errors import VFMTokError

# The only non-tensor class the official trainers pickle (their `args`).
ALLOWED_GLOBALS = (argparse.Namespace,)
# Wrappers a saved state dict may carry: DDP, FSDP/torch.compile.
_PREFIXES = ("module.", "_orig_mod.")


def load_official(path: str | Path) -> Any:
    """A .safetensors state dict, else torch.load(weights_only=True) allowing argparse.Namespace only; one-line
    errors."""
    path = Path(path)
    if not path.is_file():
        raise VFMTokError(f"file not found: {path}")
    if path.suffix == ".safetensors":  # the RAR releases on the Hub use both formats
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise VFMTokError(f"cannot read {path} as safetensors: {str(e).splitlines()[0]}") from None
    try:
        with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except Exception as e:  # torch raises many types: UnpicklingError, RuntimeError, EOFError, ...
        raise VFMTokError(_load_error(path, e)) from None


def _is_zip(path: Path) -> bool:
    # mmap keeps a multi-GB checkpoint (weights + optimizer state) out of memory; only the zip format supports it.
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _load_error(path: Path, e: Exception) -> str:
    text = str(e)
    hit = re.search(r"GLOBAL ([\w.]+)", text)
    if hit:
        return (f"{path} contains a pickled {hit.group(1)}, which is not allowed (only argparse.Namespace); "
                "refusing to unpickle it")
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(e).__name__)
    if "central directory" in text or isinstance(e, EOFError) or "unexpected EOF" in text:
        return f"{path} is truncated or not a PyTorch checkpoint ({first})"
    return f"cannot read {path}: {first}"


def pick_state(ckpt: Any, which: str, path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict to import: ckpt[which] ('ema' or 'model'), else a bare state dict (FSDP consolidated.pth)."""
    if which not in ("ema", "model"):
        raise VFMTokError(f"--which must be 'ema' or 'model', got '{which}'")
    if not isinstance(ckpt, dict):
        raise VFMTokError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    if which in ckpt and isinstance(ckpt[which], dict):
        state, source = ckpt[which], which
    elif which == "ema" and "model" in ckpt and isinstance(ckpt["model"], dict):
        raise VFMTokError(f"{path} has no 'ema' weights (it was trained without --ema); use --which model")
    elif ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        state, source = ckpt, "state_dict"
    else:
        known = ", ".join(sorted(str(k) for k in ckpt)[:8])
        raise VFMTokError(f"{path} has no '{which}' state dict (top-level keys: {known})")
    return strip_prefixes(state), source


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DDP/compile wrapper prefixes from every key."""
    out = {}
    for k, v in state.items():
        while k.startswith(_PREFIXES):
            k = k.split(".", 1)[1]
        out[k] = v
    return out


def saved_args(ckpt: Any) -> dict[str, Any]:
    """The trainer's argparse arguments as a dict ({} when absent)."""
    args = ckpt.get("args") if isinstance(ckpt, dict) else None
    return dict(vars(args)) if isinstance(args, argparse.Namespace) else {}


def take(state: dict[str, torch.Tensor], key: str, path: str | Path) -> torch.Tensor:
    """state[key] or a one-line error naming the missing official key."""
    if key not in state:
        raise VFMTokError(f"{path} lacks the official key '{key}'")
    return state[key]
