"""`vfmtok encode` and `vfmtok reconstruct`."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vfmtok.cli import args as A
from vfmtok.data.imagefolder import ImageFolderDataset, center_crop_resize, load_rgb, to_tensor
from vfmtok.data.sources import resolve_dataset
from vfmtok.tokenizer.api import VFMTokenizer
from vfmtok.utils.device import resolve_device
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.images import save_pairs_grid, to_uint8
from vfmtok.utils.io import save_npz


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


def _load_images(args: argparse.Namespace, size: int) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    if args.images:
        tensors = []
        for f in args.images:
            if not Path(f).is_file():
                raise VFMTokError(f"image not found: {f}")
            img = load_rgb(f)
            if args.no_resize and img.size != (size, size):
                raise VFMTokError(f"{f} is {img.size[0]}x{img.size[1]}, this tokenizer takes {size}x{size} images")
            tensors.append(to_tensor(center_crop_resize(img, size)))
        return torch.stack(tensors), np.full(len(tensors), -1), list(args.images)
    if not args.data:
        raise VFMTokError("give image files or --data")
    ds = ImageFolderDataset(resolve_dataset(args.data), size, split=args.split)
    n = len(ds) if args.limit is None else min(args.limit, len(ds))
    items = [ds[i] for i in tqdm(range(n), desc="load", disable=None)]
    return torch.stack([x for x, _ in items]), np.array([y for _, y in items]), [m for m, _ in ds.items[:n]]


def run(args: argparse.Namespace) -> int:
    """Encode to ids (.npz) or write a reconstruction grid (.png)."""
    tok = VFMTokenizer.from_pretrained(args.tokenizer, device=resolve_device(args.device))
    images, labels, names = _load_images(args, tok.image_size)
    ids = torch.cat([tok.encode(images[i:i + args.batch_size])
                     for i in tqdm(range(0, len(images), args.batch_size), desc="encode", disable=None)]).cpu()
    out = Path(args.out)
    if args.command == "encode":
        save_npz(out if out.suffix == ".npz" else out.with_suffix(".npz"), ids=ids.numpy(), labels=labels,
                 files=np.array(names), token_grid=np.array(tok.token_grid), codebook_size=tok.codebook_size,
                 tokenizer_hash=tok.checkpoint_hash)
        print(f"{out}: {tuple(ids.shape)} ids from {len(names)} images")
    else:
        recon = torch.cat([tok.decode(ids[i:i + args.batch_size]) for i in range(0, len(ids), args.batch_size)])
        save_pairs_grid(out, images, recon)
        from vfmtok.eval.image_metrics import psnr, uint8_to_unit

        # Scored as eval-tokenizer scores it: both quantised to uint8, PSNR per image on [0,1], then averaged.
        mean_psnr = float(psnr(uint8_to_unit(to_uint8(images)), uint8_to_unit(to_uint8(recon))).mean())
        print(f"{out}: {len(images)} pairs, mean PSNR {mean_psnr:.2f} dB")
    return 0
