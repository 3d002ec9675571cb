"""Frozen pretrained encoders (ViT foundation models, ImageNet CNNs) and their feature cache."""

from vfmtok.encoders.base import EncoderOutput, EncoderSpec, FrozenEncoder, drop_frozen_state, frozen_prefixes
from vfmtok.encoders.cache import CachedFeatureDataset, build_feature_cache, check_compatible
from vfmtok.encoders.registry import ENCODERS, OFFLINE_ENCODERS, create_encoder, list_encoders

__all__ = [
    "ENCODERS", "OFFLINE_ENCODERS", "CachedFeatureDataset", "EncoderOutput", "EncoderSpec", "FrozenEncoder",
    "build_feature_cache", "check_compatible", "create_encoder", "drop_frozen_state", "frozen_prefixes",
    "list_encoders",
]
