"""Official class-conditional GPTs (FoundationVision/LlamaGen `autoregressive/models/gpt.py`, as VFMTok uses it)
-> vfmtok GPT.

LlamaGen's `LabelEmbedder` has num_classes + 1 rows (the last is the CFG null class) only when it was built with
class dropout > 0; with dropout 0 it has num_classes rows and LlamaGen's generate() cannot guide it (the null id
is out of range). vfmtok's GPT always has the null row, so such a table gets a zero row appended and the import
records `null_class: "appended"`: guidance with it is not guidance with a trained null class.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch

from vfmtok.generator.gpt import GPTConfig, find_multiple
from vfmtok.official.reading import take
from vfmtok.utils.errors import VFMTokError

# (n_layer, dim) -> (LlamaGen/VFMTok preset name, n_head); heads leave no trace in the weights' shapes.
LLAMAGEN_PRESETS = {
    (12, 768): ("GPT-B", 12), (24, 1024): ("GPT-L", 16), (36, 1280): ("GPT-XL", 20), (48, 1536): ("GPT-XXL", 24),
    (48, 1920): ("GPT-2B", 32), (48, 2560): ("GPT-XXXL", 40), (22, 2048): ("GPT-1B", 32), (24, 3200): ("GPT-3B", 32),
    (32, 4096): ("GPT-7B", 32),
}
_LAYER = re.compile(r"layers\.(\d+)\.(attention\.wqkv|attention\.wo|feed_forward\.w[123]|attention_norm|ffn_norm)\.weight$")
_TOP = {"tok_embeddings.weight": "tok_emb.weight", "norm.weight": "norm.weight", "output.weight": "head.weight"}
# Not weights: the RoPE table some checkpoints carry, KV caches saved after setup_caches.
_SKIP = re.compile(r"(^freqs_cis$|\.kv_cache\.|^causal_mask$)")


def is_official_gpt(state: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict has LlamaGen's GPT keys."""
    return "tok_embeddings.weight" in state and "cls_embedding.embedding_table.weight" in state


def infer_gpt_config(state: dict[str, torch.Tensor], args: dict[str, Any], path: str | Path,
                     num_tokens: int | None = None, n_head: int | None = None) -> tuple[GPTConfig, str, bool]:
    """(GPTConfig, preset name, null row appended?) from the shapes and the trainer's args; `n_head` is needed
    only for a width/depth no LlamaGen preset has."""
    vocab, dim = take(state, "tok_embeddings.weight", path).shape
    n_layer = len({int(m.group(1)) for k in state if (m := _LAYER.match(k))})
    name, heads = LLAMAGEN_PRESETS.get((n_layer, dim), ("custom", None))
    if args.get("gpt_model") and name != "custom" and args["gpt_model"] != name:
        raise VFMTokError(f"{path}: args say {args['gpt_model']} but the weights have {n_layer} layers of width {dim} ({name})")
    n_head = n_head or heads
    if n_head is None:
        known = ", ".join(f"{n} ({l} x {d})" for (l, d), (n, _) in LLAMAGEN_PRESETS.items())
        raise VFMTokError(f"{path}: no LlamaGen preset has {n_layer} layers of width {dim} (known: {known}); "
                          "pass --n-head")
    if int(args.get("cls_token_num", 1) or 1) != 1:
        raise VFMTokError(f"{path}: cls_token_num={args['cls_token_num']}; only class-conditional GPTs (1) are supported")
    rows = int(take(state, "cls_embedding.embedding_table.weight", path).shape[0])
    num_classes = int(args.get("num_classes") or (1000 if rows in (1000, 1001) else rows - 1))
    if rows not in (num_classes, num_classes + 1):
        raise VFMTokError(f"{path}: class table has {rows} rows for {num_classes} classes")
    appended = rows == num_classes
    hidden = int(take(state, "layers.0.feed_forward.w1.weight", path).shape[0])
    if hidden != find_multiple(int(2 * 4 * dim / 3), 256):
        raise VFMTokError(f"{path}: FFN hidden {hidden} is not LlamaGen's for width {dim} (ffn_dim_multiplier set?)")
    tokens = num_tokens or _num_tokens(args)
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise VFMTokError(f"{path}: {tokens} tokens do not form a square grid (2D RoPE needs one)")
    drop = float(args.get("dropout_p", 0.1))
    cfg = GPTConfig(vocab_size=int(vocab), num_tokens=tokens, token_grid=(side, side), num_classes=num_classes,
                    dim=int(dim), n_layer=n_layer, n_head=n_head, multiple_of=256, rope="2d", rope_base=10000.0,
                    norm_eps=1e-5, token_dropout=float(args.get("token_dropout_p", 0.1)), resid_dropout=drop,
                    ffn_dropout=drop, attn_dropout=0.0,
                    class_dropout_prob=0.0 if appended else float(args.get("class_dropout_prob", 0.1)))
    cfg.validate()
    return cfg, name, appended


def _num_tokens(args: dict[str, Any]) -> int:
    # VFMTok's trainer passes --latent-size (16 -> 256 ids), LlamaGen's --image-size / --downsample-size.
    if args.get("latent_size"):
        return int(args["latent_size"]) ** 2
    if args.get("image_size") and args.get("downsample_size"):
        return (int(args["image_size"]) // int(args["downsample_size"])) ** 2
    return 256  # VFMTok's 16 x 16 anchors; --num-tokens overrides for a file without args


def map_gpt_state(state: dict[str, torch.Tensor], cfg: GPTConfig, path: str | Path) -> dict[str, torch.Tensor]:
    """LlamaGen keys -> vfmtok GPT keys; a zero null-class row is appended to a num_classes-row table."""
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if _SKIP.search(k):
            continue
        m = _LAYER.match(k)
        if m:
            out[f"blocks.{m.group(1)}.{m.group(2)}.weight"] = v
        elif k in _TOP:
            out[_TOP[k]] = v
        elif k == "cls_embedding.embedding_table.weight":
            if v.shape[0] == cfg.num_classes:
                v = torch.cat([v, v.new_zeros(1, v.shape[1])])
            out["class_emb.weight"] = v
        else:
            raise VFMTokError(f"{path}: unexpected key '{k}': not part of a LlamaGen class-conditional GPT")
    return {k: v.float().contiguous() for k, v in out.items()}
