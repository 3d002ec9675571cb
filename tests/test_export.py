"""`vfmtok export`: a portable tokenizer + GPT folder (fp16 storage, relative tokenizer link) and the bundled default."""

import json
import shutil

import numpy as np

import pytest
import torch

from vfmtok.cli import main
from vfmtok.export import export_pair
from vfmtok.generator.gpt import GPT
from vfmtok.generator.sample import generate_images
from helpers import build_tiny_tokenizer, record_measured
from vfmtok.tokenizer.api import load_tokenizer
from vfmtok.utils.errors import VFMTokError


def test_export_is_portable_and_stores_fp16(tiny_pair, tmp_path):
    pair = tiny_pair
    out = export_pair(pair / "gpt", tmp_path / "bundle")
    moved = tmp_path / "elsewhere"
    shutil.move(str(out), moved)
    gpt = GPT.from_pretrained(moved / "generator")
    assert gpt.recorded_tokenizer() == (moved / "tokenizer").resolve()
    tok = load_tokenizer(gpt.recorded_tokenizer())
    orig = GPT.from_pretrained(pair / "gpt")
    for (k, a), (_, b) in zip(orig.state_dict().items(), gpt.state_dict().items()):
        assert b.dtype == torch.float32 and torch.equal(a.half().float(), b), k
    imgs = generate_images(gpt, tok, torch.tensor([1, 1]), seed=0)  # the exported hash matches the exported tokenizer
    assert imgs.shape == (2, 32, 32, 3)
    info = json.loads((moved / "model.json").read_text())
    assert info["dtype"] == "fp16" and info["exported_from"]["generator"].endswith("gpt")
    assert not list(tmp_path.glob(".bundle.*.tmp"))


def test_sample_uses_the_bundled_model_by_default(tiny_pair, tmp_path, monkeypatch, capsys):
    pair = tiny_pair
    bundle = tmp_path / "models" / "imagenette64"
    monkeypatch.setattr("vfmtok.generator.bundled.bundled_model_dir", lambda: bundle)
    rc = main(["sample", "--class", "golf ball", "--out", str(tmp_path / "s"), "--device", "cpu"])
    assert rc == 2 and "make small-model" in capsys.readouterr().err
    assert main(["export", "--gpt", str(pair / "gpt"), "--out", str(bundle)]) == 0
    assert main(["sample", "--class", "golf ball", "--per-class", "2", "--out", str(tmp_path / "s"), "--device", "cpu"]) == 0
    info = json.loads((tmp_path / "s" / "sample_info.json").read_text())
    assert info["labels"] == [1, 1] and info["gpt"].endswith("generator")
    assert info["device"] == "cpu" and info["tokenizer_hash"] == load_tokenizer(bundle / "tokenizer").checkpoint_hash
    assert main(["sample", "--class", "golf ball", "--per-class", "2", "--out", str(tmp_path / "again"), "--device", "cpu"]) == 0
    with np.load(tmp_path / "s" / "samples.npz") as a, np.load(tmp_path / "again" / "samples.npz") as b:
        assert np.array_equal(a["arr_0"], b["arr_0"])  # the same seed gives the same samples


def test_export_refuses_a_mismatched_tokenizer(tiny_pair, tmp_path):
    pair = tiny_pair
    other = build_tiny_tokenizer(tmp_path / "other", seed=1)
    with pytest.raises(VFMTokError, match="not on this tokenizer"):
        export_pair(pair / "gpt", tmp_path / "x", tokenizer_path=other)
    assert not (tmp_path / "x").exists()



def test_export_cards_name_the_classes_and_recipe_and_record_measured_numbers(tiny_pair, tmp_path):
    pair = tiny_pair
    out = export_pair(pair / "gpt", tmp_path / "bundle", info={"recipe": "benchmarks/train_bundled.sh R E"})
    names = GPT.from_pretrained(out / "generator").class_names
    for sub in ("tokenizer", "generator"):
        card = (out / sub / "README.md").read_text()
        assert f"{len(names)} classes: {', '.join(names)}" in card and "`benchmarks/train_bundled.sh R E`" in card
        assert "None measured" in card
    record_measured(out, {"PSNR_1000_val": 17.1788, "class_consistency_500_samples": 0.36}, "bench --x")
    info = json.loads((out / "model.json").read_text())
    assert info["measured"] == {"PSNR_1000_val": 17.1788, "class_consistency_500_samples": 0.36}
    assert info["measured_by"] == "bench --x" and info["recipe"] == "benchmarks/train_bundled.sh R E"
    for sub in ("tokenizer", "generator"):
        card = (out / sub / "README.md").read_text()
        assert "| PSNR_1000_val | 17.18 |" in card and "| class_consistency_500_samples | 0.36 |" in card
        assert "None measured" not in card and card.count("## Metrics") == 1 and "## Command" in card
    GPT.from_pretrained(out / "generator")  # the weights and configs are untouched
    with pytest.raises(VFMTokError, match="not an exported model"):
        record_measured(tmp_path, {"x": 1.0}, "y")


