"""`vfmtok eval-tokenizer` / `eval-generator` end to end with fake tokenizer/generator objects on real images."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import FakeGPT

import vfmtok.eval.commands as C
from vfmtok.cli import main
from vfmtok.eval import inception as I
from vfmtok.eval.imagesets import open_image_set
from vfmtok.utils.io import file_sha256


class FakeTokenizer:
    """Implements the tokenizer contract; decode returns the encoded images plus Gaussian noise of known size.

    Every image uses the same 16 of 64 codes, so usage is exactly 25% and perplexity exactly 16.
    """

    def __init__(self, folder: Path, size: int = 32, noise: float = 0.0, with_cls: bool = False):
        self.image_size, self.codebook_size, self.num_tokens = size, 64, 16
        self.checkpoint_path, self.class_names = Path(folder), None
        self.noise, self.with_cls, self._last = noise, with_cls, None

    def encode(self, images):
        assert images.shape[-1] == self.image_size and images.min() >= -1 and images.max() <= 1
        self._last = images.clone()
        return torch.arange(16).repeat(len(images), 1)

    def decode(self, ids):
        g = torch.Generator().manual_seed(int(ids.sum()))
        return self._last + self.noise * torch.randn(self._last.shape, generator=g)

    def probe_features(self, images):
        out = {"tokens_mean": torch.cat([images.mean((2, 3)), images.std((2, 3))], 1)}
        if self.with_cls:
            out["cls"] = images[:, :, ::8, ::8].flatten(1)
        return out


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Fresh stats cache, no full Inception weights (IS unavailable), a fake checkpoint folder."""
    monkeypatch.setenv("VFMTOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(I, "find_full_weights", lambda: None)
    I._build.cache_clear()
    ck = tmp_path / "tok"
    ck.mkdir()
    (ck / "model.safetensors").write_bytes(b"fake tokenizer weights")
    (ck / "config.json").write_text("{}")
    yield tmp_path, ck
    I._build.cache_clear()


def _run(argv):
    rc = main(argv)
    assert rc == 0


def _eval_tok(monkeypatch, tmp, ck, noise, name, extra=()):
    monkeypatch.setattr(C, "load_tokenizer", lambda path, device: FakeTokenizer(path, noise=noise))
    out = tmp / f"{name}.json"
    _run(["eval-tokenizer", str(ck), "--num-images", "10", "--batch-size", "4", "--second-encoder", "none",
          "--out", str(out), *extra])
    return json.loads(out.read_text())


def test_eval_tokenizer_metrics_and_record(env, monkeypatch):
    tmp, ck = env
    perfect = _eval_tok(monkeypatch, tmp, ck, 0.0, "perfect")
    m = perfect["metrics"]
    assert m["rFID"] < 1e-6 and m["SSIM"] == pytest.approx(1.0) and m["PSNR"] == pytest.approx(100.0)
    assert m["LPIPS"] == pytest.approx(0.0, abs=1e-6)
    assert m["codebook_usage"] == 0.25 and m["perplexity"] == pytest.approx(16.0)
    assert m["rIS"] is None and any(n.startswith("IS unavailable: no Inception logits layer") for n in perfect["notes"])
    assert perfect["num_images"] == 10 and perfect["resolution"] == 32 and perfect["seed"] == 0
    assert perfect["checkpoints"]["tokenizer"]["sha256"] == file_sha256(ck / "model.safetensors")
    inc = perfect["feature_networks"][0]
    assert inc["sha256"] == file_sha256(I.find_weight("fid_inception.pt")) and inc["file"] == "fid_inception.pt"
    assert perfect["arguments"]["command"] == "eval-tokenizer" and perfect["arguments"]["num_images"] == 10
    assert perfect["argv"] and perfect["vfmtok_version"] and perfect["timestamp"]
    assert any("data_range=1" in n for n in perfect["notes"])
    md = (tmp / "perfect.md").read_text()
    assert md.count("\n|") >= 2 and "rFID" in md

    noisy_rec = _eval_tok(monkeypatch, tmp, ck, 0.1, "noisy")
    noisy = noisy_rec["metrics"]
    # noise sigma 0.1 on [-1,1] = 0.05 on [0,1]: PSNR ~ 26 dB (clipping and rounding move it a little)
    assert 24.5 < noisy["PSNR"] < 27.5
    assert 0 < noisy["SSIM"] < 0.99 and noisy["LPIPS"] > 0.01 and noisy["rFID"] > 1.0
    assert any("read from the cache" in n for n in noisy_rec["notes"])  # real-image stats reused


def test_eval_tokenizer_second_opinion_fd(env, monkeypatch):
    tmp, ck = env
    monkeypatch.setattr(C, "load_tokenizer", lambda path, device: FakeTokenizer(path, noise=0.2))
    out = tmp / "vgg.json"
    _run(["eval-tokenizer", str(ck), "--num-images", "6", "--no-lpips", "--out", str(out)])
    rec = json.loads(out.read_text())
    assert rec["metrics"]["FD_vgg16_imagenet"] > 0
    names = [n["name"] for n in rec["feature_networks"]]
    assert names[1].startswith("vgg16_imagenet") and rec["feature_networks"][1]["file"] == "vgg16.ckpt"


def _npz(path, arr):
    np.savez(path, arr_0=arr)
    return path


def _sample_u8(n, size=32, split="val"):
    images = open_image_set("sample", size, split=split)
    return np.stack([images.read(i) for i in range(0, len(images), len(images) // n)][:n])


def test_eval_generator_from_npz_and_stats_reuse(env):
    tmp, _ = env
    real = _sample_u8(12)
    same = _npz(tmp / "same.npz", real)
    out = tmp / "same.json"
    _run(["eval-generator", "--samples", str(same), "--ref", str(same), "--second-encoder", "none",
          "--save-ref-stats", str(tmp / "ref_stats.npz"), "--out", str(out)])
    run = json.loads(out.read_text())["metrics"]["runs"][0]
    assert run["gFID"] < 1e-6 and run["precision"] == 1.0 and run["recall"] == 1.0 and run["num_images"] == 12

    rng = np.random.default_rng(0)
    noisy = _npz(tmp / "noisy.npz", np.clip(real + rng.normal(0, 40, real.shape), 0, 255).astype(np.uint8))
    out2 = tmp / "noisy.json"
    _run(["eval-generator", "--samples", str(noisy), "--ref", str(same), "--second-encoder", "none", "--out", str(out2)])
    r2 = json.loads(out2.read_text())["metrics"]["runs"][0]
    assert r2["gFID"] > 1.0
    # the saved reference statistics (with features) give the same numbers as the images
    out3 = tmp / "stats.json"
    _run(["eval-generator", "--samples", str(noisy), "--ref", str(tmp / "ref_stats.npz"), "--second-encoder", "none",
          "--out", str(out3)])
    r3 = json.loads(out3.read_text())["metrics"]["runs"][0]
    assert r3["gFID"] == pytest.approx(r2["gFID"], rel=1e-6)
    assert (r3["precision"], r3["recall"]) == (r2["precision"], r2["recall"])


def test_eval_generator_with_generator_and_cfg_scales(env, monkeypatch):
    tmp, ck = env
    calls = []
    pool = torch.from_numpy(_sample_u8(12))

    def fake_generate(gpt, tok, labels, cfg_scale=1.0, temperature=1.0, top_k=0, top_p=1.0, seed=0, batch_size=32):
        calls.append({"labels": labels.tolist(), "cfg": cfg_scale, "seed": seed, "temperature": temperature})
        g = torch.Generator().manual_seed(seed)
        imgs = pool[labels * 3 + torch.randint(0, 3, (len(labels),), generator=g)].float()
        noise = torch.randn(imgs.shape, generator=g) * 30.0 / cfg_scale  # higher CFG -> cleaner samples
        return (imgs + noise).clamp(0, 255).to(torch.uint8).numpy()

    gpt_dir = tmp / "gpt"
    gpt_dir.mkdir()
    (gpt_dir / "model.safetensors").write_bytes(b"fake gpt")
    monkeypatch.setattr(C, "load_tokenizer", lambda path, device: FakeTokenizer(path))
    monkeypatch.setattr(C, "load_generator", lambda path, device: FakeGPT())
    monkeypatch.setattr(C, "generate", fake_generate)
    monkeypatch.setattr(C, "GENERATE_CHUNK_BATCHES", 1)  # one generator call per batch of 5 labels
    ref = _npz(tmp / "ref.npz", pool.numpy())
    out = tmp / "gen.json"
    _run(["eval-generator", "--gpt", str(gpt_dir), "--tokenizer", str(ck), "--ref", str(ref), "--images-per-class", "3",
          "--cfg-scales", "1.0", "4.0", "--temperature", "0.9", "--batch-size", "5", "--second-encoder", "none",
          "--save-samples", str(tmp / "samples.npz"), "--out", str(out)])
    rec = json.loads(out.read_text())
    runs = rec["metrics"]["runs"]
    assert [r["cfg_scale"] for r in runs] == [1.0, 4.0] and all(r["num_images"] == 12 for r in runs)
    assert runs[1]["gFID"] < runs[0]["gFID"]
    assert rec["cfg"]["cfg_scales"] == [1.0, 4.0] and rec["cfg"]["temperature"] == 0.9
    assert rec["checkpoints"]["generator"]["sha256"] == file_sha256(gpt_dir / "model.safetensors")
    # balanced labels (3 per class), same seeds for both scales, one seed per chunk
    for cfg in (1.0, 4.0):
        labels = sum((c["labels"] for c in calls if c["cfg"] == cfg), [])
        assert sorted(labels) == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    assert [c["seed"] for c in calls if c["cfg"] == 1.0] == [c["seed"] for c in calls if c["cfg"] == 4.0] == [0, 1, 2]
    for cfg in ("1", "4"):
        with np.load(tmp / f"samples-cfg{cfg}.npz") as z:
            assert z["arr_0"].shape == (12, 32, 32, 3) and z["arr_0"].dtype == np.uint8
            # the class each sample was drawn for, in order (what class-consistency --samples reads)
            assert z["labels"].tolist() == sum((c["labels"] for c in calls if c["cfg"] == float(cfg)), [])


@pytest.mark.parametrize("case,message", [
    ("missing_checkpoint", "tokenizer checkpoint not found"),
    ("missing_folder", "not found"),
    ("empty_folder", "no images found"),
    ("npz_no_arr0", "has no 'arr_0'"),
    ("npz_dtype", "must be uint8"),
    ("npz_shape", "must have shape (N,H,W,3)"),
    ("other_network_stats", "made with feature network"),
])
def test_one_line_errors(env, capsys, case, message):
    tmp, ck = env
    good = _npz(tmp / "good.npz", np.zeros((4, 32, 32, 3), np.uint8))
    if case == "missing_checkpoint":
        argv = ["eval-tokenizer", str(tmp / "nope")]
    elif case == "missing_folder":
        argv = ["eval-generator", "--samples", str(tmp / "nofolder"), "--ref", str(good)]
    elif case == "empty_folder":
        (tmp / "empty").mkdir()
        argv = ["eval-generator", "--samples", str(tmp / "empty"), "--ref", str(good)]
    elif case == "npz_no_arr0":
        np.savez(tmp / "x.npz", images=np.zeros((2, 8, 8, 3), np.uint8))
        argv = ["eval-generator", "--samples", str(tmp / "x.npz"), "--ref", str(good)]
    elif case == "npz_dtype":
        argv = ["eval-generator", "--samples", str(_npz(tmp / "x.npz", np.zeros((2, 8, 8, 3), np.float32))), "--ref", str(good)]
    elif case == "npz_shape":
        argv = ["eval-generator", "--samples", str(_npz(tmp / "x.npz", np.zeros((2, 8, 8), np.uint8))), "--ref", str(good)]
    else:
        np.savez(tmp / "stats.npz", mu=np.zeros(2048), sigma=np.eye(2048),
                 feature_net=np.array(json.dumps({"name": "clip", "file": "clip.pt", "sha256": "0123"})))
        argv = ["eval-generator", "--samples", str(good), "--ref", str(tmp / "stats.npz"), "--second-encoder", "none"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("vfmtok: error:")


def test_eval_generator_adm_reference_batch(env):
    """ADM-style npz: FID from its stored mu/sigma, precision/recall from its arr_0 images."""
    tmp, _ = env
    a = _sample_u8(8)
    b = np.clip(a.astype(float) + np.random.default_rng(1).normal(0, 30, a.shape), 0, 255).astype(np.uint8)
    ex = I.get_extractor("cpu")
    from vfmtok.eval.fid import FeatureStats
    sa, sb = FeatureStats.from_features(ex(a)[0]), FeatureStats.from_features(ex(b)[0])
    np.savez(tmp / "adm.npz", arr_0=a, mu=sb.mu, sigma=sb.sigma)  # no feature-network record, like ADM's files
    samples = _npz(tmp / "a.npz", a)
    out = tmp / "adm.json"
    _run(["eval-generator", "--samples", str(samples), "--ref", str(tmp / "adm.npz"), "--second-encoder", "none",
          "--out", str(out)])
    rec = json.loads(out.read_text())
    run = rec["metrics"]["runs"][0]
    assert run["gFID"] == pytest.approx(sb.distance(sa), rel=1e-4) and run["gFID"] > 1.0
    assert run["precision"] == 1.0 and run["recall"] == 1.0
    assert any("no feature-network record" in n for n in rec["notes"])
