"""Speculative Jacobi decoding (SJD, Teng et al., ICLR 2025): several ids per forward pass, same sampling distribution.

Each iteration feeds a window of K ids (the accepted prefix's last id, then drafts) through one forward pass over
the static KV cache and gets the target distribution p of every window position. Draft i, drawn from q_i, is kept
with probability min(1, p_i(x) / q_i(x)); at the first rejection the id is redrawn from max(0, p - q) normalised
(speculative sampling, exact for any q), and every later draft is redrawn from this pass's p (the Jacobi update),
which becomes its q. Positions past the window start as drafts drawn uniformly ("uniform", as SJD) or from the
window's last distribution ("last"). p is the CFG-combined, temperature-scaled, top-k/top-p filtered distribution
standard sampling draws from; temperature 0 makes p one-hot, so the ids equal greedy decoding's.

Rows of a batch advance on their own: the window starts at the least advanced row, and ids a row has already
fixed inside it are fed, not verified. Cache entries past a row's fixed prefix are rewritten before any query of a
later window can attend to them (the causal mask selects keys by position, and each window rewrites its positions).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch

from vfmtok.generator.sampler import (cfg_schedule, check_sampling_args, draw, draw_noise, filtered_probs,
                                     guided_logits)
from vfmtok.utils.errors import require

DRAFT_INITS = ("uniform", "last")


@dataclass
class JacobiStats:
    """What a Jacobi decode cost: sequential forward passes (prefill included) for num_tokens ids per row."""

    forward_passes: int
    num_tokens: int
    window: int


def window_step(model: torch.nn.Module, idx: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
    """Logits (rows, K, vocab) for the K ids idx (rows, K) at sequence positions input_pos (K,): static shapes."""
    return model(None, idx, input_pos=input_pos)[0]


@functools.cache
def compiled_window_step(mode: str | None = None) -> Callable:
    """`window_step` under torch.compile(fullgraph=True, dynamic=False), one compiled function per mode."""
    return torch.compile(window_step, fullgraph=True, mode=mode, dynamic=False)


def target_probs(logits: torch.Tensor, batch: int, scales: torch.Tensor | None, guide: torch.Tensor | None,
                 temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """(B, K, V) distributions standard sampling draws from, for window logits (rows, K, V).

    scales (K,) are the guidance scales of the window's tokens and guide (K,) whether each is guided (None: no CFG);
    temperature 0 gives the one-hot of the argmax.
    """
    if scales is not None:
        cond = logits[:batch]
        logits = torch.where(guide[:, None], guided_logits(logits, scales[:, None]), cond)
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    return filtered_probs(logits, temperature, top_k, top_p)


def accepts(p_draft: torch.Tensor, q_draft: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Speculative acceptance: keep a draft when u < p(x) / q(x) (u uniform in [0, 1)), without dividing by q."""
    return u * q_draft < p_draft


def _draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One id per row of probs (B, V), by the inverse CDF (one uniform per row)."""
    return draw(probs, draw_noise(probs.shape[0], probs.shape[1], "icdf", generator, probs.device))


def _draw_rows(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One id per (B, K) distribution of probs (B, K, V)."""
    B, K, V = probs.shape
    return _draw(probs.reshape(B * K, V), generator).view(B, K)


