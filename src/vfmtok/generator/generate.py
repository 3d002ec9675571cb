"""Autoregressive sampling: static KV cache (prefill the class token, then one id per step), CFG, top-k/top-p.

Guidance follows each architecture's official rule (`model.guides(cfg_scale)`: LlamaGen's GPT guides only when
cfg_scale > 1.0, RAR whenever cfg_scale != 0); cfg_interval k guides tokens 0 .. k + 1 (-1: all), as LlamaGen
counts; top-p keeps the token that crosses the threshold.

A decode step is one function, `decode_token`: forward + CFG combine + temperature/top-k/top-p + the draw, with the
guidance schedule read from tensors at the step's position and the random numbers passed in. It has no host sync and
no data-dependent Python branch, so `generate(..., compile=True)` compiles it whole with fullgraph=True; a last
partial batch is padded to the compiled batch (`pad_to`), so one graph serves a whole run.

Reusable pieces (generator/sampler.py, re-exported here; Jacobi decoding uses them too): `guided_logits` (CFG
combine), `cfg_schedule` (per-token scales), `top_k_top_p_filter`, `draw_noise` + `draw` (one id per row from given
randoms), `sample_logits` (all of it from logits), `sample_next` (the same with a torch.Generator).
"""

from __future__ import annotations

import functools
from typing import Callable

import torch

from vfmtok.generator.sampler import (SAMPLERS, cfg_applies, cfg_scale_at, cfg_schedule,  # noqa: F401
                                     check_sampling_args, default_sampler, draw, draw_noise, guided_logits,
                                     sample_logits, sample_next, top_k_top_p_filter)
from vfmtok.utils.errors import require

PARALLEL_MODES = ("none", "jacobi")  # "jacobi": speculative Jacobi decoding (vfmtok.generator.jacobi)


