"""Evaluation protocols: labels, the official decode-and-resize, and `sample-npz` across 2 gloo ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import FakeGPT

from vfmtok.cli import main
from vfmtok.eval.protocol import ResizedTokenizer, get_protocol, make_labels, pil_resize
from vfmtok.generator.gpt import create_gpt
from vfmtok.tokenizer.api import VFMTokenizer
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.images import to_uint8


def test_labels_balanced_and_random():
    b = make_labels(10, 50, "balanced")
    assert torch.equal(torch.bincount(b), torch.full((10,), 5)) and torch.equal(b, b.sort().values)
    r1, r2 = make_labels(1000, 5000, "random", seed=3), make_labels(1000, 5000, "random", seed=3)
    assert torch.equal(r1, r2) and not torch.equal(r1, r1.sort().values) and r1.min() >= 0 and r1.max() < 1000
    with pytest.raises(VFMTokError, match="evenly"):
        make_labels(10, 55, "balanced")


def test_official_resize_matches_the_official_formula(tiny_tokenizer_dir):
    tok = VFMTokenizer.from_pretrained(tiny_tokenizer_dir)
    ids = torch.randint(0, tok.codebook_size, (2, tok.num_tokens), generator=torch.Generator().manual_seed(0))
    r = ResizedTokenizer(tok, 256)
    assert r.image_size == 256 and r.codebook_size == tok.codebook_size
    m = tok.model
    raw, _ = m.decode_tokens(m.post_quant(m.quantizer.lookup(ids)))  # unclamped, as VQModel.decode_code
    ref = (F.interpolate(raw, size=(256, 256), mode="bicubic") * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    assert np.array_equal(to_uint8(r.decode(ids)), ref.permute(0, 2, 3, 1).numpy())
    assert get_protocol("official").size == 256 and get_protocol("official").labels == "random"
    u8 = torch.randint(0, 256, (1, 32, 32, 3), dtype=torch.uint8)
    assert pil_resize(u8, 256).shape == (1, 256, 256, 3) and torch.equal(pil_resize(u8, 32), u8)


def test_resized_set_for_official_reconstructions():
    from vfmtok.eval.imagesets import ImageSet
    from vfmtok.eval.protocol import resized_set

    imgs = np.random.default_rng(0).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    base = ImageSet({"source": "x"}, 40, None, None, 3, lambda i: imgs[i])
    r = resized_set(base, 24)
    assert len(r) == 3 and r.resolution == 24 and r.description["resized_to"] == 24
    assert np.array_equal(r.read(1), pil_resize(torch.from_numpy(imgs[1:2]), 24)[0].numpy())


@pytest.mark.slow
def test_sample_npz_two_gloo_ranks_equal_one_process(tiny_tokenizer_dir, tmp_path):
    torch.manual_seed(0)
    gpt = create_gpt("GPT-nano", vocab_size=64, num_tokens=16, token_grid=(4, 4), num_classes=10)
    gdir = gpt.save_pretrained(tmp_path / "gpt")
    common = ["sample-npz", "--gpt", str(gdir), "--tokenizer", str(tiny_tokenizer_dir), "--num-images", "7",
              "--batch-size", "2", "--device", "cpu", "--cfg-scale", "1.5"]
    assert main(common + ["--out", str(tmp_path / "one.npz")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "vfmtok.cli",
           *common, "--out", str(tmp_path / "two.npz")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with np.load(tmp_path / "one.npz") as a, np.load(tmp_path / "two.npz") as b:
        assert a["arr_0"].shape == (7, 256, 256, 3) and np.array_equal(a["arr_0"], b["arr_0"])
        assert np.array_equal(a["labels"], b["labels"])
    rec = json.loads((tmp_path / "two.json").read_text())
    assert rec["protocol"]["name"] == "official" and rec["protocol"]["labels"] == "random" and rec["world_size"] == 2
    assert not list(tmp_path.glob("*.part*"))


@pytest.mark.slow
def test_eval_generator_official_protocol_records_random_labels(tmp_path, monkeypatch):
    import vfmtok.eval.commands as C
    from vfmtok.eval import inception as I
    from test_eval_commands import FakeTokenizer, _npz, _sample_u8

    monkeypatch.setenv("VFMTOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(I, "find_full_weights", lambda: None)
    I._build.cache_clear()
    pool, seen = torch.from_numpy(_sample_u8(8)), []

    def fake_generate(gpt, tok, labels, seed=0, **kw):
        seen.append((labels.tolist(), tok.image_size))
        return pool[labels].numpy()

    for name in ("tok", "gpt"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"fake")
        (tmp_path / name / "config.json").write_text("{}")  # a checkpoint folder's shape; the loaders are faked
    monkeypatch.setattr(C, "load_tokenizer", lambda path, device: FakeTokenizer(path))
    monkeypatch.setattr(C, "load_generator", lambda path, device: FakeGPT())
    monkeypatch.setattr(C, "generate", fake_generate)
    out = tmp_path / "gen.json"
    assert main(["eval-generator", "--gpt", str(tmp_path / "gpt"), "--tokenizer", str(tmp_path / "tok"), "--ref",
                 str(_npz(tmp_path / "ref.npz", pool.numpy())), "--num-images", "8", "--protocol", "official",
                 "--second-encoder", "none", "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    labels = sum((s[0] for s in seen), [])
    assert rec["protocol"]["name"] == "official" and rec["protocol"]["labels"] == "random" and rec["resolution"] == 256
    assert labels == make_labels(4, 8, "random", 0).tolist() and all(s[1] == 256 for s in seen)
    I._build.cache_clear()


@pytest.mark.slow
def test_eval_tokenizer_official_protocol_scores_at_256(tmp_path, monkeypatch):
    import vfmtok.eval.commands as C
    from vfmtok.eval import inception as I
    from test_eval_commands import FakeTokenizer

    monkeypatch.setenv("VFMTOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(I, "find_full_weights", lambda: None)
    I._build.cache_clear()
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "model.safetensors").write_bytes(b"fake")
    monkeypatch.setattr(C, "load_tokenizer", lambda path, device: FakeTokenizer(path, noise=0.1))
    out = tmp_path / "tok.json"
    assert main(["eval-tokenizer", str(tmp_path / "tok"), "--num-images", "4", "--batch-size", "2", "--no-lpips",
                 "--second-encoder", "none", "--protocol", "official", "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["resolution"] == 256 and rec["protocol"]["name"] == "official"
    assert rec["tokenizer"]["image_size"] == 32
    assert 10 < rec["metrics"]["PSNR"] < 60
    I._build.cache_clear()
