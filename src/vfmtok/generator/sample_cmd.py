"""`vfmtok sample`: class-conditional images from a trained GPT + its tokenizer (PNG grid, per-image PNGs, ADM .npz)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from vfmtok.export import DEFAULT_MODEL_NAME, default_generator
from vfmtok.generator.checkpoint import load_generator
from vfmtok.generator.pairing import load_gpt_tokenizer
from vfmtok.generator.sample import generate_images, parse_labels, save_samples
from vfmtok.utils import args as A
from vfmtok.utils.device import resolve_device
from vfmtok.utils.errors import require


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `vfmtok sample`."""
    A.add(p, "gpt", help=f"GPT or RAR checkpoint folder or run folder (default: the bundled model, {DEFAULT_MODEL_NAME})")
    A.add(p, "tokenizer", help=A.GPT_TOKENIZER_HELP)
    p.add_argument("--class", dest="classes", action="append", default=[], metavar="CLASS",
                   help="class index or name, repeatable (e.g. --class 'golf ball' --class 3); default: every class")
    A.add(p, "per_class")
    p.add_argument("--cfg-scale", type=A.non_negative_float, default=1.0,
                   help="classifier-free guidance scale (1.0 = off, one branch)")
    p.add_argument("--cfg-interval", type=A.number(int, -1), default=-1, help="guide only the first N tokens (-1 = all)")
    p.add_argument("--cfg-power", type=A.non_negative_float, default=None,
                   help="RAR's CFG schedule: the scale ramps 1 -> s as 1 + (s-1)(1-cos(pi (t/N)^pow))/2 (default: constant)")
    A.add_all(p, "temperature", "top_k", "top_p", "seed", "batch_size", "device")
    A.add(p, "precision", default="bf16", help="GPT weight dtype on GPU (CPU always runs fp32)")
    A.add(p, "out", required=False, default="samples")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the decode step (CUDA graphs on GPUs; the tool for GPU speed)")
    A.add_all(p, "parallel", "window")


def sample(gpt_path: str | Path | None = None, tokenizer: str | Path | None = None, classes: Sequence[str | int] = (),
           per_class: int = 4, out: str | Path = "samples", cfg_scale: float = 1.0, cfg_interval: int = -1,
           temperature: float | None = None, top_k: int | None = None, top_p: float | None = None, seed: int = 0,
           batch_size: int = 32,
           device: str = "auto", precision: str = "bf16", compile: bool = False,
           cfg_power: float | None = None, parallel: str = "none", window: int = 16) -> dict[str, Any]:
    """Sample `per_class` images of each class (all classes when none given) into `out`; returns the written paths.
    temperature / top_k / top_p left None take the model's recommended sampling (GeneratorIO.sampling_args)."""
    require(per_class >= 1 and batch_size >= 1, f"per_class and batch_size must be >= 1, got {per_class} and {batch_size}")
    dev = resolve_device(device)
    gpt_path = gpt_path or default_generator()
    gpt = load_generator(gpt_path, device=dev)
    if dev.type == "cuda" and precision != "fp32":
        gpt = gpt.to(torch.bfloat16 if precision == "bf16" else torch.float16)
    tok = load_gpt_tokenizer(gpt, tokenizer, dev)
    temperature, top_k, top_p = gpt.sampling_args(temperature, top_k, top_p)
    n_cls = gpt.config.num_classes
    chosen = parse_labels(classes, gpt.class_names, n_cls) if classes else list(range(n_cls))
    labels = [c for c in chosen for _ in range(per_class)]
    t0 = time.perf_counter()
    images = generate_images(gpt, tok, torch.tensor(labels), cfg_scale, cfg_interval, temperature, top_k, top_p, seed,
                             batch_size, compile=compile, cfg_power=cfg_power, parallel=parallel, window=window)
    info = {"gpt": str(gpt_path), "arch": gpt.model_type, "tokenizer": str(tok.checkpoint_path),
            "tokenizer_hash": tok.checkpoint_hash, "cfg_scale": cfg_scale, "cfg_interval": cfg_interval,
            "cfg_power": cfg_power, "temperature": temperature, "top_k": top_k,
            "top_p": top_p, "seed": seed, "batch_size": batch_size, "precision": precision,
            "device": str(dev), "compile": compile, "parallel": parallel, "window": window,
            "seconds_incl_compile": round(time.perf_counter() - t0, 3), "labels": labels}
    paths = save_samples(out, images, labels, gpt.class_names, ncol=per_class if per_class > 1 else 8, info=info)
    return {**paths, "num_images": len(images)}


def run(args: argparse.Namespace) -> int:
    """Entry point of `vfmtok sample`."""
    paths = sample(args.gpt, args.tokenizer, args.classes, args.per_class, args.out, args.cfg_scale, args.cfg_interval,
                   args.temperature, args.top_k, args.top_p, args.seed, args.batch_size, args.device, args.precision,
                   args.compile, args.cfg_power, args.parallel, args.window)
    print(f"wrote {paths['num_images']} images: {paths['grid']}, {paths['npz']}, {paths['images']}/")
    return 0
