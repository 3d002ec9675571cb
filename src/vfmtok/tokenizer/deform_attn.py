"""Multi-scale deformable attention (Deformable DETR), in pure PyTorch with `grid_sample`.

Each query predicts, per head, level and point, a 2D offset around its reference point and a weight
(softmax over levels x points); the value maps are sampled bilinearly there and summed.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F



def ms_deform_attn_sample(value: torch.Tensor, shapes: list[tuple[int, int]], locations: torch.Tensor,
                          weights: torch.Tensor) -> torch.Tensor:
    """Sample and combine values.

    value: (B, S, H, D) with S = sum(h*w over levels), levels flattened row-major and concatenated;
    locations: (B, Q, H, L, P, 2) in [0, 1] as (x, y); weights: (B, Q, H, L, P). Returns (B, Q, H*D).
    Bilinear, zero padding outside, align_corners=False (pixel centres at (i + 0.5) / size).
    """
    B, _, H, D = value.shape
    out = _sampled(value, shapes, 2.0 * locations - 1.0, same_size=all(s == shapes[0] for s in shapes))
    wts = weights.permute(0, 2, 3, 1, 4).unsqueeze(3)  # (B, H, L, 1, Q, P)
    out = (out * wts).sum(dim=(2, 5))  # (B, H, D, Q)
    return out.permute(0, 3, 1, 2).reshape(B, -1, H * D)


def _sampled(value: torch.Tensor, shapes: list[tuple[int, int]], grids: torch.Tensor, same_size: bool) -> torch.Tensor:
    """Bilinear samples (B, H, L, D, Q, P) at grids (B, Q, H, L, P, 2) in [-1, 1]; same_size: one call for all levels."""
    B, _, H, D = value.shape
    _, Q, _, L, P, _ = grids.shape
    if same_size:
        # Equal level sizes (the ViT case): one grid_sample call over (B*H*L) maps.
        h, w = shapes[0]
        v = value.view(B, L, h, w, H, D).permute(0, 4, 1, 5, 2, 3).reshape(B * H * L, D, h, w)
        g = grids.permute(0, 2, 3, 1, 4, 5).reshape(B * H * L, Q, P, 2)
        out = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)  # (BHL, D, Q, P)
        out = out.view(B, H, L, D, Q, P)
    else:
        per_level, start = [], 0
        for lvl, (h, w) in enumerate(shapes):
            v = value[:, start:start + h * w].permute(0, 2, 3, 1).reshape(B * H, D, h, w)
            g = grids[:, :, :, lvl].permute(0, 2, 1, 3, 4).reshape(B * H, Q, P, 2)
            per_level.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
            start += h * w
        out = torch.stack(per_level, dim=1).view(B, H, L, D, Q, P)
    return out


class MSDeformAttn(nn.Module):
    """Multi-scale deformable cross-attention from queries to L feature levels."""

    def __init__(self, dim: int, n_levels: int, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim {dim} not divisible by heads {n_heads}")
        self.dim, self.n_levels, self.n_heads, self.n_points = dim, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(dim, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(dim, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR init: offsets start on rays in 8 directions at growing radii; uniform weights."""
        nn.init.zeros_(self.sampling_offsets.weight)
        theta = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        dirs = torch.stack([theta.cos(), theta.sin()], -1)
        dirs = dirs / dirs.abs().max(-1, keepdim=True).values
        dirs = dirs.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        dirs = dirs * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(dirs.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def sampling(self, query: torch.Tensor, reference_points: torch.Tensor,
                 shapes: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampling locations (B,Q,H,L,P,2) in [0,1] and softmax weights (B,Q,H,L,P)."""
        B, Q, _ = query.shape
        H, L, P = self.n_heads, self.n_levels, self.n_points
        off = self.sampling_offsets(query).view(B, Q, H, L, P, 2)
        w = self.attention_weights(query).view(B, Q, H, L * P).softmax(-1).view(B, Q, H, L, P)
        norm = torch.tensor([[w_, h_] for h_, w_ in shapes], dtype=query.dtype, device=query.device)  # (L, 2) as (W, H)
        loc = reference_points[:, :, None, :, None, :] + off / norm[None, None, None, :, None, :]
        return loc, w

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor, value: torch.Tensor,
                shapes: list[tuple[int, int]]) -> torch.Tensor:
        """query (B,Q,C), reference_points (B|1,Q,L,2) in [0,1] (x,y), value (B,S,C) -> (B,Q,C)."""
        B, S, C = value.shape
        if S != sum(h * w for h, w in shapes):
            raise ValueError(f"value length {S} != sum of level sizes {shapes}")
        v = self.value_proj(value).view(B, S, self.n_heads, C // self.n_heads)
        loc, w = self.sampling(query, reference_points.expand(B, -1, -1, -1), shapes)
        return self.output_proj(ms_deform_attn_sample(v, shapes, loc, w))
