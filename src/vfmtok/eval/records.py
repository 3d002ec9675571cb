"""One result-record format for every evaluation command: what ran, on what, with which networks; JSON + Markdown."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import torch

from vfmtok.utils.io import WEIGHTS_NAME, atomic_path, file_sha256, write_json

# Fields that must agree for two results to be comparable (see `compare_records`).
IDENTITY_FIELDS = ("kind", "checkpoints", "data", "num_images", "resolution", "seed", "cfg", "feature_networks")


def checkpoint_record(folder: str | os.PathLike | None) -> dict | None:
    """{'path', 'sha256'} of a checkpoint folder's model.safetensors (sha256 None when the file is absent)."""
    if folder is None:
        return None
    folder = Path(folder)
    weights = folder / WEIGHTS_NAME if folder.is_dir() else folder
    return {"path": str(folder), "sha256": file_sha256(weights) if weights.is_file() else None}


@dataclass
class EvalResult:
    """What an evaluation returns: the record (JSON-able), its Markdown table and the notes printed under it."""

    record: dict
    table: str
    notes: list[str] = field(default_factory=list)
    files: tuple[Path, Path] | None = None  # the results JSON and its .md table, when the caller gave `out`


def make_record(kind: str, *, metrics: dict, num_images: int, resolution: int, seed: int,
                checkpoints: dict[str, dict | None] | None = None, data: dict | None = None,
                cfg: Any = None, feature_networks: Sequence[dict] = (), notes: Sequence[str] = (),
                device: str | None = None, argv: Sequence[str] | None = None, args: Any = None, **extra: Any) -> dict:
    """Build the result dict: command line, checkpoints + hashes, data, sizes, seed, CFG, networks, time, versions.

    `argv` defaults to sys.argv; `args` (the config, a dict or an object) is stored too, so every effective option,
    defaults included, is on record even when the command was started from Python.
    """
    from vfmtok.utils.version import __version__

    argv = list(sys.argv if argv is None else argv)
    items = (args if isinstance(args, dict) else vars(args)).items() if args is not None else None
    arguments = {k: (str(v) if isinstance(v, Path) else v) for k, v in items if not k.startswith("_")} if items is not None else None
    return {
        "kind": kind,
        "command": shlex.join(argv),
        "argv": argv,
        "arguments": arguments,
        "checkpoints": checkpoints or {},
        "data": data or {},
        "num_images": int(num_images),
        "resolution": int(resolution),
        "seed": int(seed),
        "cfg": cfg,
        "feature_networks": list(feature_networks),
        "metrics": metrics,
        "notes": list(notes),
        **extra,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "vfmtok_version": __version__,
        "torch_version": torch.__version__,
        "device": device,
        "host": platform.node(),
    }


def compare_records(a: dict, b: dict) -> list[str]:
    """Names of identity fields in which two records differ (empty list: the numbers are comparable)."""
    return [k for k in IDENTITY_FIELDS if a.get(k) != b.get(k)]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; floats get 4 significant digits, None prints as 'n/a'."""
    def cell(v: Any) -> str:
        if v is None:
            return "n/a"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(out: str | os.PathLike, record: dict, table: str) -> tuple[Path, Path]:
    """Write the JSON record to `out` and the Markdown table beside it (same name, .md); both atomic."""
    out = Path(out)
    md = out.with_suffix(".md")
    write_json(out, {**record, "markdown": table})
    with atomic_path(md) as tmp:
        notes = "".join(f"\n- {n}" for n in record.get("notes", []))
        tmp.write_text(f"{table}\n`{record['command']}`  \n{record['timestamp']}, vfmtok {record['vfmtok_version']}\n{notes}\n")
    return out, md


def finish_result(record: dict, table: str, notes: Sequence[str], out: str | os.PathLike | None) -> EvalResult:
    """An evaluation's result; with `out`, its record (JSON) and table (.md) are written there first."""
    files = write_results(out, record, table) if out is not None else None
    return EvalResult(record, table, list(notes), files)


def print_result(result: EvalResult) -> None:
    """Print a result table, its notes and the files it was written to (the CLI and the demo show results so)."""
    print(result.table, end="")
    for n in result.notes:
        print(f"  note: {n}")
    if result.files is not None:
        print(f"wrote {result.files[0]} and {result.files[1]}")
