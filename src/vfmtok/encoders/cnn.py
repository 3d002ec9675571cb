"""ImageNet CNNs (torchvision VGG16 / AlexNet layouts) as frozen encoders, and the one conv-weight loader.

Weights come offline from `vgg16.ckpt` / `alexnet.ckpt` (torchvision ImageNet convs stored as flax HWIO
kernels, plus the LPIPS v0.1 linear heads), or from a torchvision-format state dict (`features.N.weight`).
Layer indices below are those of torchvision's `vgg16().features` / `alexnet().features`, so a
torchvision state dict loads key for key.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vfmtok.encoders.base import EncoderSpec, FrozenEncoder
from vfmtok.utils.errors import VFMTokError, require
from vfmtok.utils.layout import cpu_channels_last

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision cfg "D": conv widths, "M" = 2x2 max-pool.
_VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]

# Named ReLU outputs -> index in the torchvision `features` Sequential.
VGG16_RELUS = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22, "relu5_3": 29}
ALEXNET_RELUS = {"relu1": 1, "relu2": 4, "relu3": 7, "relu4": 9, "relu5": 11}

_FLAX_PREFIX = {"vgg16": "VGG16_0", "alexnet": "AlexNet_0"}
_WEIGHT_FILE = {"vgg16": "vgg16.ckpt", "alexnet": "alexnet.ckpt"}


def vgg16_features(n_layers: int = 31) -> nn.Sequential:
    """The first `n_layers` modules of torchvision's `vgg16().features` (same indices, random init)."""
    layers: list[nn.Module] = []
    c_in = 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c_in, v, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            c_in = v
    return nn.Sequential(*layers[:n_layers])


def alexnet_features(n_layers: int = 13) -> nn.Sequential:
    """The first `n_layers` modules of torchvision's `alexnet().features` (same indices, random init)."""
    layers = [
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
    ]
    return nn.Sequential(*layers[:n_layers])


FEATURE_BUILDERS = {"vgg16": vgg16_features, "alexnet": alexnet_features}


def hwio_to_oihw(kernel: np.ndarray) -> torch.Tensor:
    """Flax conv kernel (kh, kw, in, out) -> torch (out, in, kh, kw); both are cross-correlations, no flip."""
    require(kernel.ndim == 4, f"expected a 4-D HWIO conv kernel, got shape {kernel.shape}")
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))).float()


def _conv_positions(arch: str) -> list[int]:
    """Indices of the Conv2d modules in the full torchvision `features` Sequential."""
    with torch.device("meta"):  # layout only: no memory, no init cost
        feats = FEATURE_BUILDERS[arch]()
    return [i for i, m in enumerate(feats) if isinstance(m, nn.Conv2d)]


