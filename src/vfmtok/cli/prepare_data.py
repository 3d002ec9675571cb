"""`vfmtok prepare-data`: an image folder / zip / LMDB into shuffled tar shards."""

from __future__ import annotations

import argparse

from vfmtok.data.prepare import prepare_shards


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of prepare-data."""
    p.add_argument("src", help="image folder / zip of class folders, 'imagenette' / 'cifar10', or an LMDB folder (official layout)")
    p.add_argument("--out", required=True, help="folder for shard-NNNNNN.tar + index.json")
    p.add_argument("--split", default="train", help="split sub-folder of SRC (ignored for LMDB)")
    p.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    p.add_argument("--resize", type=int, default=None,
                   help="shrink so the shorter side is at most S (re-encodes as JPEG); keep S >= image_size / min_scale")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality when re-encoding")
    p.add_argument("--seed", type=int, default=0, help="seed of the global shuffle of samples into shards")
    p.add_argument("--workers", type=int, default=0, help="processes writing shards in parallel (0: this one)")


def run(args: argparse.Namespace) -> int:
    """Entry point of the CLI command."""
    out = prepare_shards(args.src, args.out, shard_size=args.shard_size, split=args.split, resize=args.resize,
                         quality=args.quality, seed=args.seed, workers=args.workers)
    print(f"shards: {out}")
    return 0
