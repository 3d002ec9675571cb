"""Typed sampling: `SamplingConfig` (the one home of the CFG / temperature / top-k / top-p defaults), images from
class labels, and a folder of samples from checkpoint paths (what `vfmtok sample` runs)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from vfmtok.generator.bundled import default_generator
from vfmtok.generator.checkpoint import load_generator
from vfmtok.generator.pairing import load_gpt_tokenizer
from vfmtok.generator.sample import generate_images, parse_labels, save_samples
from vfmtok.utils.device import resolve_device
from vfmtok.utils.errors import require


@dataclass(frozen=True)
class SamplingConfig:
    """How ids are drawn. temperature / top_k / top_p left None take the model's recommendation (config.json's
    "sampling"), else 1.0 / 0 / 1.0 (off)."""

    cfg_scale: float = 1.0  # classifier-free guidance (1.0 = off, one branch)
    cfg_interval: int = -1  # guide only the first N tokens (-1 = all)
    cfg_power: float | None = None  # RAR's schedule: the scale ramps 1 -> cfg_scale (None = constant)
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0
    batch_size: int = 32
    compile: bool | str = False  # torch.compile of the decode step
    parallel: str = "none"  # "jacobi": speculative Jacobi decoding (same distribution, fewer sequential passes)
    window: int = 16  # ids per forward pass with parallel="jacobi"

    def for_model(self, gpt: Any) -> "SamplingConfig":
        """This config with temperature / top_k / top_p filled from the model's recommendation."""
        t, k, p = gpt.sampling_args(self.temperature, self.top_k, self.top_p)
        return dataclasses.replace(self, temperature=t, top_k=k, top_p=p)


def sample_images(gpt: Any, tokenizer: Any, labels: torch.Tensor | Sequence[int],
                  config: SamplingConfig = SamplingConfig()) -> np.ndarray:
    """uint8 images (N, H, W, 3) for class labels (N,); the same config gives the same images."""
    c = config.for_model(gpt)
    return generate_images(gpt, tokenizer, torch.as_tensor(labels), cfg_scale=c.cfg_scale, cfg_interval=c.cfg_interval,
                           temperature=c.temperature, top_k=c.top_k, top_p=c.top_p, seed=c.seed,
                           batch_size=c.batch_size, compile=c.compile, cfg_power=c.cfg_power,
                           parallel=c.parallel, window=c.window)


def sample_to_folder(out: str | Path = "samples", gpt_path: str | Path | None = None, tokenizer: str | Path | None = None,
                     classes: Sequence[str | int] = (), per_class: int = 4, config: SamplingConfig = SamplingConfig(),
                     device: str = "auto", precision: str = "bf16") -> dict[str, Any]:
    """Sample `per_class` images of each class (all classes when none given; the bundled model when no GPT is given)
    into `out` (grid.png, images/, samples.npz, sample_info.json); returns the written paths and the image count."""
    require(per_class >= 1 and config.batch_size >= 1,
            f"per_class and batch_size must be >= 1, got {per_class} and {config.batch_size}")
    dev = resolve_device(device)
    gpt_path = gpt_path or default_generator()
    gpt = load_generator(gpt_path, device=dev)
    if dev.type == "cuda" and precision != "fp32":
        gpt = gpt.to(torch.bfloat16 if precision == "bf16" else torch.float16)
    tok = load_gpt_tokenizer(gpt, tokenizer, dev)
    c = config.for_model(gpt)
    n_cls = gpt.config.num_classes
    chosen = parse_labels(classes, gpt.class_names, n_cls) if classes else list(range(n_cls))
    labels = [k for k in chosen for _ in range(per_class)]
    t0 = time.perf_counter()
    images = sample_images(gpt, tok, torch.tensor(labels), c)
    info = {"gpt": str(gpt_path), "arch": gpt.model_type, "tokenizer": str(tok.checkpoint_path),
            "tokenizer_hash": tok.checkpoint_hash, "cfg_scale": c.cfg_scale, "cfg_interval": c.cfg_interval,
            "cfg_power": c.cfg_power, "temperature": c.temperature, "top_k": c.top_k,
            "top_p": c.top_p, "seed": c.seed, "batch_size": c.batch_size, "precision": precision,
            "device": str(dev), "compile": c.compile, "parallel": c.parallel, "window": c.window,
            "seconds_incl_compile": round(time.perf_counter() - t0, 3), "labels": labels}
    paths = save_samples(out, images, labels, gpt.class_names, ncol=per_class if per_class > 1 else 8, info=info)
    return {**paths, "num_images": len(images)}
