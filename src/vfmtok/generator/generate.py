"""Autoregressive sampling: static KV cache (prefill the class token, then one id per step), CFG, top-k/top-p.

Semantics follow LlamaGen's `generate()` so that imported official GPTs sample as in the official scripts: guidance
only when cfg_scale > 1.0; cfg_interval k guides tokens 0 .. k + 1 (-1: all); top-p keeps the token that crosses
the threshold. The decode step (`decode_step`) compiles with fullgraph=True (`generate(..., compile=True)`).
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import torch

from vfmtok.generator.gpt import GPT
from vfmtok.utils.errors import require

PARALLEL_MODES = ("none", "jacobi")  # "jacobi": speculative Jacobi decoding (vfmtok.generator.jacobi)


def top_k_top_p_filter(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set logits outside the top-k and outside the smallest top-p probability mass to -inf (0 / 1.0 = off)."""
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token when the mass before it exceeds top_p: the token crossing the threshold and the best one stay.
        drop_sorted = torch.zeros_like(cum, dtype=torch.bool)
        drop_sorted[..., 1:] = cum[..., :-1] > top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one id per row of logits (B, V); temperature 0 means argmax."""
    if temperature == 0:
        return logits.argmax(-1)
    scaled = logits.float() if temperature == 1.0 else logits.float() / temperature  # a 2 MB pass saved per step
    return draw(top_k_top_p_filter(scaled, top_k, top_p).softmax(-1), generator)


def _below(u: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """u clamped into [0, total): searchsorted(cdf, u, right=True) then lands on an entry with p > 0."""
    return torch.minimum(u.clamp(min=0), torch.nextafter(total, torch.zeros_like(total)))


def draw(probs: torch.Tensor, generator: torch.Generator | None = None, block: int = 128) -> torch.Tensor:
    """One id per row of probs (B, V) >= 0, with probability proportional to its entry (zeros never drawn).

    Inverse CDF with one uniform per row (torch.multinomial spends ~0.5 ms per 16k-entry CPU row drawing randoms).
    In two levels, blocks of `block` ids and then the ids of the chosen block, because a cumsum over all V ids is a
    sequential scan on the CPU (0.6 ms per decode step for 32 rows of 16384) while block sums are not.
    """
    B, V = probs.shape
    u = torch.rand((B, 1), generator=generator, device=probs.device, dtype=probs.dtype)
    if V % block or V < 4 * block:
        cdf = probs.cumsum(-1)
        return torch.searchsorted(cdf, _below(u * cdf[:, -1:], cdf[:, -1:]), right=True)[:, 0]
    blocks = probs.view(B, V // block, block)
    bcdf = blocks.sum(-1).cumsum(-1)  # (B, V / block)
    u = _below(u * bcdf[:, -1:], bcdf[:, -1:])
    j = torch.searchsorted(bcdf, u, right=True)  # (B, 1): the first block whose cdf exceeds u, so its sum is > 0
    before = torch.where(j > 0, bcdf.gather(1, (j - 1).clamp(min=0)), torch.zeros_like(u))
    inner = blocks[torch.arange(B, device=probs.device), j[:, 0]].cumsum(-1)  # (B, block)
    k = torch.searchsorted(inner, _below(u - before, inner[:, -1:]), right=True)[:, 0]
    return j[:, 0] * block + k


def guided_logits(logits: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """Batch [cond; uncond] -> uncond + scale * (cond - uncond)."""
    cond, uncond = logits.chunk(2)
    return uncond + cfg_scale * (cond - uncond)


def decode_step(model: GPT, idx: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
    """Next-id logits (B, vocab) for one new id per row at position input_pos (1,): static shapes, no host sync."""
    return model(None, idx, input_pos=input_pos)[0][:, -1]


@functools.cache
def compiled_decode_step(mode: str | None = None) -> Callable:
    """`decode_step` under torch.compile(fullgraph=True, dynamic=False), one compiled function per mode."""
    return torch.compile(decode_step, fullgraph=True, mode=mode, dynamic=False)


def cfg_scale_at(t: int, num_tokens: int, cfg_scale: float, cfg_power: float | None = None) -> float:
    """Guidance scale of token t: constant, or RAR's schedule 1 + (s - 1) (1 - cos(pi (t / N)^power)) / 2."""
    if cfg_power is None:
        return cfg_scale
    return 1.0 + (cfg_scale - 1.0) * (1.0 - math.cos(math.pi * (t / num_tokens) ** cfg_power)) / 2.0


