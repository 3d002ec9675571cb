"""FID Inception: our module vs the TorchScript file, the TF1 resize, IS detection and the IS formula."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vfmtok.eval import inception as I
from vfmtok.eval.imagesets import open_image_set


@pytest.fixture(autouse=True)
def _fresh_extractor_cache():
    I._build.cache_clear()
    yield
    I._build.cache_clear()


def _sample_u8(n: int, size: int) -> torch.Tensor:
    images = open_image_set("sample", size, split="val")
    return torch.from_numpy(np.stack([images.read(i * 10) for i in range(n)]))


def test_features_match_torchscript_model(monkeypatch):
    monkeypatch.setattr(I, "find_full_weights", lambda: None)
    ex = I.get_extractor("cpu")
    u8 = _sample_u8(4, 64)
    feats, logits = ex(u8)
    ts = I.load_torchscript(I.find_weight(I.FEATURE_FILE))
    with torch.inference_mode():
        ref = ts(I.preprocess(u8)).numpy()
    assert feats.shape == (4, 2048) and logits is None
    assert np.abs(feats - ref).max() < 1e-4 * np.abs(ref).max()
    # different images give clearly different features (the check above is not trivially satisfied)
    assert np.abs(feats[0] - feats[1]).max() > 0.1
    # NHWC and NCHW uint8 inputs are the same images
    feats_nchw, _ = ex(u8.permute(0, 3, 1, 2).contiguous())
    assert np.allclose(feats, feats_nchw, atol=1e-5)


def test_preprocess_range_and_tf1_resize():
    u8 = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 1, 1, 3).expand(2, 299, 299, 3).contiguous()
    x = I.preprocess(u8)
    assert x.shape == (2, 3, 299, 299)
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([-1.0, 0.0, 127 / 128]))
    # TF1 ResizeBilinear == NVIDIA's affine_grid/grid_sample emulation (independent formulation)
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (2, 3, 40, 57), generator=g).float()
    theta = torch.eye(2, 3)
    theta[0, 2] += 1 / 57 - 1 / 299
    theta[1, 2] += 1 / 40 - 1 / 299
    grid = F.affine_grid(theta[None].repeat(2, 1, 1), [2, 3, 299, 299], align_corners=False)
    ref = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    assert (I.tf1_resize_bilinear(img) - ref).abs().max() < 0.01
    # and it is not the half-pixel resize of F.interpolate
    assert (F.interpolate(img, size=(299, 299), mode="bilinear", align_corners=False) - ref).abs().max() > 1.0
    with pytest.raises(Exception, match="uint8"):
        I.preprocess(img)


def _full_state(perturb: bool) -> dict:
    ts = I.load_torchscript(I.find_weight(I.FEATURE_FILE))
    state = I.convert_torchscript_state(ts.state_dict())
    if perturb:
        state["Mixed_6b.branch1x1.conv.weight"] = state["Mixed_6b.branch1x1.conv.weight"] + 0.1
    g = torch.Generator().manual_seed(0)
    state["fc.weight"] = torch.randn(1008, 2048, generator=g) * 0.05
    state["fc.bias"] = torch.zeros(1008)
    return state


def test_inception_score_with_full_weights(tmp_path, monkeypatch):
    torch.save(_full_state(perturb=False), tmp_path / I.FULL_WEIGHT_FILES[0])
    monkeypatch.setattr(I, "find_full_weights", lambda: tmp_path / I.FULL_WEIGHT_FILES[0])
    ex = I.get_extractor("cpu")
    assert ex.has_logits and ex.is_unavailable is None and "logits_sha256" in ex.info
    feats, logits = ex(_sample_u8(3, 32))
    w = torch.load(tmp_path / I.FULL_WEIGHT_FILES[0], weights_only=True)["fc.weight"].numpy()
    assert logits.shape == (3, 1008)
    assert np.allclose(logits, feats @ w.T, rtol=1e-4, atol=1e-4)  # unbiased logits (no fc.bias), as the original IS


def test_inception_score_unavailable_reasons(tmp_path, monkeypatch):
    monkeypatch.setattr(I, "find_full_weights", lambda: None)
    assert "no Inception logits layer" in I.get_extractor("cpu").is_unavailable
    I._build.cache_clear()
    torch.save(_full_state(perturb=True), tmp_path / I.FULL_WEIGHT_FILES[1])
    monkeypatch.setattr(I, "find_full_weights", lambda: tmp_path / I.FULL_WEIGHT_FILES[1])
    ex = I.get_extractor("cpu")
    assert not ex.has_logits and "not the same network" in ex.is_unavailable and "Mixed_6b" in ex.is_unavailable


def test_inception_score_formula():
    # 10 classes, each image confidently one class, balanced: IS = 10; identical predictions: IS = 1
    logits = np.full((100, 1008), -50.0)
    logits[np.arange(100), np.arange(100) % 10] = 50.0
    mean, std = I.inception_score(logits, splits=10)
    assert mean == pytest.approx(10.0, rel=1e-6) and std < 1e-6
    same = np.tile(np.random.default_rng(0).normal(size=1008), (50, 1))
    assert I.inception_score(same, splits=5)[0] == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(Exception, match="at least 10"):
        I.inception_score(logits[:5])
