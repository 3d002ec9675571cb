"""Hugging Face Hub ids for checkpoints (resolved through huggingface_hub's cache), model cards and push_to_hub."""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from vfmtok.utils.errors import VFMTokError

# owner/name, optionally /sub/folder inside the repo and @revision; "hf-hub:" (timm, open_clip) or "hf:" forces the Hub.
_HUB_ID = re.compile(r"^(?:hf-hub:|hf:)?([A-Za-z0-9][\w.-]*/[\w.-]+)((?:/[\w.-]+)*)(?:@([\w./-]+))?$")
HUB_PREFIXES = ("hf-hub:", "hf:")
REQUIRED = ("config.json", "model.safetensors")
CARD_NAME = "README.md"


def parse_hub_id(text: str) -> tuple[str, str, str | None] | None:
    """(repo_id, subfolder, revision) of 'owner/name[/sub][@rev]' (or 'hf-hub:...'); None if it is not one."""
    m = _HUB_ID.match(text)
    if m is None or text.startswith((".", "/")):
        return None
    return m.group(1), m.group(2).strip("/"), m.group(3)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _download_hint(repo: str, sub: str, rev: str | None, files: tuple[str, ...]) -> str:
    names = " ".join(f"{sub}/{f}" if sub else f for f in files)
    revision = f" --revision {rev}" if rev else ""
    return f"`huggingface-cli download {repo} {names}{revision}` (huggingface_hub >= 1.0: `hf download ...`)"


def forces_hub(text: str) -> bool:
    """True for 'hf-hub:owner/name' (and 'hf:...'): read from the Hub even if a local folder has that name."""
    return text.startswith(HUB_PREFIXES)


def _in_repo(sub: str, name: str) -> str:
    return posixpath.normpath(posixpath.join(sub, name)) if sub else name


def companions(folder: Path, sub: str) -> list[str]:
    """Repo paths, besides config.json and model.safetensors, that the checkpoint in `folder` (= repo folder `sub`)
    reads: a relative encoder file (official import), a relative tokenizer folder (an exported pair's GPT)."""
    try:
        config = json.loads((folder / "config.json").read_text()).get("config") or {}
    except (OSError, ValueError, AttributeError):
        return []
    out = []
    enc = (config.get("model") or {}).get("encoder_weights") if isinstance(config.get("model"), dict) else None
    if isinstance(enc, str) and enc and not posixpath.isabs(enc) and "/" not in enc:
        out.append(_in_repo(sub, enc))
    tok = (config.get("tokenizer") or {}).get("checkpoint_path") if isinstance(config.get("tokenizer"), dict) else None
    if isinstance(tok, str) and tok and not posixpath.isabs(tok):
        rel = _in_repo(sub, tok)
        if not rel.startswith(".."):  # inside the repo: its config, weights and card
            out += [_in_repo(rel, f) for f in (*REQUIRED, CARD_NAME)]
    return out


def resolve_hub_checkpoint(text: str, local_tried: bool = False) -> Path:
    """The local snapshot folder of a Hub checkpoint id, downloaded into (or read from) huggingface_hub's cache.

    Only the files that model reads are fetched (allow_patterns): config.json, model.safetensors, the model card,
    and what `companions` names (an exported GPT's ../tokenizer). `local_tried`: the error also says no local
    folder has that name. $HF_HUB_CACHE and $HF_HUB_OFFLINE are read at call time.
    """
    parsed = parse_hub_id(text)
    if parsed is None:
        raise VFMTokError(f"'{text}' is not a Hugging Face Hub id (owner/name[/subfolder][@revision])")
    repo, sub, rev = parsed
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise VFMTokError("Hub ids need the huggingface_hub package (pip install huggingface_hub)") from None
    where = f"no folder {text} here, and no Hub repo {repo}" if local_tried else f"Hub repo {repo}"
    wanted = [_in_repo(sub, f) for f in (*REQUIRED, CARD_NAME)]
    root = None
    for _ in range(3):  # the model, then what it names (a tokenizer folder), then what that names (its encoder)
        try:
            root = Path(snapshot_download(repo, revision=rev, cache_dir=os.environ.get("HF_HUB_CACHE") or None,
                                          local_files_only=_offline(), allow_patterns=sorted(set(wanted))))
        except Exception as e:  # offline cache miss, unknown repo, network: all end in the same advice
            why = "(not in the local Hugging Face cache; HF_HUB_OFFLINE is set)" if _offline() else \
                f"(could not be fetched: {type(e).__name__})"
            raise VFMTokError(f"checkpoint '{text}': {where} {why}; download it with "
                              f"{_download_hint(repo, sub, rev, REQUIRED)}") from None
        more = [f for p in {posixpath.dirname(w) for w in wanted} if (root / p / "config.json").is_file()
                for f in companions(root / p, p)]
        if set(more) <= set(wanted):
            break
        wanted += more
    folder = root / sub if sub else root
    missing = tuple(f for f in REQUIRED if not (folder / f).is_file())
    if missing:
        raise VFMTokError(f"checkpoint '{text}': Hub repo {repo} has no {', '.join(missing)} in the cached snapshot "
                          f"{'/' + sub if sub else ''}; download it with {_download_hint(repo, sub, rev, missing)}")
    return folder


def metrics_table(metrics: dict[str, Any]) -> list[str]:
    """A model card's Markdown table of metric -> value (floats to 4 significant digits)."""
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    return ["| metric | value |", "|---|---|"] + [f"| {k} | {cell(v)} |" for k, v in metrics.items()]


def write_model_card(folder: str | Path, model_type: str, config: dict[str, Any], card: dict[str, Any] | None = None) -> Path:
    """README.md beside config.json: what the model is, its data, the command that wrote it, measured metrics."""
    from vfmtok.utils.io import write_text

    card = dict(card or {})
    argv = sys.argv[1:]
    command = card.get("command") or ("vfmtok " + " ".join(shlex.quote(a) for a in argv) if argv
                                      else "(written from Python, not from the vfmtok command line)")
    arch = config.get(model_type) or config.get("model") or {}  # generators: config[model_type]; tokenizers: "model"
    summary = ", ".join(f"{k}={v}" for k, v in arch.items() if not isinstance(v, (dict, list)))
    metrics = card.get("metrics") or {}
    lines = ["---", "library_name: vfmtok", f"tags: [vfmtok, {model_type}, image-generation]", "---", "",
             f"# {card.get('title') or model_type}", "", "## What", "",
             card.get("what") or f"A vfmtok `{model_type}` checkpoint (model.safetensors + config.json).", "",
             f"Architecture: {summary or 'see config.json'}", "", "## Data", "",
             card.get("data") or str(config.get("data") or "not recorded"), "", "## Command", "",
             f"```\n{command}\n```", "", "## Metrics", ""]
    if metrics:
        lines += metrics_table(metrics)
    else:
        lines.append("None measured when this folder was written (see the eval commands' JSON results).")
    path = Path(folder) / CARD_NAME
    write_text(path, "\n".join(lines) + "\n")
    return path


def push_to_hub(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None,
                commit_message: str = "Upload vfmtok checkpoint") -> str:
    """Upload a checkpoint folder (with its model card) to a Hub model repo; returns the commit URL."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise VFMTokError(f"{folder} is not a checkpoint folder (no config.json)")
    if not (folder / CARD_NAME).is_file():
        meta = json.loads((folder / "config.json").read_text())
        write_model_card(folder, meta.get("model_type", "model"), meta.get("config", {}))
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message)
    except Exception as e:
        raise VFMTokError(f"push to {repo_id} failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return str(getattr(info, "commit_url", info))
