"""Shared fixtures: a tiny saved tokenizer, CPU thread limits, benchmark scripts as modules."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    """An untrained tiny VFMTok saved to disk (random weights, random-init VGG16 encoder)."""
    from helpers import build_tiny_tokenizer

    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tiny")


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    """An untrained tiny tokenizer (tok/) + GPT-nano (gpt/) over 3 named classes, saved to disk."""
    from vfmtok.generator.gpt import create_gpt
    from helpers import build_tiny_tokenizer
    from vfmtok.tokenizer.api import load_tokenizer

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


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="session")
def load_benchmark():
    """load_benchmark(name): benchmarks/<name>.py as a module, with benchmarks/ importable as when run as a script."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # dataclasses look their module up by name
        spec.loader.exec_module(mod)
        return mod

    return load
