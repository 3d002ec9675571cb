"""Class-conditional Llama-style GPT over tokenizer ids (the LlamaGen layout VFMTok uses).

One module serves training (full causal pass), KV-cache decoding (`setup_caches` + `input_pos`) and CFG
(the null class is the extra row of the class table). Structure after nanoGPT / LlamaGen / gpt-fast,
written from the design reference (docs/vfmtok-reference.md section 2.1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from vfmtok.utils import cpu_kernels
from vfmtok.utils.config import from_dict, to_dict
from vfmtok.utils.errors import VFMTokError, require
from vfmtok.utils.io import cast_floats, load_pretrained, load_state_strict, resolve_checkpoint, save_pretrained
from vfmtok.utils.linear import Linear


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
    def block_size(self) -> int:
        return self.num_tokens

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
GPT_PRESETS: dict[str, dict[str, Any]] = {
    "GPT-nano": dict(n_layer=2, n_head=2, dim=64, multiple_of=32),  # tests
    "GPT-tiny": dict(n_layer=4, n_head=4, dim=256, multiple_of=64),  # CPU demos
    "GPT-B": dict(n_layer=12, n_head=12, dim=768),
    "GPT-L": dict(n_layer=24, n_head=16, dim=1024),
    "GPT-XL": dict(n_layer=36, n_head=20, dim=1280),
    "GPT-XXL": dict(n_layer=48, n_head=24, dim=1536),
    "GPT-2B": dict(n_layer=48, n_head=32, dim=1920),
    "GPT-3B": dict(n_layer=24, n_head=32, dim=3200),
}


def preset_config(name: str, **overrides: Any) -> GPTConfig:
    """GPTConfig of a named preset with field overrides."""
    if name not in GPT_PRESETS:
        raise VFMTokError(f"unknown GPT preset '{name}'; choose from {', '.join(GPT_PRESETS)}")
    cfg = GPTConfig(**{**GPT_PRESETS[name], **overrides})
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
    """Rotations cos + i sin, complex64 of shape (1 + num_tokens, head_dim // 2); row 0 (class token) is all zeros."""
    half = cfg.head_dim // 2  # rotary pairs per head
    if cfg.rope == "1d":
        freqs = cfg.rope_base ** (-torch.arange(0, half, dtype=torch.float64) * 2 / cfg.head_dim)
        angles = torch.outer(torch.arange(cfg.num_tokens, dtype=torch.float64), freqs)
    else:  # first half of the pairs rotate with the row, second half with the column
        freqs = cfg.rope_base ** (-torch.arange(0, half, 2, dtype=torch.float64)[: half // 2] / half)
        h, w = cfg.token_grid
        rows = torch.outer(torch.arange(h, dtype=torch.float64), freqs)[:, None].expand(h, w, -1)
        cols = torch.outer(torch.arange(w, dtype=torch.float64), freqs)[None].expand(h, w, -1)
        angles = torch.cat([rows, cols], dim=-1).reshape(h * w, half)
    # Zero (not identity) rotation for the class token keeps LlamaGen checkpoints portable:
    # its q and k vanish, so it is attended with logit 0 and contributes only its value.
    zero = torch.zeros(1, half, dtype=torch.float64)
    return torch.complex(torch.cat([zero, angles.cos()]).float(), torch.cat([zero, angles.sin()]).float())


def apply_rope(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of x (B, T, H, D) by per-position rotations rot (T, D/2), in fp32.

    As one complex product: (x0 + i x1)(cos + i sin); ~7x faster than six real ops and a stack on a decode step.
    """
    xf = x.float()
    if xf.stride(-1) != 1 or xf.storage_offset() % 2:
        xf = xf.contiguous()
    pairs = torch.view_as_complex(xf.unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * rot[None, :, None]).flatten(-2).type_as(x)


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in fp32, with a gain."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if cpu_kernels.for_inference(x, self.weight):
            return cpu_kernels.rms_norm(x, self.weight, self.eps)
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def cache_layout(device: torch.device | str, dtype: torch.dtype, head_dim: int) -> str:
    """The KVCache layout for this device and dtype: 'blocks' with the compiled CPU kernels, else 'keys_last' on the
    CPU, else 'dense'."""
    if cpu_kernels.attention_supported(device, dtype, head_dim):
        return "blocks"
    return "keys_last" if torch.device(device).type == "cpu" else "dense"


class KVCache(nn.Module):
    """Static per-layer key/value buffers for max_batch rows and max_seq positions, in one of three layouts.

    dense: k, v (B, H, S, D), what fused SDPA kernels read (GPU, non-fp32).
    keys_last: k (B, H, D, S), v (B, H, S, D); on the CPU without the compiled kernels a decode step's q.K^T then
    reads D rows of contiguous positions with bmm, ~20% faster than SDPA over the dense layout.
    blocks (fp32 on the CPU with vfmtok.utils.cpu_kernels): kv (B, H, S/16, 2, 16 D); each block of 16 positions holds
    [K (D, 16) | V (16, D)], so a decode step's attention streams one contiguous range per (row, head).
    Only written positions are read. The buffers are zero-filled anyway: that touches every page once, up front
    (0.2 s for GPT-B at batch 32), instead of page-faulting inside the decode steps.
    """

    def __init__(self, max_batch: int, max_seq: int, n_head: int, head_dim: int, dtype: torch.dtype, device: torch.device,
                 layout: str | None = None):
        super().__init__()
        self.layout = layout or cache_layout(device, dtype, head_dim)
        require(self.layout in ("blocks", "keys_last", "dense"), f"unknown KV cache layout {self.layout!r}")
        self.max_batch, self.dtype = max_batch, dtype
        if self.layout == "blocks":
            blocks = -(-max_seq // cpu_kernels.BLOCK)
            self.max_seq = blocks * cpu_kernels.BLOCK
            self.register_buffer("kv", torch.zeros(max_batch, n_head, blocks, 2, cpu_kernels.BLOCK * head_dim,
                                                   dtype=dtype, device=device), persistent=False)
        else:
            self.max_seq = max_seq
            shape = (max_batch, n_head, max_seq, head_dim)
            kshape = (max_batch, n_head, head_dim, max_seq) if self.layout == "keys_last" else shape
            self.register_buffer("k", torch.zeros(kshape, dtype=dtype, device=device), persistent=False)
            self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def block_views(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Blocked layout as K, V views of shape (B, H, S/16, 16, D)."""
        cached = self.__dict__.get("_views")
        if cached is None or cached[0] is not self.kv:  # kept across decode steps (a few us each on small models)
            B, H, nb, _, n = self.kv.shape
            D = n // cpu_kernels.BLOCK
            cached = self._views = (self.kv, self.kv[:, :, :, 0].view(B, H, nb, D, -1).transpose(3, 4),
                                    self.kv[:, :, :, 1].view(B, H, nb, -1, D))
        return cached[1:]

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor, length: int) -> None:
        """Write k, v (B, H, T, D) at input_pos (the last of which is length - 1)."""
        b = k.shape[0]
        if self.layout == "blocks":
            kb, vb = self.block_views()
            if k.shape[2] == 1:
                j, t = divmod(length - 1, cpu_kernels.BLOCK)
                kb[:b, :, j, t], vb[:b, :, j, t] = k[:, :, 0], v[:, :, 0]
            else:
                j, t = input_pos // cpu_kernels.BLOCK, input_pos % cpu_kernels.BLOCK
                kb[:b, :, j, t], vb[:b, :, j, t] = k, v
            return
        # A decode step writes with a strided copy, ~3x cheaper than index_put on CPU.
        pos = slice(length - 1, length) if k.shape[2] == 1 else input_pos
        if self.layout == "keys_last":
            self.k[:b, :, :, pos] = k.transpose(2, 3)
        else:
            self.k[:b, :, pos] = k
        self.v[:b, :, pos] = v

    def _kernel_ready(self, q: torch.Tensor) -> bool:
        """Blocks layout, kernels on, and still fp32 on the CPU (e.g. not converted by a later `model.to`)."""
        return (self.layout == "blocks" and cpu_kernels.ENABLED and self.kv.dtype == q.dtype == torch.float32
                and self.kv.device.type == "cpu")

    def _kernel_step(self, q: torch.Tensor, length: int, k: torch.Tensor | None = None,
                     v: torch.Tensor | None = None) -> torch.Tensor:
        """One query per row (B, H, 1, D) through the compiled kernel; k, v (B, H, 1, D), if given, are written first."""
        B, H, _, D = q.shape
        rows = self.kv[:B].view(B * H, -1, 2, cpu_kernels.BLOCK * D)
        return cpu_kernels.decode_attention(q.reshape(B * H, D), rows, length, D**-0.5, k, v).view(B, H, 1, D)

    def update_and_attend(self, input_pos: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, length: int,
                          mask: torch.Tensor | None) -> torch.Tensor:
        """update() then attend(); a blocked decode step does both in one kernel pass over the cache."""
        if q.shape[2] == 1 and self._kernel_ready(q):
            return self._kernel_step(q, length, k, v)
        self.update(input_pos, k, v, length)
        return self.attend(q, length, mask)

    def attend(self, q: torch.Tensor, length: int, mask: torch.Tensor | None) -> torch.Tensor:
        """Attention of q (B, H, T, D) over the first `length` cached positions (mask (1, 1, T, length) when T > 1)."""
        B, H, T, D = q.shape
        if self.layout == "blocks":
            if T == 1 and self._kernel_ready(q):  # a decode step: the compiled kernel reads only the filled blocks
                return self._kernel_step(q, length)
            # a multi-token chunk (once per prompt): gather the prefix into the dense layout
            k, v = (t[:B].reshape(B, H, -1, D)[:, :, :length] for t in self.block_views())
        elif self.layout == "keys_last":
            if T == 1:  # a batched GEMV bound by reading the cache: bmm on (B*H, ., .) views reads the prefix in place
                kt = self.k[:B].reshape(B * H, D, -1)[:, :, :length]
                v = self.v[:B].reshape(B * H, -1, D)[:, :length]
                a = torch.bmm(q.reshape(B * H, 1, D) * D**-0.5, kt).softmax(dim=-1)
                return torch.bmm(a, v).view(B, H, 1, D)
            k, v = self.k[:B, :, :, :length].transpose(2, 3), self.v[:B, :, :length]
        else:
            k, v = self.k[:B, :, :length], self.v[:B, :, :length]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask if T > 1 else None)


class Attention(nn.Module):
    """Multi-head self-attention with fused qkv, RoPE and an optional KV cache; no biases."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.wqkv = Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.wo = Linear(cfg.dim, cfg.dim, bias=False)
        self.attn_dropout = cfg.attn_dropout
        self.resid_drop = nn.Dropout(cfg.resid_dropout)
        self.kv_cache: KVCache | None = None

    def forward(self, x: torch.Tensor, rot: torch.Tensor, input_pos: torch.Tensor | None,
                mask: torch.Tensor | None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.wqkv(x).view(B, T, 3, self.n_head, self.head_dim).unbind(2)
        q, k = apply_rope(q, rot), apply_rope(k, rot)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if input_pos is None:  # full causal pass (training, or decoding without a cache)
            drop = self.attn_dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=drop)
        else:  # attend to the cached prefix only (mask is (1, 1, T, prefix length)); one query needs no mask
            y = self.kv_cache.update_and_attend(input_pos, q, k, v, mask.shape[-1], mask)
        return self.resid_drop(self.wo(y.transpose(1, 2).reshape(B, T, C)))


class FeedForward(nn.Module):
    """SwiGLU MLP without biases."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.w1 = Linear(cfg.dim, cfg.ffn_hidden, bias=False)
        self.w3 = Linear(cfg.dim, cfg.ffn_hidden, bias=False)
        self.w2 = Linear(cfg.ffn_hidden, cfg.dim, bias=False)
        self.drop = nn.Dropout(cfg.ffn_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w1(x), self.w3(x)
        return self.drop(self.w2(cpu_kernels.silu_mul(a, b) if cpu_kernels.for_inference(a) else F.silu(a) * b))


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


class GPT(nn.Module):
    """Sequence [class, tok_0 .. tok_{N-2}] -> logits for tok_0 .. tok_{N-1}."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.class_emb = nn.Embedding(config.num_classes + 1, config.dim)  # last row: null class
        self.tok_emb = nn.Embedding(config.vocab_size, config.dim)
        self.emb_drop = nn.Dropout(config.token_dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.head = Linear(config.dim, config.vocab_size, bias=False)
        # A plain complex64 tensor, not a buffer: `.to(bfloat16)` for sampling must not coarsen the rotations.
        self._rope = rope_table(config)
        self.causal_mask: torch.Tensor | None = None
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

    def rope(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The complex64 rotation table on `device`."""
        if self._rope.device != device:
            self._rope = self._rope.to(device)
        return self._rope

    def setup_caches(self, max_batch: int, max_seq: int, dtype: torch.dtype | None = None) -> None:
        """Preallocate per-layer KV caches (seq rounded up to a multiple of 8) and the causal mask; reused when big enough."""
        max_seq = find_multiple(max_seq, 8)
        dtype = dtype or self.head.weight.dtype
        device = self.head.weight.device
        old = self.blocks[0].attention.kv_cache
        layout = cache_layout(device, dtype, self.config.head_dim)
        if old is not None and old.max_batch >= max_batch and old.max_seq >= max_seq and old.dtype == dtype \
                and old.layout == layout and next(old.buffers()).device == device:
            return
        for b in self.blocks:
            b.attention.kv_cache = KVCache(max_batch, max_seq, self.config.n_head, self.config.head_dim, dtype, device, layout)
        n = self.blocks[0].attention.kv_cache.max_seq  # the blocks layout rounds up further
        self.causal_mask = torch.ones(n, n, dtype=torch.bool, device=device).tril()

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
        rot = self.rope(x.device)
        if input_pos is None:
            rot, mask = rot[: x.shape[1]], None
        else:
            require(self.causal_mask is not None, "call setup_caches() before decoding with input_pos")
            # Reading only the filled prefix halves the average attention cost (one host sync per step on GPU).
            length = int(input_pos[-1]) + 1
            rot = rot[input_pos]
            mask = self.causal_mask[input_pos, :length][None, None]
        for blk in self.blocks:
            x = blk(x, rot, input_pos, mask)
        if last_only:  # decoding needs only the next-token logits
            x = x[:, -1:]
        logits = self.head(self.norm(x)).float()
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss

    # --- checkpoints ---
    def export_config(self) -> dict[str, Any]:
        """config.json payload: GPTConfig + class names + the tokenizer it was trained on."""
        return {"gpt": to_dict(self.config), "class_names": self.class_names, "tokenizer": self.tokenizer_info}

    def save_pretrained(self, folder: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """Write model.safetensors (floats stored as `dtype` when given) + config.json (model_type 'gpt')."""
        return save_pretrained(folder, cast_floats(self.state_dict(), dtype), self.export_config(), "gpt")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "GPT":
        """Load from a checkpoint folder or a run folder (its latest checkpoint), in eval mode."""
        folder = resolve_checkpoint(path)
        state, config, _ = load_pretrained(folder, "gpt")
        if not isinstance(config, dict) or "gpt" not in config:
            raise VFMTokError(f"{folder}/config.json has no 'gpt' section")
        model = cls(from_dict(GPTConfig, config["gpt"], where=f"{folder}/config.json gpt"))
        load_state_strict(model, state, str(folder))
        model.class_names = config.get("class_names")
        model.tokenizer_info = config.get("tokenizer")
        model.source = folder
        return model.to(device).eval()

    def recorded_tokenizer(self) -> Path | None:
        """The tokenizer recorded at training/export time; a relative path counts from this checkpoint's folder."""
        path = (self.tokenizer_info or {}).get("checkpoint_path")
        if not path:
            return None
        path = Path(path)
        if not path.is_absolute() and self.source is not None:
            path = (self.source / path).resolve()
        return path
