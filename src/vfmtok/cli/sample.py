"""`vfmtok sample`: class-conditional images from a trained GPT + its tokenizer (PNG grid, per-image PNGs, ADM .npz)."""

from __future__ import annotations

import argparse

from vfmtok.cli import args as A
from vfmtok.cli.common import config_from, defaults_of
from vfmtok.generator.bundled import DEFAULT_MODEL_NAME
from vfmtok.generator.sampling import SamplingConfig, sample_to_folder


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `vfmtok sample`."""
    A.add(p, "gpt", help=f"GPT or RAR checkpoint folder or run folder (default: the bundled model, {DEFAULT_MODEL_NAME})")
    A.add(p, "tokenizer", help=A.GPT_TOKENIZER_HELP)
    p.add_argument("--class", dest="classes", action="append", default=[], metavar="CLASS",
                   help="class index or name, repeatable (e.g. --class 'golf ball' --class 3); default: every class")
    A.add(p, "per_class")
    p.add_argument("--cfg-scale", type=A.non_negative_float, default=1.0,
                   help="classifier-free guidance scale; a GPT guides when > 1.0 (LlamaGen), a RAR when != 0 (official RAR)")
    p.add_argument("--cfg-interval", type=A.number(int, -1), default=-1, help=A.CFG_INTERVAL_HELP)
    p.add_argument("--cfg-power", type=A.non_negative_float, default=None, help=A.CFG_POWER_HELP)
    A.add_all(p, "temperature", "top_k", "top_p", "seed", "batch_size", "device", "parallel", "window")
    A.add(p, "precision", default="bf16", help="GPT weight dtype on GPU (CPU always runs fp32)")
    A.add(p, "out", required=False, default="samples")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the whole decode step: forward, CFG, filters, draw (CUDA graphs on GPUs, freezing on CPU)")
    p.set_defaults(**defaults_of(SamplingConfig, p))  # the dataclass is the one home of the defaults


def run(args: argparse.Namespace) -> int:
    """Entry point of `vfmtok sample`."""
    paths = sample_to_folder(args.out, args.gpt, args.tokenizer, args.classes, args.per_class,
                             config_from(args, SamplingConfig), args.device, args.precision)
    print(f"wrote {paths['num_images']} images: {paths['grid']}, {paths['npz']}, {paths['images']}/")
    return 0