def cfg_applies(t: int, cfg_interval: int) -> bool:
    """Whether token t is guided: LlamaGen guides tokens 0 .. cfg_interval + 1, or all for cfg_interval < 0."""
    return cfg_interval < 0 or t <= cfg_interval + 1


@torch.no_grad()
def generate(model: GPT, labels: torch.Tensor, cfg_scale: float = 1.0, cfg_interval: int = -1, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, generator: torch.Generator | None = None,
             use_cache: bool = True, compile: bool | str = False, cfg_power: float | None = None,
             parallel: str = "none", window: int = 16) -> torch.Tensor:
    """Sample (B, num_tokens) ids for class labels (B,) from a GPT or a RAR (raster order).

    cfg_scale > 1.0 doubles the batch with the null class (guidance); otherwise one conditional branch runs.
    use_cache=False recomputes the whole prefix every step. compile=True (or a torch.compile mode such as
    'max-autotune') runs each decode step through torch.compile; 'reduce-overhead' is the default on CUDA.
    cfg_power (RAR) ramps the scale from 1 at token 0 towards cfg_scale at token N (`cfg_scale_at`).
    parallel="jacobi" decodes `window` ids per forward pass with the same distribution (`jacobi.jacobi_generate`).
    """
    require(parallel in PARALLEL_MODES, f"unknown parallel decoding '{parallel}'; choose from {', '.join(PARALLEL_MODES)}")
    if parallel == "jacobi":
        require(use_cache, "Jacobi decoding needs the KV cache (use_cache=True)")
        from vfmtok.generator.jacobi import jacobi_generate  # it imports this module's helpers

        return jacobi_generate(model, labels, cfg_scale, cfg_interval, temperature, top_k, top_p, generator,
                               compile, cfg_power, window)[0]
    cfg = model.config
    require(labels.dim() == 1 and labels.numel() > 0, "labels must be a non-empty 1-D tensor of class ids")
    require(temperature >= 0 and 0 < top_p <= 1 and top_k >= 0, "need temperature >= 0, 0 < top_p <= 1, top_k >= 0")
    device = model.head.weight.device
    labels = labels.to(device)
    B, N = labels.shape[0], cfg.num_tokens
    guided = cfg_scale > 1.0
    cond = torch.cat([labels, torch.full_like(labels, model.null_class)]) if guided else labels
    step = decode_step
    if compile and use_cache:
        mode = compile if isinstance(compile, str) else ("reduce-overhead" if device.type == "cuda" else None)
        step = compiled_decode_step(mode)
    was_training = model.training
    model.eval()
    try:
        if use_cache:
            model.setup_caches(cond.shape[0], N + 1)
        ids = torch.zeros(B, N, dtype=torch.long, device=device)
        for t in range(N):
            if not use_cache:
                prev = ids[:, :t]
                logits = model(cond, torch.cat([prev, prev]) if guided else prev, last_only=True)[0][:, -1]
            elif t == 0:  # prefill: the class token
                logits = model(cond, input_pos=torch.zeros(1, dtype=torch.long, device=device))[0][:, -1]
            else:  # the last ids as a fresh contiguous (rows, 1) tensor: one compiled graph serves every step
                logits = step(model, torch.cat([last, last]) if guided else last,
                              torch.full((1,), t, dtype=torch.long, device=device))
            if guided:
                logits = guided_logits(logits, cfg_scale_at(t, N, cfg_scale, cfg_power)) \
                    if cfg_applies(t, cfg_interval) else logits[:B]
            last = sample_next(logits, temperature, top_k, top_p, generator)[:, None]
            ids[:, t] = last[:, 0]
    finally:
        model.train(was_training)
    return ids
