"""`vfmtok export`: bundle a tokenizer + GPT pair into one portable folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from vfmtok.cli import args as A
from vfmtok.export import DEFAULT_EXPORT_NAME, DTYPES, export_pair
from vfmtok.generator.bundled import DEFAULT_MODEL_NAME, bundled_model_dir, default_generator  # noqa: F401
from vfmtok.utils.errors import VFMTokError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `vfmtok export`."""
    A.add(p, "gpt", required=True)
    A.add(p, "tokenizer", help=A.GPT_TOKENIZER_HELP)
    A.add(p, "out", required=False, default=None, help=f"output folder, replaced if it holds an earlier export (default: a new ./{DEFAULT_EXPORT_NAME})")
    p.add_argument("--dtype", default="fp16", choices=list(DTYPES), help="storage dtype of the weights")
    p.add_argument("--recipe", default=None, help="the command that trained the pair, for model.json and the model cards")
    for name in ("temperature", "top_k", "top_p"):
        A.add(p, name, help="recommended sampling stored in the GPT's config.json (what `vfmtok sample` uses by default)")


def run(args: argparse.Namespace) -> int:
    """Entry point of `vfmtok export`."""
    if args.out is None:  # never the bundled model: replacing it silently changed what `vfmtok sample` draws
        args.out = Path(DEFAULT_EXPORT_NAME)
        if args.out.exists():
            raise VFMTokError(f"./{DEFAULT_EXPORT_NAME} already exists; pass --out to choose the folder")
    sampling = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p}
    out = export_pair(args.gpt, args.out, args.tokenizer, args.dtype, {"recipe": args.recipe} if args.recipe else None,
                      sampling)
    print(f"wrote {out} (sample with: vfmtok sample --gpt {out / 'generator'} --class 0)")
    return 0
