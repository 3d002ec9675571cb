"""Build a tokenizer from its config (the one place that maps `arch` to a class)."""

from __future__ import annotations

import torch.nn as nn

from vfmtok.tokenizer.base import TokenizerBase
from vfmtok.tokenizer.config import TokenizerConfig
from vfmtok.utils.errors import VFMTokError


def build_tokenizer(cfg: TokenizerConfig, encoder: nn.Module | None = None) -> TokenizerBase:
    """VFMTok or VQGAN according to cfg.arch."""
    if cfg.arch == "vfmtok":
        from vfmtok.tokenizer.vfmtok import VFMTok

        return VFMTok(cfg, encoder)
    if cfg.arch == "vqgan":
        from vfmtok.tokenizer.vqgan import VQGAN

        return VQGAN(cfg)
    raise VFMTokError(f"unknown tokenizer arch '{cfg.arch}' (vfmtok, vqgan)")
