"""`vfmtok class-consistency`: top-1 of a real-image classifier (linear probe on frozen VGG16) on generated samples."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from vfmtok.eval.class_consistency import (DEFAULT_INPUT_SIZE, class_consistency, fit_class_probe, real_val_top1)
from vfmtok.eval.commands import generate, load_generator, load_tokenizer, print_result
from vfmtok.eval.imagesets import load_npz_images
from vfmtok.eval.records import checkpoint_record, make_record, markdown_table
from vfmtok.cli import args as A
from vfmtok.utils.device import resolve_device
from vfmtok.utils.errors import require


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `vfmtok class-consistency`."""
    p.add_argument("--gpt", type=Path, default=None, help="generator checkpoint folder: sample --per-class per class")
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer (default: the one recorded in the GPT's config)")
    p.add_argument("--samples", type=Path, default=None,
                   help="or: samples to score, a .npz with arr_0 (uint8 NHWC) and labels (what `vfmtok sample` writes)")
    p.add_argument("--data", default="imagenette", help="labelled dataset the classifier is fit on (train) and checked on (val)")
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val")
    p.add_argument("--train-per-class", type=int, default=300, help="real training images per class for the probe")
    p.add_argument("--val-per-class", type=int, default=100, help="real validation images per class for its reference top-1")
    p.add_argument("--per-class", type=int, default=50, help="samples per class (with --gpt)")
    p.add_argument("--cfg-scale", type=float, default=1.0)
    A.add_all(p, "temperature", "top_k", "top_p")
    p.add_argument("--input-size", type=int, default=DEFAULT_INPUT_SIZE, help="classifier input size (images are upsampled)")
    p.add_argument("--encoder-weights", default="imagenet", choices=["imagenet", "random"],
                   help="VGG16 weights of the classifier ('random': smoke tests only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    A.add(p, "device")
    p.add_argument("--no-cache", action="store_true", help="refit the classifier instead of reading the cache")
    p.add_argument("--out", type=Path, default=None, help="results JSON (a Markdown table is written beside it)")


def _samples(args) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """(images, labels, data description, checkpoints) from --samples or by sampling --gpt."""
    if args.samples is not None:
        images = load_npz_images(args.samples)
        with np.load(args.samples, allow_pickle=False) as z:
            require("labels" in z.files, f"{args.samples} has no 'labels' array (which class each sample was drawn for)")
            labels = z["labels"].astype(np.int64)
        require(len(labels) == len(images), f"{args.samples}: {len(labels)} labels for {len(images)} images")
        return images, labels, {"source": str(args.samples)}, {}
    gpt = load_generator(args.gpt, args.device)
    recorded = gpt.recorded_tokenizer()
    require(args.tokenizer is not None or recorded, "--gpt needs --tokenizer (none is recorded in the GPT's config)")
    tok = load_tokenizer(args.tokenizer or recorded, args.device)
    args.temperature, args.top_k, args.top_p = gpt.sampling_args(args.temperature, args.top_k, args.top_p)
    n_cls = int(gpt.config.num_classes)
    labels = torch.arange(n_cls).repeat_interleave(args.per_class)
    images = generate(gpt, tok, labels, cfg_scale=args.cfg_scale, temperature=args.temperature, top_k=args.top_k,
                      top_p=args.top_p, seed=args.seed, batch_size=args.batch_size)
    ckpt = {"generator": checkpoint_record(args.gpt), "tokenizer": checkpoint_record(tok.checkpoint_path)}
    desc = {"source": "generated", "images_per_class": args.per_class, "cfg_scale": args.cfg_scale,
            "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p}
    return images, labels.numpy(), desc, ckpt


def run(args: argparse.Namespace) -> int:
    """Fit (or read) the classifier, score the samples and real validation images, print and write the result."""
    require((args.gpt is None) != (args.samples is None), "give either --gpt or --samples")
    for name in ("per_class", "train_per_class", "val_per_class", "batch_size", "input_size"):
        require(getattr(args, name) > 0, f"--{name.replace('_', '-')} must be positive")
    args.device = str(resolve_device(args.device))
    images, labels, sample_desc, ckpt = _samples(args)
    res = int(images.shape[1])
    cp = fit_class_probe(args.data, res, args.train_split, args.train_per_class, args.seed, input_size=args.input_size,
                         pretrained=args.encoder_weights == "imagenet",
                         batch_size=args.batch_size, device=args.device, use_cache=not args.no_cache)
    gen = class_consistency(cp, images, labels, args.batch_size)
    real = real_val_top1(cp, args.data, args.val_split, args.val_per_class, args.seed + 1, args.batch_size)
    metrics = {"class_consistency": gen["top1"], "real_val_top1": real["top1"],
               "per_class": {cp.class_names[c]: a for c, a in gen["per_class"].items()},
               "real_val_per_class": {cp.class_names[c]: a for c, a in real["per_class"].items()},
               "num_samples": gen["num_images"], "num_real_val": real["num_images"],
               "probe_train_top1": cp.meta.get("top1_train"), "probe_num_train": cp.meta.get("num_train")}
    notes = [f"classifier: linear probe (L-BFGS, standardised features) on frozen {cp.encoder_name} "
             f"({'ImageNet' if cp.pretrained else 'random'} weights), pooled relu3_3/relu4_3/relu5_3, input {cp.input_size}px, "
             f"fit on {cp.meta.get('num_train')} real {args.train_split} images at {res}px",
             f"chance level {1 / len(cp.class_names):.1%}"]
    record = make_record("class-consistency", metrics=metrics, num_images=gen["num_images"], resolution=res,
                         seed=args.seed, checkpoints=ckpt, data={"samples": sample_desc, "classifier": cp.meta},
                         notes=notes, device=str(args.device), args=args)
    rows = [["generated samples", gen["num_images"], f"{gen['top1']:.1%}"],
            [f"real {args.val_split} images", real["num_images"], f"{real['top1']:.1%}"]]
    table = markdown_table(["images", "count", "classifier top-1"], rows)
    print_result(table, notes, args.out, record)
    return 0
