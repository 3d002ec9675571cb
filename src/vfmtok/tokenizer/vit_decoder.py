"""Shared ViT decoder: [tokens | CLS | mask tokens on a grid | registers] -> mask-token outputs.

One set of weights serves two branches: pixel mask tokens (-> conv pixel decoder) and, in training,
feature mask tokens on the frozen encoder's grid (-> linear head, cosine loss to the encoder's features).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vfmtok.tokenizer.layers import SelfAttention, SwiGLU, resize_pos_table, swiglu_hidden


class Block(nn.Module):
    """Pre-norm transformer block with SwiGLU."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, bias=True, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = SwiGLU(dim, swiglu_hidden(dim))

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), causal=causal)
        return x + self.mlp(self.norm2(x))


class ViTDecoder(nn.Module):
    """Decode N token embeddings into features on a pixel grid and (optionally) the encoder's grid."""

    def __init__(self, dim: int, depth: int, heads: int, num_tokens: int, pixel_grid: tuple[int, int],
                 pos_grid: tuple[int, int], feature_channels: int | None, num_registers: int = 4,
                 causal: bool = True, dropout: float = 0.0, shared_mask_token: bool = False, anchor_init: bool = False,
                 pos_interp: str = "size", feature_norm: str = "pixel"):
        super().__init__()
        self.causal, self.pixel_grid, self.pos_grid = causal, tuple(pixel_grid), tuple(pos_grid)
        self.anchor_init, self.pos_interp = anchor_init, pos_interp
        if feature_norm not in ("pixel", "feature"):
            raise ValueError(f"feature_norm must be 'pixel' or 'feature', got {feature_norm!r}")
        self.feature_norm = feature_norm
        # One position table at the finer of the two grids (the paper: encoder 24x24 -> pixels 21x21), resized
        # for the other; a table coarser than the pixel grid would give neighbouring mask tokens ~equal positions.
        self.table_grid = max(self.pixel_grid, self.pos_grid, key=lambda g: g[0] * g[1])
        s = dim**-0.5
        self.token_pos = nn.Parameter(torch.randn(1, num_tokens, dim) * s)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * s)
        self.cls_pos = nn.Parameter(torch.randn(1, 1, dim) * s)
        self.grid_pos = nn.Parameter(torch.randn(1, self.table_grid[0] * self.table_grid[1], dim) * s)
        self.mask_pixel = nn.Parameter(torch.randn(1, 1, dim) * s)
        self.registers = nn.Parameter(torch.zeros(1, num_registers, dim))
        self.norm_in = nn.LayerNorm(dim)
        self.blocks = nn.ModuleList(Block(dim, heads, dropout) for _ in range(depth))
        self.feature_head = None
        if feature_channels:
            self.shared_mask_token = shared_mask_token
            if not shared_mask_token:
                self.mask_feature = nn.Parameter(torch.randn(1, 1, dim) * s)
            self.norm_feature = nn.LayerNorm(dim)
            self.feature_head = nn.Linear(dim, feature_channels)
        self.apply(_init)

    def _run(self, tokens: torch.Tensor, masks: torch.Tensor, grid: tuple[int, int],
             side_norm: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        B, N, C = tokens.shape
        side_norm = self.norm_in if side_norm is None else side_norm  # the norm of CLS and registers
        cls = side_norm(self.cls_token + self.cls_pos).expand(B, -1, -1)
        regs = side_norm(self.registers).expand(B, -1, -1)
        toks = self.norm_in(tokens + self.token_pos)
        masks = masks.expand(B, -1, -1)
        if self.anchor_init:
            # Each mask token starts from the token of its anchor (bilinear over the anchor grid). Without it the
            # near-uniform attention at init hands every token the same gradient, and the codebook collapsed.
            side = int(N**0.5)
            t = toks.transpose(1, 2).reshape(B, C, side, side)
            if (side, side) != tuple(grid):
                t = F.interpolate(t, size=grid, mode="bilinear", align_corners=False)
            masks = masks + t.flatten(2).transpose(1, 2)
        x = torch.cat([toks, cls, masks, regs], dim=1)
        for blk in self.blocks:
            x = blk(x, self.causal)
        return x[:, N], x[:, N + 1: N + 1 + masks.shape[1]]

    def zero_residuals(self, first: int) -> None:
        """Make blocks[first:] identity maps by zeroing their output projections."""
        # A deeper decoder grown from a trained one (train.init_from) then starts as the very same function.
        with torch.no_grad():
            for blk in self.blocks[first:]:
                for lin in (blk.attn.proj, blk.mlp.w3):
                    lin.weight.zero_()
                    if lin.bias is not None:
                        lin.bias.zero_()

    def forward_pixels(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, N, dim) -> (pixel-grid features (B, dim, gh, gw), CLS output (B, dim))."""
        pos = resize_pos_table(self.grid_pos, self.table_grid, self.pixel_grid, self.pos_interp)
        cls, out = self._run(tokens, self.norm_in(self.mask_pixel + pos), self.pixel_grid)
        B, _, C = out.shape
        return out.transpose(1, 2).reshape(B, C, *self.pixel_grid), cls

    def forward_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, N, dim) -> predicted encoder features (B, C_feat, H_t, W_t)."""
        if self.feature_head is None:
            raise RuntimeError("this decoder was built without a feature branch")
        mask = self.mask_pixel if self.shared_mask_token else self.mask_feature
        pos = resize_pos_table(self.grid_pos, self.table_grid, self.pos_grid, self.pos_interp)
        side = self.norm_feature if self.feature_norm == "feature" else None
        _, out = self._run(tokens, self.norm_feature(mask + pos), self.pos_grid, side)
        pred = self.feature_head(out)
        B, _, C = pred.shape
        return pred.transpose(1, 2).reshape(B, C, *self.pos_grid)


def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
