"""Official RAR weights (bytedance/1d-tokenizer, CVMI-Lab/VFMTok-RAR: `rar_*.bin` or .safetensors state dicts)
-> a vfmtok RAR config + state dict (`vfmtok import-official --rar`), strictly (every official key used once, every
vfmtok key filled).

The official model keeps image ids, a mask id, the classes and the null class in one embedding table
[codebook | mask | classes | null]; here they are two tables (the unused mask row is dropped).
"""

from __future__ import annotations

import math
import re

import torch

from vfmtok.generator.rar import RARConfig
from vfmtok.official.reading import strip_prefixes
from vfmtok.utils.errors import VFMTokError

# official name pattern -> vfmtok name (applied to the per-block / head keys; tables are handled separately)
_RENAMES = [
    (r"^blocks\.(\d+)\.adaLN_modulation\.1\.", r"blocks.\1.modulation."),
    (r"^blocks\.(\d+)\.mlp\.fc([12])\.", r"blocks.\1.fc\2."),
    (r"^blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.q_norm|attn\.k_norm|attn\.proj)\.", r"blocks.\1.\2."),
    (r"^adaln_before_head\.adaLN_modulation\.1\.", "final_modulation."),
    (r"^lm_head\.", "head."),
]
_TABLES = {"cls_token", "embeddings.weight", "pos_embed", "target_aware_pos_embed", "timesteps_embeddings"}
# rows the official tables hold beyond the sequence (modeling/rar.py: image_seq_len + 1024 and + 100)
OFFICIAL_POS_SLACK, OFFICIAL_STEP_SLACK = 1024, 100


def is_official_rar(state: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict has the official RAR layout."""
    return {"target_aware_pos_embed", "timesteps_embeddings", "lm_head.weight"} <= set(state)


def infer_rar_config(state: dict[str, torch.Tensor], num_tokens: int | None = None, n_head: int | None = None,
                     where: str = "checkpoint") -> RARConfig:
    """RARConfig from the official tensor shapes (heads from the qk-norm width; sequence from the step table)."""
    dim = int(state["cls_token"].shape[-1])
    vocab = int(state["lm_head.weight"].shape[0])
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    head_dim = int(state["blocks.0.attn.q_norm.weight"].shape[0])
    heads = n_head or dim // head_dim
    pos_rows, step_rows = int(state["pos_embed"].shape[-2]), int(state["timesteps_embeddings"].shape[-2])
    n = num_tokens or step_rows - OFFICIAL_STEP_SLACK
    side = math.isqrt(n) if n > 0 else 0
    if side * side != n:
        raise VFMTokError(f"{where}: a sequence of {n} tokens is not a square grid; pass num_tokens")
    classes = int(state["embeddings.weight"].shape[0]) - vocab - 2
    if classes < 1 or pos_rows - n < 2 or step_rows - n < 2:
        raise VFMTokError(f"{where}: table sizes (embeddings {tuple(state['embeddings.weight'].shape)}, positions "
                          f"{pos_rows}, steps {step_rows}) do not fit {vocab} codes and {n} tokens")
    cfg = RARConfig(vocab_size=vocab, num_tokens=n, token_grid=(side, side), num_classes=classes, dim=dim,
                    n_layer=layers, n_head=heads, mlp_dim=int(state["blocks.0.mlp.fc1.weight"].shape[0]),
                    pos_slack=pos_rows - n, step_slack=step_rows - n)
    cfg.validate()
    return cfg


def import_rar_state(state: dict[str, torch.Tensor], num_tokens: int | None = None, n_head: int | None = None,
                     where: str = "checkpoint") -> tuple[RARConfig, dict[str, torch.Tensor]]:
    """(config, vfmtok state dict) of an official RAR state dict; one-line errors for another architecture."""
    state = strip_prefixes(state)
    if not is_official_rar(state):
        hint = " (it looks like a LlamaGen GPT)" if "tok_embeddings.weight" in state else ""
        raise VFMTokError(f"{where} is not an official RAR checkpoint{hint}: no target_aware_pos_embed / "
                          "timesteps_embeddings / lm_head keys")
    cfg = infer_rar_config(state, num_tokens, n_head, where)
    d, v = cfg.dim, cfg.vocab_size
    emb = state["embeddings.weight"]
    out = {"cls_token": state["cls_token"].reshape(d), "tok_emb.weight": emb[:v],
           "class_emb.weight": emb[v + 1:],  # row v is the mask id, unused by RAR
           "pos_embed": state["pos_embed"].reshape(-1, d),
           "target_pos_embed": state["target_aware_pos_embed"].reshape(-1, d),
           "step_embed": state["timesteps_embeddings"].reshape(-1, d)}
    unknown = []
    for k, t in state.items():
        if k in _TABLES:
            continue
        for pat, rep in _RENAMES:
            if re.match(pat, k):
                out[re.sub(pat, rep, k)] = t
                break
        else:
            unknown.append(k)
    if unknown:
        raise VFMTokError(f"{where}: {len(unknown)} keys an official RAR does not have (e.g. {unknown[0]})")
    return cfg, {k: t.contiguous() for k, t in out.items()}
