"""`vfmtok demo` (what `make demo` runs): the whole system, small, on the embedded Imagenette sample.

Stages (each resumes if its output exists): train a VFMTok tokenizer on frozen VGG16 features ->
extract codes -> train a class-conditional GPT -> sample every class without CFG -> evaluate (with the
class-consistency score) ->
one self-contained HTML report.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vfmtok.cli import args as A
from vfmtok.utils.device import resolve_device


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of demo."""
    A.add(p, "out", required=False, default="runs/demo", help="output folder (re-running resumes finished stages)")
    A.add(p, "data")
    p.add_argument("--tokenizer-steps", type=A.positive_int, default=450)
    p.add_argument("--generator-steps", type=A.positive_int, default=550)
    A.add(p, "per_class", default=8)
    A.add(p, "device")
    p.add_argument("--quick", action="store_true", help="a tiny smoke run (tests use it)")
    p.add_argument("--arch", default="gpt", choices=["gpt", "rar"], help="generator: GPT-tiny (LlamaGen) or RAR-tiny")


def _stage(name: str) -> None:
    print(f"\n== {name} ==", flush=True)


def run(args: argparse.Namespace) -> int:
    """Run every stage and print the report's path."""
    from vfmtok.data.sources import resolve_dataset

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = resolve_dataset(args.data)
    timings: dict[str, float] = {}

    _stage("1/6 tokenizer: VFMTok on frozen VGG16 (ImageNet) features")
    t = time.time()
    tok_dir, tok = _tokenizer_stage(args, data, out)
    timings["tokenizer"] = time.time() - t

    _stage("2/6 extract codes (image + horizontal flip)")
    t = time.time()
    from vfmtok.data.imagefolder import ImageFolderDataset
    from vfmtok.train.extract import extract_codes

    train_ds = ImageFolderDataset(data, tok.image_size, split="train")
    codes = extract_codes(tok, train_ds, out / "codes", batch_size=32)
    timings["codes"] = time.time() - t

    _stage(f"3/6 generator: class-conditional {args.arch.upper()} on the codes")
    t = time.time()
    gpt_dir = _generator_stage(args, tok, codes, len(train_ds.classes), out)
    timings["generator"] = time.time() - t

    _stage("4/6 sample every class without classifier-free guidance")
    t = time.time()
    from vfmtok.generator.sampling import SamplingConfig, sample_to_folder

    per_class = 2 if args.quick else args.per_class
    sample_to_folder(out / "samples", gpt_dir, tok_dir, per_class=per_class, config=SamplingConfig(cfg_scale=1.0, seed=0),
                     device=args.device)
    timings["sample"] = time.time() - t

    _stage("5/6 evaluate: reconstruction (PSNR/SSIM/LPIPS/rFID, codebook usage), generation (gFID, precision/recall), "
           "class consistency")
    t = time.time()
    _evaluate_stage(args, tok_dir, data, out)
    timings["evaluate"] = time.time() - t

    _stage("6/6 report")
    from vfmtok.demo_report import write_report

    report = write_report(out, tok_dir, gpt_dir, data, timings)
    print(f"\nreport: {report.resolve()}")
    return 0


def _tokenizer_stage(args: argparse.Namespace, data: Path, out: Path):
    """Train (or resume) the vfmtok-cpu-64 tokenizer; returns its checkpoint folder and the loaded tokenizer."""
    from vfmtok.tokenizer.api import VFMTokenizer
    from vfmtok.tokenizer.config import get_preset
    from vfmtok.train.tokenizer import train_tokenizer
    from vfmtok.utils.pretrained import resolve_checkpoint

    cfg = get_preset("vfmtok-cpu-64")
    cfg.train.data = str(data)
    cfg.train.steps = 6 if args.quick else args.tokenizer_steps
    cfg.train.save_every = max(1, cfg.train.steps // 2)
    cfg.train.device = args.device
    if args.quick:
        cfg.train.cache_views = 1
        cfg.train.batch_size = 8
    tok_run = out / "tokenizer"
    if not _finished(tok_run, cfg.train.steps):
        train_tokenizer(cfg, tok_run, resume=(tok_run / "latest.txt").exists())
    tok_dir = resolve_checkpoint(tok_run)
    return tok_dir, VFMTokenizer.from_pretrained(tok_dir)


def _generator_stage(args: argparse.Namespace, tok, codes: Path, num_classes: int, out: Path) -> Path:
    """Train (or resume) GPT-tiny / RAR-tiny on the codes; returns its checkpoint folder."""
    from vfmtok.train import generator_arch
    from vfmtok.train.generator import GeneratorTrainConfig, train_generator
    from vfmtok.utils.pretrained import resolve_checkpoint

    facts = dict(vocab_size=tok.codebook_size, num_tokens=tok.num_tokens, token_grid=tuple(tok.token_grid),
                 num_classes=num_classes)
    gsteps = 6 if args.quick else args.generator_steps
    base = generator_arch.base_fields("RAR-tiny" if args.arch == "rar" else "GPT-tiny", args.arch, facts)
    gcfg = GeneratorTrainConfig(**{**base, **dict(
        codes=str(codes), steps=gsteps, batch_size=32, lr=1e-3, warmup_steps=min(50, gsteps // 5), ema_decay=0.99,
        save_every=max(1, gsteps // 2), log_every=10, device=args.device)})
    gpt_run = out / "generator"
    if not _finished(gpt_run, gsteps):
        train_generator(gcfg, gpt_run, resume=(gpt_run / "latest.txt").exists())
    return resolve_checkpoint(gpt_run)


def _evaluate_stage(args: argparse.Namespace, tok_dir: Path, data: Path, out: Path) -> None:
    """Reconstruction and sample metrics, and the class-consistency score, as JSON files in `out`."""
    from vfmtok.eval.class_consistency import ClassConsistencyConfig, evaluate_class_consistency
    from vfmtok.eval.commands import eval_generator, eval_tokenizer
    from vfmtok.eval.config import GeneratorEvalConfig, TokenizerEvalConfig

    n_eval = 16 if args.quick else 100
    samples = str(out / "samples" / "samples.npz")
    eval_tokenizer(TokenizerEvalConfig(tokenizer=tok_dir, data=str(data), split="val", num_images=n_eval,
                                       out=out / "eval_tokenizer.json", device=args.device))
    eval_generator(GeneratorEvalConfig(samples=samples, ref=str(data), ref_split="val", out=out / "eval_generator.json",
                                       device=args.device))
    # Does each sample look like its class? A linear probe on frozen VGG16, fit on the real train images.
    probe_size = dict(train_per_class=4, val_per_class=2, input_size=32) if args.quick else {}
    evaluate_class_consistency(ClassConsistencyConfig(samples=samples, data=str(data), device=str(resolve_device(args.device)),
                                                      out=out / "class_consistency.json", **probe_size))


def _finished(run_dir: Path, steps: int) -> bool:
    latest = run_dir / "latest.txt"
    return latest.is_file() and latest.read_text().strip() == f"step_{steps:07d}"
