"""`vfmtok` command line: one entry point, sub-commands implemented in their own modules.

Each sub-command module defines `add_arguments(parser)` and `run(args) -> int | None`; it is
imported only when its command runs, so `vfmtok --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from vfmtok.utils.errors import VFMTokError

COMMANDS: dict[str, tuple[str, str]] = {
    "fetch-weights": ("vfmtok.utils.fetch_cmd", "download the offline-readable VGG16/AlexNet/LPIPS and FID-Inception files"),
    "train-tokenizer": ("vfmtok.train.tokenizer", "train a VFMTok (or baseline VQGAN) tokenizer"),
    "encode": ("vfmtok.tokenizer.commands", "encode images to token ids (.npz)"),
    "reconstruct": ("vfmtok.tokenizer.commands", "encode + decode images, write originals | reconstructions"),
    "extract-codes": ("vfmtok.train.extract", "tokenize a dataset into a memory-mapped code shard"),
    "train-generator": ("vfmtok.train.generator", "train the class-conditional GPT on codes"),
    "sample": ("vfmtok.generator.sample_cmd", "sample images from a trained GPT + tokenizer"),
    "export": ("vfmtok.export", "bundle a tokenizer + GPT pair into one portable folder (the default model for sample)"),
    "eval-tokenizer": ("vfmtok.eval.commands", "rFID, PSNR, SSIM, LPIPS, codebook usage of a tokenizer"),
    "eval-generator": ("vfmtok.eval.commands", "gFID, precision, recall of generated samples"),
    "probe": ("vfmtok.eval.probe", "linear probing on frozen tokenizer features"),
    "class-consistency": ("vfmtok.eval.class_consistency_cmd",
                          "top-1 of a real-image classifier (linear probe on frozen VGG16) on generated samples"),
    "demo": ("vfmtok.demo", "the end-to-end demo on the embedded sample"),
    "figures": ("vfmtok.figures", "the README's pictures (reconstructions, samples per class, anchor regions) from a model"),
    "serve": ("vfmtok.serve", "a local web page: sample by class, tokenize an uploaded image"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Top-level parser; only the chosen sub-command's module is imported."""
    parser = argparse.ArgumentParser(prog="vfmtok", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == command:
            mod = importlib.import_module(module)
            adder = getattr(mod, "add_arguments")
            # Modules serving several commands take the command name.
            try:
                adder(p, name)
            except TypeError:
                adder(p)
            p.set_defaults(_module=mod)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print one line and exit with status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        parser = build_parser(command if command in COMMANDS else None)
        args = parser.parse_args(argv)
        if not getattr(args, "command", None):
            parser.print_help()
            return 1
        rc = args._module.run(args)
        return int(rc or 0)
    except VFMTokError as e:
        print(f"vfmtok: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vfmtok: interrupted (checkpoints written so far are intact; use --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
