"""Issue 36: every capability is a typed function with a dataclass config, called here without any argparse object;
the CLI's defaults are the dataclasses' defaults."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from vfmtok.generator.checkpoint import load_generator
from vfmtok.generator.sampling import SamplingConfig, sample_images, sample_to_folder
from vfmtok.tokenizer.api import load_tokenizer


@pytest.fixture(scope="module")
def pair(tiny_pair):
    return load_generator(tiny_pair / "gpt"), load_tokenizer(tiny_pair / "tok")


def test_sample_images_is_deterministic_per_config_and_fills_the_models_recommendation(pair):
    gpt, tok = pair
    labels = torch.tensor([0, 1, 2, 1])
    a = sample_images(gpt, tok, labels, SamplingConfig(seed=3, batch_size=2))
    assert a.shape == (4, tok.image_size, tok.image_size, 3) and a.dtype == np.uint8
    assert np.array_equal(a, sample_images(gpt, tok, labels, SamplingConfig(seed=3, batch_size=2)))
    assert not np.array_equal(a, sample_images(gpt, tok, labels, SamplingConfig(seed=4, batch_size=2)))
    gpt.sampling = {"top_k": 1}  # greedy recommendation: every seed gives the same images
    try:
        filled = SamplingConfig(seed=5).for_model(gpt)
        assert (filled.temperature, filled.top_k, filled.top_p) == (1.0, 1, 1.0)
        assert SamplingConfig(top_k=7).for_model(gpt).top_k == 7  # a given value wins over the recommendation
        g1 = sample_images(gpt, tok, labels, SamplingConfig(seed=1))
        assert np.array_equal(g1, sample_images(gpt, tok, labels, SamplingConfig(seed=2)))
    finally:
        gpt.sampling = {}


def test_sample_to_folder_writes_what_the_cli_writes(tiny_pair, tmp_path):
    paths = sample_to_folder(tmp_path / "s", tiny_pair / "gpt", classes=["golf ball", 2], per_class=2,
                             config=SamplingConfig(cfg_scale=1.5, seed=1), device="cpu")
    info = json.loads(paths["info"].read_text())
    assert paths["num_images"] == 4 and info["labels"] == [1, 1, 2, 2] and info["cfg_scale"] == 1.5
    with np.load(paths["npz"]) as z:
        assert z["arr_0"].shape[0] == 4 and z["labels"].tolist() == [1, 1, 2, 2]


def test_eval_generator_and_class_consistency_take_configs(tiny_pair, tmp_path, monkeypatch):
    from vfmtok.eval import inception as I
    from vfmtok.eval.class_consistency import ClassConsistencyConfig, evaluate_class_consistency
    from vfmtok.eval.commands import eval_generator
    from vfmtok.eval.config import GeneratorEvalConfig
    from vfmtok.eval.imagesets import open_image_set

    monkeypatch.setenv("VFMTOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(I, "find_full_weights", lambda: None)
    I._build.cache_clear()
    images = open_image_set("sample", 32, split="val")
    real = np.stack([images.read(i) for i in range(4)])
    np.savez(tmp_path / "real.npz", arr_0=real, labels=np.asarray(images.labels[:4]))
    config = GeneratorEvalConfig(samples=tmp_path / "real.npz", ref=str(tmp_path / "real.npz"), second_encoder="none",
                                 device="cpu", out=tmp_path / "g.json")
    record = eval_generator(config)
    assert record["metrics"]["runs"][0]["gFID"] < 1e-6 and record["arguments"]["command"] == "eval-generator"
    assert config.device == "cpu" and json.loads((tmp_path / "g.json").read_text())["seed"] == 0
    cc = evaluate_class_consistency(ClassConsistencyConfig(
        samples=tmp_path / "real.npz", data="sample", encoder_weights="random", input_size=32, train_per_class=2,
        val_per_class=1, device="cpu"))
    assert cc["metrics"]["num_samples"] == 4 and 0.0 <= cc["metrics"]["class_consistency"] <= 1.0
    I._build.cache_clear()


def test_sample_npz_single_process(tiny_pair, tmp_path):
    from vfmtok.official.sample_npz import NpzSamplingConfig, sample_npz

    config = NpzSamplingConfig(gpt=tiny_pair / "gpt", out=tmp_path / "s.npz", num_images=5, protocol="vfmtok",
                               labels="random", sampling=SamplingConfig(seed=2, batch_size=2), device="cpu")
    record = sample_npz(config)
    with np.load(tmp_path / "s.npz") as z:
        assert z["arr_0"].shape[0] == 5 and len(z["labels"]) == 5
    assert record["arguments"]["seed"] == 2 and record["arguments"]["batch_size"] == 2
    assert not list(tmp_path.glob("s.npz.part*"))  # rank parts merged and removed


def test_trainer_configs_resolve_without_a_namespace(tmp_path):
    from vfmtok.train.generator import resolve_config as generator_config
    from vfmtok.train.tokenizer import resolve_config as tokenizer_config

    t = tokenizer_config("tiny", ["train.steps=8"], flags={"train.lr": 2e-3, "train.batch_size": None})
    assert (t.train.steps, t.train.lr) == (8, 2e-3)
    facts = lambda c: dict(vocab_size=64, num_tokens=16, token_grid=(4, 4), num_classes=3)  # noqa: E731
    g = generator_config({"preset": "GPT-nano", "steps": 9}, ["lr=3e-4"], data_facts=facts)
    assert (g.preset, g.steps, g.lr, g.model.vocab_size) == ("GPT-nano", 9, 3e-4, 64)


@pytest.mark.parametrize("command, config_path, required", [
    ("eval-tokenizer", "vfmtok.eval.config:TokenizerEvalConfig", ["tok"]),
    ("eval-generator", "vfmtok.eval.config:GeneratorEvalConfig", ["--ref", "r"]),
    ("sample", "vfmtok.generator.sampling:SamplingConfig", []),
    ("class-consistency", "vfmtok.eval.class_consistency:ClassConsistencyConfig", []),
])
def test_cli_defaults_are_the_dataclass_defaults(command, config_path, required):
    import importlib

    from vfmtok.cli import build_parser

    module, name = config_path.split(":")
    cls = getattr(importlib.import_module(module), name)
    args = vars(build_parser(command).parse_args([command, *required]))
    shared = [f for f in dataclasses.fields(cls) if f.name in args and f.name not in ("ref", "tokenizer")]
    assert len(shared) >= 5  # the options and the config really overlap
    for f in shared:
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        assert args[f.name] == default, f.name
