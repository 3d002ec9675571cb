"""Tensor <-> uint8 image conversions and PNG grids (written atomically)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vfmtok.utils.atomic import write_with


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) in [-1,1] -> uint8 (B,H,W,3) CPU tensor: x*127.5+128, clamped, truncated (LlamaGen / VFMTok's rule).

    The one quantisation of every image vfmtok writes or scores (samples, reconstructions, rFID inputs): it is
    round-half-up of (x+1)*127.5, so a uint8 image mapped to [-1,1] and back is unchanged.
    """
    x = (images.detach().float().cpu() * 127.5 + 128.0).clamp_(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous()


def make_grid(images: np.ndarray, ncol: int, pad: int = 2) -> np.ndarray:
    """uint8 (B,H,W,3) -> one uint8 grid image with `ncol` columns and white padding."""
    B, H, W, _ = images.shape
    nrow = (B + ncol - 1) // ncol
    grid = np.full((nrow * (H + pad) + pad, ncol * (W + pad) + pad, 3), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, ncol)
        grid[pad + r * (H + pad): pad + r * (H + pad) + H, pad + c * (W + pad): pad + c * (W + pad) + W] = img
    return grid


def save_png(path: str | os.PathLike, image: np.ndarray, sync_dir: bool = True) -> Path:
    """Write a uint8 HWC array as PNG atomically (`sync_dir`: see utils.atomic.atomic_path)."""
    return write_with(path, lambda f: Image.fromarray(image).save(f, format="PNG"), needed=image.nbytes,
                      sync_dir=sync_dir)


def save_pairs_grid(path: str | os.PathLike, originals: torch.Tensor, recons: torch.Tensor, pairs_per_row: int = 4) -> Path:
    """PNG grid of (original | reconstruction) pairs side by side."""
    a, b = to_uint8(originals).numpy(), to_uint8(recons).numpy()
    inter = np.stack([a, b], axis=1).reshape(-1, *a.shape[1:])
    return save_png(path, make_grid(inter, ncol=2 * pairs_per_row))
