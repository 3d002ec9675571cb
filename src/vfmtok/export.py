"""`vfmtok export`: bundle a tokenizer + GPT pair into one portable folder, and find the bundled default model.

Layout: <out>/tokenizer/ and <out>/generator/ (model.safetensors + config.json each) and <out>/model.json.
The GPT's config names its tokenizer by the relative path "../tokenizer" and by the exported file's hash, so
the folder can move. The frozen encoder is never part of it (it comes from `vfmtok fetch-weights`).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from vfmtok.utils import args as A
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.io import WEIGHTS_NAME, file_sha256, write_json

DEFAULT_MODEL_NAME = "imagenette64"
DEFAULT_EXPORT_NAME = "vfmtok-model"
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


def bundled_model_dir() -> Path:
    """Where the package keeps its bundled small model."""
    return Path(__file__).resolve().parent / "assets" / "models" / DEFAULT_MODEL_NAME


def default_generator() -> Path:
    """The bundled GPT checkpoint, or a one-line error saying how to make it."""
    gen = bundled_model_dir() / "generator"
    if not (gen / WEIGHTS_NAME).is_file():
        raise VFMTokError(f"no --gpt given and the bundled model is missing ({gen}); "
                          "build it with `make small-model` or pass --gpt")
    return gen


def export_pair(gpt_path: str | Path, out: str | Path, tokenizer_path: str | Path | None = None,
                dtype: str = "fp16", info: dict | None = None) -> Path:
    """Write the pair into `out` (built under a temporary name, swapped in when complete); weights stored as `dtype`."""
    from vfmtok.generator.checkpoint import load_generator
    from vfmtok.generator.pairing import load_gpt_tokenizer

    if dtype not in DTYPES:
        raise VFMTokError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype}")
    gpt = load_generator(gpt_path)
    tok = load_gpt_tokenizer(gpt, tokenizer_path)
    out = Path(out)
    if out.exists() and not (out / "model.json").is_file() and (not out.is_dir() or any(out.iterdir())):
        raise VFMTokError(f"{out} exists and is not an exported model; choose a new --out (nothing was replaced)")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tok.save_pretrained(tmp / "tokenizer", dtype=DTYPES[dtype])
        gpt.tokenizer_info = {**(gpt.tokenizer_info or {}), "checkpoint_path": "../tokenizer",
                              "checkpoint_hash": file_sha256(tmp / "tokenizer" / WEIGHTS_NAME)}
        gpt.save_pretrained(tmp / "generator", dtype=DTYPES[dtype])
        write_json(tmp / "model.json", {"generator": "generator", "tokenizer": "tokenizer", "dtype": dtype,
                                        "exported_from": {"generator": _shown(gpt.source),
                                                          "tokenizer": _shown(tok.checkpoint_path)},
                                        **(info or {})})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # no half-written folder left behind
        raise
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def _shown(path: Path) -> str:
    """A path relative to the working directory when it lies below it (no machine-specific prefix in model.json)."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `vfmtok export`."""
    A.add(p, "gpt", required=True)
    A.add(p, "tokenizer", help=A.GPT_TOKENIZER_HELP)
    A.add(p, "out", required=False, default=None, help=f"output folder, replaced if it holds an earlier export (default: a new ./{DEFAULT_EXPORT_NAME})")
    p.add_argument("--dtype", default="fp16", choices=list(DTYPES), help="storage dtype of the weights")


def run(args: argparse.Namespace) -> int:
    """Entry point of `vfmtok export`."""
    if args.out is None:  # never the bundled model: replacing it silently changed what `vfmtok sample` draws
        args.out = Path(DEFAULT_EXPORT_NAME)
        if args.out.exists():
            raise VFMTokError(f"./{DEFAULT_EXPORT_NAME} already exists; pass --out to choose the folder")
    out = export_pair(args.gpt, args.out, args.tokenizer, args.dtype)
    print(f"wrote {out} (sample with: vfmtok sample --gpt {out / 'generator'} --class 0)")
    return 0
