"""Which tokenizer a GPT belongs to: the facts that identify a tokenizer's ids, the compatibility check, the lookup."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.pretrained import resolve_checkpoint


def tokenizer_facts(tok: Any) -> dict[str, Any]:
    """What identifies a tokenizer's ids: hash, absolute path, codebook size, num_tokens, token grid, image size."""
    # Absolute: a recorded relative path is read from the GPT checkpoint's folder (exports link "../tokenizer"),
    # so a path relative to the directory extract-codes ran in would point nowhere.
    return {"checkpoint_hash": tok.checkpoint_hash, "checkpoint_path": str(Path(tok.checkpoint_path).absolute()),
            "codebook_size": int(tok.codebook_size), "num_tokens": int(tok.num_tokens),
            "token_grid": [int(x) for x in tok.token_grid], "image_size": int(tok.image_size)}


def check_codes_match(tokenizer: dict[str, Any], vocab_size: int, num_tokens: int, token_grid: Sequence[int],
                      where: str) -> None:
    """Refuse a GPT whose vocab / sequence / grid differ from the tokenizer facts (a dict as tokenizer_facts gives)."""
    if int(tokenizer["codebook_size"]) != int(vocab_size):
        raise VFMTokError(f"{where}: codebook size {tokenizer['codebook_size']} != GPT vocab_size {vocab_size}")
    if int(tokenizer["num_tokens"]) != int(num_tokens) or [int(x) for x in tokenizer["token_grid"]] != [int(x) for x in token_grid]:
        raise VFMTokError(f"{where}: {tokenizer['num_tokens']} tokens on grid {tuple(tokenizer['token_grid'])}, "
                          f"GPT expects {num_tokens} on {tuple(token_grid)}")


def check_tokenizer(gpt: Any, tokenizer: Any) -> None:
    """Refuse a tokenizer whose ids do not mean what the GPT was trained on (sizes, grid, and the recorded hash)."""
    c = gpt.config
    facts = {"codebook_size": tokenizer.codebook_size, "num_tokens": tokenizer.num_tokens,
             "token_grid": list(tokenizer.token_grid)}
    check_codes_match(facts, c.vocab_size, c.num_tokens, c.token_grid, "tokenizer")
    want = (gpt.tokenizer_info or {}).get("checkpoint_hash")
    have = getattr(tokenizer, "checkpoint_hash", None)
    # a decoder-only fine-tuning keeps its starting point's ids and records that checkpoint's hash
    if want and have and want != have and want not in getattr(tokenizer, "same_codes_as", ()):
        where = (gpt.tokenizer_info or {}).get("checkpoint_path", "?")
        raise VFMTokError(f"the GPT was trained on codes of tokenizer {want} ({where}), not on this tokenizer ({have})")


def gpt_tokenizer_path(gpt: Any, path: str | Path | None = None) -> Path:
    """The tokenizer given, else the one recorded in the GPT's config; a one-line error when neither exists."""
    if path is not None:  # a local folder (the loader checks it) or a Hub id; one-line errors for anything else
        return Path(path) if Path(path).exists() else resolve_checkpoint(path)
    recorded = gpt.recorded_tokenizer()
    if recorded is None:
        raise VFMTokError("the GPT records no tokenizer; pass --tokenizer")
    if not Path(recorded).exists():
        raise VFMTokError(f"the tokenizer recorded in the GPT config ({recorded}) is not available; pass --tokenizer")
    return Path(recorded)


def load_gpt_tokenizer(gpt: Any, path: str | Path | None = None, device: str | torch.device = "cpu") -> Any:
    """Load the GPT's tokenizer (given or recorded) on `device` and check that it is the one the GPT expects."""
    from vfmtok.tokenizer.api import load_tokenizer

    tok = load_tokenizer(gpt_tokenizer_path(gpt, path), device=device)
    check_tokenizer(gpt, tok)
    return tok
