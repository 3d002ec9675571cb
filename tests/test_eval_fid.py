"""Fréchet distance: closed forms, agreement with the sqrtm reference, real images, stats files."""

import json

import numpy as np
import pytest
import torch

from vfmtok.eval import inception as I
from helpers import frechet_distance_reference
from vfmtok.eval.fid import (FeatureStats, frechet_distance, load_cached_stats,
                             save_cached_stats)
from vfmtok.eval.imagesets import open_image_set
from vfmtok.utils.errors import VFMTokError


def test_closed_form_diagonal_gaussians():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 3, 20), rng.uniform(0.1, 3, 20)
    m1, m2 = rng.normal(size=20), rng.normal(size=20)
    expected = ((m1 - m2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("n,d", [(2000, 32), (60, 256)])  # well-conditioned, and rank-deficient (n < d)
def test_matches_scipy_sqrtm_reference(n, d):
    rng = np.random.default_rng(1)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    s1 = FeatureStats.from_features(rng.normal(size=(n, d)) @ mix)
    s2 = FeatureStats.from_features(rng.normal(size=(n, d)) @ mix + 0.2)
    ours = frechet_distance(s1.mu, s1.sigma, s2.mu, s2.sigma)  # covariance factors from Cholesky / eigh
    ref = frechet_distance_reference(s1.mu, s1.sigma, s2.mu, s2.sigma)
    assert ours == pytest.approx(ref, rel=1e-5)
    assert s1.distance(s2) == pytest.approx(ours, rel=1e-9)  # factors from the features themselves
    assert s1.distance(s1) < 1e-8 * np.trace(s1.sigma)
    assert frechet_distance(s1.mu, s1.sigma, s1.mu, s1.sigma) < 1e-6 * np.trace(s1.sigma)


def test_fid_on_real_images_self_zero_and_grows_with_noise():
    images = open_image_set("sample", 64, split="val")
    u8 = np.stack([images.read(i) for i in range(0, 100, 7)])  # 15 images from all 10 classes
    ex = I.get_extractor("cpu")
    clean = FeatureStats.from_features(ex(u8)[0])
    assert clean.distance(clean) < 1e-6
    rng = np.random.default_rng(0)
    fds = []
    for sigma in (4, 16, 48):
        noisy = np.clip(u8 + rng.normal(0, sigma, u8.shape), 0, 255).astype(np.uint8)
        s = FeatureStats.from_features(ex(noisy)[0])
        fds.append(clean.distance(s))
    assert 0 < fds[0] < fds[1] < fds[2]
    assert fds[2] > 3 * fds[0]


def test_stats_file_roundtrip_and_network_check(tmp_path):
    rng = np.random.default_rng(2)
    net = {"name": "tf-inception", "file": "x.pt", "sha256": "aaaa"}
    s = FeatureStats.from_features(rng.normal(size=(30, 8)), net, {"note_in": 1})
    path = s.save(tmp_path / "ref.npz")
    assert not [p for p in tmp_path.iterdir() if p.name != "ref.npz"]  # atomic: no temp file left
    back = FeatureStats.load(path, expect_net={**net, "dim": 8})
    assert np.array_equal(back.mu, s.mu) and np.array_equal(back.sigma, s.sigma)
    assert back.sigma.dtype == np.float64 and back.num_images == 30 and back.features.shape == (30, 8)
    with pytest.raises(VFMTokError, match="made with feature network"):
        FeatureStats.load(path, expect_net={"name": "other", "sha256": "bbbb"})
    with pytest.raises(VFMTokError, match="8-d statistics"):
        FeatureStats.load(path, expect_net={**net, "dim": 2048})
    # an ADM-style reference batch: mu/sigma only, no network record -> accepted with a note
    np.savez(tmp_path / "adm.npz", mu=s.mu, sigma=s.sigma)
    adm = FeatureStats.load(tmp_path / "adm.npz", expect_net={**net, "dim": 8})
    assert "no feature-network record" in adm.meta["note"] and adm.features is None
    np.savez(tmp_path / "bad.npz", arr_0=np.zeros(3))
    with pytest.raises(VFMTokError, match="no 'mu'/'sigma'"):
        FeatureStats.load(tmp_path / "bad.npz")


def test_stats_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VFMTOK_CACHE", str(tmp_path))
    key = {"data": "x", "n": 3}
    assert load_cached_stats(key) is None
    s = FeatureStats.from_features(np.random.default_rng(3).normal(size=(10, 4)))
    save_cached_stats(key, s)
    got = load_cached_stats(key)
    assert got is not None and np.array_equal(got.sigma, s.sigma)
    assert json.dumps(got.meta["cache_key"], sort_keys=True) == json.dumps(key, sort_keys=True)
    assert load_cached_stats({"data": "x", "n": 4}) is None


def test_dimension_mismatch_is_an_error():
    with pytest.raises(VFMTokError, match="different dimensions"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(VFMTokError, match="at least 2"):
        FeatureStats.from_features(torch.zeros(1, 3).numpy())


def test_all_factor_routes_agree():
    rng = np.random.default_rng(4)
    mix = rng.normal(size=(64, 64)) / 8
    small = FeatureStats.from_features(rng.normal(size=(40, 64)) @ mix)  # N < D: features are a factor
    big = FeatureStats.from_features(rng.normal(size=(500, 64)) @ mix + 0.1)  # N > D: Cholesky
    small2 = FeatureStats.from_features(rng.normal(size=(30, 64)) @ mix * 1.2)
    ref_mixed = frechet_distance_reference(small.mu, small.sigma, big.mu, big.sigma)
    assert small.distance(big) == pytest.approx(ref_mixed, rel=1e-6)  # features + matrix route
    assert big.distance(small) == pytest.approx(ref_mixed, rel=1e-6)
    plain = frechet_distance(small.mu, small.sigma, small2.mu, small2.sigma)  # eigh-factor route (singular)
    assert small.distance(small2) == pytest.approx(plain, rel=1e-6)  # N1 x N2 SVD route
