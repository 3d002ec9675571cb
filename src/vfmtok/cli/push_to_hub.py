"""`vfmtok push-to-hub FOLDER REPO_ID`: upload a checkpoint folder (config.json, weights, README.md card) to the Hub."""

from __future__ import annotations

import argparse

from vfmtok.utils.hub import push_to_hub


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `vfmtok push-to-hub`."""
    p.add_argument("folder", help="checkpoint folder (tokenizer or GPT) to upload")
    p.add_argument("repo_id", help="Hub model repo, owner/name (created when missing)")
    p.add_argument("--private", action="store_true")
    p.add_argument("--token", default=None, help="Hub token (default: the cached login / $HF_TOKEN)")


def run(args: argparse.Namespace) -> int:
    """Entry point of `vfmtok push-to-hub`."""
    print(push_to_hub(args.folder, args.repo_id, private=args.private, token=args.token))
    return 0
