"""The settings of `evaluate_tokenizer` and `evaluate_generator`: one dataclass each, the single home of their defaults
(the CLI's eval-tokenizer / eval-generator options are built from these)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SECOND_ENCODER = "vgg16_imagenet"


@dataclass
class TokenizerEvalConfig:
    """Reconstruct `num_images` of `data`/`split` and score them (rFID, PSNR, SSIM, LPIPS, codebook usage)."""

    tokenizer: str | Path | None = None  # checkpoint folder, run folder or Hub id
    data: str = "sample"
    split: str = "val"
    num_images: int | None = None  # a seeded random subset; None = all
    seed: int = 0
    batch_size: int = 32
    device: str = "auto"
    protocol: str = "vfmtok"  # "official": reconstruct at the tokenizer's size, score both at 256 (PIL bicubic)
    no_lpips: bool = False
    no_cache: bool = False  # recompute the reference statistics instead of reading the cache
    second_encoder: str = SECOND_ENCODER  # second-opinion Fréchet distance ("none" to skip)
    out: str | Path | None = None  # results JSON (+ .md table beside it)


@dataclass
class GeneratorEvalConfig:
    """gFID / IS / precision / recall of samples (a file, or drawn from `gpt` per CFG scale) against `ref`.

    Sampling settings (temperature, top-k, top-p, cfg_power, compile, seed, batch size) are those of
    `generator.sampling.SamplingConfig`, with one result per entry of `cfg_scales`."""

    ref: str | Path = "sample"  # dataset ('imagenette', folder, zip) or statistics .npz (ours or ADM's)
    gpt: str | Path | None = None
    tokenizer: str | Path | None = None  # default: the one recorded in the GPT's config
    samples: str | Path | None = None  # .npz (arr_0 uint8 NHWC) or a folder, instead of `gpt`
    ref_split: str = "val"
    ref_num_images: int | None = None
    images_per_class: int = 50
    cfg_scales: list[float] = field(default_factory=lambda: [1.0])
    cfg_power: float | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    compile: bool = False
    parallel: str = "none"  # "jacobi": speculative Jacobi decoding, `window` ids per forward pass
    window: int = 16
    image_size: int | None = None  # evaluation resolution (default: the samples')
    protocol: str = "vfmtok"
    labels: str | None = None  # "balanced" / "random"; default: the protocol's
    save_samples: str | Path | None = None
    save_ref_stats: str | Path | None = None
    num_images: int | None = None
    seed: int = 0
    batch_size: int = 32
    device: str = "auto"
    no_cache: bool = False
    second_encoder: str = SECOND_ENCODER
    out: str | Path | None = None
