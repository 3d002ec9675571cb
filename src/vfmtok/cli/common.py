"""What every command module shares: typed configs built from parsed options."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def config_from(args: argparse.Namespace, cls: type[T], **given: Any) -> T:
    """A `cls` dataclass from the options of the same name (those the parser lacks keep the dataclass default)."""
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in vars(args).items() if k in fields}
    return cls(**{**values, **given})


def defaults_of(cls: type, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The dataclass defaults of the options `parser` has (for `parser.set_defaults`: the dataclass decides them)."""
    dests = {a.dest for a in parser._actions}
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in dests and f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.name in dests and f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out
