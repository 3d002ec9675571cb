"""`vfmtok extract-codes`: tokenize a dataset into a memory-mapped code shard."""

from __future__ import annotations

import argparse

from vfmtok.cli import args as A
from vfmtok.data.imagefolder import ImageFolderDataset
from vfmtok.data.sources import resolve_dataset
from vfmtok.train.extract import extract_codes
from vfmtok.utils.device import resolve_device


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
    from vfmtok.tokenizer.api import load_tokenizer

    tok = load_tokenizer(args.tokenizer, device=resolve_device(args.device))
    path = resolve_dataset(args.data)
    ds = ImageFolderDataset(path, tok.image_size, split=args.split, limit_per_class=args.limit_per_class)
    crop_range = args.crop_range if args.crop_range is not None else (1.1 if args.ten_crop else 1.0)
    source = {"data": str(args.data), "path": str(path), "split": args.split, "limit_per_class": args.limit_per_class}
    out = extract_codes(tok, ds, args.out, args.ten_crop, crop_range, args.batch_size, args.num_workers,
                        args.shard_size, source, args.precision, args.topk)
    print(f"wrote codes for {len(ds)} images x {(10 if args.ten_crop else 2) * args.topk} views to {out}")
    return 0
