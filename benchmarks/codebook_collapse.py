"""Codebook collapse at the start of VFMTok training: the paper's decoder vs anchor-initialised mask tokens.

Run: .venv/bin/python benchmarks/codebook_collapse.py [--steps 60]
Writes benchmarks/results/codebook_collapse.{json,md}. The `vfmtok-cpu-64` tokenizer, without dead-code re-seeding,
trains on random batches of 16 from the embedded Imagenette sample (frozen VGG16 features computed once).
Losses: pixel MSE + codebook + commitment + feature cosine. Logged every 10 steps: distinct code ids in the batch
(out of 16 x 64 tokens) and pixel MSE. Both variants start from the same seed.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from vfmtok.utils.io import write_json, write_text

OUT = Path(__file__).resolve().parent / "results"


def run(anchor_init: bool, steps: int, images: torch.Tensor, enc, seed: int = 0) -> list[dict]:
    """Train from scratch for `steps` steps; returns the log rows."""
    from vfmtok.tokenizer.build import build_tokenizer
    from vfmtok.tokenizer.config import get_preset

    cfg = get_preset("vfmtok-cpu-64").model
    cfg.dec_anchor_init = anchor_init
    torch.manual_seed(seed)
    tok = build_tokenizer(cfg).train()
    params = [p for p in tok.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=4e-4, betas=(0.9, 0.95), weight_decay=0.05)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(images), (16,), generator=gen)
        x = images[idx]
        out = tok(x, replace(enc, levels=[lv[idx] for lv in enc.levels], target=enc.target[idx]))
        pixel = F.mse_loss(out.recon, x)
        feature = (1 - F.cosine_similarity(out.feature_pred, out.feature_target, dim=1)).mean()
        loss = pixel + out.codebook_loss + out.commit_loss + feature
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 10 == 0:
            rows.append({"step": step, "distinct_ids": int(out.indices.unique().numel()), "pixel_mse": round(pixel.item(), 4)})
            print(f"anchor_init={anchor_init} {rows[-1]}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    from vfmtok.data.imagefolder import ImageFolderDataset
    from vfmtok.data.sources import resolve_dataset
    from vfmtok.encoders import create_encoder

    ds = ImageFolderDataset(resolve_dataset("sample"), 64, split="train")
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    encoder = create_encoder("vgg16_imagenet", pretrained=True, image_size=64)
    with torch.no_grad():
        parts = [encoder(images[i:i + 50]) for i in range(0, len(images), 50)]
    enc = replace(parts[0], levels=[torch.cat([p.levels[j] for p in parts]) for j in range(len(parts[0].levels))],
                  target=torch.cat([p.target for p in parts]))
    res = {"command": " ".join([Path(sys.executable).name] + sys.argv), "images": len(images),
           "paper_decoder": run(False, args.steps, images, enc), "anchor_init": run(True, args.steps, images, enc)}
    write_json(OUT / "codebook_collapse.json", res)
    md = ["# Codebook collapse at the start of training (vfmtok-cpu-64, no re-seeding)", "", f"Command: `{res['command']}`",
          "", "| step | distinct ids, paper decoder | distinct ids, anchor init | pixel MSE, paper decoder | pixel MSE, anchor init |",
          "|---|---|---|---|---|"]
    md += [f"| {a['step']} | {a['distinct_ids']} | {b['distinct_ids']} | {a['pixel_mse']} | {b['pixel_mse']} |"
           for a, b in zip(res["paper_decoder"], res["anchor_init"])]
    write_text(OUT / "codebook_collapse.md", "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