def test_recommended_sampling_is_the_default_and_flags_override_it(tiny_pair, tmp_path):
    pair = tiny_pair
    out = export_pair(pair / "gpt", tmp_path / "bundle", sampling={"temperature": 0.9, "top_k": 3, "top_p": None})
    meta = json.loads((out / "generator" / "config.json").read_text())
    assert meta["config"]["sampling"] == {"temperature": 0.9, "top_k": 3}
    assert json.loads((out / "model.json").read_text())["sampling"] == {"temperature": 0.9, "top_k": 3}
    gpt = GPT.from_pretrained(out / "generator")
    assert gpt.sampling_args() == (0.9, 3, 1.0) and gpt.sampling_args(1.0, 0, 0.5) == (1.0, 0, 0.5)
    assert GPT.from_pretrained(pair / "gpt").sampling_args() == (1.0, 0, 1.0)  # no recommendation: sampling is off
    gen = str(out / "generator")
    assert main(["sample", "--gpt", gen, "--class", "1", "--per-class", "2", "--out", str(tmp_path / "a"), "--device", "cpu"]) == 0
    assert main(["sample", "--gpt", gen, "--class", "1", "--per-class", "2", "--top-k", "3", "--temperature", "0.9",
                 "--out", str(tmp_path / "b"), "--device", "cpu"]) == 0
    assert main(["sample", "--gpt", gen, "--class", "1", "--per-class", "2", "--top-k", "0", "--out", str(tmp_path / "c"),
                 "--device", "cpu"]) == 0
    info = {k: json.loads((tmp_path / k / "sample_info.json").read_text()) for k in "abc"}
    assert (info["a"]["temperature"], info["a"]["top_k"]) == (0.9, 3) and (info["c"]["temperature"], info["c"]["top_k"]) == (0.9, 0)
    arr = {k: np.load(tmp_path / k / "samples.npz")["arr_0"] for k in "abc"}
    assert np.array_equal(arr["a"], arr["b"])  # the default is exactly the recommended settings
    for bad in ({"top_k": -1}, {"top_k": "five"}, {"temperature": 0}, {"beam": 2}, [5]):
        meta["config"]["sampling"] = bad
        (out / "generator" / "config.json").write_text(json.dumps(meta))
        with pytest.raises(VFMTokError, match="bad 'sampling'"):
            GPT.from_pretrained(out / "generator")


def test_re_export_keeps_the_training_origin(tiny_pair, tmp_path):
    first = export_pair(tiny_pair / "gpt", tmp_path / "a")
    origin = json.loads((first / "model.json").read_text())["exported_from"]
    again = export_pair(first / "generator", tmp_path / "b", sampling={"top_k": 2})
    info = json.loads((again / "model.json").read_text())
    assert info["exported_from"]["generator"] == origin["generator"] and info["exported_from"]["tokenizer"] == origin["tokenizer"]
    assert info["exported_from"]["re_exported_from"].endswith("a") and info["sampling"] == {"top_k": 2}


def test_re_export_with_another_tokenizer_names_that_tokenizer(tiny_pair, tmp_path):
    first = export_pair(tiny_pair / "gpt", tmp_path / "a")
    origin = json.loads((first / "model.json").read_text())["exported_from"]
    other = tmp_path / "tok_phase2"  # e.g. a decoder-only phase's checkpoint: not part of any export
    shutil.copytree(first / "tokenizer", other)
    info = json.loads((export_pair(first / "generator", tmp_path / "b", tokenizer_path=other) / "model.json").read_text())
    assert info["exported_from"]["generator"] == origin["generator"]
    assert info["exported_from"]["tokenizer"] != origin["tokenizer"] and info["exported_from"]["tokenizer"].endswith("tok_phase2")
    assert info["exported_from"]["re_exported_from"].endswith("a")
