"""Options of the evaluation commands (eval-tokenizer, eval-generator, probe); their defaults come from eval.config."""

from __future__ import annotations

import argparse
from pathlib import Path

from vfmtok.cli import args as A
from vfmtok.cli.common import defaults_of
from vfmtok.eval.config import SECOND_ENCODER, GeneratorEvalConfig, TokenizerEvalConfig
from vfmtok.eval.protocol import LABEL_KINDS, PROTOCOLS
from vfmtok.utils.device import resolve_device
from vfmtok.utils.errors import require


def add_run_arguments(p: argparse.ArgumentParser, num_images_help: str) -> None:
    """Options every evaluation command (eval-tokenizer, eval-generator, probe) shares."""
    A.add(p, "out", type=Path, required=False, default=None,
          help="results JSON path (a Markdown table is written beside it, .md)")
    A.add_all(p, "batch_size", "device")
    A.add(p, "num_images", "--num-images", "--limit", help=num_images_help)
    A.add(p, "seed")


def add_tokenizer_argument(p: argparse.ArgumentParser) -> None:
    """The tokenizer, positionally or with --tokenizer (see tokenizer_path)."""
    p.add_argument("checkpoint", type=Path, nargs="?", default=None,
                   help="tokenizer checkpoint folder or run folder (or use --tokenizer)")
    A.add(p, "tokenizer", type=Path, help="same as the positional checkpoint")


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """Options of eval-tokenizer and eval-generator."""
    add_run_arguments(p, "use at most this many images (a seeded random subset)")
    p.add_argument("--no-cache", action="store_true", help="recompute reference statistics instead of reading the cache")
    p.add_argument("--second-encoder", default=SECOND_ENCODER,
                   help="project encoder for the second-opinion Fréchet distance ('none' to skip)")


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    """Arguments of `eval-tokenizer` or `eval-generator`."""
    if command == "eval-tokenizer":
        add_tokenizer_argument(parser)
        A.add(parser, "data")
        A.add(parser, "split", default="val")
        parser.add_argument("--no-lpips", action="store_true")
        parser.add_argument("--protocol", default="vfmtok", choices=list(PROTOCOLS),
                            help="official: reconstruct at the tokenizer's size, score both at 256 (PIL bicubic)")
    else:
        A.add(parser, "gpt", type=Path, help="GPT or RAR checkpoint or run folder (samples --images-per-class of each class)")
        A.add(parser, "tokenizer", type=Path, help=A.GPT_TOKENIZER_HELP)
        parser.add_argument("--samples", default=None, help="samples to score instead: .npz (arr_0 uint8 NHWC) or a folder")
        parser.add_argument("--ref", required=True,
                            help="reference: dataset ('imagenette', folder, zip) or statistics .npz (ours or ADM's)")
        parser.add_argument("--ref-split", default="val")
        A.add(parser, "num_images", "--ref-num-images", help="use at most this many reference images")
        A.add(parser, "per_class", "--images-per-class", default=50)
        parser.add_argument("--cfg-scales", type=A.non_negative_float, nargs="+", default=[1.0],
                            help="one result per scale, e.g. 1.0 2.0")
        parser.add_argument("--compile", action="store_true",
                            help="torch.compile the decode step when sampling with --gpt (CUDA graphs on GPUs)")
        parser.add_argument("--cfg-power", type=A.non_negative_float, default=None, help=A.CFG_POWER_HELP)
        A.add_all(parser, "temperature", "top_k", "top_p", "parallel", "window")
        parser.add_argument("--image-size", type=A.positive_int, default=None, help="evaluation resolution (default: the samples')")
        parser.add_argument("--protocol", default="vfmtok", choices=list(PROTOCOLS),
                            help="official: decode at the tokenizer's size (336), bicubic resize to 256, random labels")
        parser.add_argument("--labels", default=None, choices=list(LABEL_KINDS),
                            help="balanced (images-per-class of each) or random (uniform draws); default: the protocol's")
        parser.add_argument("--save-samples", type=Path, default=None, help="also write generated samples as .npz (arr_0)")
        parser.add_argument("--save-ref-stats", type=Path, default=None, help="write the reference statistics .npz")
    add_common_arguments(parser)
    config = TokenizerEvalConfig if command == "eval-tokenizer" else GeneratorEvalConfig
    parser.set_defaults(**defaults_of(config, parser))  # the dataclass is the one home of the defaults


def prepare(args: argparse.Namespace) -> None:
    """Checks every evaluation command shares; resolves --device ('auto') to the device that runs."""
    require(args.batch_size > 0, f"--batch-size must be positive, got {args.batch_size}")
    args.device = str(resolve_device(args.device))


def tokenizer_path(args: argparse.Namespace) -> Path:
    """The tokenizer given positionally or with --tokenizer (exactly one)."""
    given = [p for p in (args.checkpoint, args.tokenizer) if p is not None]
    require(len(given) == 1, "give the tokenizer checkpoint once: positionally or with --tokenizer")
    return Path(given[0])
