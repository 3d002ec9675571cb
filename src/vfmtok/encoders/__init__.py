"""Frozen pretrained encoders (ViT foundation models, ImageNet CNNs); their feature cache is `vfmtok.data.feature_cache`."""

from vfmtok.encoders.base import EncoderOutput, EncoderSpec, FrozenEncoder, drop_frozen_state, frozen_prefixes
from vfmtok.encoders.registry import ENCODERS, OFFLINE_ENCODERS, create_encoder, list_encoders

__all__ = [
    "ENCODERS", "OFFLINE_ENCODERS", "EncoderOutput", "EncoderSpec", "FrozenEncoder", "create_encoder",
    "drop_frozen_state", "frozen_prefixes", "list_encoders",
]
