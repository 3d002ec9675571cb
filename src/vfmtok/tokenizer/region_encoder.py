"""Region-adaptive token encoder: level projectors, anchor queries on a grid, deformable transformer layers."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from vfmtok.tokenizer.deform_attn import MSDeformAttn
from vfmtok.tokenizer.layers import SelfAttention, grid_centres


def level_projector(in_ch: int, dim: int) -> nn.Sequential:
    """Two-layer MLP to the common width: Linear-LN-ReLU-Linear-LN, then one more LN."""
    return nn.Sequential(
        nn.Linear(in_ch, dim, bias=False), nn.LayerNorm(dim), nn.ReLU(),
        nn.Linear(dim, dim, bias=False), nn.LayerNorm(dim), nn.LayerNorm(dim),
    )


class DeformableLayer(nn.Module):
    """Post-norm layer: deformable cross-attention to the levels, (causal) query self-attention, FFN."""

    def __init__(self, dim: int, n_levels: int, heads: int, n_points: int, ffn: int, causal: bool):
        super().__init__()
        self.causal = causal
        self.cross = MSDeformAttn(dim, n_levels, heads, n_points)
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = SelfAttention(dim, heads, bias=True)
        self.norm3 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.ReLU(), nn.Linear(ffn, dim))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, ref: torch.Tensor, value: torch.Tensor,
                shapes: list[tuple[int, int]]) -> torch.Tensor:
        # fp32 regions, as the official code: under bf16 autocast the sampling offsets and the attention logits
        # of the deformable cross-attention and the query self-attention stay in full precision
        with torch.autocast(x.device.type, enabled=False):
            x = self.norm1(x + self.cross((x + pos).float(), ref.float(), value.float(), shapes))
            x = self.norm3(x + self.self_attn((x + pos).float(), causal=self.causal))
        return self.norm2(x + self.ffn(x))


class RegionEncoder(nn.Module):
    """N anchor queries sample the multi-level features with deformable attention -> (B, N, dim)."""

    def __init__(self, level_channels: list[int], dim: int, num_tokens: int, depth: int, heads: int,
                 n_points: int, ffn: int, causal: bool = True):
        super().__init__()
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise ValueError(f"num_tokens must be a square (grid of anchors), got {num_tokens}")
        self.grid = (side, side)
        self.projectors = nn.ModuleList(level_projector(c, dim) for c in level_channels)
        self.queries = nn.Parameter(torch.randn(1, num_tokens, dim) * dim**-0.5)
        self.query_pos = nn.Parameter(torch.randn(1, num_tokens, dim) * dim**-0.5)
        self.norm_pre = nn.LayerNorm(dim)
        # Fixed reference points: the anchor grid's cell centres, shared by all levels. Not saved, so computed on the
        # CPU even while the model is built on the meta device for loading (`.to()` moves them with the weights).
        ref = grid_centres(side, side, device="cpu")[None, :, None, :].repeat(1, 1, len(level_channels), 1)
        self.register_buffer("reference_points", ref, persistent=False)
        self.layers = nn.ModuleList(
            DeformableLayer(dim, len(level_channels), heads, n_points, ffn, causal) for _ in range(depth)
        )

    def values(self, levels: list[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Project each (B, C_l, H_l, W_l) level and concatenate to (B, sum H_l W_l, dim)."""
        flat, shapes = [], []
        for proj, f in zip(self.projectors, levels):
            shapes.append((f.shape[-2], f.shape[-1]))
            flat.append(proj(f.flatten(2).transpose(1, 2)))
        return torch.cat(flat, dim=1), shapes

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """Levels -> region-adaptive token features (B, N, dim)."""
        value, shapes = self.values([f.float() for f in levels])
        B = value.shape[0]
        x = self.norm_pre(self.queries).expand(B, -1, -1)
        for layer in self.layers:
            x = layer(x, self.query_pos, self.reference_points, value, shapes)
        return x

    @torch.no_grad()
    def sampling_locations(self, levels: list[torch.Tensor], layer: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
        """Where each query looks in a given layer: locations (B,N,H,L,P,2) in [0,1] and weights (B,N,H,L,P)."""
        value, shapes = self.values([f.float() for f in levels])
        B = value.shape[0]
        x = self.norm_pre(self.queries).expand(B, -1, -1)
        target = range(len(self.layers))[layer]
        for i, lyr in enumerate(self.layers):
            if i == target:
                return lyr.cross.sampling(x + self.query_pos, self.reference_points.expand(B, -1, -1, -1), shapes)
            x = lyr(x, self.query_pos, self.reference_points, value, shapes)
        raise IndexError(layer)
