"""`vfmtok sample`: class-conditional images from a trained GPT + its tokenizer (PNG grid, per-image PNGs, ADM .npz)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from vfmtok.export import DEFAULT_MODEL_NAME, default_generator
from vfmtok.generator.checkpoint import load_generator
from vfmtok.generator.sample import generate_images, parse_labels, save_samples
from vfmtok.train.extract import resolve_device
from vfmtok.accel import cpu as cpu_accel
from vfmtok.utils.errors import VFMTokError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `vfmtok sample`."""
    p.add_argument("--gpt", default=None,
                   help=f"GPT or RAR checkpoint folder or run folder (default: the bundled model, {DEFAULT_MODEL_NAME})")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the one recorded in the GPT's config)")
    p.add_argument("--class", dest="classes", action="append", default=[], metavar="CLASS",
                   help="class index or name, repeatable (e.g. --class 'golf ball' --class 3); default: every class")
    p.add_argument("--per-class", type=int, default=4, help="images per class")
    p.add_argument("--cfg-scale", type=float, default=1.0, help="classifier-free guidance scale (1.0 = off, one branch)")
    p.add_argument("--cfg-interval", type=int, default=-1, help="guide only the first N tokens (-1 = all)")
    p.add_argument("--cfg-power", type=float, default=None,
                   help="RAR's CFG schedule: scale ramps 1 -> s as 1 + (s-1)(1-cos(pi (t/N)^pow))/2 (default: constant)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=float, default=1.0, help="1.0 = off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"],
                   help="GPT weight dtype on GPU (CPU always runs fp32)")
    p.add_argument("--out", default="samples", help="output folder")


def load_tokenizer_for(gpt: Any, path: str | None, device: torch.device) -> Any:
    """The tokenizer given, or the one recorded in the GPT's config.json."""
    from vfmtok.tokenizer.api import load_tokenizer

    if path is None:
        path = gpt.recorded_tokenizer()
        if path is None or not Path(path).exists():
            raise VFMTokError(f"the tokenizer recorded in the GPT config ({path}) is not available; pass --tokenizer")
    return load_tokenizer(path, device=device)


def run(args: argparse.Namespace) -> int:
    """Entry point of `vfmtok sample`."""
    if args.per_class < 1 or args.batch_size < 1:
        raise VFMTokError("--per-class and --batch-size must be >= 1")
    device = resolve_device(args.device)
    args.gpt = args.gpt or default_generator()
    gpt = load_generator(args.gpt, device=device)
    if device.type == "cuda" and args.precision != "fp32":
        gpt = gpt.to(torch.bfloat16 if args.precision == "bf16" else torch.float16)
    tok = load_tokenizer_for(gpt, args.tokenizer, device)
    kernels = None
    if device.type == "cpu":
        why = cpu_accel.unavailable_reason(gpt) if cpu_accel.enabled_by_default() else "VFMTOK_CPU_ACCEL=0"
        kernels = "on" if why is None else f"off: {why}"
        if why is not None and gpt.model_type == "gpt":  # the kernels only ever serve the GPT
            print(f"note: compiled CPU kernels off ({why}); sampling takes the plain torch path", file=sys.stderr)
    n_cls = gpt.config.num_classes
    classes = parse_labels(args.classes, gpt.class_names, n_cls) if args.classes else list(range(n_cls))
    labels = [c for c in classes for _ in range(args.per_class)]
    images = generate_images(gpt, tok, torch.tensor(labels), args.cfg_scale, args.cfg_interval, args.temperature,
                             args.top_k, args.top_p, args.seed, args.batch_size, cfg_power=args.cfg_power)
    info = {"gpt": str(args.gpt), "arch": gpt.model_type, "tokenizer": str(tok.checkpoint_path), "tokenizer_hash": tok.checkpoint_hash,
            **{k: getattr(args, k) for k in ("cfg_scale", "cfg_interval", "cfg_power", "temperature", "top_k", "top_p", "seed",
                                             "batch_size", "precision")},
            "device": str(device), "cpu_kernels": kernels, "labels": labels}
    paths = save_samples(args.out, images, labels, gpt.class_names, ncol=args.per_class if args.per_class > 1 else 8,
                         info=info)
    print(f"wrote {len(images)} images: {paths['grid']}, {paths['npz']}, {paths['images']}/")
    return 0