def read_conv_weights(arch: str, path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Torchvision-style `features` state ({'0.weight': OIHW, '0.bias': ...}) for `arch`.

    `path`: a flax pickle (.ckpt, HWIO) or a torch/safetensors state dict with `features.N.*` or `N.*` keys;
    default: the offline `vgg16.ckpt` / `alexnet.ckpt` found by `vfmtok.utils.weights.find_weight`.
    """
    require(arch in FEATURE_BUILDERS, f"unknown CNN '{arch}' (known: {', '.join(FEATURE_BUILDERS)})")
    if path is None:
        from vfmtok.utils.weights import find_weight

        path = find_weight(_WEIGHT_FILE[arch])
    path = Path(path)
    if not path.is_file():
        raise VFMTokError(f"{arch} weights not found: {path}")
    if path.suffix == ".ckpt":
        return _from_flax(arch, path)
    return _from_torch(arch, path)


def _from_flax(arch: str, path: Path, flat: dict[str, np.ndarray] | None = None) -> dict[str, torch.Tensor]:
    from vfmtok.utils.weights import load_flax_pickle

    flat = load_flax_pickle(path) if flat is None else flat
    prefix = _FLAX_PREFIX[arch]
    pat = re.compile(rf"^{prefix}/Conv_(\d+)/kernel$")
    # Flax numbers convs in call order; sort numerically (Conv_10 after Conv_9).
    order = sorted(int(m.group(1)) for k in flat if (m := pat.match(k)))
    positions = _conv_positions(arch)
    require(order == list(range(len(positions))),
            f"{path} holds convs {order} under {prefix}/, expected Conv_0..Conv_{len(positions) - 1} for {arch}")
    state = {}
    for k, pos in zip(order, positions):
        state[f"{pos}.weight"] = hwio_to_oihw(flat[f"{prefix}/Conv_{k}/kernel"])
        state[f"{pos}.bias"] = torch.from_numpy(np.asarray(flat[f"{prefix}/Conv_{k}/bias"])).float()
    return state


def _from_torch(arch: str, path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(str(path))
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch/safetensors raise many types for bad files
        raise VFMTokError(f"cannot read {arch} weights {path}: {str(e).splitlines()[0]}") from None
    if isinstance(raw, dict) and "state_dict" in raw and isinstance(raw["state_dict"], dict):
        raw = raw["state_dict"]
    state = {}
    for k, v in raw.items():
        k = k[len("features."):] if k.startswith("features.") else k
        if re.match(r"^\d+\.(weight|bias)$", k):
            state[k] = v.float()
    require(len(state) == 2 * len(_conv_positions(arch)),
            f"{path} is not a torchvision {arch} state dict: found {len(state)} features.N.weight/bias tensors")
    return state


def load_conv_weights(features: nn.Sequential, arch: str, path: str | Path | None = None,
                      state: dict[str, torch.Tensor] | None = None) -> None:
    """Copy pretrained convs (read from `path`, or given as `state`) into a possibly truncated `features`."""
    state = read_conv_weights(arch, path) if state is None else state
    own = features.state_dict()
    sub = {k: state[k] for k in own if k in state}
    missing = [k for k in own if k not in sub]
    if missing:
        raise VFMTokError(f"{arch} weights lack {missing[0]}")
    for k, v in sub.items():
        require(tuple(v.shape) == tuple(own[k].shape),
                f"{arch} weight {k}: file has shape {tuple(v.shape)}, network expects {tuple(own[k].shape)}")
    features.load_state_dict(sub, strict=True)


def read_lpips_weights(arch: str, path: str | Path | None = None) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """Conv state and the five LPIPS v0.1 1x1 heads (NetLinLayer_i, as (1, C, 1, 1)) from one flax pickle."""
    from vfmtok.utils.weights import find_weight, load_flax_pickle

    path = Path(path) if path is not None else find_weight(_WEIGHT_FILE[arch])
    flat = load_flax_pickle(path)  # read once: the VGG file is ~60 MB
    heads = []
    for i in range(5):
        key = f"NetLinLayer_{i}/Conv_0/kernel"
        require(key in flat, f"{path} has no LPIPS head {key}")
        heads.append(hwio_to_oihw(flat[key]))
    return _from_flax(arch, path, flat), heads


def conv_out_hw(features: nn.Sequential, size: int, upto: int) -> tuple[int, int]:
    """Exact spatial size after module `upto` (inclusive) for a square input (floor arithmetic of conv/pool)."""
    h = size
    for m in list(features)[: upto + 1]:
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
            k, s, p = (_pair(m.kernel_size)[0], _pair(m.stride)[0], _pair(m.padding)[0])
            h = (h + 2 * p - k) // s + 1
    return (h, h)


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class CNNEncoder(FrozenEncoder):
    """Frozen ImageNet CNN returning chosen ReLU outputs; runs only the layers it needs."""

    def __init__(self, name: str, arch: str, levels: list[str], strides: list[int], pretrained: bool,
                 image_size: int, weights_path: str | Path | None = None):
        relus = VGG16_RELUS if arch == "vgg16" else ALEXNET_RELUS
        level_index = [relus[n] for n in levels]
        feats = FEATURE_BUILDERS[arch](max(level_index) + 1)  # stop after the last needed layer
        chans = [_channels_at(feats, i) for i in level_index]
        spec = EncoderSpec(
            name=name, input_size=image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD,
            level_names=list(levels), channels=chans, strides=list(strides),
            target_channels=chans[-1], target_stride=strides[-1],
            extra={"arch": arch, "weights": "imagenet" if pretrained else "random"},
        )
        super().__init__(spec, pretrained)
        self.level_index = level_index
        self.features = feats
        self.arch = arch
        if pretrained:
            load_conv_weights(self.features, arch, weights_path)
        self._freeze()

    def _features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = cpu_channels_last(x)
        out = []
        for i, m in enumerate(self.features):
            x = m(x)
            if i in self.level_index:
                out.append(x.contiguous())
        return out, out[-1]

    def _level_hw(self, size: int) -> list[tuple[int, int]]:
        return [conv_out_hw(self.features, size, i) for i in self.level_index]

    def _target_hw(self, size: int) -> tuple[int, int]:
        return self._level_hw(size)[-1]


def _channels_at(features: nn.Sequential, index: int) -> int:
    """Output channels of the last conv at or before `index`."""
    convs = [m for m in list(features)[: index + 1] if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def vgg16_imagenet(pretrained: bool = True, image_size: int | None = None, weights_path: str | Path | None = None,
                   **kw) -> CNNEncoder:
    """VGG16 (ImageNet): levels relu3_3 (256 ch, /4), relu4_3 (512, /8), relu5_3 (512, /16); target relu5_3."""
    _no_extra(kw, "vgg16_imagenet")
    size = 256 if image_size is None else int(image_size)
    require(size >= 32 and size % 16 == 0,
            f"vgg16_imagenet needs an image size that is a multiple of 16 (>= 32), got {size}")
    return CNNEncoder("vgg16_imagenet", "vgg16", ["relu3_3", "relu4_3", "relu5_3"], [4, 8, 16],
                      pretrained, size, weights_path)


def alexnet_imagenet(pretrained: bool = True, image_size: int | None = None, weights_path: str | Path | None = None,
                     **kw) -> CNNEncoder:
    """AlexNet (ImageNet): levels relu2 (192 ch, ~/8), relu3 (384, ~/16), relu5 (256, ~/16); target relu5.

    AlexNet's stride-4 11x11 stem and 3x3/2 pools do not divide evenly (224 px -> 27 and 13 cells), so
    the strides are nominal; `level_shapes()` gives the exact sizes.
    """
    _no_extra(kw, "alexnet_imagenet")
    size = 256 if image_size is None else int(image_size)
    require(size >= 64, f"alexnet_imagenet needs an image size >= 64, got {size}")
    return CNNEncoder("alexnet_imagenet", "alexnet", ["relu2", "relu3", "relu5"], [8, 16, 16],
                      pretrained, size, weights_path)


def _no_extra(kw: dict, name: str) -> None:
    require(not kw, f"{name} takes no options {sorted(kw)}")
