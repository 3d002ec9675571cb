"""Class-conditional Llama-style GPT over tokenizer ids (the LlamaGen layout VFMTok uses).

One module serves training (full causal pass), KV-cache decoding (`setup_caches` + `input_pos`) and CFG
(the null class is the extra row of the class table). Structure after nanoGPT / LlamaGen / gpt-fast,
written from the VFMTok paper (arXiv 2507.08441) and the LlamaGen GPT it builds on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from vfmtok.utils.errors import require
from vfmtok.utils.registry import Registry
from vfmtok.generator.pretrained import GeneratorIO


def find_multiple(n: int, k: int) -> int:
    """Smallest multiple of k that is >= n."""
    return n if n % k == 0 else n + k - n % k


@dataclass
class GPTConfig:
    """Architecture of the class-conditional GPT (presets in GPT_PRESETS)."""

    vocab_size: int = 16384  # tokenizer codebook size
    num_tokens: int = 256  # ids per image (the block size)
    token_grid: tuple[int, int] = (16, 16)  # (h, w) of the row-major id order, for 2D RoPE
    num_classes: int = 1000  # id num_classes is the null class (CFG)
    dim: int = 768
    n_layer: int = 12
    n_head: int = 12
    multiple_of: int = 256  # FFN hidden = find_multiple(int(2 * 4 * dim / 3), multiple_of)
    rope: str = "2d"  # "2d" (row/col halves over the token grid) or "1d" (raster index)
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    token_dropout: float = 0.1
    resid_dropout: float = 0.1
    ffn_dropout: float = 0.1
    attn_dropout: float = 0.0
    class_dropout_prob: float = 0.1  # label -> null class during training, for CFG
    init_std: float = 0.02

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @property
    def ffn_hidden(self) -> int:
        return find_multiple(int(2 * 4 * self.dim / 3), self.multiple_of)

    def validate(self) -> None:
        """Raise VFMTokError for inconsistent settings."""
        require(self.dim % self.n_head == 0, f"GPT dim {self.dim} is not divisible by n_head {self.n_head}")
        require(self.rope in ("2d", "1d"), f"GPT rope must be '2d' or '1d', got '{self.rope}'")
        require(self.head_dim % (4 if self.rope == "2d" else 2) == 0,
                f"GPT head_dim {self.head_dim} must be divisible by {4 if self.rope == '2d' else 2} for {self.rope} RoPE")
        h, w = self.token_grid
        require(h * w == self.num_tokens, f"GPT token_grid {tuple(self.token_grid)} does not hold num_tokens={self.num_tokens}")
        require(self.vocab_size > 0 and self.num_classes > 0, "GPT vocab_size and num_classes must be positive")


# name -> architecture fields; the data fields (vocab, tokens, grid, classes) come from the tokenizer/codes.
GPT_PRESETS: Registry[dict[str, Any]] = Registry("GPT preset", {
    "GPT-nano": dict(n_layer=2, n_head=2, dim=64, multiple_of=32),  # tests
    "GPT-tiny": dict(n_layer=4, n_head=4, dim=256, multiple_of=64),  # CPU demos
    "GPT-B": dict(n_layer=12, n_head=12, dim=768),
    "GPT-L": dict(n_layer=24, n_head=16, dim=1024),
    "GPT-XL": dict(n_layer=36, n_head=20, dim=1280),
    "GPT-XXL": dict(n_layer=48, n_head=24, dim=1536),
    "GPT-2B": dict(n_layer=48, n_head=32, dim=1920),
    "GPT-3B": dict(n_layer=24, n_head=32, dim=3200),
})


def preset_config(name: str, **overrides: Any) -> GPTConfig:
    """GPTConfig of a named preset with field overrides."""
    cfg = GPTConfig(**{**GPT_PRESETS.pick(name), **overrides})
    cfg.validate()
    return cfg


def create_gpt(name: str, **overrides: Any) -> "GPT":
    """Build a preset GPT, e.g. create_gpt('GPT-B', vocab_size=4096, num_tokens=256)."""
    return GPT(preset_config(name, **overrides))


def count_params(cfg: GPTConfig, non_embedding: bool = False) -> int:
    """Analytic parameter count (no allocation); non_embedding drops the token and class tables."""
    d, n = cfg.dim, cfg.n_layer
    block = 4 * d * d + 3 * d * cfg.ffn_hidden + 2 * d  # wqkv + wo, SwiGLU, two RMSNorm gains
    tables = cfg.vocab_size * d + (cfg.num_classes + 1) * d
    return n * block + d + cfg.vocab_size * d + (0 if non_embedding else tables)


def rope_table(cfg: GPTConfig) -> torch.Tensor:
    """Rotations (cos, sin), fp32 of shape (1 + num_tokens, head_dim // 2, 2); row 0 (class token) is all zeros."""
    half = cfg.head_dim // 2  # rotary pairs per head
    f64 = dict(dtype=torch.float64, device="cpu")  # real values even while a model is built on the meta device
    if cfg.rope == "1d":
        freqs = cfg.rope_base ** (-torch.arange(0, half, **f64) * 2 / cfg.head_dim)
        angles = torch.outer(torch.arange(cfg.num_tokens, **f64), freqs)
    else:  # first half of the pairs rotate with the row, second half with the column
        freqs = cfg.rope_base ** (-torch.arange(0, half, 2, **f64)[: half // 2] / half)
        h, w = cfg.token_grid
        rows = torch.outer(torch.arange(h, **f64), freqs)[:, None].expand(h, w, -1)
        cols = torch.outer(torch.arange(w, **f64), freqs)[None].expand(h, w, -1)
        angles = torch.cat([rows, cols], dim=-1).reshape(h * w, half)
    # Zero (not identity) rotation for the class token keeps LlamaGen checkpoints portable:
    # its q and k vanish, so it is attended with logit 0 and contributes only its value.
    zero = torch.zeros(1, half, 2, **f64)
    return torch.cat([zero, torch.stack([angles.cos(), angles.sin()], dim=-1)]).float()


def apply_rope(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of x (B, T, H, D) by per-position rotations rot (T, D/2, 2), in fp32."""
    xf = x.float().unflatten(-1, (-1, 2))
    cos, sin = rot[None, :, None, :, 0], rot[None, :, None, :, 1]
    x0, x1 = xf[..., 0], xf[..., 1]
    return torch.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], dim=-1).flatten(-2).type_as(x)


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in fp32, with a gain."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class KVCache(nn.Module):
    """Static key/value buffers (max_batch, H, max_seq, D) of one layer, the layout fused SDPA kernels read.

    `attend` writes a chunk's keys and values and attends over every cached position under a mask, so a decode
    step has static shapes and no host sync (it compiles with fullgraph=True and runs under CUDA graphs).
    """

    def __init__(self, max_batch: int, max_seq: int, n_head: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device | str | None = None):
        super().__init__()
        self.max_batch, self.max_seq, self.dtype = max_batch, max_seq, dtype
        shape = (max_batch, n_head, max_seq, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def attend(self, input_pos: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor) -> torch.Tensor:
        """Write k, v (B, H, T, D) at positions input_pos (T,); attention of q (B, H, T, D) under mask (1, 1, T, max_seq)."""
        b = q.shape[0]
        self.k[:b, :, input_pos] = k
        self.v[:b, :, input_pos] = v
        return F.scaled_dot_product_attention(q, self.k[:b], self.v[:b], attn_mask=mask)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: KVCache | None,
                     input_pos: torch.Tensor | None, mask: torch.Tensor | None, dropout_p: float) -> torch.Tensor:
    """(B, H, T, D) heads: a full causal pass when input_pos is None (training, or no cache), else through `cache`."""
    if input_pos is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)
    return cache.attend(input_pos, q, k, v, mask)


def install_caches(attns: list[nn.Module], max_batch: int, max_seq: int, n_head: int,
                   head_dim: int, dtype: torch.dtype, device: torch.device) -> bool:
    """Give each attention module (attribute kv_cache) a fresh cache; False when the present ones already fit."""
    old = attns[0].kv_cache
    if old is not None and old.max_batch >= max_batch and old.max_seq == max_seq \
            and old.dtype == dtype and next(old.buffers()).device == device:
        return False
    for a in attns:
        a.kv_cache = KVCache(max_batch, max_seq, n_head, head_dim, dtype, device)
    return True


class Attention(nn.Module):
    """Multi-head self-attention with fused qkv, RoPE and an optional KV cache; no biases."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.wqkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.wo = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.attn_dropout = cfg.attn_dropout
        self.resid_drop = nn.Dropout(cfg.resid_dropout)
        self.kv_cache: KVCache | None = None

    def forward(self, x: torch.Tensor, rot: torch.Tensor, input_pos: torch.Tensor | None,
                mask: torch.Tensor | None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.wqkv(x).view(B, T, 3, self.n_head, self.head_dim).unbind(2)
        q, k = apply_rope(q, rot), apply_rope(k, rot)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        y = causal_attention(q, k, v, self.kv_cache, input_pos, mask, self.attn_dropout if self.training else 0.0)
        return self.resid_drop(self.wo(y.transpose(1, 2).reshape(B, T, C)))


class FeedForward(nn.Module):
    """SwiGLU MLP without biases."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_hidden, bias=False)
        self.w3 = nn.Linear(cfg.dim, cfg.ffn_hidden, bias=False)
        self.w2 = nn.Linear(cfg.ffn_hidden, cfg.dim, bias=False)
        self.drop = nn.Dropout(cfg.ffn_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class Block(nn.Module):
    """Pre-norm transformer block (the FSDP wrapping unit)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x, rot, input_pos=None, mask=None):
        x = x + self.attention(self.attention_norm(x), rot, input_pos, mask)
        return x + self.feed_forward(self.ffn_norm(x))


class GPT(GeneratorIO, nn.Module):
    """Sequence [class, tok_0 .. tok_{N-2}] -> logits for tok_0 .. tok_{N-1}."""

    model_type = "gpt"  # checkpoints: config.json model_type and its section (save/load in GeneratorIO)
    config_class = GPTConfig

    def __init__(self, config: GPTConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.class_emb = nn.Embedding(config.num_classes + 1, config.dim)  # last row: null class
        self.tok_emb = nn.Embedding(config.vocab_size, config.dim)
        self.emb_drop = nn.Dropout(config.token_dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.head = nn.Linear(config.dim, config.vocab_size, bias=False)
        # Computed, never loaded, and kept fp32 whatever the weights' dtype: a plain tensor, not a buffer, so that
        # `.to(torch.bfloat16)` cannot coarsen it and a model built on the meta device still gets real values.
        self._rope = rope_table(config)
        self.register_buffer("causal_mask", None, persistent=False)
        # Filled by from_pretrained / the trainer; saved in config.json beside GPTConfig.
        self.class_names: list[str] | None = None
        self.tokenizer_info: dict[str, Any] | None = None
        self.source: Path | None = None  # checkpoint folder it was loaded from (relative tokenizer paths count from it)
        self.apply(self._init_weights)
        nn.init.zeros_(self.head.weight)  # LlamaGen: start from uniform predictions

    def _init_weights(self, m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=self.config.init_std)

    @property
    def null_class(self) -> int:
        return self.config.num_classes

    @staticmethod
    def guides(cfg_scale: float) -> bool:
        """LlamaGen's rule (autoregressive/models/generate.py): classifier-free guidance only when cfg_scale > 1.0."""
        return cfg_scale > 1.0

    @property
    def rope(self) -> torch.Tensor:
        """The fp32 rotation table (1 + num_tokens, head_dim // 2, 2) on the weights' device (moved on first use)."""
        device = self.head.weight.device
        if self._rope.device != device:
            self._rope = self._rope.to(device)
        return self._rope

    def setup_caches(self, max_batch: int, max_seq: int, dtype: torch.dtype | None = None) -> None:
        """Preallocate per-layer KV caches (seq rounded up to a multiple of 8) and the causal mask; reused when big enough."""
        max_seq = find_multiple(max_seq, 8)
        dtype = dtype or self.head.weight.dtype
        if install_caches([b.attention for b in self.blocks], max_batch, max_seq,
                          self.config.n_head, self.config.head_dim, dtype, self.head.weight.device):
            self.causal_mask = torch.ones(max_seq, max_seq, dtype=torch.bool, device=self.head.weight.device).tril()

    def clear_caches(self) -> None:
        """Free the KV caches."""
        for b in self.blocks:
            b.attention.kv_cache = None
        self.causal_mask = None

    def forward(self, labels: torch.Tensor | None = None, idx: torch.Tensor | None = None,
                targets: torch.Tensor | None = None, input_pos: torch.Tensor | None = None, last_only: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, vocab) fp32 (T = 1 with last_only) and the CE loss when targets are given.

        Full pass: labels (B,) [+ idx (B, T-1)]. Cached decoding: input_pos (T,) are the sequence positions of
        this chunk (0 = class token); prefill passes labels, later steps pass idx only.
        """
        parts = []
        if labels is not None:
            if self.training and self.config.class_dropout_prob > 0:
                drop = torch.rand(labels.shape, device=labels.device) < self.config.class_dropout_prob
                labels = torch.where(drop, torch.full_like(labels, self.null_class), labels)
            parts.append(self.class_emb(labels)[:, None])
        if idx is not None:
            parts.append(self.tok_emb(idx))
        x = self.emb_drop(torch.cat(parts, dim=1))
        if input_pos is None:
            rot, mask = self.rope[: x.shape[1]], None
        else:  # positions stay a tensor: no host sync, so a decode step can be captured in a CUDA graph
            require(self.causal_mask is not None, "call setup_caches() before decoding with input_pos")
            rot, mask = self.rope[input_pos], self.causal_mask[None, None, input_pos]
        for blk in self.blocks:
            x = blk(x, rot, input_pos, mask)
        if last_only:  # decoding needs only the next-token logits
            x = x[:, -1:]
        logits = self.head(self.norm(x)).float()
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss
