"""`vfmtok encode` and `vfmtok reconstruct`."""

from __future__ import annotations

import argparse

from vfmtok.cli import args as A
from vfmtok.cli.common import config_from
from vfmtok.encode import EncodeConfig, encode_images, reconstruct_images


def add_arguments(p: argparse.ArgumentParser, command: str) -> None:
    """Arguments of encode / reconstruct."""
    A.add(p, "tokenizer", required=True)
    p.add_argument("images", nargs="*", help="image files (or use --data)")
    A.add(p, "data", default=None, help=f"{A.DATA_HELP} (instead of image files)")
    A.add(p, "split", default="val")
    A.add(p, "num_images", "--limit", default=None if command == "encode" else 16, help="use at most this many images")
    p.add_argument("--no-resize", action="store_true", help="refuse images whose size differs instead of centre-cropping")
    A.add_all(p, "batch_size", "device")
    A.add(p, "out", help="encode: .npz of ids; reconstruct: .png grid (original | reconstruction)")


def run(args: argparse.Namespace) -> int:
    """Encode to ids (.npz) or write a reconstruction grid (.png)."""
    config = config_from(args, EncodeConfig)
    if args.command == "encode":
        r = encode_images(config)
        print(f"{args.out}: {tuple(r['ids'].shape)} ids from {r['num_images']} images")
    else:
        r = reconstruct_images(config)
        print(f"{args.out}: {r['num_images']} pairs, mean PSNR {r['mean_psnr']:.2f} dB")
    return 0
