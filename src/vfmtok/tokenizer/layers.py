"""Small building blocks shared by the tokenizer's transformers."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F



class SelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v inputs allowed; optional causal mask."""

    def __init__(self, dim: int, heads: int, bias: bool = True, dropout: float = 0.0):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(dim, dim, bias=bias)
        self.k = nn.Linear(dim, dim, bias=bias)
        self.v = nn.Linear(dim, dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor, causal: bool = False, kv: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C); keys/values from `kv` when given (same length)."""
        B, T, C = x.shape
        kv = x if kv is None else kv
        split = lambda t: t.view(B, -1, self.heads, C // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(kv)), split(self.v(kv))
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal, dropout_p=drop)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class SwiGLU(nn.Module):
    """SwiGLU feed-forward: w3(silu(w1 x) * w2 x)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


def swiglu_hidden(dim: int, mlp_ratio: float = 4.0) -> int:
    """Hidden width giving SwiGLU the parameter count of a ratio-4 MLP, rounded to a multiple of 8."""
    return (int(dim * mlp_ratio * 2 / 3) + 7) // 8 * 8


def grid_centres(h: int, w: int, device: str | torch.device | None = None) -> torch.Tensor:
    """(h*w, 2) cell centres ((j+0.5)/w, (i+0.5)/h) in row-major order, as (x, y)."""
    ys, xs = torch.meshgrid((torch.arange(h, device=device) + 0.5) / h, (torch.arange(w, device=device) + 0.5) / w,
                            indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], dim=-1)


POS_INTERP_MODES = ("size", "dino_offset")


def resize_pos_table(table: torch.Tensor, src: tuple[int, int], dst: tuple[int, int], mode: str = "size") -> torch.Tensor:
    """(1, h*w, C) grid table -> (1, h'*w', C) by bicubic interpolation (identity when sizes agree).

    mode "size" resizes to exactly dst; "dino_offset" passes scale_factor=(dst + 0.1) / src as DINO and the
    official VFMTok decoder do (no recompute_scale_factor), so source positions step by src / (dst + 0.1).
    """
    if tuple(src) == tuple(dst):
        return table
    C = table.shape[-1]
    t = table.reshape(1, src[0], src[1], C).permute(0, 3, 1, 2)
    if mode == "dino_offset":
        t = F.interpolate(t, scale_factor=((dst[0] + 0.1) / src[0], (dst[1] + 0.1) / src[1]), mode="bicubic",
                          align_corners=False)
        if tuple(t.shape[-2:]) != tuple(dst):
            raise ValueError(f"dino_offset resize of {tuple(src)} gave {tuple(t.shape[-2:])}, not {tuple(dst)}")
    elif mode == "size":
        t = F.interpolate(t, size=dst, mode="bicubic", align_corners=False)
    else:
        raise ValueError(f"unknown position-table resize mode {mode!r}; choose from {', '.join(POS_INTERP_MODES)}")
    return t.permute(0, 2, 3, 1).reshape(1, dst[0] * dst[1], C)
