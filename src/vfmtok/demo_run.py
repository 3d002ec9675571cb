"""`vfmtok demo` as a library call: `run_demo(DemoConfig(out=...)) -> report.html`.

The default demo shows the project doing its job in a few minutes: the bundled model samples every class,
reconstructs held-out images, shows their token ids and where the anchor queries sample; then a tokenizer and a
GPT train briefly from scratch, so both losses can be seen falling. `full=True` is the whole from-scratch
pipeline instead (longer training, sampling, evaluation with gFID and class consistency).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vfmtok.demo_stages import evaluate_pair, loss_trend, train_small_pair
from vfmtok.utils.errors import require

# Default step counts: (tokenizer, generator) of the quick demo and of the full one (see docs/results/demo.md).
QUICK_STEPS = (80, 200)
FULL_STEPS = (450, 550)


@dataclass
class DemoConfig:
    """What the demo runs; None steps take the defaults of the chosen mode."""

    out: Path = Path("runs/demo")
    data: str = "sample"              # the embedded Imagenette sample: works offline, on a fresh clone
    full: bool = False                # the whole from-scratch pipeline (about 13 minutes on 2 cores)
    tokenizer_steps: int | None = None
    generator_steps: int | None = None
    per_class: int | None = None      # samples per class (default 4; 8 with full, for its 80-sample scores)
    arch: str = "gpt"                 # generator trained from scratch: "gpt" (LlamaGen) or "rar"
    model: Path | None = None         # exported model for the tour (default: the bundled one)
    device: str = "auto"
    smoke: bool = False               # a tiny run of every stage (the tests)

    def steps(self) -> tuple[int, int]:
        """(tokenizer, generator) steps after defaults."""
        base = (6, 6) if self.smoke else FULL_STEPS if self.full else QUICK_STEPS
        return (self.tokenizer_steps or base[0], self.generator_steps or base[1])

    def samples_per_class(self) -> int:
        """Samples per class after the default of the chosen mode."""
        return self.per_class or (2 if self.smoke and self.full else 8 if self.full else 4)

    def validate(self) -> None:
        """One-line errors for values no stage could use."""
        tok, gen = self.steps()
        require(tok >= 1 and gen >= 1 and self.samples_per_class() >= 1, "demo steps and per_class must be >= 1")
        require(self.arch in ("gpt", "rar"), f"arch must be 'gpt' or 'rar', got {self.arch!r}")


def _stage(name: str) -> None:
    print(f"\n== {name} ==", flush=True)


def run_demo(cfg: DemoConfig) -> Path:
    """Run the demo into cfg.out (finished stages are reused) and return the path of its report.html."""
    from vfmtok.data.sources import resolve_dataset
    from vfmtok.utils.device import resolve_device

    cfg.validate()
    data = resolve_dataset(cfg.data)
    _check_splits(data)
    device = str(resolve_device(cfg.device))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    return (_full(cfg, out, data, device) if cfg.full else _quick(cfg, out, data, device)).resolve()


def _check_splits(data: Path) -> None:
    """Fail before any stage runs when the dataset is no folder/zip of class sub-folders with train/ and val/ images."""
    from vfmtok.data.imagefolder import ImageFolderDataset

    for split in ("train", "val"):
        images = len(ImageFolderDataset(data, 16, split=split))
        require(images > 0, f"dataset {data} has no images in its {split} split")


def _quick(cfg: DemoConfig, out: Path, data: Path, device: str) -> Path:
    from vfmtok.demo_report import write_quick_report
    from vfmtok.demo_tour import tour_bundled_model

    timings: dict[str, float] = {}
    t = time.time()
    _stage("1/3 the bundled model: sample every class, reconstruct held-out images, token ids, anchor regions")
    tour = tour_bundled_model(cfg.model, data, out / "bundled", cfg.samples_per_class(), device)
    timings["bundled model"] = time.time() - t

    t = time.time()
    _stage("2/3 a short training from scratch (tokenizer, then a GPT on its codes)")
    tok_steps, gen_steps = cfg.steps()
    log_every = max(1, min(10, tok_steps // 8))
    pair = train_small_pair(data, out / "scratch", tok_steps, gen_steps, cfg.arch, device, cfg.smoke,
                            log_every=log_every, cache_views=None if cfg.smoke else 2, stage=_stage)
    scratch = _scratch_pictures(pair, data, out / "scratch", device)
    timings["training from scratch"] = time.time() - t

    _stage("3/3 report")
    trends = {"tokenizer": loss_trend(out / "scratch" / "tokenizer" / "metrics.jsonl", "total"),
              "generator": loss_trend(out / "scratch" / "generator" / "metrics.jsonl", "loss")}
    return write_quick_report(out, tour, pair, scratch, trends, timings, str(data))


@torch.no_grad()
def _scratch_pictures(pair, data: Path, out: Path, device: str) -> dict[str, np.ndarray]:
    """Reconstructions of held-out images and one sample per class from the pair trained in this run."""
    from vfmtok.figures import one_per_class, reconstruction_rows
    from vfmtok.generator.checkpoint import load_generator
    from vfmtok.generator.sample import generate_images
    from vfmtok.tokenizer.api import load_tokenizer

    tok = load_tokenizer(pair.tokenizer_dir, device)
    x, _ = one_per_class(str(data), tok.image_size, "val")
    gpt = load_generator(pair.generator_dir, device=torch.device(device))
    labels = torch.arange(pair.num_classes)
    samples = generate_images(gpt, tok, labels, cfg_scale=1.0, seed=0)
    return {"reconstructions": reconstruction_rows(tok, x.to(device), scale=2), "samples": samples,
            "labels": labels.numpy()}


def _full(cfg: DemoConfig, out: Path, data: Path, device: str) -> Path:
    from vfmtok.demo_report import write_report
    from vfmtok.generator.sampling import SamplingConfig, sample_to_folder

    timings: dict[str, float] = {}
    t0 = time.time()
    tok_steps, gen_steps = cfg.steps()
    pair = train_small_pair(data, out, tok_steps, gen_steps, cfg.arch, device, cfg.smoke, stage=_stage)
    timings["training (tokenizer, codes, generator)"] = time.time() - t0

    _stage("sample every class without classifier-free guidance")
    t = time.time()
    sample_to_folder(out / "samples", pair.generator_dir, pair.tokenizer_dir, per_class=cfg.samples_per_class(),
                     config=SamplingConfig(cfg_scale=1.0, seed=0), device=device)
    timings["sample"] = time.time() - t

    _stage("evaluate: reconstruction (PSNR/SSIM/LPIPS/rFID, codebook usage), generation (gFID, precision/recall), "
           "class consistency")
    t = time.time()
    evaluate_pair(pair.tokenizer_dir, data, out, device, cfg.smoke)
    timings["evaluate"] = time.time() - t

    _stage("report")
    return write_report(out, pair.tokenizer_dir, pair.generator_dir, data, timings)
