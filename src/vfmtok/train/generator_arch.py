"""What differs between generator architectures in `train-generator`: the model class, its preset defaults and the
training pass (RAR permutes each sequence with a probability annealed over training). The trainer itself is shared.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from vfmtok.generator.gpt import GPT, GPT_PRESETS, preset_config
from vfmtok.generator.rar import RAR, RAR_PRESETS, rar_preset_config
from vfmtok.utils.errors import VFMTokError

ARCHS = ("gpt", "rar")

# The reference RAR recipe (1d-tokenizer / VFMTok-RAR configs/training/generator/rar*.yaml): AdamW 4e-4, betas
# (0.9, 0.96), weight decay 0.03, cosine to 1e-5 after a warm-up of 62.5k of 250k steps, grad clip 1.0, no EMA;
# permutation probability 1 until 125k steps, annealed linearly to 0 by 187.5k.
# The reference scheduler steps after the optimizer, so step s runs at lr * s / warmup (the first at 0).
RAR_TRAIN_DEFAULTS: dict[str, Any] = dict(lr=4e-4, betas=(0.9, 0.96), weight_decay=0.03, lr_schedule="cosine",
                                          min_lr=1e-5, warmup_frac=0.25, grad_clip=1.0, ema_decay=0.0,
                                          permute_anneal=(0.5, 0.75), warmup_from_one=False)
# LlamaGen's train_c2i.py for the paper's GPTs: EMA at a fixed 0.9999 from the first step (update_ema), no warm-up.
# The small CPU presets keep the decay warm-up, without which a short run exports almost its initial weights.
PAPER_GPT_TRAIN_DEFAULTS: dict[str, Any] = dict(ema_warmup=False)
SMALL_GPT_PRESETS = ("GPT-nano", "GPT-tiny")


def arch_of_preset(preset: str) -> str:
    """'gpt' or 'rar' for a preset name; one-line error for an unknown one."""
    if preset in GPT_PRESETS:
        return "gpt"
    if preset in RAR_PRESETS:
        return "rar"
    raise VFMTokError(f"unknown generator preset '{preset}'; choose from {', '.join([*GPT_PRESETS, *RAR_PRESETS])}")


def choose_preset(preset: str, arch: str | None, preset_given: bool) -> tuple[str, str]:
    """(preset, arch): `--arch rar` without a preset means RAR-B; a preset of the other architecture is an error."""
    if arch is not None and arch not in ARCHS:
        raise VFMTokError(f"--arch must be one of {', '.join(ARCHS)}, got '{arch}'")
    if arch == "rar" and not preset_given and arch_of_preset(preset) != "rar":
        preset = "RAR-B"
    found = arch_of_preset(preset)
    if arch is not None and arch != found:
        raise VFMTokError(f"preset '{preset}' is a {found.upper()} preset, not {arch.upper()}")
    return preset, found


def base_fields(preset: str, arch: str, facts: dict[str, Any]) -> dict[str, Any]:
    """GeneratorTrainConfig fields a preset starts from: its architecture (+ data facts) and the arch's defaults."""
    if arch == "rar":
        return {**RAR_TRAIN_DEFAULTS, "preset": preset, "arch": arch, "rar": rar_preset_config(preset, **facts)}
    paper = {} if preset in SMALL_GPT_PRESETS else PAPER_GPT_TRAIN_DEFAULTS
    return {**paper, "preset": preset, "arch": arch, "model": preset_config(preset, **facts)}


def model_config(cfg: Any):
    """The architecture config a training config trains (GPTConfig or RARConfig)."""
    return cfg.rar if cfg.arch == "rar" else cfg.model


def validate(cfg: Any) -> None:
    """One-line errors for the architecture config and the RAR / top-k training fields."""
    model_config(cfg).validate()
    a, b = cfg.permute_anneal
    if not 0.0 <= a <= b <= 1.0:
        raise VFMTokError(f"permute_anneal must be two fractions 0 <= start <= end <= 1, got {tuple(cfg.permute_anneal)}")
    if cfg.topk_codes < 1 or (cfg.topk_codes > 1 and cfg.codes):
        raise VFMTokError("topk_codes must be >= 1, and > 1 only with --data (for codes use `extract-codes --topk`)")


def build_model(cfg: Any) -> nn.Module:
    """A freshly initialised GPT or RAR for a training config."""
    return RAR(cfg.rar) if cfg.arch == "rar" else GPT(cfg.model)


def permute_ratio(step: int, total_steps: int, anneal: tuple[float, float]) -> float:
    """RAR's r: 1 before anneal[0] * total, then linearly down to 0 at anneal[1] * total, 0 after."""
    start, end = anneal[0] * total_steps, anneal[1] * total_steps
    if step < start:
        return 1.0
    if step >= end:  # also start == end: a hard switch
        return 0.0
    return 1.0 - (step - start) / (end - start)


def sample_orders(batch: int, n: int, ratio: float, device: torch.device | str = "cpu",
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch, n) token orders: each row a uniform random permutation with probability `ratio`, else raster."""
    raster = torch.arange(n, device=device).expand(batch, n)
    if ratio <= 0:
        return raster.clone()
    shuffled = torch.rand(batch, n, generator=generator, device=device).argsort(-1)
    pick = torch.rand(batch, 1, generator=generator, device=device) < ratio
    return torch.where(pick, shuffled, raster)


def training_loss(model: nn.Module, cfg: Any, labels: torch.Tensor, ids: torch.Tensor, step: int) -> torch.Tensor:
    """Next-token CE of one batch: raster for the GPT; for RAR, ids, targets and positions permuted together."""
    if cfg.arch != "rar":
        return model(labels, ids[:, :-1], targets=ids)[1]
    orders = sample_orders(ids.shape[0], ids.shape[1], permute_ratio(step, cfg.steps, cfg.permute_anneal), ids.device)
    shuffled = ids.gather(1, orders)
    return model(labels, shuffled[:, :-1], targets=shuffled, orders=orders)[1]


def encode_batch(tokenizer: Any, images: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Ids (B, N), or with k > 1 the k nearest-code sequences of each image as rows (B * k, N), image-major."""
    if k <= 1:
        return tokenizer.encode(images)
    return tokenizer.encode_topk(images, k).flatten(0, 1)


def effective_warmup(cfg: Any) -> int:
    """warmup_steps, or warmup_frac of the run when warmup_steps is 0."""
    return cfg.warmup_steps if cfg.warmup_steps > 0 else int(round(cfg.warmup_frac * cfg.steps))
