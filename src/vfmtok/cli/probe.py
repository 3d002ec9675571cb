"""`vfmtok probe`: linear probing on frozen tokenizer features."""

from __future__ import annotations

import argparse

from vfmtok.cli import args as A
from vfmtok.cli.common import config_from
from vfmtok.cli.eval_options import add_run_arguments, add_tokenizer_argument, tokenizer_path
from vfmtok.eval.probe import ProbeConfig, evaluate_probe
from vfmtok.eval.records import print_result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `vfmtok probe`."""
    add_tokenizer_argument(parser)
    A.add(parser, "data", help=f"{A.DATA_HELP}, with train/val splits")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--val-split", default="val")
    parser.add_argument("--weight-decay", type=A.non_negative_float, default=1e-3,
                        help="L2 penalty (wd/2 * ||W||^2) on the linear weights")
    parser.add_argument("--max-iter", type=A.positive_int, default=200, help="L-BFGS iterations")
    add_run_arguments(parser, "at most this many images per split (a seeded random subset)")


def run(args: argparse.Namespace) -> int:
    """Fit the probes, print the table (and write the record with --out)."""
    print_result(evaluate_probe(config_from(args, ProbeConfig, tokenizer=tokenizer_path(args))))
    return 0
