"""nn.Linear whose fp32 CPU products (forward and backward) run on oneDNN instead of MKL.

MKL takes its AVX2 code path on AMD CPUs. On this project's AMD EPYC (Zen 5, AVX-512) oneDNN's fp32 matmul
measured about twice MKL's speed, single-threaded: 217 vs 109 GFLOP/s at 2048^3, 140 vs 78 at 32 rows
(benchmarks/generator_speed.py prints both). Results agree with MKL to fp32 rounding (summation order differs).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

# Set VFMTOK_ONEDNN=0 (or use `onednn_enabled(False)`) to keep every linear layer on torch's default BLAS.
USE_ONEDNN = os.environ.get("VFMTOK_ONEDNN", "1") != "0"


@contextmanager
def onednn_enabled(enabled: bool) -> Iterator[None]:
    """Within the block, linear layers use oneDNN (where it applies) only if `enabled`; restored afterwards."""
    global USE_ONEDNN
    before, USE_ONEDNN = USE_ONEDNN, enabled
    try:
        yield
    finally:
        USE_ONEDNN = before


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


class Linear(nn.Linear):
    """Drop-in nn.Linear (same parameters and state-dict keys) that uses `linear` above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


def use_onednn_linears(module: nn.Module) -> nn.Module:
    """Turn every plain nn.Linear inside `module` (e.g. a timm or transformers encoder) into `Linear`, in place."""
    for m in module.modules():
        if type(m) is nn.Linear:
            m.__class__ = Linear  # same parameters and state-dict keys; only forward changes
    return module
