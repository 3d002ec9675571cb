"""`vfmtok eval-tokenizer` and `vfmtok eval-generator`: options -> TokenizerEvalConfig / GeneratorEvalConfig."""

from __future__ import annotations

import argparse

from vfmtok.cli.common import config_from
from vfmtok.cli.eval_options import add_arguments, tokenizer_path  # noqa: F401 (the CLI's add_arguments)
from vfmtok.eval.commands import eval_generator, eval_tokenizer
from vfmtok.eval.config import GeneratorEvalConfig, TokenizerEvalConfig
from vfmtok.eval.records import print_result


def run(args: argparse.Namespace) -> int:
    """Dispatch on args.command."""
    if args.command == "eval-tokenizer":
        print_result(eval_tokenizer(config_from(args, TokenizerEvalConfig, tokenizer=tokenizer_path(args))))
    else:
        print_result(eval_generator(config_from(args, GeneratorEvalConfig)))
    return 0
