"""extract-codes -> train-generator -> sample -> decode, end to end; resume; mismatch errors; DDP vs FSDP."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from test_codes import FakeTokenizer, make_image_folder
from vfmtok.cli import main
from vfmtok.data.imagefolder import ImageFolderDataset
from vfmtok.generator.generate import generate
from vfmtok.generator.gpt import GPT
from vfmtok.generator.sample import generate_images
from vfmtok.train.extract import extract_codes
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.images import to_uint8

NANO = ["--preset", "GPT-nano", "--batch-size", "4", "--log-every", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imgs"), per_class=4)


@pytest.fixture(scope="module")
def codes(images, tmp_path_factory):
    return extract_codes(FakeTokenizer(), ImageFolderDataset(images, 16), tmp_path_factory.mktemp("c") / "codes", batch_size=5)


@pytest.fixture(scope="module")
def run_dir(codes, tmp_path_factory):
    out = tmp_path_factory.mktemp("r") / "run"
    assert main(["train-generator", "--codes", str(codes), "--out", str(out), "--steps", "4", "--save-every", "2", *NANO]) == 0
    return out


def test_training_writes_checkpoints_logs_and_config(run_dir):
    assert (run_dir / "latest.txt").read_text().strip() == "step_0000004"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_0000002", "step_0000004"]
    meta = json.loads((run_dir / "checkpoints" / "step_0000004" / "config.json").read_text())
    assert meta["model_type"] == "gpt"
    cfg = meta["config"]
    assert cfg["gpt"]["vocab_size"] == 64 and cfg["gpt"]["num_tokens"] == 16 and cfg["gpt"]["num_classes"] == 3
    assert cfg["tokenizer"]["checkpoint_hash"] == "fake0000" and cfg["class_names"][1] == "golf ball"
    resolved = json.loads((run_dir / "run_config.json").read_text())
    assert resolved["preset"] == "GPT-nano" and resolved["model"]["dim"] == 64 and resolved["steps"] == 4
    log = (run_dir / "train.log").read_text()
    assert "step 4 loss" in log and "tokens/s" in log


def test_training_writes_metrics_jsonl_that_the_demo_report_charts(run_dir, tmp_path):
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4]  # --log-every 1
    log = (run_dir / "train.log").read_text()
    for r in lines:  # the same mean loss the log reports
        assert f"step {r['step']} loss {r['loss']:.4f}" in log and r["lr"] > 0 and r["tokens_per_s"] > 0
    from vfmtok.demo_report import training_charts

    assert not any("generator cross-entropy" in c for c in training_charts(tmp_path))  # no run: no chart
    (tmp_path / "generator").mkdir()
    shutil.copy(run_dir / "metrics.jsonl", tmp_path / "generator" / "metrics.jsonl")
    chart = [c for c in training_charts(tmp_path) if "generator cross-entropy" in c]
    assert len(chart) == 1 and chart[0].count("<polyline") == 1


def test_resume_drops_metrics_past_the_checkpoint(tmp_path):
    from vfmtok.train.common import open_metrics

    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2, 3)) + '{"step": 4, "lo')
    with open_metrics(tmp_path, 2) as f:
        f.write(json.dumps({"step": 3, "loss": 0.5}) + "\n")
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_sampling_decodes_generated_ids(run_dir):
    gpt, tok = GPT.from_pretrained(run_dir), FakeTokenizer()
    labels = torch.tensor([0, 1, 2, 2])
    imgs = generate_images(gpt, tok, labels, cfg_scale=2.0, seed=3, batch_size=3)
    assert imgs.shape == (4, 16, 16, 3) and imgs.dtype == np.uint8
    gen = torch.Generator().manual_seed(3)  # same draws as generate_images: batches [0,1,2] then [2]
    ids = torch.cat([generate(gpt, labels[:3], cfg_scale=2.0, generator=gen), generate(gpt, labels[3:], cfg_scale=2.0, generator=gen)])
    assert np.array_equal(imgs, to_uint8(tok.decode(ids)).numpy())
    assert np.array_equal(imgs, generate_images(gpt, tok, labels, cfg_scale=2.0, seed=3, batch_size=3))


def test_sample_command_writes_pngs_and_adm_npz(run_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("vfmtok.generator.sampling.load_gpt_tokenizer", lambda gpt, path, device: FakeTokenizer())
    out = tmp_path / "s"
    assert main(["sample", "--gpt", str(run_dir), "--class", "golf ball", "--class", "0", "--per-class", "2",
                 "--cfg-scale", "1.5", "--top-k", "10", "--out", str(out), "--device", "cpu"]) == 0
    npz = np.load(out / "samples.npz")
    assert npz["arr_0"].shape == (4, 16, 16, 3) and npz["arr_0"].dtype == np.uint8
    assert npz["labels"].tolist() == [1, 1, 0, 0]
    assert sorted(p.name for p in (out / "images").iterdir())[:2] == ["000000_golf-ball.png", "000001_golf-ball.png"]
    assert (out / "grid.png").is_file()
    info = json.loads((out / "sample_info.json").read_text())
    assert info["cfg_scale"] == 1.5 and info["top_k"] == 10 and info["tokenizer_hash"] == "fake0000"
    capsys.readouterr()
    assert main(["sample", "--gpt", str(run_dir), "--class", "golf bal", "--out", str(out)]) == 2
    assert "unknown class 'golf bal'" in capsys.readouterr().err
    assert main(["sample", "--gpt", str(run_dir), "--class", "7", "--out", str(out)]) == 2
    assert "outside the model's classes 0..2" in capsys.readouterr().err


def test_decoding_with_another_tokenizer_is_refused(run_dir):
    gpt = GPT.from_pretrained(run_dir)
    with pytest.raises(VFMTokError, match="not on this tokenizer"):
        generate_images(gpt, FakeTokenizer("someone-else"), torch.tensor([0]))
    wide = FakeTokenizer()
    wide.codebook_size = 128
    with pytest.raises(VFMTokError, match="codebook size 128 != GPT vocab_size 64"):
        generate_images(gpt, wide, torch.tensor([0]))
    with pytest.raises(VFMTokError, match="outside the model's classes"):
        generate_images(gpt, FakeTokenizer(), torch.tensor([0, 9]))


def test_resume_continues_exactly(codes, tmp_path):
    args = ["train-generator", "--codes", str(codes), "--save-every", "2", *NANO]
    assert main([*args, "--out", str(tmp_path / "a"), "--steps", "4"]) == 0
    assert main([*args, "--out", str(tmp_path / "b"), "--steps", "2"]) == 0
    assert main([*args, "--out", str(tmp_path / "b"), "--steps", "4"]) == 2  # refuses to overwrite a run
    assert main([*args, "--out", str(tmp_path / "b"), "--steps", "4", "--resume"]) == 0
    sa, sb = (torch.load(tmp_path / r / "checkpoints/step_0000004/train_state.pt", weights_only=True) for r in "ab")
    for part in ("model", "ema"):
        assert all(torch.equal(sa[part][k], sb[part][k]) for k in sa[part])
    assert sa["optimizer"]["state"]["tok_emb.weight"]["step"] == 4 == sb["optimizer"]["state"]["tok_emb.weight"]["step"]
    init = GPT(GPT.from_pretrained(tmp_path / "a").config).state_dict()
    assert any(not torch.equal(init[k], sa["model"][k]) for k in init)  # training did move the weights


def test_config_layers_yaml_flags_set_and_run_config_reuse(run_dir, tmp_path):
    import argparse

    from vfmtok.cli.train_generator import add_arguments, resolve_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    facts = lambda c: dict(vocab_size=64, num_tokens=16, token_grid=(4, 4), num_classes=3)  # noqa: E731
    (tmp_path / "c.yaml").write_text("preset: GPT-nano\nsteps: 7\nlr: 3e-4\nmodel:\n  rope: 1d\n  n_layer: 1\n")
    cfg = resolve_config(parser.parse_args(["--out", "x", "--config", str(tmp_path / "c.yaml"), "--steps", "9",
                                            "--set", "model.dim=32", "--set", "model.norm_eps=1e-6"]), facts)
    assert (cfg.preset, cfg.steps, cfg.lr, cfg.model.rope, cfg.model.n_layer) == ("GPT-nano", 9, 3e-4, "1d", 1)
    assert (cfg.model.dim, cfg.model.n_head, cfg.model.vocab_size, cfg.model.norm_eps) == (32, 2, 64, 1e-6)
    again = resolve_config(parser.parse_args(["--out", "y", "--config", str(run_dir / "run_config.json")]), facts)
    saved = json.loads((run_dir / "run_config.json").read_text())
    assert again.model == GPT.from_pretrained(run_dir).config and again.codes == saved["codes"] and again.steps == 4


def test_training_refuses_mismatches(codes, tmp_path, capsys):
    base = ["train-generator", "--codes", str(codes), "--steps", "1", *NANO]
    assert main([*base, "--out", str(tmp_path / "x"), "--set", "model.vocab_size=128"]) == 2
    assert "codebook size 64 != GPT vocab_size 128" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "x"), "--set", "model.num_tokens=32", "--set", "model.token_grid=[4,8]"]) == 2
    assert "GPT expects 32" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "x"), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "x"), "--batch-size", "64"]) == 2
    assert "less than one global batch" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    assert main([*base[:1], "--codes", str(tmp_path / "bad"), "--out", str(tmp_path / "y")]) == 2
    assert "not a codes folder" in capsys.readouterr().err


def test_real_tiny_tokenizer_end_to_end(tiny_tokenizer_dir, images, tmp_path):
    from helpers import build_tiny_tokenizer
    from vfmtok.tokenizer.api import load_tokenizer

    codes = tmp_path / "codes"
    assert main(["extract-codes", "--tokenizer", str(tiny_tokenizer_dir), "--data", str(images), "--out", str(codes),
                 "--limit-per-class", "2", "--batch-size", "3", "--device", "cpu"]) == 0
    tok = load_tokenizer(tiny_tokenizer_dir)
    idx = json.loads((codes / "index.json").read_text())
    assert idx["tokenizer"]["checkpoint_hash"] == tok.checkpoint_hash and idx["num_images"] == 6
    run = tmp_path / "run"
    assert main(["train-generator", "--codes", str(codes), "--out", str(run), "--steps", "2", *NANO]) == 0
    out = tmp_path / "samples"
    assert main(["sample", "--gpt", str(run), "--per-class", "1", "--out", str(out), "--device", "cpu"]) == 0
    arr = np.load(out / "samples.npz")["arr_0"]
    assert arr.shape == (3, tok.image_size, tok.image_size, 3) and arr.dtype == np.uint8
    other = load_tokenizer(build_tiny_tokenizer(tmp_path / "tok2", seed=1))
    with pytest.raises(VFMTokError, match="not on this tokenizer"):
        generate_images(GPT.from_pretrained(run), other, torch.tensor([0]))
    # On-the-fly tokenization from images gives a model for the same tokenizer.
    run2 = tmp_path / "run2"
    assert main(["train-generator", "--data", str(images), "--tokenizer", str(tiny_tokenizer_dir), "--out", str(run2),
                 "--steps", "2", *NANO]) == 0
    assert GPT.from_pretrained(run2).tokenizer_info["checkpoint_hash"] == tok.checkpoint_hash


def _torchrun(args: list[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", "vfmtok.cli", "train-generator", *args]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]


@pytest.mark.slow
def test_ddp_and_fsdp_train_the_same_model(codes, tmp_path):
    args = ["--codes", str(codes), "--steps", "3", "--save-every", "3", *NANO]
    _torchrun([*args, "--out", str(tmp_path / "ddp")])
    _torchrun([*args, "--out", str(tmp_path / "fsdp"), "--fsdp"])
    a, b = (load_file(tmp_path / r / "checkpoints/step_0000003/model.safetensors") for r in ("ddp", "fsdp"))
    assert sorted(a) == sorted(b)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    single = GPT.from_pretrained(tmp_path / "fsdp")  # FSDP checkpoints load like any other
    assert single.config.vocab_size == 64
