"""What both tokenizers (VFMTok and the VQGAN baseline) share: output type, quantise/decode path, state I/O."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from vfmtok.encoders.base import drop_frozen_state, frozen_prefixes
from vfmtok.tokenizer.config import TokenizerConfig
from vfmtok.tokenizer.pixel_decoder import PixelDecoder
from vfmtok.tokenizer.quantizer import VectorQuantizer
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.io import load_state_strict


# top-level modules that map code vectors to outputs (VFMTok's ViT decoder included): what follows the codebook lookup
DECODER_SIDE = ("post_quant", "decoder", "pixel_decoder")


@dataclass
class TokenizerOutput:
    """Forward result used by the training losses."""

    recon: torch.Tensor                  # (B, 3, H, W)
    indices: torch.Tensor                # (B, N)
    codebook_loss: torch.Tensor
    commit_loss: torch.Tensor
    feature_pred: torch.Tensor | None = None    # (B, C, h, w) predicted encoder features
    feature_target: torch.Tensor | None = None  # (B, C, h, w) frozen encoder's features
    pre_quant: torch.Tensor | None = None       # (B, N, d) encoder outputs before quantisation (for dead-code reseeding)


def check_id_range(ids: torch.Tensor, k: int) -> None:
    """One-line error for ids outside [0, k). On an accelerator the check is queued on the device (an assert there)
    instead of read back, so decoding never waits for the device."""
    if ids.device.type == "cpu":
        lo, hi = ids.aminmax()
        if lo < 0 or hi >= k:
            raise VFMTokError(f"ids must lie in [0, {k}), got range [{int(lo)}, {int(hi)}]")
    else:
        torch._assert_async(((ids >= 0) & (ids < k)).all(), f"ids must lie in [0, {k})")


class TokenizerBase(nn.Module):
    """Token features -> VQ -> decoder; subclasses provide `token_features` and `decode_tokens`."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        self.pre_quant = nn.Linear(cfg.width, cfg.code_dim)
        self.quantizer = VectorQuantizer(cfg.codebook_size, cfg.code_dim, beta=cfg.commit_beta)
        self.post_quant = nn.Linear(cfg.code_dim, cfg.width)
        self.pixel_decoder = PixelDecoder(cfg.width, cfg.pix_ch, tuple(cfg.pix_ch_mult), cfg.pix_res_blocks, cfg.pix_attn)

    # --- to be provided by subclasses ---
    token_grid: tuple[int, int]

    def token_features(self, images: torch.Tensor, enc_out=None):
        """(B, N, width) continuous token features (and the encoder output when there is one)."""
        raise NotImplementedError

    def decode_tokens(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, N, width) dequantised tokens -> (image, CLS feature or None)."""
        raise NotImplementedError

    # --- shared ---
    @property
    def num_tokens(self) -> int:
        return self.token_grid[0] * self.token_grid[1]

    def check_images(self, images: torch.Tensor) -> None:
        """One-line error for a batch of the wrong shape."""
        s = self.cfg.image_size
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[-2:] != (s, s):
            raise VFMTokError(f"expected images of shape (B, 3, {s}, {s}) in [-1, 1], got {tuple(images.shape)}")

    def forward(self, images: torch.Tensor, enc_out=None) -> TokenizerOutput:
        """Full training forward: tokens, VQ, pixel reconstruction (+ feature reconstruction)."""
        feats, enc = self.token_features(images, enc_out)
        z = self.pre_quant(feats)
        q = self.quantizer(z)
        tokens = self.post_quant(q.z_q)
        recon, _ = self.decode_tokens(tokens)
        pred, target = self.feature_reconstruction(tokens, enc)
        return TokenizerOutput(recon, q.indices, q.codebook_loss, q.commit_loss, pred, target, z.detach())

    def feature_reconstruction(self, tokens: torch.Tensor, enc) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Predicted and target encoder features (training only); none by default."""
        return None, None

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B,3,H,W) in [-1,1] -> ids (B, N) int64."""
        self.check_images(images)
        feats, _ = self.token_features(images)
        return self.quantizer.nearest(self.pre_quant(feats).float())

    @torch.no_grad()
    def encode_topk(self, images: torch.Tensor, k: int) -> torch.Tensor:
        """Images -> (B, k, N) int64: per token the k nearest code ids, nearest first."""
        self.check_images(images)
        if not 1 <= k <= self.cfg.codebook_size:
            raise VFMTokError(f"k must lie in [1, {self.cfg.codebook_size}], got {k}")
        feats, _ = self.token_features(images)
        z = self.pre_quant(feats).float()
        return self.quantizer.nearest_topk(z, k).permute(0, 2, 1).contiguous()

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids (B, N) -> images (B,3,H,W) clamped to [-1,1]."""
        if ids.dim() != 2 or ids.shape[1] != self.num_tokens:
            raise VFMTokError(f"expected ids of shape (B, {self.num_tokens}), got {tuple(ids.shape)}")
        check_id_range(ids, self.cfg.codebook_size)
        tokens = self.post_quant(self.quantizer.lookup(ids.long()))
        img, _ = self.decode_tokens(tokens)
        return img.clamp(-1, 1)

    @torch.no_grad()
    def probe_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Frozen features for linear probing: mean of dequantised tokens, and the decoder CLS when there is one."""
        ids = self.encode(images)
        tokens = self.post_quant(self.quantizer.lookup(ids))
        out = {"tokens_mean": tokens.mean(dim=1)}
        _, cls = self.decode_tokens(tokens)
        if cls is not None:
            out["cls"] = cls
        return out

    def train_decoder_only(self) -> None:
        """Freeze everything up to and including the codebook, so every image keeps its code ids."""
        for name, p in self.named_parameters():
            if name.split(".")[0] not in DECODER_SIDE:
                p.requires_grad_(False)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """State without the frozen encoder's weights (they are never saved)."""
        return drop_frozen_state(self, self.state_dict())

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor], source: str = "checkpoint",
                                  new_prefixes: tuple[str, ...] = (), assign: bool = False) -> None:
        """Strict load of everything but the frozen encoder and the modules under `new_prefixes` (kept as built);
        assign=True hands the checkpoint's tensors over (to fill a model built on the meta device)."""
        load_state_strict(self, state, source, exclude_prefixes=(*frozen_prefixes(self), *new_prefixes), assign=assign)
