"""`vfmtok push-to-hub FOLDER REPO_ID`: upload a checkpoint folder (config.json, weights, README.md card) to the Hub."""

from __future__ import annotations

import argparse
from pathlib import Path

from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.hub import push_to_hub
from vfmtok.utils.io import CONFIG_NAME, read_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `vfmtok push-to-hub`."""
    p.add_argument("folder", help="checkpoint folder (tokenizer or GPT) to upload")
    p.add_argument("repo_id", help="Hub model repo, owner/name (created when missing)")
    p.add_argument("--private", action="store_true")
    p.add_argument("--token", default=None, help="Hub token (default: the cached login / $HF_TOKEN)")


def check_loads(folder: str | Path) -> None:
    """Load a checkpoint folder with the loader of its model type, so a broken one is refused before any upload."""
    from vfmtok.generator.checkpoint import load_generator
    from vfmtok.tokenizer.api import MODEL_TYPES, load_tokenizer

    meta = read_json(Path(folder) / CONFIG_NAME) if Path(folder).is_dir() else None
    if meta is None:
        raise VFMTokError(f"{folder} is not a checkpoint folder (no {CONFIG_NAME})")
    mtype = meta.get("model_type") if isinstance(meta, dict) else None
    (load_tokenizer if mtype in MODEL_TYPES else load_generator)(folder)


def run(args: argparse.Namespace) -> int:
    """Entry point of `vfmtok push-to-hub`."""
    check_loads(args.folder)
    print(push_to_hub(args.folder, args.repo_id, private=args.private, token=args.token))
    return 0
