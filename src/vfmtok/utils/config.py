"""Dataclass configs: build from dicts, override from YAML files and `a.b=c` strings."""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from vfmtok.utils.errors import VFMTokError

T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass (nested) -> plain dict."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from a dict, recursing into nested dataclasses; unknown keys are an error."""
    if not isinstance(data, dict):
        raise VFMTokError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise VFMTokError(f"{where}: unknown field(s) {unknown} for {cls.__name__}")
    kwargs = {}
    for k, v in data.items():
        t = hints[k]
        if dataclasses.is_dataclass(t) and isinstance(v, dict):
            v = from_dict(t, v, f"{where}.{k}")
        elif typing.get_origin(t) is tuple and isinstance(v, list):
            v = tuple(v)
        elif t in (int, float) and not isinstance(v, bool):
            try:  # YAML 1.1 reads "3e-4" as a string; ints are fine where floats are expected
                f = float(v)
            except (TypeError, ValueError):
                raise VFMTokError(f"{where}.{k}: expected {t.__name__}, got {v!r}") from None
            if t is int and f != int(f):
                raise VFMTokError(f"{where}.{k}: expected int, got {v!r}")
            v = f if t is float else int(f)
        elif t is bool and not isinstance(v, bool):
            raise VFMTokError(f"{where}.{k}: expected true/false, got {v!r}")
        kwargs[k] = v
    return cls(**kwargs)


def _parse_value(text: str, what: str) -> Any:
    # Strings such as "1e-3" (YAML 1.1) stay strings here: from_dict converts them where the field is a number,
    # and a text field (a data path such as "1e5") keeps its text.
    return _safe_yaml(text, what)


def _safe_yaml(text: str, what: str) -> Any:
    """yaml.safe_load with a one-line error naming `what` and where the YAML breaks."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise VFMTokError(f"{what} is not valid YAML ({problem}{where})") from None


def read_yaml(path: str | os.PathLike, what: str = "config file") -> Any:
    """A YAML (or JSON) file's content, with one-line errors for a missing, special, binary or malformed file."""
    p = Path(path)
    if not p.exists():
        raise VFMTokError(f"{what} not found: {p}")
    if not p.is_file():
        raise VFMTokError(f"{what} {p} is not a regular file")
    try:
        text = p.read_text()
    except UnicodeDecodeError:
        raise VFMTokError(f"{what} {p} is not a text file") from None
    except OSError as e:
        raise VFMTokError(f"cannot read {what} {p}: {e.strerror or e}") from None
    return _safe_yaml(text, f"{what} {p}")


def apply_overrides(cfg: T, overrides: list[str] | None = None, yaml_path: str | Path | None = None,
                    flags: dict[str, Any] | None = None) -> T:
    """A copy of `cfg` updated by the one precedence of every vfmtok config: a YAML file, then `key.sub=value`
    strings (--set), then explicit command-line flags ({dotted field: value}; None means the flag was not given)."""
    d = to_dict(cfg)
    if yaml_path:
        loaded = read_yaml(yaml_path) or {}
        if not isinstance(loaded, dict):
            raise VFMTokError(f"config file {yaml_path} must hold a mapping of config fields, got {type(loaded).__name__}")
        _deep_update(d, loaded, str(yaml_path))
    for item in overrides or []:
        if "=" not in item:
            raise VFMTokError(f"override '{item}' must look like key=value (e.g. model.num_tokens=64)")
        key, val = item.split("=", 1)
        _set_field(d, key.strip(), _parse_value(val, f"override '{item}'"), f"override '{item}'")
    for key, val in (flags or {}).items():
        if val is not None:
            _set_field(d, key, val, f"flag for '{key}'")
    return from_dict(type(cfg), d)


def _set_field(d: dict, key: str, value: Any, what: str) -> None:
    node = d
    parts = key.split(".")
    for p_ in parts[:-1]:
        if not isinstance(node.get(p_), dict):
            raise VFMTokError(f"{what}: '{p_}' is not a config section")
        node = node[p_]
    if parts[-1] not in node:
        raise VFMTokError(f"{what}: unknown field '{key}'")
    node[parts[-1]] = value


def check_ranges(cfg: Any, where: str, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = (),
                 fraction: tuple[str, ...] = ()) -> None:
    """One-line error unless each named field is > 0 (positive), >= 0 (non_negative) or in [0, 1) (fraction)."""
    for names, ok, want in ((positive, lambda v: v > 0, "> 0"), (non_negative, lambda v: v >= 0, ">= 0"),
                            (fraction, lambda v: 0 <= v < 1, "in [0, 1)")):
        for n in names:
            v = getattr(cfg, n)
            if not ok(v):
                raise VFMTokError(f"{where}.{n} must be {want}, got {v}")


def _deep_update(dst: dict, src: dict, where: str) -> None:
    for k, v in src.items():
        if k not in dst:
            raise VFMTokError(f"{where}: unknown field '{k}'")
        if isinstance(dst[k], dict) and isinstance(v, dict):
            _deep_update(dst[k], v, f"{where}.{k}")
        else:
            dst[k] = v

