"""`vfmtok figures`: the README pictures from a model."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from vfmtok.figures import labelled_rows, one_per_class, reconstruction_rows, sampling_regions, upscale
from vfmtok.utils.errors import require
from vfmtok.utils.images import make_grid, save_png


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `vfmtok figures`."""
    p.add_argument("--model", default=None, help="exported model folder (generator/ + tokenizer/); default: the bundled one")
    p.add_argument("--data", default="imagenette", help="where validation images come from ('sample' works offline)")
    p.add_argument("--split", default="val")
    p.add_argument("--per-class", type=int, default=4, help="samples per class in samples.png")
    p.add_argument("--anchor-tokenizer", default=None,
                   help="VFMTok tokenizer for anchor_regions.png when the model's own has no anchor queries (a VQGAN)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="docs", help="folder for reconstructions.png, samples.png, anchor_regions.png")


def run(args: argparse.Namespace) -> int:
    """Write the three figures."""
    from vfmtok.generator.bundled import bundled_model_dir
    from vfmtok.generator.gpt import GPT
    from vfmtok.generator.sample import generate_images
    from vfmtok.tokenizer.api import load_tokenizer

    require(args.per_class >= 1, "--per-class must be >= 1")
    model = Path(args.model) if args.model else bundled_model_dir()
    require((model / "generator").is_dir() and (model / "tokenizer").is_dir(),
            f"{model} is not an exported model folder (generator/ and tokenizer/); see `vfmtok export`")
    torch.manual_seed(args.seed)
    tok = load_tokenizer(model / "tokenizer")
    gpt = GPT.from_pretrained(model / "generator")
    anchors = load_tokenizer(args.anchor_tokenizer) if args.anchor_tokenizer else tok  # before any file is written
    require(anchors.image_size == tok.image_size, "--anchor-tokenizer must work at the model's image size")
    out = Path(args.out)
    x, _ = one_per_class(args.data, tok.image_size, args.split)
    written = [save_png(out / "reconstructions.png", reconstruction_rows(tok, x, scale=2))]
    n_cls = gpt.config.num_classes
    labels = torch.arange(n_cls).repeat_interleave(args.per_class)
    temperature, top_k, top_p = gpt.sampling_args()  # what `vfmtok sample` draws with by default
    imgs = generate_images(gpt, tok, labels, cfg_scale=1.0, temperature=temperature, top_k=top_k, top_p=top_p,
                           seed=args.seed)
    rows = [upscale(make_grid(imgs[labels.numpy() == c], ncol=args.per_class), 2) for c in range(n_cls)]
    names = gpt.class_names or [str(c) for c in range(n_cls)]
    written.append(save_png(out / "samples.png", labelled_rows(rows, names)))
    pics = [sampling_regions(anchors, x[i]) for i in (0, 4, 8) if i < len(x)]
    if pics[0] is None:
        print("note: the tokenizer has no anchor queries (a VQGAN); give --anchor-tokenizer for anchor_regions.png")
    else:
        written.append(save_png(out / "anchor_regions.png", make_grid(np.stack(pics), ncol=len(pics), pad=4)))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
