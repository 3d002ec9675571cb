"""`vfmtok import-official`: the official VFMTok tokenizer / LlamaGen GPT / RAR .pt files into checkpoint folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from vfmtok.cli.common import config_from
from vfmtok.official.command import ImportConfig, import_official


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


def run(args: argparse.Namespace) -> int:
    """Entry point of `vfmtok import-official`."""
    facts = import_official(config_from(args, ImportConfig))
    if "tokenizer" in facts:
        f = facts["tokenizer"]
        print(f"tokenizer: {f['params']:,} parameters from {f['source']} ({f['weights']}), encoder {f['encoder']}")
    if "gpt" in facts:
        f = facts["gpt"]
        print(f"gpt: {f['preset']}, {f['params']:,} parameters from {f['source']} ({f['weights']}); "
              f"null class {f['null_class']}")
    if "rar" in facts:
        f = facts["rar"]
        print(f"rar: {f['shape']}, {f['params']:,} parameters from {f['source']} ({f['weights']})")
    print(f"wrote {args.out}")
    return 0
