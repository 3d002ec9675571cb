"""Build a tokenizer from its config (the one place that maps `arch` to a class)."""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

from vfmtok.tokenizer.base import TokenizerBase
from vfmtok.tokenizer.config import TokenizerConfig
from vfmtok.utils.errors import VFMTokError


def build_tokenizer(cfg: TokenizerConfig, encoder: nn.Module | None = None, meta: bool = False) -> TokenizerBase:
    """VFMTok or VQGAN according to cfg.arch.

    meta=True (for loading with assign=True): the frozen encoder is built with its own weights, everything else on
    the meta device, without drawing a random init that the checkpoint would overwrite."""
    if cfg.arch == "vfmtok":
        from vfmtok.tokenizer.vfmtok import VFMTok, frozen_encoder

        if encoder is None and meta:
            encoder = frozen_encoder(cfg)
        with torch.device("meta") if meta else contextlib.nullcontext():
            return VFMTok(cfg, encoder)
    if cfg.arch == "vqgan":
        from vfmtok.tokenizer.vqgan import VQGAN

        with torch.device("meta") if meta else contextlib.nullcontext():
            return VQGAN(cfg)
    raise VFMTokError(f"unknown tokenizer arch '{cfg.arch}' (vfmtok, vqgan)")
