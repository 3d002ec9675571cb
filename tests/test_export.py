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
from vfmtok.tokenizer.api import build_tiny_tokenizer, load_tokenizer
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
    assert not (tmp_path / "bundle.tmp").exists()


def test_sample_uses_the_bundled_model_by_default(tiny_pair, tmp_path, monkeypatch, capsys):
    pair = tiny_pair
    bundle = tmp_path / "models" / "imagenette64"
    monkeypatch.setattr("vfmtok.export.bundled_model_dir", lambda: bundle)
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

