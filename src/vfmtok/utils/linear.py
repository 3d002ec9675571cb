"""nn.Linear whose fp32 CPU products (forward and backward) run on oneDNN instead of MKL, and, inside
`packed_linears`, whose few-row inference products run on a packed-weight kernel (utils/cpu_kernels).

MKL takes its AVX2 code path on AMD CPUs. On this project's AMD EPYC (Zen 5, AVX-512) oneDNN's fp32 matmul
measured about twice MKL's speed, single-threaded: 217 vs 109 GFLOP/s at 2048^3, 140 vs 78 at 32 rows
(benchmarks/generator_speed.py prints both). Results agree with MKL to fp32 rounding (summation order differs).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from vfmtok.utils import cpu_kernels
from vfmtok.utils.config import temporarily

# Set VFMTOK_ONEDNN=0 (or use `onednn_enabled(False)`) to keep every linear layer on torch's default BLAS.
USE_ONEDNN = os.environ.get("VFMTOK_ONEDNN", "1") != "0"


def onednn_enabled(enabled: bool) -> AbstractContextManager[None]:
    """Within the block, linear layers use oneDNN (where it applies) only if `enabled`; restored afterwards."""
    return temporarily(sys.modules[__name__], "USE_ONEDNN", enabled)


def onednn_available() -> bool:
    """Whether torch was built with the oneDNN linear op this module calls."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


_AVAILABLE = onednn_available()
# oneDNN costs ~10 us more per call; below ~1M multiply-adds MKL is as fast or faster (timed on this machine).
MIN_MACS = 1 << 20


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDNNLinearFn(torch.autograd.Function):
    """y = x W^T + b with all three products of forward and backward on oneDNN."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn_linear(x, weight, bias)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, weight = ctx.saved_tensors
        g2 = g.reshape(-1, g.shape[-1])
        gx = _onednn_linear(g, weight.t(), None) if ctx.needs_input_grad[0] else None  # g W
        gw = _onednn_linear(g2.t(), x.reshape(-1, x.shape[-1]).t(), None) if ctx.needs_input_grad[1] else None  # g^T x
        gb = g2.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, on oneDNN where it applies: fp32 CPU tensors outside autocast, at least MIN_MACS multiply-adds."""
    if not (USE_ONEDNN and _AVAILABLE and x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32
            and x.numel() * weight.shape[0] >= MIN_MACS and not torch.is_autocast_enabled("cpu")):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)):
        return _OneDNNLinearFn.apply(x, weight, bias)
    return _onednn_linear(x, weight, bias)


# Where the packed kernel beats `linear` (timed on this machine): 2..128 rows (one row is a memory-bound GEMV that
# MKL does as well; past 128 the rows' copy leaves L2) and at least ~256k multiply-adds (below, call overhead dominates).
PACKED_ROWS = (2, 128)
PACKED_MIN_MACS = 1 << 18


class Linear(nn.Linear):
    """Drop-in nn.Linear (same parameters and state-dict keys) that uses `linear` above, or its packed weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        packed = self.__dict__.get("_packed")  # (panels, weight version), set by packed_linears
        if packed is not None and self._packed_applies(x, packed[1]):
            y = cpu_kernels.packed_linear(x, packed[0], self.out_features)
            return y if self.bias is None else y.add_(self.bias)
        return linear(x, self.weight, self.bias)

    def _packed_applies(self, x: torch.Tensor, version: int) -> bool:
        rows = x.numel() // self.in_features
        return (cpu_kernels.ENABLED and version == self.weight._version and x.dtype == torch.float32
                and x.device.type == "cpu" and PACKED_ROWS[0] <= rows <= PACKED_ROWS[1]
                and rows * self.in_features * self.out_features >= PACKED_MIN_MACS
                and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))
                and not torch.is_autocast_enabled("cpu"))


@contextmanager
def packed_linears(module: nn.Module) -> Iterator[int]:
    """Within the block, few-row (PACKED_ROWS) inference products of the fp32 CPU `Linear` layers of `module`
    use a packed copy of their weights (extra memory: one more copy, freed on exit); yields how many were packed.

    A decode step multiplies batch-many rows by every weight matrix, read from DRAM each step; the packed kernel
    overlaps that read with the arithmetic (about 1.7x oneDNN at 32 rows, benchmarks/generator_speed.py). Nothing is
    packed where the compiled kernels are unavailable; a weight changed in place falls back to `linear`. Nests.
    """
    layers = [m for m in module.modules() if isinstance(m, Linear) and "_packed" not in m.__dict__
              and m.weight.dtype == torch.float32 and m.weight.device.type == "cpu"]
    if layers and not cpu_kernels.available():  # checked only now: a GPU model never builds the kernels
        layers = []
    for m in layers:
        m._packed = (cpu_kernels.pack_weight(m.weight), m.weight._version)
    try:
        yield len(layers)
    finally:
        for m in layers:
            m.__dict__.pop("_packed", None)


def use_onednn_linears(module: nn.Module) -> nn.Module:
    """Turn every plain nn.Linear inside `module` (e.g. a timm or transformers encoder) into `Linear`, in place."""
    for m in module.modules():
        if type(m) is nn.Linear:
            m.__class__ = Linear  # same parameters and state-dict keys; only forward changes
    return module
