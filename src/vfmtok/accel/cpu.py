"""Optional fp32 CPU sampling acceleration for the GPT, behind one call: `with accelerate(gpt): ...`.

Inside the block the GPT's modules are swapped for ones that use the compiled kernels of `cpu_kernels` (packed-weight
linears for few-row products, the fused RMSNorm and SwiGLU gate, and a blocked KV cache whose decode step is one
kernel pass); on exit the plain modules come back. The swapped modules share the GPT's parameters (same state-dict
keys), so nothing is copied but the packed weights (one more fp32 copy of each linear weight, freed on exit).
The model code (`generator/gpt.py`) knows nothing of this module: it only exposes `cache_class` for the KV cache.
Why and by how much this wins is measured by `benchmarks/generator_speed.py` (plain eager / torch.compile / this).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from vfmtok.accel import cpu_kernels as ck
from vfmtok.generator.gpt import GPT, FeedForward, RMSNorm

# Where the packed kernel beats torch's linear: 2..128 rows (one row is a memory-bound GEMV that BLAS does as well;
# past 128 the rows' copy leaves L2) and at least ~256k multiply-adds (below, call overhead dominates). Tunable per CPU.
PACKED_ROWS = (2, 128)
PACKED_MIN_MACS = 1 << 18


def enabled_by_default() -> bool:
    """VFMTOK_CPU_ACCEL=0 turns the CPU acceleration off for every caller that does not ask explicitly."""
    return os.environ.get("VFMTOK_CPU_ACCEL", "1") != "0"


def applies(model: nn.Module) -> bool:
    """Whether `accelerate` would swap anything in: an fp32 GPT on the CPU and the compiled kernels available."""
    w = model.head.weight if isinstance(model, GPT) else None
    return w is not None and w.device.type == "cpu" and w.dtype == torch.float32 and ck.available()


def unavailable_reason(model: nn.Module) -> str | None:
    """Why `accelerate(model)` would do nothing (None when it applies)."""
    if not isinstance(model, GPT):
        return "not a vfmtok GPT"
    if model.head.weight.device.type != "cpu" or model.head.weight.dtype != torch.float32:
        return f"the GPT is {model.head.weight.dtype} on {model.head.weight.device}, the kernels are fp32 CPU only"
    return ck.unavailable_reason()


def _inference(x: torch.Tensor, *params: torch.Tensor) -> bool:
    return not (torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params))) \
        and x.dtype == torch.float32 and x.device.type == "cpu" and not torch.is_autocast_enabled("cpu")


class PackedLinear(nn.Module):
    """A bias-free or biased linear layer sharing `base`'s parameters, with a packed weight copy for few-row products."""

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.packed = ck.pack_weight(base.weight)
        self.version = base.weight._version  # a weight changed in place falls back to F.linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if (PACKED_ROWS[0] <= rows <= PACKED_ROWS[1] and rows * self.in_features * self.out_features >= PACKED_MIN_MACS
                and self.weight._version == self.version and _inference(x, self.weight)):
            y = ck.packed_linear(x, self.packed, self.out_features)
            return y if self.bias is None else y.add_(self.bias)
        return F.linear(x, self.weight, self.bias)


class FusedRMSNorm(nn.Module):
    """`RMSNorm` sharing `base`'s gain, one kernel call per norm at inference."""

    def __init__(self, base: RMSNorm):
        super().__init__()
        self.weight, self.eps, self.plain = base.weight, base.eps, base.forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _inference(x, self.weight):
            return ck.rms_norm(x, self.weight, self.eps)
        return self.plain(x)


class FusedFeedForward(nn.Module):
    """`FeedForward` with silu(w1 x) * w3 x as one kernel pass at inference."""

    def __init__(self, base: FeedForward):
        super().__init__()
        self.w1, self.w3, self.w2, self.drop = base.w1, base.w3, base.w2, base.drop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, g = self.w1(x), self.w3(x)
        return self.drop(self.w2(ck.silu_mul(a, g) if _inference(a) else F.silu(a) * g))


class BlockedKVCache(nn.Module):
    """KVCache replacement (same constructor and `attend`): kv (B, H, S/16, 2, 16 D), each block of 16 positions
    holding [K (D, 16) | V (16, D)], so a decode step's attention streams one contiguous range per (row, head) and
    reads only the filled prefix (a host sync for its length is free on the CPU)."""

    def __init__(self, max_batch: int, max_seq: int, n_head: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device | str | None = None):
        super().__init__()
        self.max_batch, self.max_seq, self.dtype, self.head_dim = max_batch, max_seq, dtype, head_dim
        blocks = -(-max_seq // ck.BLOCK)
        # Zero-filled: every page is touched once here instead of faulting inside the decode steps.
        self.register_buffer("kv", torch.zeros(max_batch, n_head, blocks, 2, ck.BLOCK * head_dim, dtype=dtype,
                                               device=device), persistent=False)
        B, H, nb, D = max_batch, n_head, blocks, head_dim
        self.kb = self.kv[:, :, :, 0].view(B, H, nb, D, ck.BLOCK).transpose(3, 4)  # (B, H, nb, 16, D) views
        self.vb = self.kv[:, :, :, 1].view(B, H, nb, ck.BLOCK, D)

    def attend(self, input_pos: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor) -> torch.Tensor:
        """Write k, v at input_pos; attention of q over the cached prefix (what KVCache.attend computes)."""
        B, H, T, D = q.shape
        length = int(input_pos[-1]) + 1
        if T == 1 and q.dtype == self.kv.dtype == torch.float32:  # a decode step: write and attend in one pass
            rows = self.kv[:B].view(B * H, -1, 2, ck.BLOCK * D)
            return ck.decode_attention(q.reshape(B * H, D), rows, length, D**-0.5, k, v).view(B, H, 1, D)
        j, t = input_pos // ck.BLOCK, input_pos % ck.BLOCK
        self.kb[:B, :, j, t], self.vb[:B, :, j, t] = k, v
        kd, vd = (x[:B].reshape(B, H, -1, D)[:, :, :length] for x in (self.kb, self.vb))
        return F.scaled_dot_product_attention(q, kd, vd, attn_mask=mask[..., :length])


def _swap(parent: nn.Module, name: str, new: nn.Module, undo: list) -> None:
    undo.append((parent, name, getattr(parent, name)))
    setattr(parent, name, new)


@contextmanager
def accelerate(model: GPT, enabled: bool | None = None) -> Iterator[bool]:
    """Within the block, fp32 CPU inference of `model` runs on the compiled kernels; yields whether it does.

    enabled None follows VFMTOK_CPU_ACCEL (default on). Does nothing (yields False) where `unavailable_reason` says
    why: a GPU or non-fp32 model, no C compiler, VFMTOK_CPU_KERNELS=0. Nests (an inner call changes nothing).
    """
    on = enabled_by_default() if enabled is None else enabled
    if not on or getattr(model, "cache_class", None) is BlockedKVCache or not applies(model):
        yield on and getattr(model, "cache_class", None) is BlockedKVCache
        return
    undo: list = []
    prev_cache = model.cache_class
    try:
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    _swap(parent, name, PackedLinear(child), undo)
                elif isinstance(child, RMSNorm):
                    _swap(parent, name, FusedRMSNorm(child), undo)
        for blk in model.blocks:
            _swap(blk, "feed_forward", FusedFeedForward(blk.feed_forward), undo)
        model.clear_caches()
        model.cache_class = BlockedKVCache
        yield True
    finally:
        model.clear_caches()
        model.cache_class = prev_cache
        for parent, name, old in reversed(undo):
            setattr(parent, name, old)
