"""How much PSNR a token grid can carry at most: PSNR of float thumbnails (area-downsampled to side x side, bicubic
back up) of the same validation images `vfmtok eval-tokenizer` scores, beside the bits a tokenizer's codes hold.

Run:  .venv/bin/python benchmarks/psnr_bound.py [--data imagenette] [--size 64] [--sides 8 12 16 32] [--num-images 1000]
A thumbnail of side s keeps s*s*3 full-precision floats; a tokenizer with s*s tokens keeps s*s*log2(codebook) bits,
far fewer, so the thumbnail's PSNR is a generous reference for what that many tokens can reach, not a proof.
Writes <results>/psnr_bound.json and psnr_bound.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from vfmtok.eval.image_metrics import psnr, uint8_to_unit
from vfmtok.eval.imagesets import iter_batches, open_image_set, subset_indices
from vfmtok.utils.io import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]


def thumbnail_psnr(x: torch.Tensor, side: int) -> torch.Tensor:
    """Per-image PSNR of x (B,3,H,W in [0,1]) against its side x side area thumbnail upsampled bicubically, as uint8."""
    small = F.interpolate(x, size=side, mode="area")
    back = F.interpolate(small, size=x.shape[-1], mode="bicubic", align_corners=False).clamp(0, 1)
    return psnr(x, (back * 255).round() / 255)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="imagenette")
    ap.add_argument("--split", default="val")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--sides", type=int, nargs="+", default=[8, 12, 16, 32])
    ap.add_argument("--num-images", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0, help="the subset seed (eval-tokenizer's --seed picks the same images)")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    images = open_image_set(args.data, args.size, args.split)
    idx = subset_indices(len(images), args.num_images, args.seed)
    per_side = {s: [] for s in args.sides}
    for u8, _ in iter_batches(images, idx, 100):
        x = uint8_to_unit(u8).float()
        for s in args.sides:
            per_side[s].append(thumbnail_psnr(x, s))
    rows = [{"side": s, "floats": s * s * 3, "PSNR": torch.cat(v).mean().item()} for s, v in per_side.items()]
    command = " ".join([Path(sys.executable).name] + sys.argv)
    out = Path(args.results)
    write_json(out / "psnr_bound.json", {"command": command, "images": len(idx), "size": args.size, "rows": rows})
    lines = ["# PSNR of float thumbnails (a reference for what a token grid of that side can carry)", "",
             f"Command: `{command}`", "", f"{len(idx)} {args.data} {args.split} images at {args.size} px.", "",
             "| thumbnail side | floats kept | PSNR (dB) | bits in side^2 tokens of a 1024-entry codebook |",
             "|---|---|---|---|"]
    lines += [f"| {r['side']} | {r['floats']} | {r['PSNR']:.2f} | {r['side'] ** 2 * 10} |" for r in rows]
    write_text(out / "psnr_bound.md", "\n".join(lines) + "\n")
    print("\n".join(lines[6:]))


if __name__ == "__main__":
    main()
