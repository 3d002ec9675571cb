"""`vfmtok extract-codes`: tokenize a dataset into a memory-mapped code shard."""

from __future__ import annotations

import argparse

from vfmtok.cli import args as A
from vfmtok.cli.common import config_from
from vfmtok.train.extract import ExtractConfig, extract_dataset


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `vfmtok extract-codes`."""
    A.add(p, "tokenizer", required=True)
    A.add_all(p, "data", "split")
    A.add(p, "out", help="codes folder to create (or resume)")
    p.add_argument("--ten-crop", action="store_true", help="10 views per image (5 crops + flips) instead of 2")
    p.add_argument("--crop-range", type=A.number(float, 1.0), default=None,
                   help="crop from a crop_range*size square (default 1.1 with --ten-crop, else 1.0)")
    p.add_argument("--limit-per-class", type=A.positive_int, default=None, help="use at most N images per class")
    A.add_all(p, "batch_size", "num_workers")
    p.add_argument("--topk", type=A.positive_int, default=1,
                   help="also store the 2nd..k-th nearest code ids as extra views (VFMTok-RAR trains on top-2)")
    p.add_argument("--shard-size", type=A.positive_int, default=100_000, help="images per shard file")
    A.add_all(p, "device", "precision")


def run(args: argparse.Namespace) -> int:
    """Entry point of `vfmtok extract-codes`."""
    r = extract_dataset(config_from(args, ExtractConfig))
    print(f"wrote codes for {r['num_images']} images x {r['views']} views to {r['out']}")
    return 0
