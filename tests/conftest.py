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


@pytest.fixture(scope="session")
def cli_world(tmp_path_factory):
    """Inputs for every writing command: a 2-class image folder (train/ 4 + val/ 2 per class), an untrained tiny
    tokenizer, its codes, and a GPT-nano trained 2 steps on them; {name: path}."""
    import numpy as np
    from PIL import Image

    from vfmtok.cli import main
    from helpers import build_tiny_tokenizer

    root = tmp_path_factory.mktemp("world")
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        for c in ("red", "blue"):
            (root / "data" / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(root / "data" / split / c / f"{i}.png")
    w = {"data": root / "data", "tokenizer": build_tiny_tokenizer(root / "tok", class_names=["blue", "red"])}
    w["codes"], w["gpt"] = root / "codes", root / "gpt"
    assert main(["extract-codes", "--tokenizer", str(w["tokenizer"]), "--data", str(w["data"]), "--out",
                 str(w["codes"]), "--device", "cpu", "--batch-size", "4"]) == 0
    assert main(["train-generator", "--codes", str(w["codes"]), "--preset", "GPT-nano", "--steps", "2",
                 "--batch-size", "4", "--device", "cpu", "--out", str(w["gpt"])]) == 0
    return w
