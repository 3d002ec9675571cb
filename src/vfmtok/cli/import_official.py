"""`vfmtok import-official`: the official VFMTok tokenizer / LlamaGen GPT / RAR .pt files into checkpoint folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from vfmtok.official.command import import_gpt, import_rar, import_tokenizer
from vfmtok.utils.atomic import atomic_path
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.io import WEIGHTS_NAME, file_sha256, write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `vfmtok import-official`."""
    p.add_argument("--tokenizer", type=Path, default=None, help="official VFMTok tokenizer .pt (vfmtok-tokenizer.pt, or a trainer's vit_vqgan_step_N.pt)")
    p.add_argument("--dinov2", type=Path, default=None, help="DINOv2 weights the tokenizer was trained with "
                   "(facebookresearch dinov2_vitl14_reg4_pretrain.pth)")
    p.add_argument("--gpt", type=Path, default=None, help="official GPT .pt (e.g. GPT-B-300e.pt) or FSDP consolidated.pth")
    p.add_argument("--rar", type=Path, default=None, help="official RAR weights (1d-tokenizer rar_*.bin, VFMTok-RAR "
                   ".bin / .safetensors state dict)")
    p.add_argument("--which", default="ema", choices=["ema", "model"], help="weights inside the .pt to import")
    p.add_argument("--num-tokens", type=int, default=None, help="generator sequence length when the file records "
                   "none (GPT default 256: VFMTok's 16 x 16; RAR: from its step table)")
    p.add_argument("--n-head", type=int, default=None, help="attention heads: a GPT of a depth/width no LlamaGen "
                   "preset has; a RAR whose head width is not 64")
    p.add_argument("--out", type=Path, required=True, help="output checkpoint folder")


def _import_into(args: argparse.Namespace, tmp: Path) -> None:
    """Every requested import, written under `tmp` (the tokenizer first: the generator's config names its hash)."""
    gen_path = args.gpt or args.rar
    both = args.tokenizer is not None and gen_path is not None
    info = None
    if args.tokenizer is not None:
        tdir = tmp / "tokenizer" if both else tmp
        facts = import_tokenizer(args.tokenizer, args.dinov2, tdir, args.which)
        print(f"tokenizer: {facts['params']:,} parameters from {facts['source']} ({facts['weights']}), "
              f"encoder {facts['encoder']}")
        if both:
            info = {"checkpoint_path": "../tokenizer", "checkpoint_hash": file_sha256(tdir / WEIGHTS_NAME)}
    gdir = tmp / "generator" if both else tmp
    if args.gpt is not None:
        facts = import_gpt(args.gpt, gdir, args.which, args.num_tokens, info, args.n_head)
        print(f"gpt: {facts['preset']}, {facts['params']:,} parameters from {facts['source']} ({facts['weights']}); "
              f"null class {facts['null_class']}")
    if args.rar is not None:
        facts = import_rar(args.rar, gdir, args.which, args.num_tokens, info, args.n_head)
        print(f"rar: {facts['shape']}, {facts['params']:,} parameters from {facts['source']} ({facts['weights']})")
    if both:  # the layout of `vfmtok export`
        write_json(tmp / "model.json", {"generator": "generator", "tokenizer": "tokenizer",
                                        "imported_from": {"generator": gen_path.name, "tokenizer": args.tokenizer.name}})


def run(args: argparse.Namespace) -> int:
    """Entry point of `vfmtok import-official`."""
    if args.tokenizer is None and args.gpt is None and args.rar is None:
        raise VFMTokError("pass --tokenizer (with --dinov2) and/or a generator (--gpt or --rar)")
    if args.gpt is not None and args.rar is not None:
        raise VFMTokError("pass one generator: --gpt (LlamaGen) or --rar, not both")
    if args.tokenizer is not None and args.dinov2 is None:
        raise VFMTokError("--tokenizer needs --dinov2 (the official trainer does not save the frozen DINOv2)")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not ((out / "config.json").is_file() or (out / "model.json").is_file()):
        raise VFMTokError(f"--out {out} exists and is not a checkpoint folder; refusing to replace it")
    with atomic_path(out, folder=True) as tmp:  # built complete under a temporary name, then swapped in
        _import_into(args, tmp)
    print(f"wrote {out}")
    return 0