def decode_step(model: torch.nn.Module, idx: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
    """Next-id logits (B, vocab) for one new id per row at position input_pos (1,): static shapes, no host sync."""
    return model(None, idx, input_pos=input_pos)[0][:, -1]


def decode_token(model: torch.nn.Module, last: torch.Tensor, input_pos: torch.Tensor, noise: torch.Tensor | None,
                 scales: torch.Tensor | None, applies: torch.Tensor | None, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """The whole decode step: ids (B,) of token input_pos (1,) from the previous ids last (B, 1).

    Guided when `scales` (from `cfg_schedule`) is given: the [cond; uncond] batch runs at once and the scale of
    this position is read on device, so neither the RAR schedule nor the interval recompiles or syncs.
    """
    guided = scales is not None
    logits = decode_step(model, torch.cat([last, last]) if guided else last, input_pos)
    if guided:
        logits = guided_logits(logits, scales[input_pos], applies[input_pos])
    return sample_logits(logits, noise, temperature, top_k, top_p)


def compile_options(mode: str | None, device: torch.device) -> dict:
    """Inductor options of a torch.compile mode, plus freezing on CPU (weights become constants of the code)."""
    options = dict(torch._inductor.list_mode_options(mode or "default"))
    if device.type == "cpu":
        options["freezing"] = True
    return options


def cpu_compile_mode(rows: int) -> str | None:
    """The inductor mode for a CPU decode batch of `rows` rows: default and max-autotune-no-cudagraphs measured level
    for the whole step at batch 1 and 32 (benchmarks/results/generator_speed.md); max-autotune is kept for all sizes,
    as it led for the plain compiled step at batch 1 in the issue's measurement."""
    return "max-autotune-no-cudagraphs"


def default_compile_mode(device: torch.device, rows: int) -> str | None:
    """compile=True: CUDA graphs on CUDA, the measured winner per batch size on CPU, inductor's default elsewhere."""
    if device.type == "cuda":
        return "reduce-overhead"
    return cpu_compile_mode(rows) if device.type == "cpu" else None


@functools.cache
def compiled_decode_token(mode: str | None, device_type: str) -> Callable:
    """`decode_token` under torch.compile(fullgraph=True, dynamic=False), one compiled function per mode and device.

    On CPU the code is frozen: a model whose weights change in place after sampling needs torch._dynamo.reset().
    """
    options = compile_options(mode, torch.device(device_type))
    return torch.compile(decode_token, fullgraph=True, dynamic=False, options=options)


@torch.no_grad()
def generate(model: torch.nn.Module, labels: torch.Tensor, cfg_scale: float = 1.0, cfg_interval: int = -1,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, generator: torch.Generator | None = None,
             use_cache: bool = True, compile: bool | str = False, cfg_power: float | None = None,
             sampler: str | None = None, pad_to: int = 0, parallel: str = "none", window: int = 16) -> torch.Tensor:
    """Sample (B, num_tokens) ids for class labels (B,) from a GPT or a RAR (raster order).

    Guidance (the batch doubled with the null class) when the model's official rule says so (`model.guides`).
    use_cache=False recomputes the whole prefix every step. compile=True (or a torch.compile mode such as
    'max-autotune') compiles the whole decode step (`decode_token`); pad_to > B pads the rows of a compiled run to
    that batch (the compiled one), so a last partial batch reuses the graph. cfg_power (RAR) ramps the scale from 1
    at token 0 towards cfg_scale at token N (`cfg_scale_at`). sampler: 'icdf' or 'race' (default: per device).
    parallel="jacobi" decodes `window` ids per forward pass with the same distribution (`jacobi.jacobi_generate`).
    """
    require(parallel in PARALLEL_MODES, f"unknown parallel decoding '{parallel}'; choose from {', '.join(PARALLEL_MODES)}")
    if parallel == "jacobi":
        require(use_cache, "Jacobi decoding needs the KV cache (use_cache=True)")
        from vfmtok.generator.jacobi import jacobi_generate  # it imports this module's helpers

        return jacobi_generate(model, labels, cfg_scale, cfg_interval, temperature, top_k, top_p, generator,
                               compile, cfg_power, window)[0]
    cfg = model.config
    check_sampling_args(labels, temperature, top_k, top_p, cfg_scale, cfg_power)
    device = model.head.weight.device
    sampler = sampler or default_sampler(device)
    B, N, V = labels.shape[0], cfg.num_tokens, cfg.vocab_size
    compiled = bool(compile) and use_cache
    rows = max(B, pad_to) if compiled else B  # padding rows (null class) are dropped at the end
    labels = labels.to(device)
    if rows > B:
        labels = torch.cat([labels, torch.full((rows - B,), model.null_class, dtype=labels.dtype, device=device)])
    guided = model.guides(cfg_scale)
    scales, applies = cfg_schedule(N, cfg_scale, cfg_interval, cfg_power, device) if guided else (None, None)
    cond = torch.cat([labels, torch.full_like(labels, model.null_class)]) if guided else labels
    step = decode_token
    if compiled:
        mode = compile if isinstance(compile, str) else default_compile_mode(device, rows)
        step = compiled_decode_token(mode, device.type)
    noise = lambda: None if temperature == 0 else draw_noise(B, V, sampler, generator, device, rows)  # noqa: E731
    was_training = model.training
    model.eval()
    try:
        if use_cache:
            model.setup_caches(cond.shape[0], N + 1)
        ids = torch.zeros(B, N, dtype=torch.long, device=device)
        for t in range(N):
            if t > 0 and use_cache:  # ids of the last step as a (rows, 1) view of a fresh tensor: one graph serves all
                nxt = step(model, last, torch.full((1,), t, dtype=torch.long, device=device), noise(), scales, applies,
                           temperature, top_k, top_p)
            else:
                if use_cache:  # prefill: the class token
                    logits = model(cond, input_pos=torch.zeros(1, dtype=torch.long, device=device))[0][:, -1]
                else:
                    prev = ids[:, :t]
                    logits = model(cond, torch.cat([prev, prev]) if guided else prev, last_only=True)[0][:, -1]
                if guided:
                    logits = guided_logits(logits, scales[t: t + 1], applies[t: t + 1])
                nxt = sample_logits(logits, noise(), temperature, top_k, top_p)
            last = nxt.view(-1, 1)
            ids[:, t] = nxt[:B]
    finally:
        model.train(was_training)
    return ids
