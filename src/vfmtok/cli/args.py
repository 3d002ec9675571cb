"""The command-line options every `vfmtok` command shares, defined once, with types that refuse bad values.

A command adds an option with `add(parser, "batch_size")` (keyword arguments override the shared
definition, e.g. `default=None` for a trainer whose config supplies the value). Numeric types raise
argparse errors, so `--batch-size 0` ends as one line and exit status 2 before any work starts.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import math
from typing import Any

from vfmtok.utils.device import DEVICE_CHOICES

__all__ = ["ARGUMENTS", "DATA_HELP", "DEVICE_CHOICES", "GPT_TOKENIZER_HELP", "add", "add_all", "decay", "device_name",
           "non_negative_float", "non_negative_int", "number", "positive_float", "positive_int", "probability"]


def number(kind: type = int, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> Callable[[str], Any]:
    """An argparse type: `kind(text)` within [low, high] (open ends where asked), else a one-line error."""
    lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
    hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
    want = " and ".join(x for x in (lo, hi) if x)

    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        bad = not math.isfinite(v) or (low is not None and (v <= low if low_open else v < low)) or \
            (high is not None and (v >= high if high_open else v > high))
        if bad:
            raise argparse.ArgumentTypeError(f"must be {want}, got {text}")
        return v

    parse.__name__ = f"{kind.__name__} {want}".strip()  # argparse names the type in some messages
    return parse


positive_int = number(int, 1)
non_negative_int = number(int, 0)
positive_float = number(float, 0, low_open=True)
non_negative_float = number(float, 0)
probability = number(float, 0, 1, low_open=True)  # top-p: (0, 1]
decay = number(float, 0, 1, high_open=True)  # EMA decay: [0, 1)


def device_name(text: str) -> str:
    """An argparse type for --device: auto, cpu, cuda or cuda:N (availability is checked when resolved)."""
    t = text.strip().lower()
    if t in ("auto", "cpu", "cuda") or (t.startswith("cuda:") and t[5:].isdigit()):
        return t
    raise argparse.ArgumentTypeError(f"unknown device {text!r} (use {DEVICE_CHOICES})")


GPT_TOKENIZER_HELP = "tokenizer checkpoint or run folder (default: the one recorded in the GPT's config)"
CFG_INTERVAL_HELP = ("guide tokens 0 .. N+1 only, N+2 tokens as LlamaGen's cfg_interval counts "
                     "(-1 = all; an unguided token still runs both branches)")
CFG_POWER_HELP = ("RAR's CFG schedule: token t uses 1 + (s-1)(1-cos(pi (t/N)^pow))/2, from 1 at t=0 towards s "
                  "(default: the constant scale s)")
DATA_HELP = "'sample' (embedded), 'imagenette', 'cifar10', a class-folder tree or a zip of one"

# name -> (flags, argparse keyword arguments); `add` applies per-command overrides on top.
ARGUMENTS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "device": (("--device",), dict(default="auto", type=device_name, help=f"{DEVICE_CHOICES} (auto: cuda when available)")),
    "data": (("--data",), dict(default="sample", help=DATA_HELP)),
    "split": (("--split",), dict(default="train", help="split folder inside --data (ignored when absent)")),
    "tokenizer": (("--tokenizer",), dict(default=None, help="tokenizer checkpoint folder or run folder")),
    "gpt": (("--gpt",), dict(default=None, help="GPT checkpoint folder or run folder")),
    "out": (("--out",), dict(required=True, help="output folder")),
    "seed": (("--seed",), dict(type=non_negative_int, default=0, help="random seed")),
    "batch_size": (("--batch-size",), dict(type=positive_int, default=32, help="images per batch")),
    "num_workers": (("--num-workers",), dict(type=non_negative_int, default=0, help="data loader worker processes")),
    "precision": (("--precision",), dict(default="fp32", choices=["fp32", "bf16", "fp16"], help="autocast dtype on GPU")),
    "steps": (("--steps",), dict(type=positive_int, default=None, help="optimisation steps")),
    "lr": (("--lr",), dict(type=positive_float, default=None, help="peak learning rate")),
    "num_images": (("--num-images",), dict(type=positive_int, default=None, help="use at most this many images")),
    "per_class": (("--per-class",), dict(type=positive_int, default=4, help="images per class")),
    "temperature": (("--temperature",), dict(type=positive_float, default=None,
                                             help="sampling temperature (default: the model's recommended one, else 1.0)")),
    "top_k": (("--top-k",), dict(type=non_negative_int, default=None,
                                 help="keep the k most likely ids (0 = off; default: the model's recommended k, else 0)")),
    "top_p": (("--top-p",), dict(type=probability, default=None,
                                 help="nucleus sampling mass (1.0 = off; default: the model's recommended one, else 1.0)")),
    "parallel": (("--parallel",), dict(default="none", metavar="{none,jacobi}",
                                       help="parallel decoding: 'jacobi' = speculative Jacobi decoding, several ids per "
                                            "forward pass with the same sampling distribution (docs/jacobi.md)")),
    "window": (("--window",), dict(type=positive_int, default=16, help="ids per forward pass with --parallel jacobi")),
    "resume": (("--resume",), dict(action="store_true", help="continue from the newest checkpoint in --out")),
    "config": (("--config",), dict(default=None, help="YAML file of config fields (a run's run_config.json works too)")),
    "set": (("--set",), dict(dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                             help="override one config field as dotted.name=value (see the command's config; repeatable)")),
}


def add(parser: argparse.ArgumentParser, name: str, *flags: str, **overrides: Any) -> argparse.Action:
    """Add shared option `name` to parser; `flags`, when given, replace its flags (another name for the same
    meaning, e.g. --ref-num-images); keyword arguments override the shared definition."""
    base_flags, kwargs = ARGUMENTS[name]
    return parser.add_argument(*(flags or base_flags), **{**kwargs, **overrides})


def add_all(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add several shared options with their shared definitions."""
    for n in names:
        add(parser, n)
