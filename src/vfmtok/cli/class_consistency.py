"""`vfmtok class-consistency`: top-1 of a real-image classifier (linear probe on frozen VGG16) on generated samples."""

from __future__ import annotations

import argparse
from pathlib import Path

from vfmtok.cli import args as A
from vfmtok.cli.common import config_from, defaults_of
from vfmtok.eval.class_consistency import DEFAULT_INPUT_SIZE, ClassConsistencyConfig, evaluate_class_consistency
from vfmtok.eval.records import print_result


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
    p.set_defaults(**defaults_of(ClassConsistencyConfig, p))  # the dataclass is the one home of the defaults


def run(args: argparse.Namespace) -> int:
    """Entry point of `vfmtok class-consistency`."""
    print_result(evaluate_class_consistency(config_from(args, ClassConsistencyConfig)))
    return 0