def verify(p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor, fixed: torch.Tensor,
           generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One SJD verification of a window: (new window ids (B, K), ids now fixed per row counted from the window start).

    p, q (B, K, V): target and draft distributions; drafts (B, K); fixed (B,): leading window positions already fixed.
    """
    B, K, _ = p.shape
    pos = torch.arange(K, device=p.device)
    p_d = p.gather(-1, drafts[..., None])[..., 0]
    q_d = q.gather(-1, drafts[..., None])[..., 0]
    u = torch.rand((B, K), generator=generator, device=p.device, dtype=p.dtype)
    ok = accepts(p_d, q_d, u) | (pos < fixed[:, None])
    first_bad = ok.long().cumprod(1).sum(1)  # (B,): leading positions kept; K when all are
    rows = torch.arange(B, device=p.device)
    at = first_bad.clamp(max=K - 1)
    p_r, q_r = p[rows, at], q[rows, at]
    residual = (p_r - q_r).clamp(min=0)
    # p == q leaves no residual mass (a rejection then only happens by rounding): draw from p itself
    residual = torch.where(residual.sum(-1, keepdim=True) > 0, residual, p_r)
    redrawn = _draw(residual, generator)
    fresh = _draw_rows(p, generator)  # the Jacobi update of every draft after the rejection
    col = pos[None]
    bad = first_bad[:, None]
    new = torch.where(col < bad, drafts, torch.where(col == bad, redrawn[:, None], fresh))
    return new, torch.where(first_bad < K, first_bad + 1, first_bad)


def _init_drafts(p_last: torch.Tensor, count: int, init: str,
                 generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (B, count), their draft distributions (B, count, V)) for positions entering the window."""
    B, V = p_last.shape
    if init == "last":
        q = p_last[:, None].expand(B, count, V)
    else:
        q = torch.full((B, count, V), 1.0 / V, dtype=p_last.dtype, device=p_last.device)
    return _draw_rows(q, generator), q


@torch.no_grad()
def jacobi_generate(model: torch.nn.Module, labels: torch.Tensor, cfg_scale: float = 1.0, cfg_interval: int = -1,
                    temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                    generator: torch.Generator | None = None, compile: bool | str = False,
                    cfg_power: float | None = None, window: int = 16,
                    init: str = "uniform") -> tuple[torch.Tensor, JacobiStats]:
    """Sample (B, num_tokens) ids for class labels (B,) by speculative Jacobi decoding; same arguments as `generate`.

    window is K, the ids one forward pass takes (clamped to num_tokens - 1); init how drafts entering the window
    are drawn (DRAFT_INITS). Returns the ids and the number of sequential forward passes.
    """
    cfg = model.config
    check_sampling_args(labels, temperature, top_k, top_p, cfg_scale, cfg_power)
    require(window >= 1, f"the Jacobi window must be >= 1, got {window}")
    require(init in DRAFT_INITS, f"unknown draft init '{init}'; choose from {', '.join(DRAFT_INITS)}")
    device = model.head.weight.device
    labels = labels.to(device)
    B, N = labels.shape[0], cfg.num_tokens
    K = 1 if N == 1 else min(window, N - 1)  # later windows start at >= 1: only the first one holds the class
    guided = model.guides(cfg_scale)  # each architecture's official rule, as standard sampling follows it
    cond = torch.cat([labels, torch.full_like(labels, model.null_class)]) if guided else labels
    scales, guide = cfg_schedule(N, cfg_scale, cfg_interval, cfg_power, device) if guided else (None, None)
    step = window_step
    if compile:
        step = compiled_window_step(compile if isinstance(compile, str) else
                                    ("reduce-overhead" if device.type == "cuda" else None))
    was_training = model.training
    model.eval()
    try:
        model.setup_caches(cond.shape[0], N + 1)
        ids = torch.zeros(B, N, dtype=torch.long, device=device)
        V = model.head.weight.shape[0]
        uniform = torch.full((B, V), 1.0 / V, device=device)
        ids[:, :K], q = _init_drafts(uniform, K, "uniform", generator)  # nothing better is known before the prefill
        fixed = torch.zeros(B, dtype=torch.long, device=device)  # ids fixed per row
        s, passes = 0, 0
        while True:
            pos = torch.arange(s, s + K, device=device)
            if s == 0:  # prefill: the class token, then the first K - 1 drafts
                inp = ids[:, : K - 1]
                inp = torch.cat([inp, inp]) if guided else inp
                logits = model(cond, inp if K > 1 else None, input_pos=pos)[0]
            else:  # a fresh contiguous (rows, K) tensor: one compiled graph serves every window
                inp = ids[:, s - 1: s + K - 1]
                logits = step(model, torch.cat([inp, inp]) if guided else inp.contiguous(), pos)
            passes += 1
            p = target_probs(logits, B, None if scales is None else scales[s: s + K],
                             None if guide is None else guide[s: s + K], temperature, top_k, top_p)
            new, kept = verify(p, q, ids[:, s: s + K], fixed - s, generator)
            ids[:, s: s + K] = new
            fixed = s + kept
            least = int(fixed.min())  # the one host sync per pass
            if least >= N:
                break
            nxt = min(least, N - K)
            shift = nxt - s
            if shift:
                fresh_ids, fresh_q = _init_drafts(p[:, -1], shift, init, generator)
                ids[:, s + K: nxt + K] = fresh_ids
                q = torch.cat([p[:, shift:], fresh_q], dim=1)
            else:
                q = p
            s = nxt
    finally:
        model.train(was_training)
    return ids, JacobiStats(forward_passes=passes, num_tokens=N, window=K)
