"""Official VFMTok tokenizer (CVMI-Lab/VFMTok2 `tokenizer/vfmtok/`) and DINOv2 (facebookresearch layout) -> vfmtok.

Key names and shapes read from the official code: `VQModel` (`encode_transformer`, `slot_quantize`,
`pre_slots_quant`, `post_slots_quant`, `decode_transformer`, `decoder`), its `Encoder`/`Decoder` in
`layers.py`, the deformable layers in `commons/modules/deformable_transformer.py` and the conv decoder in
`vq_model.py`. The official trainer drops every key containing 'backbone' (the frozen DINOv2) when saving.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch

from vfmtok.official.reading import take
from vfmtok.tokenizer.config import TokenizerConfig
from vfmtok.tokenizer.layers import swiglu_hidden
from vfmtok.utils.errors import VFMTokError

# (embed dim, depth, registers) of a facebookresearch DINOv2 file -> vfmtok encoder name (all patch 14).
DINOV2_ARCHS = {
    (384, 12, 0): "dinov2_vits14", (768, 12, 0): "dinov2_vitb14",
    (384, 12, 4): "dinov2_vits14_reg", (768, 12, 4): "dinov2_vitb14_reg", (1024, 24, 4): "dinov2_vitl14_reg",
}
# Fixed in the official code (`configs/vfmtok/vfmtok_config.yaml`, `DeformableTransformerEncoder`): 8 heads in both
# transformers, pixel patch 16, 336 px images. Head counts leave no trace in the weights' shapes.
OFFICIAL_HEADS = 8
OFFICIAL_PATCH = 16
OFFICIAL_IMAGE_SIZE = 336
_RES = {"norm1": "body.0", "conv1": "body.2", "norm2": "body.3", "conv2": "body.5", "nin_shortcut": "skip"}


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


def is_official_tokenizer(state: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict has the official VQModel's top-level parts."""
    return any(k.startswith("decode_transformer.") for k in state) and "slot_quantize.embedding.weight" in state


def dinov2_arch(state: dict[str, torch.Tensor], path: str | Path) -> tuple[str, int]:
    """(vfmtok encoder name, embed dim) of a facebookresearch DINOv2 state dict."""
    if "cls_token" not in state or "patch_embed.proj.weight" not in state:
        raise VFMTokError(f"{path} is not a DINOv2 checkpoint in facebookresearch layout (no cls_token/patch_embed)")
    dim = int(state["cls_token"].shape[-1])
    depth = _count(state, r"blocks\.(?:\d+\.)?(\d+)\.norm1\.weight")
    regs = int(state["register_tokens"].shape[1]) if "register_tokens" in state else 0
    patch = int(state["patch_embed.proj.weight"].shape[-1])
    name = DINOV2_ARCHS.get((dim, depth, regs)) if patch == 14 else None
    if name is None:
        known = "; ".join(f"{n}: dim {d}, {b} blocks, {r} registers" for (d, b, r), n in DINOV2_ARCHS.items())
        raise VFMTokError(f"{path} is a DINOv2 of embed dim {dim}, {depth} blocks, {regs} registers, patch {patch}; "
                          f"supported: {known}")
    return name, dim


def dinov2_to_timm(state: dict[str, torch.Tensor], timm_state: dict[str, torch.Tensor],
                   path: str | Path) -> dict[str, torch.Tensor]:
    """facebookresearch DINOv2 keys -> the timm model's (`timm_state` gives target names and shapes)."""
    out: dict[str, torch.Tensor] = {}
    no_embed_class = timm_state["pos_embed"].shape[1] == state["pos_embed"].shape[1] - 1
    for k, v in state.items():
        if k == "mask_token":  # masked-image-modelling token: unused at inference, timm has none
            continue
        if k == "register_tokens":
            out["reg_token"] = v
        elif k == "cls_token" and no_embed_class:
            # timm adds no position to prefix tokens; DINOv2 adds pos_embed[0] to CLS, so fold it in here
            out[k] = v + state["pos_embed"][:, :1]
        elif k == "pos_embed" and no_embed_class:
            out[k] = v[:, 1:]
        else:
            k = re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k)  # block_chunks > 0 nests blocks in chunks
            out[k.replace("mlp.w12.", "mlp.fc1.").replace("mlp.w3.", "mlp.fc2.")] = v
    missing = sorted(set(timm_state) - set(out))
    extra = sorted(set(out) - set(timm_state))
    bad = [k for k in out if k in timm_state and tuple(out[k].shape) != tuple(timm_state[k].shape)]
    if missing or extra or bad:
        what = (f"missing {missing[:2]}" if missing else f"unexpected {extra[:2]}" if extra
                else f"shape of {bad[0]} {tuple(out[bad[0]].shape)} vs {tuple(timm_state[bad[0]].shape)}")
        raise VFMTokError(f"{path} does not map onto the timm DINOv2 model: {what}")
    return {k: v.float().contiguous() for k, v in out.items()}


