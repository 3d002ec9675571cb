"""Shared fixtures: a tiny saved tokenizer, CPU thread limits."""

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    """An untrained tiny VFMTok saved to disk (random weights, random-init VGG16 encoder)."""
    from vfmtok.tokenizer.api import build_tiny_tokenizer

    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tiny")


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    """An untrained tiny tokenizer (tok/) + GPT-nano (gpt/) over 3 named classes, saved to disk."""
    from vfmtok.generator.gpt import create_gpt
    from vfmtok.tokenizer.api import build_tiny_tokenizer, load_tokenizer

    root = tmp_path_factory.mktemp("pair")
    names = ["tench", "golf ball", "parachute"]
    tok = load_tokenizer(build_tiny_tokenizer(root / "tok", class_names=names))
    torch.manual_seed(0)
    gpt = create_gpt("GPT-nano", vocab_size=tok.codebook_size, num_tokens=tok.num_tokens, token_grid=tok.token_grid,
                     num_classes=3)
    for p in gpt.parameters():  # the zero-initialised head would make every sample the same
        p.data.normal_(0, 0.2)
    gpt.class_names = names
    gpt.tokenizer_info = {"checkpoint_path": str(tok.checkpoint_path), "checkpoint_hash": tok.checkpoint_hash}
    gpt.save_pretrained(root / "gpt")
    return root
