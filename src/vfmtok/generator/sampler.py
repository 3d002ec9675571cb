"""Sampling primitives shared by every decoder (`generate`, speculative Jacobi decoding): CFG combine and schedule,
temperature / top-k / top-p, and the draw of one id per row from given randoms (no host sync anywhere)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vfmtok.utils.errors import require

# "icdf": inverse CDF, one uniform per row (cheapest on CPUs, where randoms cost); "race": argmax(p / E), E ~ Exp(1)
# per entry, the exponential race (Gumbel-max): no scan, no search, suits GPUs.
SAMPLERS = ("icdf", "race")


def check_sampling_args(labels: torch.Tensor, temperature: float, top_k: int, top_p: float, cfg_scale: float,
                        cfg_power: float | None) -> None:
    """One-line errors for arguments no decoder can sample with."""
    require(labels.dim() == 1 and labels.numel() > 0, "labels must be a non-empty 1-D tensor of class ids")
    require(temperature >= 0 and 0 < top_p <= 1 and top_k >= 0, "need temperature >= 0, 0 < top_p <= 1, top_k >= 0")
    require(cfg_scale >= 0 and (cfg_power is None or cfg_power >= 0),  # False for nan as well
            f"need --cfg-scale >= 0 and --cfg-power >= 0, got {cfg_scale} and {cfg_power}")


def default_sampler(device: torch.device) -> str:
    """The draw that wins on a device: inverse CDF on CPUs, the exponential race elsewhere."""
    return "icdf" if device.type == "cpu" else "race"




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
    return draw(filtered_probs(logits, temperature, top_k, top_p), noise)


def filtered_probs(logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """The fp32 distribution (..., V) sampling draws from: temperature (> 0), then top-k / top-p, then softmax."""
    scaled = logits.float() if temperature == 1.0 else logits.float() / temperature  # a 2 MB pass saved per step
    return top_k_top_p_filter(scaled, top_k, top_p).softmax(-1)


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
