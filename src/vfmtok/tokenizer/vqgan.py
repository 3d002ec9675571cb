"""Baseline: a 2D-grid VQGAN trained from scratch (conv encoder, one token per grid cell), same VQ and decoder."""

from __future__ import annotations

import torch
import torch.nn as nn

from vfmtok.tokenizer.base import TokenizerBase
from vfmtok.tokenizer.config import TokenizerConfig
from vfmtok.tokenizer.pixel_decoder import AttnBlock, ResBlock, SiLU, _norm
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.layout import cpu_channels_last


class ConvEncoder(nn.Module):
    """Image -> (B, width, g, g), downsampling x2 per level after the first."""

    def __init__(self, width: int, ch: int, ch_mult: tuple[int, ...], res_blocks: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, ch, 3, padding=1)]
        c = ch
        for i, m in enumerate(ch_mult):
            for _ in range(res_blocks):
                layers.append(ResBlock(c, ch * m))
                c = ch * m
            if i < len(ch_mult) - 1:
                layers.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        layers += [ResBlock(c, c), AttnBlock(c), ResBlock(c, c), _norm(c), SiLU(), nn.Conv2d(c, width, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(cpu_channels_last(x)).contiguous()


class VQGAN(TokenizerBase):
    """Conv encoder -> grid tokens -> VQ -> the same conv pixel decoder."""

    def __init__(self, cfg: TokenizerConfig, encoder: nn.Module | None = None):
        super().__init__(cfg)
        down = 2 ** (len(cfg.vq_enc_ch_mult) - 1)
        up = 2 ** (len(cfg.pix_ch_mult) - 1)
        g = cfg.image_size // down
        if g * g != cfg.num_tokens or cfg.image_size % down:
            raise VFMTokError(f"VQGAN: image_size {cfg.image_size} / downsampling {down} gives a {g}x{g} grid, "
                              f"but num_tokens is {cfg.num_tokens}; adjust vq_enc_ch_mult")
        if g * up != cfg.image_size:
            raise VFMTokError(f"VQGAN: pixel decoder upsampling {up} maps the {g}x{g} grid to {g * up}px, not {cfg.image_size}px; adjust pix_ch_mult")
        self.conv_encoder = ConvEncoder(cfg.width, cfg.vq_enc_ch, tuple(cfg.vq_enc_ch_mult), cfg.vq_enc_res_blocks)
        self.token_grid = (g, g)

    def token_features(self, images: torch.Tensor, enc_out=None):
        self.check_images(images)
        return self.conv_encoder(images).flatten(2).transpose(1, 2), None

    def decode_tokens(self, tokens: torch.Tensor):
        B, N, C = tokens.shape
        grid = tokens.transpose(1, 2).reshape(B, C, *self.token_grid)
        return self.pixel_decoder(grid), None
