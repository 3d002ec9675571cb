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
