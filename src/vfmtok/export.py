"""`vfmtok export`: bundle a tokenizer + GPT pair into one portable folder, and find the bundled default model.

Layout: <out>/tokenizer/ and <out>/generator/ (model.safetensors + config.json each) and <out>/model.json.
The GPT's config names its tokenizer by the relative path "../tokenizer" and by the exported file's hash, so
the folder can move. The frozen encoder is never part of it (it comes from `vfmtok fetch-weights`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from vfmtok.generator.bundled import DEFAULT_MODEL_NAME, bundled_model_dir, default_generator  # noqa: F401
from vfmtok.utils.atomic import atomic_path
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.io import WEIGHTS_NAME, file_sha256, read_json, write_json

DEFAULT_EXPORT_NAME = "vfmtok-model"
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


def export_pair(gpt_path: str | Path, out: str | Path, tokenizer_path: str | Path | None = None,
                dtype: str = "fp16", info: dict | None = None, sampling: dict | None = None) -> Path:
    """Write the pair into `out` (built under a temporary name, swapped in when complete); weights stored as `dtype`.
    `sampling` ({temperature, top_k, top_p}) becomes the GPT's recommended sampling, what `vfmtok sample` uses."""
    from vfmtok.generator.checkpoint import load_generator
    from vfmtok.generator.pairing import load_gpt_tokenizer

    if dtype not in DTYPES:
        raise VFMTokError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype}")
    gpt = load_generator(gpt_path)
    tok = load_gpt_tokenizer(gpt, tokenizer_path)
    gpt.sampling = {**gpt.sampling, **{k: v for k, v in (sampling or {}).items() if v is not None}}
    out = Path(out)
    if out.exists() and not (out / "model.json").is_file() and (not out.is_dir() or any(out.iterdir())):
        raise VFMTokError(f"{out} exists and is not an exported model; choose a new --out (nothing was replaced)")
    info = {**(info or {}), **({"sampling": gpt.sampling} if gpt.sampling else {})}
    with atomic_path(out, folder=True) as tmp:  # built complete under a temporary name, then swapped in
        tok.save_pretrained(tmp / "tokenizer", dtype=DTYPES[dtype], card=_card("tokenizer", gpt, info))
        gpt.tokenizer_info = {**(gpt.tokenizer_info or {}), "checkpoint_path": "../tokenizer",
                              "checkpoint_hash": file_sha256(tmp / "tokenizer" / WEIGHTS_NAME)}
        gpt.save_pretrained(tmp / "generator", dtype=DTYPES[dtype], card=_card("generator", gpt, info))
        write_json(tmp / "model.json", {"generator": "generator", "tokenizer": "tokenizer", "dtype": dtype,
                                        "exported_from": _origin(gpt.source, tok.checkpoint_path), **info})
    return out


def _shown(path: Path) -> str:
    """A path relative to the working directory when it lies below it (no machine-specific prefix in model.json)."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def _origin(gpt_dir: Path, tok_dir: Path) -> dict:
    """The training checkpoints a pair came from. A half taken from an exported pair keeps that export's record of
    it; the other half is named by its own path (a re-export may pair an exported GPT with a new tokenizer)."""
    record, again = {}, []
    for role, path in (("generator", Path(gpt_dir)), ("tokenizer", Path(tok_dir))):
        earlier = path.parent / "model.json"
        origin = read_json(earlier).get("exported_from") if earlier.is_file() else None
        if isinstance(origin, dict) and role in origin:
            record[role] = origin[role]
            again.append(_shown(path.parent))
        else:
            record[role] = _shown(path)
    if again:
        record["re_exported_from"] = again[0] if len(set(again)) == 1 else again
    return record


def _card(role: str, gpt, info: dict) -> dict:
    """Model-card fields of one half of an exported pair: what it is, its classes, how it was trained, its numbers."""
    names = list(gpt.class_names or [])
    recipe = info.get("recipe")
    what = (f"The {role} of an exported vfmtok tokenizer + GPT pair (the other half is in ../"
            f"{'generator' if role == 'tokenizer' else 'tokenizer'}; `vfmtok sample --gpt <this pair>/generator`).")
    return {"what": what + (f" Trained by: `{recipe}`." if recipe else ""),
            "data": f"{len(names)} classes: {', '.join(names)}" if names else None,
            "metrics": info.get("measured")}
