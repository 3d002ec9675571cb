"""VFMTok: frozen VFM features -> region-adaptive tokens (deformable attention) -> VQ -> shared ViT decoder."""

from __future__ import annotations

import torch
import torch.nn as nn


from vfmtok.tokenizer.base import TokenizerBase
from vfmtok.tokenizer.config import TokenizerConfig
from vfmtok.tokenizer.layers import POS_INTERP_MODES
from vfmtok.tokenizer.region_encoder import RegionEncoder
from vfmtok.tokenizer.vit_decoder import ViTDecoder
from vfmtok.utils.errors import VFMTokError


def frozen_encoder(cfg: TokenizerConfig) -> nn.Module:
    """The frozen VFM of `cfg`, with its own weights (a random one seeded by cfg.encoder_seed; no global draw)."""
    from vfmtok.encoders import create_encoder

    size = cfg.encoder_input_size or cfg.image_size
    # A random (ablation/test) encoder is not saved, so it must be rebuilt identically on load.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.encoder_seed)
        return create_encoder(cfg.encoder, pretrained=cfg.encoder_pretrained, image_size=size,
                              weights_path=cfg.encoder_weights)


class VFMTok(TokenizerBase):
    """The paper's tokenizer; the frozen encoder is a submodule but never trained or saved."""

    def __init__(self, cfg: TokenizerConfig, encoder: nn.Module | None = None):
        super().__init__(cfg)
        self.encoder = encoder = frozen_encoder(cfg) if encoder is None else encoder
        shapes = encoder.level_shapes()
        n = len(shapes)
        self.level_ids = sorted({i % n for i in cfg.levels}) if cfg.levels else list(range(n))
        self.region = RegionEncoder([shapes[i][0] for i in self.level_ids], cfg.width, cfg.num_tokens, cfg.enc_depth,
                                    cfg.enc_heads, cfg.enc_points, cfg.enc_ffn, cfg.query_causal)
        self.token_grid = self.region.grid
        if cfg.dec_pos_interp not in POS_INTERP_MODES:
            raise VFMTokError(f"dec_pos_interp must be one of {', '.join(POS_INTERP_MODES)}, got '{cfg.dec_pos_interp}'")
        if cfg.dec_feature_norm not in ("pixel", "feature"):
            raise VFMTokError(f"dec_feature_norm must be 'pixel' or 'feature', got '{cfg.dec_feature_norm}'")
        factor = 2 ** (len(cfg.pix_ch_mult) - 1)
        if cfg.image_size % factor:
            raise VFMTokError(f"image_size {cfg.image_size} is not divisible by the pixel decoder's upsampling {factor}")
        g = cfg.image_size // factor
        tc, th, tw = encoder.target_shape()
        self.decoder = ViTDecoder(cfg.width, cfg.dec_depth, cfg.dec_heads, cfg.num_tokens, (g, g), (th, tw),
                                  tc if cfg.feature_branch else None, cfg.dec_registers, cfg.dec_causal,
                                  cfg.dec_dropout, cfg.shared_mask_token, cfg.dec_anchor_init,
                                  cfg.dec_pos_interp, cfg.dec_feature_norm)

    def encoder_features(self, images: torch.Tensor):
        """Frozen encoder output (levels + target) for images in [-1, 1]."""
        with torch.no_grad():
            return self.encoder(images)

    def token_features(self, images: torch.Tensor | None, enc_out=None):
        if enc_out is None:
            self.check_images(images)
            enc_out = self.encoder_features(images)
        levels = [enc_out.levels[i] for i in self.level_ids]
        return self.region(levels), enc_out

    def decode_tokens(self, tokens: torch.Tensor):
        grid, cls = self.decoder.forward_pixels(tokens)
        return self.pixel_decoder(grid), cls

    def feature_reconstruction(self, tokens: torch.Tensor, enc):
        if not (self.training and self.cfg.feature_branch):
            return None, None
        return self.decoder.forward_features(tokens), enc.target.float()

    @torch.no_grad()
    def sampling_locations(self, images: torch.Tensor, layer: int = -1):
        """Where the anchor queries sample the levels: (B,N,H,L,P,2) locations in [0,1] and weights."""
        enc = self.encoder_features(images)
        return self.region.sampling_locations([enc.levels[i] for i in self.level_ids], layer)
