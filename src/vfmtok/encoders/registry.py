"""Name -> factory for every frozen encoder; `create_encoder` is the one way to build one."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from vfmtok.encoders.base import FrozenEncoder
from vfmtok.encoders.cnn import alexnet_imagenet, vgg16_imagenet
from vfmtok.encoders.vit import VIT_MODELS, hf_dinov2, make_vit_factory
from vfmtok.utils.registry import Registry

ENCODERS: Registry[Callable[..., FrozenEncoder]] = Registry("encoder", {
    **{name: make_vit_factory(name) for name in VIT_MODELS},
    "hf_dinov2": hf_dinov2,
    "vgg16_imagenet": vgg16_imagenet,
    "alexnet_imagenet": alexnet_imagenet,
}, sort_names=True)

# Encoders whose pretrained weights ship with the install (`vfmtok fetch-weights`); the rest need a download.
OFFLINE_ENCODERS = ("vgg16_imagenet", "alexnet_imagenet")


def list_encoders() -> list[str]:
    """Registered encoder names, sorted."""
    return ENCODERS.names()


def create_encoder(name: str, pretrained: bool = True, image_size: int | None = None,
                   weights_path: str | Path | None = None, **kw) -> FrozenEncoder:
    """Build the frozen encoder `name` (eval mode, no grads); `image_size` overrides its input size."""
    return ENCODERS.pick(name)(pretrained=pretrained, image_size=image_size, weights_path=weights_path, **kw)
