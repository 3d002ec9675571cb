"""`vfmtok train-tokenizer`: preset -> YAML -> --set -> flags, then `train_tokenizer`."""

from __future__ import annotations

import argparse
from pathlib import Path

from vfmtok.cli import args as A
from vfmtok.train import tokenizer as TT
from vfmtok.train.tokenizer import TokenizerRunConfig, train_tokenizer


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of train-tokenizer."""
    p.add_argument("--preset", default="vfmtok-cpu-64", help="starting config (see vfmtok.tokenizer.config.PRESETS)")
    A.add_all(p, "config", "set")
    A.add(p, "data", default=None, help=f"{A.DATA_HELP} (sets train.data)")
    A.add(p, "steps", help="optimisation steps (sets train.steps)")
    A.add(p, "batch_size", default=None, help="per-process batch size (sets train.batch_size)")
    A.add(p, "lr", help="peak learning rate (sets train.lr)")
    A.add(p, "out", help="run folder (checkpoints, logs, samples)")
    A.add(p, "resume")
    p.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the tokenizer and its frozen encoder (sets train.compile; first steps compile)")
    A.add(p, "device", default=None, help=f"{A.DEVICE_CHOICES} (sets train.device, default auto)")


# flag (args attribute) -> the config field it sets
FLAG_FIELDS = {"compile": "train.compile", "data": "train.data", "steps": "train.steps", "batch_size": "train.batch_size", "lr": "train.lr",
               "device": "train.device"}


def resolve_config(args: argparse.Namespace) -> TokenizerRunConfig:
    """The config the command line asks for: preset -> --config -> --set -> flags (`TT.resolve_config`)."""
    return TT.resolve_config(args.preset, args.overrides, args.config,
                             {field: getattr(args, name, None) for name, field in FLAG_FIELDS.items()})


def run(args: argparse.Namespace) -> int:
    """Entry point of the CLI command."""
    cfg = resolve_config(args)
    train_tokenizer(cfg, Path(args.out), resume=args.resume)
    return 0
