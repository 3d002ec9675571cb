"""The demo's from-scratch stages as typed functions: train a small tokenizer, its codes, a small generator, and
(for the full demo) evaluate them. Each stage resumes when its output is already complete."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOKENIZER_PRESET = "vfmtok-cpu-64"


@dataclass
class TrainedPair:
    """Checkpoint folders of a tokenizer and generator trained by the demo, and the loaded tokenizer."""

    tokenizer_dir: Path
    generator_dir: Path
    tokenizer: Any
    num_classes: int


def finished(run_dir: Path, steps: int) -> bool:
    """Whether `run_dir` already holds the checkpoint of step `steps` as its latest."""
    latest = run_dir / "latest.txt"
    return latest.is_file() and latest.read_text().strip() == f"step_{steps:07d}"


def train_small_tokenizer(data: Path, run_dir: Path, steps: int, device: str = "auto", smoke: bool = False,
                          log_every: int = 10, cache_views: int | None = None):
    """Train (or resume) the vfmtok-cpu-64 tokenizer on `data`; returns (checkpoint folder, loaded tokenizer)."""
    from vfmtok.tokenizer.api import VFMTokenizer
    from vfmtok.tokenizer.config import get_preset
    from vfmtok.train.tokenizer import train_tokenizer
    from vfmtok.utils.pretrained import resolve_checkpoint

    cfg = get_preset(TOKENIZER_PRESET)
    cfg.train.data = str(data)
    cfg.train.steps = steps
    cfg.train.save_every = max(1, steps // 2)
    cfg.train.log_every = log_every
    cfg.train.warmup_steps = min(cfg.train.warmup_steps, max(1, steps // 5))
    cfg.train.device = device
    if cache_views is not None:
        cfg.train.cache_views = cache_views
    if smoke:
        cfg.train.cache_views = 1
        cfg.train.batch_size = 8
    if not finished(run_dir, steps):
        train_tokenizer(cfg, run_dir, resume=(run_dir / "latest.txt").exists())
    tok_dir = resolve_checkpoint(run_dir)
    return tok_dir, VFMTokenizer.from_pretrained(tok_dir)


def extract_demo_codes(tok, data: Path, out: Path) -> tuple[Path, int]:
    """Codes of every training image and its horizontal flip; returns (codes folder, number of classes)."""
    from vfmtok.data.imagefolder import ImageFolderDataset
    from vfmtok.train.extract import extract_codes

    train_ds = ImageFolderDataset(data, tok.image_size, split="train")
    return extract_codes(tok, train_ds, out, batch_size=32), len(train_ds.classes)


def train_small_generator(tok, codes: Path, num_classes: int, run_dir: Path, steps: int, arch: str = "gpt",
                          device: str = "auto", log_every: int = 10) -> Path:
    """Train (or resume) GPT-tiny / RAR-tiny on `codes`; returns its checkpoint folder."""
    from vfmtok.train import generator_arch
    from vfmtok.train.generator import GeneratorTrainConfig, train_generator
    from vfmtok.utils.pretrained import resolve_checkpoint

    facts = dict(vocab_size=tok.codebook_size, num_tokens=tok.num_tokens, token_grid=tuple(tok.token_grid),
                 num_classes=num_classes)
    base = generator_arch.base_fields("RAR-tiny" if arch == "rar" else "GPT-tiny", arch, facts)
    gcfg = GeneratorTrainConfig(**{**base, **dict(
        codes=str(codes), steps=steps, batch_size=32, lr=1e-3, warmup_steps=min(50, steps // 5), ema_decay=0.99,
        save_every=max(1, steps // 2), log_every=log_every, device=device)})
    if not finished(run_dir, steps):
        train_generator(gcfg, run_dir, resume=(run_dir / "latest.txt").exists())
    return resolve_checkpoint(run_dir)


def train_small_pair(data: Path, out: Path, tokenizer_steps: int, generator_steps: int, arch: str = "gpt",
                     device: str = "auto", smoke: bool = False, log_every: int = 10,
                     cache_views: int | None = None, stage=print) -> TrainedPair:
    """Tokenizer -> codes -> generator under `out` (tokenizer/, codes/, generator/)."""
    stage("tokenizer: VFMTok on frozen VGG16 (ImageNet) features, from scratch")
    tok_dir, tok = train_small_tokenizer(data, out / "tokenizer", tokenizer_steps, device, smoke, log_every, cache_views)
    stage("codes of the training images (image + horizontal flip)")
    codes, n_cls = extract_demo_codes(tok, data, out / "codes")
    stage(f"generator: class-conditional {arch.upper()}-tiny on the codes, from scratch")
    gpt_dir = train_small_generator(tok, codes, n_cls, out / "generator", generator_steps, arch, device, log_every)
    return TrainedPair(tok_dir, gpt_dir, tok, n_cls)


def loss_trend(metrics_jsonl: Path, key: str, window: int = 3) -> dict[str, float] | None:
    """Mean of `key` over the first and the last `window` logged steps (None without enough records)."""
    if not metrics_jsonl.is_file():
        return None
    rows = [json.loads(line) for line in metrics_jsonl.read_text().splitlines() if line.strip()]
    vals = [(r["step"], float(r[key])) for r in rows if isinstance(r.get(key), (int, float))]
    if len(vals) < 2:
        return None
    w = max(1, min(window, len(vals) // 2))
    first, last = vals[:w], vals[-w:]
    return {"first_steps": [s for s, _ in first], "first": sum(v for _, v in first) / w,
            "last_steps": [s for s, _ in last], "last": sum(v for _, v in last) / w}


def evaluate_pair(tok_dir: Path, data: Path, out: Path, device: str, smoke: bool = False) -> None:
    """Reconstruction and sample metrics and the class-consistency score as JSON files in `out` (the full demo)."""
    from vfmtok.eval.class_consistency import class_consistency, fit_class_probe, real_val_top1
    from vfmtok.eval.commands import eval_generator, eval_tokenizer
    from vfmtok.eval.imagesets import load_npz_images
    from vfmtok.eval.config import GeneratorEvalConfig, TokenizerEvalConfig
    from vfmtok.eval.records import print_result
    from vfmtok.utils.io import write_json

    import numpy as np

    n_eval = 16 if smoke else 100
    samples = out / "samples" / "samples.npz"
    print_result(eval_tokenizer(TokenizerEvalConfig(tokenizer=tok_dir, data=str(data), split="val", num_images=n_eval,
                                       out=out / "eval_tokenizer.json", device=device)))
    print_result(eval_generator(GeneratorEvalConfig(samples=str(samples), ref=str(data), ref_split="val",
                                       out=out / "eval_generator.json", device=device)))
    # Does each sample look like its class? A linear probe on frozen VGG16, fit on the real train images.
    images = load_npz_images(samples)
    with np.load(samples, allow_pickle=False) as z:
        labels = z["labels"].astype(np.int64)
    train_pc, val_pc, size = (4, 2, 32) if smoke else (300, 100, None)
    kw = {"input_size": size} if size else {}
    cp = fit_class_probe(str(data), int(images.shape[1]), "train", train_pc, 0, device=device, **kw)
    gen = class_consistency(cp, images, labels)
    real = real_val_top1(cp, str(data), "val", val_pc, 1)
    write_json(out / "class_consistency.json", {"metrics": {
        "class_consistency": gen["top1"], "real_val_top1": real["top1"],
        "per_class": {cp.class_names[c]: a for c, a in gen["per_class"].items()},
        "num_samples": gen["num_images"], "num_real_val": real["num_images"]}})
