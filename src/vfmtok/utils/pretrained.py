"""The checkpoint-folder convention every model shares: model.safetensors + config.json + README.md model card,
found by local path, run folder or Hugging Face Hub id."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from vfmtok.utils.atomic import make_dirs
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.hub import forces_hub, parse_hub_id, resolve_hub_checkpoint, write_model_card
from vfmtok.utils.io import CONFIG_NAME, FORMAT_VERSION, WEIGHTS_NAME, read_json, save_safetensors, write_json
from vfmtok.utils.version import __version__


def save_pretrained(folder: str | os.PathLike, state_dict: dict[str, torch.Tensor] | None, config: dict[str, Any],
                    model_type: str, card: dict[str, Any] | None = None) -> Path:
    """Write `model.safetensors` + `config.json` (with `model_type`) + a README.md model card into `folder`; each
    file atomic. `card` (what, data, command, metrics) defaults to what config and the command line tell.
    `state_dict` None: no weights file (a sharded training checkpoint keeps its weights in its shards)."""
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
    """A checkpoint folder, a run folder (-> its latest checkpoint), or a Hugging Face Hub id.

    A local path wins (as in transformers / diffusers); a name that is no local path but reads as
    'owner/name[/subfolder][@revision]' is looked up on the Hub; 'hf-hub:owner/name' always reads the Hub."""
    p = Path(path)
    text = str(path)
    if forces_hub(text):
        return resolve_hub_checkpoint(text)
    if not p.exists():
        if parse_hub_id(text) is not None:
            return resolve_hub_checkpoint(text, local_tried=True)
        raise VFMTokError(f"checkpoint not found: {p}")
    if (p / CONFIG_NAME).is_file():
        return p
    latest = p / "latest.txt"
    if latest.is_file():
        folder = p / "checkpoints" / latest.read_text().strip()
        if (folder / CONFIG_NAME).is_file():
            return folder
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