def infer_tokenizer_config(state: dict[str, torch.Tensor], args: dict[str, Any], encoder: str, enc_dim: int,
                           patch: int, path: str | Path) -> TokenizerConfig:
    """The vfmtok TokenizerConfig of an official state dict (shapes + the trainer's args)."""
    g = lambda k: take(state, k, path)  # noqa: E731
    n_tok, width = g("encode_transformer.carrier_tokens").shape[1:]
    levels = _count(state, r"encode_transformer\.projectors\.(\d+)\.")
    in_ch = int(g("encode_transformer.projectors.0.mlp.0.weight").shape[1])
    if in_ch != enc_dim:
        raise VFMTokError(f"the tokenizer's level projectors take {in_ch} channels but the DINOv2 file has embed dim "
                          f"{enc_dim}: pass the DINOv2 the tokenizer was trained with (ViT-L/14-reg4 has 1024)")
    feat = int(g("decode_transformer.proj.weight").shape[0])
    if feat != enc_dim:
        raise VFMTokError(f"the tokenizer predicts {feat}-channel features but the DINOv2 file has embed dim {enc_dim}")
    aw = int(g("encode_transformer.transformer.layers.0.cross_attn.attention_weights.weight").shape[0])
    if aw % (levels * OFFICIAL_HEADS):
        raise VFMTokError(f"{path}: attention_weights rows {aw} do not split into {levels} levels x 8 heads")
    table = int(g("decode_transformer.position_embedding").shape[1]) - 1
    side = math.isqrt(table)
    dec_layers = "decode_transformer.transformer.layers"
    hidden = int(g(f"{dec_layers}.0.ffnet.w3.weight").shape[1]) if f"{dec_layers}.0.ffnet.w3.weight" in state else None
    if hidden is not None and hidden != swiglu_hidden(int(width)):
        raise VFMTokError(f"{path}: decoder SwiGLU hidden {hidden} != {swiglu_hidden(int(width))} for width {width}")
    res = _count(state, r"decoder\.conv_blocks\.0\.res\.(\d+)\.")
    n_up = _count(state, r"decoder\.conv_blocks\.(\d+)\.")
    chans = [int(g(f"decoder.conv_blocks.{j}.res.0.conv1.weight").shape[0]) for j in range(n_up)]
    ch = chans[-1]
    image_size = int(args.get("image_size") or OFFICIAL_IMAGE_SIZE)
    code = g("slot_quantize.embedding.weight")
    return TokenizerConfig(
        arch="vfmtok", image_size=image_size, encoder=encoder, encoder_pretrained=True,
        encoder_input_size=side * patch, levels=None, num_tokens=int(n_tok), width=int(width),
        enc_depth=_count(state, r"encode_transformer\.transformer\.layers\.(\d+)\."), enc_heads=OFFICIAL_HEADS,
        enc_points=aw // (levels * OFFICIAL_HEADS),
        enc_ffn=int(g("encode_transformer.transformer.layers.0.linear1.weight").shape[0]), query_causal=True,
        codebook_size=int(code.shape[0]), code_dim=int(code.shape[1]), commit_beta=0.25,
        dec_depth=_count(state, dec_layers.replace(".", r"\.") + r"\.(\d+)\."), dec_heads=OFFICIAL_HEADS,
        dec_causal=True, dec_registers=int(g("decode_transformer.register_tokens").shape[1]),
        dec_dropout=0.1, shared_mask_token=False, dec_anchor_init=False,
        feature_branch=True, dec_pos_interp="dino_offset", dec_feature_norm="feature",
        pix_ch=ch, pix_ch_mult=tuple(c // ch for c in reversed(chans)), pix_res_blocks=res, pix_attn=True,
    )


def map_tokenizer_state(state: dict[str, torch.Tensor], cfg: TokenizerConfig) -> dict[str, torch.Tensor]:
    """Official VQModel keys -> vfmtok VFMTok keys (frozen backbone and the usage buffer dropped)."""
    out: dict[str, torch.Tensor] = {}
    up_stride = cfg.pix_res_blocks + 2  # per level: res blocks, nn.Upsample, conv
    for k, v in state.items():
        if "backbone" in k or k == "slot_quantize.codebook_used":
            continue  # the official trainer leaves the backbone out; the usage window is a statistic
        nk = _map_key(k, up_stride)
        if nk is None:
            raise VFMTokError(f"unexpected key '{k}': not part of the official VFMTok tokenizer")
        if nk.endswith("|qkv"):
            nk = nk[:-4]
            out.setdefault(nk, {})[k.rsplit(".", 2)[-2]] = v  # collect q, k, v to concatenate below
            continue
        if k == "decode_transformer.position_embedding":
            out["decoder.cls_pos"], out["decoder.grid_pos"] = v[:, :1], v[:, 1:]
            continue
        out[nk] = v
    for k in [k for k, v in out.items() if isinstance(v, dict)]:
        parts = out[k]
        if set(parts) != {"q", "k", "v"}:
            raise VFMTokError(f"incomplete attention block for {k}: has {sorted(parts)}")
        out[k] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return {k: v.float().contiguous() for k, v in out.items()}


_EL = r"encode_transformer\.transformer\.layers\.(\d+)\."  # one deformable encoder layer
_DL = r"decode_transformer\.transformer\.layers\.(\d+)\."  # one decoder ViT layer
_FIXED = [
    (r"encode_transformer\.projectors\.(\d+)\.mlp\.(\d+)\.(.+)", r"region.projectors.\1.\2.\3"),
    (r"encode_transformer\.norm_layers\.(\d+)\.(.+)", r"region.projectors.\1.5.\2"),
    (r"encode_transformer\.carrier_tokens", "region.queries"),
    (r"encode_transformer\.slots_pos", "region.query_pos"),
    (r"encode_transformer\.norm_pre1\.(.+)", r"region.norm_pre.\1"),
    (_EL + r"cross_attn\.(.+)", r"region.layers.\1.cross.\2"),
    (_EL + r"(norm[123])\.(.+)", r"region.layers.\1.\2.\3"),
    (_EL + r"linear1\.(.+)", r"region.layers.\1.ffn.0.\2"),
    (_EL + r"linear2\.(.+)", r"region.layers.\1.ffn.2.\2"),
    (_EL + r"self_attn\.([qkv])_proj\.(.+)", r"region.layers.\1.self_attn.\2.\3"),
    (_EL + r"self_attn\.out_proj\.(.+)", r"region.layers.\1.self_attn.proj.\2"),
    (r"slot_quantize\.embedding\.weight", "quantizer.embedding.weight"),
    (r"pre_slots_quant\.(.+)", r"pre_quant.\1"),
    (r"post_slots_quant\.(.+)", r"post_quant.\1"),
    (r"decode_transformer\.position_embedding", "decoder.grid_pos"),
    (r"decode_transformer\.slot_position_embedding", "decoder.token_pos"),
    (r"decode_transformer\.mask_embedding", "decoder.mask_pixel"),
    (r"decode_transformer\.mask_dino", "decoder.mask_feature"),
    (r"decode_transformer\.cls_token", "decoder.cls_token"),
    (r"decode_transformer\.register_tokens", "decoder.registers"),
    (r"decode_transformer\.norm_post1\.(.+)", r"decoder.norm_in.\1"),
    (r"decode_transformer\.norm_post2\.(.+)", r"decoder.norm_feature.\1"),
    (r"decode_transformer\.proj\.(.+)", r"decoder.feature_head.\1"),
    (_DL + r"(norm[12])\.(.+)", r"decoder.blocks.\1.\2.\3"),
    (_DL + r"attn1\.([qkv])_proj\.(.+)", r"decoder.blocks.\1.attn.\2.\3"),
    (_DL + r"attn1\.out_proj\.(.+)", r"decoder.blocks.\1.attn.proj.\2"),
    (_DL + r"ffnet\.(w12|w3)\.(.+)", r"decoder.blocks.\1.mlp.\2.\3"),
    (r"decoder\.conv_in\.(.+)", r"pixel_decoder.conv_in.\1"),
    (r"decoder\.norm_out\.(.+)", r"pixel_decoder.out.0.\1"),
    (r"decoder\.conv_out\.(.+)", r"pixel_decoder.out.2.\1"),
    (r"decoder\.mid\.1\.norm\.(.+)", r"pixel_decoder.mid.1.norm.\1"),
    (r"decoder\.mid\.1\.proj_out\.(.+)", r"pixel_decoder.mid.1.proj.\1"),
    (r"decoder\.mid\.1\.([qkv])\.(weight|bias)", r"pixel_decoder.mid.1.qkv.\2|qkv"),
]
_FIXED = [(re.compile(p + "$"), r) for p, r in _FIXED]


def _map_key(k: str, up_stride: int) -> str | None:
    for rx, rep in _FIXED:
        if rx.match(k):
            return rx.sub(rep, k)
    m = re.match(r"decoder\.mid\.([02])\.(\w+)\.(weight|bias)$", k)
    if m and m.group(2) in _RES:
        return f"pixel_decoder.mid.{m.group(1)}.{_RES[m.group(2)]}.{m.group(3)}"
    m = re.match(r"decoder\.conv_blocks\.(\d+)\.res\.(\d+)\.(\w+)\.(weight|bias)$", k)
    if m and m.group(3) in _RES:
        idx = int(m.group(1)) * up_stride + int(m.group(2))
        return f"pixel_decoder.up.{idx}.{_RES[m.group(3)]}.{m.group(4)}"
    m = re.match(r"decoder\.conv_blocks\.(\d+)\.upsample\.conv\.(weight|bias)$", k)
    if m:
        return f"pixel_decoder.up.{int(m.group(1)) * up_stride + up_stride - 1}.{m.group(2)}"
    return None
