"""`vfmtok figures`: the README pictures from a model."""

from __future__ import annotations

import argparse

from vfmtok.cli.common import config_from
from vfmtok.figures import FiguresConfig, write_figures


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
    written = write_figures(config_from(args, FiguresConfig))
    if not any(p.name == "anchor_regions.png" for p in written):
        print("note: the tokenizer has no anchor queries (a VQGAN); give --anchor-tokenizer for anchor_regions.png")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
