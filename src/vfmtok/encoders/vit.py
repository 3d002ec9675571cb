"""Vision-transformer foundation models (timm; optionally transformers) as frozen multi-level encoders.

Levels are the patch tokens after blocks depth/4, depth/2, 3*depth/4 (raw residual stream) and after the
last block passed through the final norm (the semantic target). CLS and register tokens are dropped.
For DINOv2 ViT-L/14-reg4 at 336 px: blocks 6/12/18/24 (1-indexed), 4 x (B, 1024, 24, 24).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from vfmtok.encoders.base import EncoderSpec, FrozenEncoder
from vfmtok.utils.errors import VFMTokError, require


@dataclass(frozen=True)
class ViTEntry:
    """A registry row: timm model (with pretrained tag), default input size, family name for messages."""

    timm_name: str
    input_size: int
    family: str


VIT_MODELS = {
    "dinov2_vits14": ViTEntry("vit_small_patch14_dinov2.lvd142m", 336, "DINOv2"),
    "dinov2_vitb14": ViTEntry("vit_base_patch14_dinov2.lvd142m", 336, "DINOv2"),
    "dinov2_vits14_reg": ViTEntry("vit_small_patch14_reg4_dinov2.lvd142m", 336, "DINOv2"),
    "dinov2_vitb14_reg": ViTEntry("vit_base_patch14_reg4_dinov2.lvd142m", 336, "DINOv2"),
    "dinov2_vitl14_reg": ViTEntry("vit_large_patch14_reg4_dinov2.lvd142m", 336, "DINOv2"),
    "clip_vitb16": ViTEntry("vit_base_patch16_clip_224.openai", 224, "CLIP"),
    "siglip_vitb16": ViTEntry("vit_base_patch16_siglip_224.webli", 224, "SigLIP"),
    "siglip2_vitb16": ViTEntry("vit_base_patch16_siglip_224.v2_webli", 224, "SigLIP2"),
}

_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_FOLDER_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin", "open_clip_model.safetensors")


def level_block_indices(depth: int) -> list[int]:
    """0-indexed blocks whose outputs form the 4 levels: depth/4, depth/2, 3depth/4, depth (1-indexed)."""
    require(depth >= 4, f"a ViT encoder needs depth >= 4 for 4 levels, got {depth}")
    return [depth // 4 - 1, depth // 2 - 1, 3 * depth // 4 - 1, depth - 1]


def _level_names(blocks: list[int]) -> list[str]:
    return [f"block{b + 1}" for b in blocks[:-1]] + ["final_norm"]


def find_timm_weights(timm_name: str, weights_path: str | Path | None) -> Path | None:
    """A local weight file: `weights_path` (file, or folder holding one) or the Hugging Face cache; None if absent."""
    if weights_path is not None:
        p = Path(weights_path)
        if p.is_dir():
            for f in _FOLDER_FILES:
                if (p / f).is_file():
                    return p / f
            raise VFMTokError(f"weights folder {p} holds none of {', '.join(_FOLDER_FILES)}")
        if not p.is_file():
            raise VFMTokError(f"weights file not found: {p}")
        require(p.suffix in _WEIGHT_SUFFIXES, f"weights file {p} should end in one of {', '.join(_WEIGHT_SUFFIXES)}")
        return p
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(timm_name)
    if cfg is None or not cfg.hf_hub_id:
        return None
    names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
    for name in names:
        hit = try_to_load_from_cache(cfg.hf_hub_id, name)
        if isinstance(hit, (str, os.PathLike)) and Path(hit).is_file():
            return Path(hit)
    return None


def _hub_id(timm_name: str) -> str:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(timm_name)
    return cfg.hf_hub_id if cfg is not None and cfg.hf_hub_id else f"timm/{timm_name}"


class TimmViTEncoder(FrozenEncoder):
    """A timm VisionTransformer returning 4 levels of patch tokens as (B, C, H/p, W/p) maps."""

    def __init__(self, name: str, entry: ViTEntry, pretrained: bool = True, image_size: int | None = None,
                 weights_path: str | Path | None = None):
        import timm

        file = None
        if pretrained:
            file = find_timm_weights(entry.timm_name, weights_path)
            if file is None:
                raise VFMTokError(
                    f"{entry.family} weights not found for '{name}': run `hf download {_hub_id(entry.timm_name)}` "
                    f"(Hugging Face cache) or pass weights_path=<local .safetensors/.pth/.bin>"
                )
        kwargs = dict(num_classes=0, dynamic_img_size=True)
        try:
            if file is not None:
                # weight_init="skip": no point in timm's (slow) random init of weights about to be overwritten
                model = timm.create_model(entry.timm_name, pretrained=True, weight_init="skip",
                                          pretrained_cfg_overlay=dict(file=str(file)), **kwargs)
            else:
                model = timm.create_model(entry.timm_name, pretrained=False, **kwargs)
        except (RuntimeError, KeyError, ValueError, OSError) as e:
            raise VFMTokError(f"cannot build '{name}' from {file or 'random init'}: {str(e).splitlines()[0]}") from None
        patch = model.patch_embed.patch_size[0]
        size = entry.input_size if image_size is None else int(image_size)
        require(size > 0 and size % patch == 0, f"{name}: image size must be a positive multiple of the patch size {patch}, got {size}")
        blocks = level_block_indices(len(model.blocks))
        dim = model.embed_dim
        cfg = model.pretrained_cfg
        spec = EncoderSpec(
            name=name, input_size=size, mean=tuple(float(v) for v in cfg["mean"]),
            std=tuple(float(v) for v in cfg["std"]), level_names=_level_names(blocks),
            channels=[dim] * 4, strides=[patch] * 4, target_channels=dim, target_stride=patch,
            extra={"timm_name": entry.timm_name, "prefix_tokens": int(model.num_prefix_tokens),
                   "blocks": [b + 1 for b in blocks], "weights": "pretrained" if file else "random"},
        )
        super().__init__(spec, pretrained)
        self.model = model
        self.blocks = blocks
        self.patch = patch
        self._freeze()

    def _features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        b, _, h, w = x.shape
        # NLC keeps LayerNorm on the channel axis; prefix (CLS/register) tokens are already removed.
        inter = self.model.forward_intermediates(x, indices=self.blocks, norm=False, output_fmt="NLC",
                                                 intermediates_only=True, stop_early=True)
        inter[-1] = self.model.norm(inter[-1])  # per-token norm: same as norming all tokens then dropping prefix
        gh, gw = h // self.patch, w // self.patch
        levels = [t.reshape(b, gh, gw, t.shape[-1]).permute(0, 3, 1, 2).contiguous() for t in inter]
        return levels, levels[-1]


def make_vit_factory(name: str):
    """Registry factory for the timm ViT `name` (see VIT_MODELS)."""
    entry = VIT_MODELS[name]

    def factory(pretrained: bool = True, image_size: int | None = None, weights_path: str | Path | None = None,
                **kw) -> TimmViTEncoder:
        require(not kw, f"{name} takes no options {sorted(kw)}")
        return TimmViTEncoder(name, entry, pretrained, image_size, weights_path)

    factory.__doc__ = f"{entry.family} {entry.timm_name} via timm, default input {entry.input_size} px."
    return factory


class HFDinov2Encoder(FrozenEncoder):
    """A transformers DINOv2 (with or without registers) from a local model folder, same 4-level rule."""

    def __init__(self, pretrained: bool = True, image_size: int | None = None,
                 weights_path: str | Path | None = None):
        try:
            from transformers import AutoConfig, AutoModel
        except ImportError:
            raise VFMTokError("hf_dinov2 needs the `transformers` package (pip install 'vfmtok[hf]')") from None
        folder = Path(weights_path) if weights_path is not None else None
        if folder is None or not (folder / "config.json").is_file():
            raise VFMTokError(
                "hf_dinov2 needs weights_path=<local transformers model folder with config.json>, e.g. "
                "`hf download facebook/dinov2-with-registers-large --local-dir weights/dinov2-reg-l`"
            )
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        require(config.model_type in ("dinov2", "dinov2_with_registers"),
                f"{folder} holds a '{config.model_type}' model, expected dinov2 or dinov2_with_registers")
        if pretrained:
            model = AutoModel.from_pretrained(folder, local_files_only=True)
        else:
            model = AutoModel.from_config(config)
        mean, std = _hf_mean_std(folder)
        patch = int(config.patch_size)
        size = 336 if image_size is None else int(image_size)
        require(size > 0 and size % patch == 0, f"hf_dinov2: image size must be a multiple of {patch}, got {size}")
        blocks = level_block_indices(int(config.num_hidden_layers))
        dim = int(config.hidden_size)
        prefix = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        spec = EncoderSpec(
            name="hf_dinov2", input_size=size, mean=mean, std=std, level_names=_level_names(blocks),
            channels=[dim] * 4, strides=[patch] * 4, target_channels=dim, target_stride=patch,
            extra={"folder": str(folder), "model_type": config.model_type, "prefix_tokens": prefix,
                   "blocks": [b + 1 for b in blocks]},
        )
        super().__init__(spec, pretrained)
        self.model = model
        self.blocks = blocks
        self.patch = patch
        self.prefix = prefix
        self._freeze()

    def _features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        b, _, h, w = x.shape
        out = self.model(pixel_values=x, output_hidden_states=True)
        # hidden_states[0] is the embedding output, hidden_states[k] the output of block k (1-indexed).
        toks = [out.hidden_states[i + 1] for i in self.blocks[:-1]] + [out.last_hidden_state]
        gh, gw = h // self.patch, w // self.patch
        levels = [t[:, self.prefix:].reshape(b, gh, gw, -1).permute(0, 3, 1, 2).contiguous() for t in toks]
        return levels, levels[-1]


def _hf_mean_std(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """image_mean/image_std from the folder's preprocessor_config.json, else ImageNet's."""
    from vfmtok.encoders.cnn import IMAGENET_MEAN, IMAGENET_STD
    from vfmtok.utils.io import read_json

    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        cfg = read_json(pre)
        if "image_mean" in cfg and "image_std" in cfg:
            return tuple(float(v) for v in cfg["image_mean"]), tuple(float(v) for v in cfg["image_std"])
    return IMAGENET_MEAN, IMAGENET_STD


def hf_dinov2(pretrained: bool = True, image_size: int | None = None, weights_path: str | Path | None = None,
              **kw) -> HFDinov2Encoder:
    """DINOv2 from a local transformers folder (`weights_path`), default input 336 px."""
    require(not kw, f"hf_dinov2 takes no options {sorted(kw)}")
    return HFDinov2Encoder(pretrained, image_size, weights_path)
