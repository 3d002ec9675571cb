"""The frozen-encoder interface the tokenizer codes against: spec, output, and the base module."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from vfmtok.utils.errors import require


@dataclass
class EncoderSpec:
    """Static description of a frozen encoder: input preprocessing and the feature levels it returns."""

    name: str
    input_size: int  # images are resized to input_size x input_size before the network
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    level_names: list[str]
    channels: list[int]  # per level
    strides: list[int]  # per level, nominal, relative to input_size; level_shapes() is authoritative
    target_channels: int  # channels of the semantic target (feature-reconstruction loss)
    target_stride: int
    extra: dict = field(default_factory=dict)  # e.g. {"timm_name": ...}; informative only

    def to_dict(self) -> dict:
        """JSON-friendly dict (tuples become lists)."""
        return asdict(self)


@dataclass
class EncoderOutput:
    """Multi-level features (each (B, C_l, H_l, W_l), float32) and the semantic target (B, C_t, H_t, W_t)."""

    levels: list[torch.Tensor]
    target: torch.Tensor


class FrozenEncoder(nn.Module):
    """A pretrained network used as a fixed feature extractor: no gradients, always in eval mode.

    Subclasses pass their spec to `__init__`, build the network, implement `_features(x)` (x already
    resized and normalised; runs with autograd, so `_features(preprocess(x))` gives input gradients)
    and `_level_hw(size)`, then call `self._freeze()` at the end of `__init__`.
    Its weights never belong in a checkpoint (`excluded_from_checkpoint`); see `drop_frozen_state`.
    """

    excluded_from_checkpoint = True
    target_is_last_level = True  # the target is levels[-1] itself (lets the feature cache store it once)

    spec: EncoderSpec
    pretrained: bool

    def __init__(self, spec: EncoderSpec, pretrained: bool):
        super().__init__()
        self.spec = spec
        self.pretrained = pretrained
        self.register_buffer("_mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)

    def _freeze(self) -> None:
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "FrozenEncoder":
        """Ignore `mode`: a frozen encoder stays in eval (dropout off, fixed norms) whatever its parent does."""
        return super().train(False)

    # -- subclass hooks -------------------------------------------------------------------------
    def _features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Network forward on normalised input at spec.input_size; returns (levels, target)."""
        raise NotImplementedError

    def _level_hw(self, size: int) -> list[tuple[int, int]]:
        """Spatial size of each level for a square input of `size` px."""
        return [(size // s, size // s) for s in self.spec.strides]

    def _target_hw(self, size: int) -> tuple[int, int]:
        """Spatial size of the target for a square input of `size` px."""
        return (size // self.spec.target_stride, size // self.spec.target_stride)

    # -- public API ---------------------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[-1,1] images -> resized (bicubic, antialias) to input_size, mapped to [0,1], mean/std normalised."""
        require(images.dim() == 4 and images.shape[1] == 3,
                f"{self.spec.name}: expected images of shape (B,3,H,W), got {tuple(images.shape)}")
        dtype = self._mean.dtype
        x = images.to(device=self._mean.device, dtype=dtype)
        size = self.spec.input_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        x = (x.clamp(-1.0, 1.0) + 1.0) / 2.0
        return (x - self._mean) / self._std

    def forward(self, images: torch.Tensor) -> EncoderOutput:
        """Features of images in [-1,1], (B,3,H,W); levels and target are float32 and carry no graph."""
        with torch.no_grad():
            x = self.preprocess(images)
            levels, target = self._features(x)
        return EncoderOutput(levels=[lv.float() for lv in levels], target=target.float())

    def level_shapes(self) -> list[tuple[int, int, int]]:
        """(C, H, W) per level at spec.input_size."""
        hw = self._level_hw(self.spec.input_size)
        return [(c, h, w) for c, (h, w) in zip(self.spec.channels, hw)]

    def target_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the semantic target at spec.input_size."""
        h, w = self._target_hw(self.spec.input_size)
        return (self.spec.target_channels, h, w)

    def weights_fingerprint(self) -> str:
        """Short hash of ~4k evenly spaced values of every weight tensor: tells one set of weights from another."""
        h = hashlib.sha256()
        for name, p in self.named_parameters():
            flat = p.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 4096)][:4096]  # exact bytes: deterministic, and cheap for ViT-L
            h.update(f"{name}{tuple(p.shape)}".encode())
            h.update(sample.float().cpu().numpy().tobytes())
        return h.hexdigest()[:16]


def frozen_prefixes(model: nn.Module) -> list[str]:
    """State-dict prefixes ('encoder.', 'loss.lpips.') of every submodule marked `excluded_from_checkpoint`."""
    out = []
    for name, mod in model.named_modules():
        if name and getattr(mod, "excluded_from_checkpoint", False) and not any(name.startswith(p) for p in out):
            out.append(name + ".")
    return out


def drop_frozen_state(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copy of `state` without the keys of frozen submodules (pretrained encoders, LPIPS) of `model`."""
    prefixes = tuple(frozen_prefixes(model))
    if not prefixes:
        return dict(state)
    return {k: v for k, v in state.items() if not k.startswith(prefixes)}
