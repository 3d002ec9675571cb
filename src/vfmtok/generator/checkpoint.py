"""`load_generator`, the one loader the commands use: config.json's `model_type` ("gpt", "rar") picks the class.

A generator folder is `model.safetensors` + `config.json`; its `config[<model_type>]` section holds the architecture
dataclass (the save/load methods live in `generator.pretrained.GeneratorIO`).
"""

from __future__ import annotations

import os

import torch

from vfmtok.generator.gpt import GPT
from vfmtok.generator.rar import RAR
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.io import read_json
from vfmtok.utils.pretrained import resolve_checkpoint


def generator_classes() -> dict[str, type]:
    """model_type -> generator class."""
    return {GPT.model_type: GPT, RAR.model_type: RAR}


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A GPT or RAR from a checkpoint or run folder, by the model_type its config.json records; eval mode."""
    folder = resolve_checkpoint(path)
    meta = read_json(folder / "config.json")
    mtype = meta.get("model_type") if isinstance(meta, dict) else None
    classes = generator_classes()
    if mtype not in classes:
        raise VFMTokError(f"{folder} holds a '{mtype}' checkpoint, not a generator ({', '.join(classes)})")
    return classes[mtype].from_pretrained(folder, device=device)
