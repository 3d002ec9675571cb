"""`vfmtok` command line: one entry point, sub-commands implemented in their own modules.

Each sub-command module defines `add_arguments(parser)` and `run(args) -> int | None`; it is
imported only when its command runs, so `vfmtok --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from vfmtok.cli import threads
from vfmtok.utils.errors import VFMTokError

COMMANDS: dict[str, tuple[str, str]] = {
    "fetch-weights": ("vfmtok.cli.fetch_weights", "download the offline-readable VGG16/AlexNet/LPIPS and FID-Inception files"),
    "prepare-data": ("vfmtok.cli.prepare_data", "write an image folder / zip / LMDB as shuffled tar shards for streaming"),
    "train-tokenizer": ("vfmtok.cli.train_tokenizer", "train a VFMTok (or baseline VQGAN) tokenizer"),
    "encode": ("vfmtok.cli.encode", "encode images to token ids (.npz)"),
    "reconstruct": ("vfmtok.cli.encode", "encode + decode images, write originals | reconstructions"),
    "extract-codes": ("vfmtok.cli.extract_codes", "tokenize a dataset into a memory-mapped code shard"),
    "train-generator": ("vfmtok.cli.train_generator", "train the class-conditional GPT on codes"),
    "sample": ("vfmtok.cli.sample", "sample images from a trained GPT + tokenizer"),
    "sample-npz": ("vfmtok.cli.sample_npz", "N samples into one ADM .npz (official protocol by default; torchrun for several ranks)"),
    "export": ("vfmtok.cli.export", "bundle a tokenizer + GPT pair into one portable folder (the default model for sample)"),
    "eval-tokenizer": ("vfmtok.cli.evaluate", "rFID, PSNR, SSIM, LPIPS, codebook usage of a tokenizer"),
    "eval-generator": ("vfmtok.cli.evaluate", "gFID, precision, recall of generated samples"),
    "probe": ("vfmtok.cli.probe", "linear probing on frozen tokenizer features"),
    "import-official": ("vfmtok.cli.import_official", "convert the official VFMTok tokenizer / LlamaGen GPT .pt files into checkpoint folders"),
    "push-to-hub": ("vfmtok.cli.push_to_hub", "upload a checkpoint folder (with its README.md model card) to the Hugging Face Hub"),
    "class-consistency": ("vfmtok.cli.class_consistency",
                          "top-1 of a real-image classifier (linear probe on frozen VGG16) on generated samples"),
    "demo": ("vfmtok.cli.demo", "the bundled model at work plus a short training from scratch, one report.html (--full: the whole pipeline)"),
    "figures": ("vfmtok.cli.figures", "the README's pictures (reconstructions, samples per class, anchor regions) from a model"),
    "serve": ("vfmtok.cli.serve", "a local web page: sample by class, tokenize an uploaded image"),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option ends as one line on stderr (exit 2) instead of the usage block."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Top-level parser; only the chosen sub-command's module is imported."""
    parser = OneLineParser(prog="vfmtok", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        threads.add_argument(p)
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
    rc = _main(argv)
    dist = sys.modules.get("vfmtok.utils.distributed")  # loaded by the commands that may start a process group
    return dist.exit_code(rc) if dist is not None else rc  # a torchrun worker ends here (see exit_code)


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    threads.prepare_environment()  # before the command's module loads torch
    try:
        parser = build_parser(command if command in COMMANDS else None)
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help, or a bad option already reported in one line
            return int(e.code or 0)
        if not getattr(args, "command", None):
            parser.print_help()
            return 1
        from vfmtok.cli.guard import command_guard

        with threads.using(args.threads), command_guard(args):
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
