"""Per-image reconstruction metrics (PSNR, SSIM) and codebook usage / perplexity over a whole set.

Images are quantised with `vfmtok.utils.images.to_uint8` before any metric (what a saved PNG holds).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vfmtok.tokenizer.quantizer import histogram_stats

SSIM_DESCRIPTION = "SSIM: Gaussian window 11x11 sigma 1.5, K1=0.01 K2=0.03, on [0,1] RGB (mean over channels), data_range=1"
SSIM_PAPER_NOTE = "the VFMTok code used skimage SSIM with data_range=2.0 on [0,1] images, which gives higher values"
PSNR_DESCRIPTION = "PSNR: per image on [0,1] (data_range=1, capped at 100 dB), then averaged"


def uint8_to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B,H,W,3) -> float64 (B,3,H,W) in [0,1]."""
    return images.permute(0, 3, 1, 2).double() / 255.0


def uint8_to_signed(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B,H,W,3) -> float32 (B,3,H,W) in [-1,1]."""
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR (B,) in dB of images (B,C,H,W), capped at 100 dB (identical images)."""
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1).clamp_min(1e-10 * data_range ** 2)
    return 10.0 * torch.log10(data_range ** 2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float64) -> torch.Tensor:
    ax = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(ax ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, win: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM (B,) of (B,C,H,W) images: Gaussian-weighted, population statistics, averaged over
    the valid region and channels (the skimage `gaussian_weights=True` definition)."""
    x, y = x.double(), y.double()
    c = x.shape[1]
    g = _gaussian_window(win, sigma).to(x.device)
    kernel = (g[:, None] * g[None, :]).expand(c, 1, win, win).contiguous()

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=c)  # 'valid' region = skimage's filter + crop of (win-1)/2 pixels

    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx * mx, filt(y * y) - my * my, filt(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


class CodeUsage:
    """Histogram of token ids over a whole set: usage (unique / codebook size) and perplexity."""

    def __init__(self, codebook_size: int):
        self.codebook_size = int(codebook_size)
        self.counts = torch.zeros(self.codebook_size, dtype=torch.long)

    def update(self, ids: torch.Tensor) -> None:
        """Add a batch of ids (any shape)."""
        flat = ids.detach().reshape(-1).cpu().long()
        if flat.numel() and (flat.min() < 0 or flat.max() >= self.codebook_size):
            raise ValueError(f"token id out of range [0, {self.codebook_size}): {int(flat.min())}..{int(flat.max())}")
        self.counts += torch.bincount(flat, minlength=self.codebook_size)

    def summary(self) -> dict[str, float]:
        """{'codebook_usage': fraction used, 'codes_used': int, 'perplexity': exp(entropy), 'entropy_bits'}."""
        return histogram_stats(self.counts)
