"""Autoregressive sampling: static KV cache (prefill the class token, then one id per step), CFG, top-k/top-p.

Guidance follows each architecture's official rule (`model.guides(cfg_scale)`: LlamaGen's GPT guides only when
cfg_scale > 1.0, RAR whenever cfg_scale != 0); cfg_interval k guides tokens 0 .. k + 1 (-1: all), as LlamaGen
counts; top-p keeps the token that crosses the threshold.

A decode step is one function, `decode_token`: forward + CFG combine + temperature/top-k/top-p + the draw, with the
guidance schedule read from tensors at the step's position and the random numbers passed in. It has no host sync and
no data-dependent Python branch, so `generate(..., compile=True)` compiles it whole with fullgraph=True; a last
partial batch is padded to the compiled batch (`pad_to`), so one graph serves a whole run.

Reusable pieces (also for other decoders): `guided_logits` (CFG combine), `cfg_schedule` (per-token scales),
`top_k_top_p_filter`, `draw_noise` + `draw` (one id per row from given randoms), `sample_logits` (all of it from
logits), `sample_next` (the same with a torch.Generator).
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import torch
import torch.nn.functional as F

from vfmtok.utils.errors import require

# "icdf": inverse CDF, one uniform per row (cheapest on CPUs, where randoms cost); "race": argmax(p / E), E ~ Exp(1)
# per entry, the exponential race (Gumbel-max): no scan, no search, suits GPUs.
SAMPLERS = ("icdf", "race")


def default_sampler(device: torch.device) -> str:
    """The draw that wins on a device: inverse CDF on CPUs, the exponential race elsewhere."""
    return "icdf" if device.type == "cpu" else "race"


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


def draw_noise(rows: int, vocab: int, sampler: str, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu", pad_to: int = 0) -> torch.Tensor:
    """The randoms `draw` consumes for `rows` rows: (rows, 1) uniforms ("icdf") or (rows, vocab) Exp(1) ("race").

    pad_to > rows appends rows of ones (padding rows of a compiled batch), so the real rows see the same randoms
    whether or not the batch is padded.
    """
    require(sampler in SAMPLERS, f"unknown sampler '{sampler}'; choose from {', '.join(SAMPLERS)}")
    if sampler == "icdf":
        noise = torch.rand((rows, 1), generator=generator, device=device)
    else:
        noise = torch.empty((rows, vocab), device=device).exponential_(generator=generator)
    return F.pad(noise, (0, 0, 0, pad_to - rows), value=1.0) if pad_to > rows else noise


def _below(u: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """u clamped into [0, total): searchsorted(cdf, u, right=True) then lands on an entry with p > 0."""
    return torch.minimum(u.clamp(min=0), torch.nextafter(total, torch.zeros_like(total)))


def draw(probs: torch.Tensor, noise: torch.Tensor, block: int = 128) -> torch.Tensor:
    """One id per row of probs (B, V) >= 0, with probability proportional to its entry (zeros never drawn).

    The randoms come from `draw_noise`; their shape picks the method. (B, V) exponentials: the exponential race
    argmax(p / E), fully parallel. (B, 1) uniforms: inverse CDF (torch.multinomial spends ~0.5 ms per 16k-entry CPU
    row drawing randoms), in two levels, blocks of `block` ids and then the ids of the chosen block, because a cumsum
    over all V ids is a sequential scan on the CPU while block sums are not.
    """
    B, V = probs.shape
    if noise.shape[-1] == V and V > 1:
        return (probs / noise).argmax(-1)
    u = noise.to(probs.dtype)
    if V % block or V < 4 * block:
        cdf = probs.cumsum(-1)
        return torch.searchsorted(cdf, _below(u * cdf[:, -1:], cdf[:, -1:]), right=True)[:, 0]
    blocks = probs.view(B, V // block, block)
    bcdf = blocks.sum(-1).cumsum(-1)  # (B, V / block)
    u = _below(u * bcdf[:, -1:], bcdf[:, -1:])
    j = torch.searchsorted(bcdf, u, right=True)  # (B, 1): the first block whose cdf exceeds u, so its sum is > 0
    before = torch.where(j > 0, bcdf.gather(1, (j - 1).clamp(min=0)), torch.zeros_like(u))
    inner = blocks.gather(1, j[:, :, None].expand(B, 1, block))[:, 0].cumsum(-1)  # (B, block)
    k = torch.searchsorted(inner, _below(u - before, inner[:, -1:]), right=True)[:, 0]
    return j[:, 0] * block + k


def sample_logits(logits: torch.Tensor, noise: torch.Tensor | None, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0) -> torch.Tensor:
    """One id per row of logits (B, V) from given randoms (`draw_noise`); temperature 0 means argmax (noise unused)."""
    if temperature == 0:
        return logits.argmax(-1)
    scaled = logits.float() if temperature == 1.0 else logits.float() / temperature  # a 2 MB pass saved per step
    return draw(top_k_top_p_filter(scaled, top_k, top_p).softmax(-1), noise)


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None, sampler: str = "icdf") -> torch.Tensor:
    """Draw one id per row of logits (B, V) with randoms from `generator`; temperature 0 means argmax."""
    noise = None if temperature == 0 else draw_noise(logits.shape[0], logits.shape[-1], sampler, generator, logits.device)
    return sample_logits(logits, noise, temperature, top_k, top_p)


def guided_logits(logits: torch.Tensor, cfg_scale: float | torch.Tensor,
                  applies: torch.Tensor | None = None) -> torch.Tensor:
    """Batch [cond; uncond] -> uncond + scale * (cond - uncond); the cond rows unchanged where `applies` is False."""
    cond, uncond = logits.chunk(2)
    out = uncond + cfg_scale * (cond - uncond)
    return out if applies is None else torch.where(applies, out, cond)


def cfg_scale_at(t: int, num_tokens: int, cfg_scale: float, cfg_power: float | None = None) -> float:
    """Guidance scale of token t: constant, or RAR's schedule 1 + (s - 1) (1 - cos(pi (t / N)^power)) / 2."""
    if cfg_power is None:
        return cfg_scale
    return 1.0 + (cfg_scale - 1.0) * (1.0 - math.cos(math.pi * (t / num_tokens) ** cfg_power)) / 2.0


def cfg_applies(t: int, cfg_interval: int) -> bool:
    """Whether token t is guided: LlamaGen guides tokens 0 .. cfg_interval + 1, or all for cfg_interval < 0."""
    return cfg_interval < 0 or t <= cfg_interval + 1


def cfg_schedule(num_tokens: int, cfg_scale: float, cfg_interval: int = -1, cfg_power: float | None = None,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(scales fp32 (N,), applies bool (N,)) of every token: `decode_token` reads them at its position on device."""
    scales = [cfg_scale_at(t, num_tokens, cfg_scale, cfg_power) for t in range(num_tokens)]
    applies = [cfg_applies(t, cfg_interval) for t in range(num_tokens)]
    return (torch.tensor(scales, dtype=torch.float32, device=device),
            torch.tensor(applies, dtype=torch.bool, device=device))


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
    require(labels.dim() == 1 and labels.numel() > 0, "labels must be a non-empty 1-D tensor of class ids")
    require(temperature >= 0 and 0 < top_p <= 1 and top_k >= 0, "need temperature >= 0, 0 < top_p <= 1, top_k >= 0")
    require(cfg_scale >= 0 and (cfg_power is None or cfg_power >= 0),  # False for nan as well
            f"need --cfg-scale >= 0 and --cfg-power >= 0, got {cfg_scale} and {cfg_power}")
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
