"""LPIPS v0.1 (Zhang et al. 2018) with VGG16 or AlexNet features; frozen weights, differentiable in the input."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vfmtok.encoders.cnn import ALEXNET_RELUS, FEATURE_BUILDERS, VGG16_RELUS, load_conv_weights, read_lpips_weights
from vfmtok.utils.errors import VFMTokError, require

_NETS = {"vgg": ("vgg16", VGG16_RELUS), "alex": ("alexnet", ALEXNET_RELUS)}
_EPS = 1e-10


class LPIPS(nn.Module):
    """Perceptual distance d(x, y) -> (B,) for images in [-1, 1]; use as a metric or as a training loss."""

    excluded_from_checkpoint = True  # pretrained and frozen: never saved with a model that holds it

    def __init__(self, net: str = "vgg", weights_path: str | Path | None = None):
        super().__init__()
        if net not in _NETS:
            raise VFMTokError(f"unknown LPIPS net '{net}'; choose one of: {', '.join(_NETS)}")
        arch, relus = _NETS[net]
        self.net = net
        self.taps = list(relus.values())  # 5 ReLU outputs (vgg: relu1_2..relu5_3, alex: relu1..relu5)
        self.features = FEATURE_BUILDERS[arch](max(self.taps) + 1)
        # weights_path: a flax pickle holding both the ImageNet convs and the LPIPS heads (vgg16.ckpt / alexnet.ckpt).
        require(weights_path is None or Path(weights_path).suffix == ".ckpt",
                f"LPIPS weights must be a vgg16.ckpt/alexnet.ckpt pickle (convs + linear heads), got {weights_path}")
        convs, heads = read_lpips_weights(arch, weights_path)
        load_conv_weights(self.features, arch, state=convs)
        self.heads = nn.ParameterList([nn.Parameter(h) for h in heads])
        # LPIPS "ScalingLayer": the [-1,1] input is shifted/scaled to ImageNet statistics.
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "LPIPS":
        """Stay in eval: the metric must not change with its parent's mode."""
        return super().train(False)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        x = (x - self.shift) / self.scale
        for i, m in enumerate(self.features):
            x = m(x)
            if i in self.taps:
                out.append(x)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distances (B,) between x and y, both (B,3,H,W) in [-1,1]; gradients flow to x and y."""
        require(x.shape == y.shape, f"LPIPS inputs must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        require(x.dim() == 4 and x.shape[1] == 3, f"LPIPS expects (B,3,H,W) images, got {tuple(x.shape)}")
        require(min(x.shape[-2:]) >= 32, f"LPIPS needs images of at least 32x32 px, got {tuple(x.shape[-2:])}")
        dtype = self.heads[0].dtype
        fx = self._taps(torch.cat([x, y]).to(dtype))  # one pass for both: same cost, half the launches
        total = x.new_zeros(x.shape[0], dtype=dtype)
        for f, w in zip(fx, self.heads):
            a, b = _unit_normalize(f).chunk(2)
            d = (a - b).pow(2)
            total = total + nn.functional.conv2d(d, w).mean(dim=(1, 2, 3))
        return total


def _unit_normalize(f: torch.Tensor) -> torch.Tensor:
    """f / (||f||_channels + 1e-10), as in LPIPS; the clamp keeps sqrt's gradient finite at all-zero positions."""
    norm = f.pow(2).sum(dim=1, keepdim=True).clamp_min(_EPS * _EPS).sqrt()
    return f / (norm + _EPS)
