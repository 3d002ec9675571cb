"""k-NN precision / recall / density / coverage against a brute-force version and on known configurations."""

import numpy as np
import pytest

from vfmtok.eval.prdc import precision_recall


def _brute(real, fake, k):
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=-1)
    d_ff = np.linalg.norm(fake[:, None] - fake[None], axis=-1)
    d_fr = np.linalg.norm(fake[:, None] - real[None], axis=-1)
    r_rad = np.sort(d_rr, axis=1)[:, k]
    f_rad = np.sort(d_ff, axis=1)[:, k]
    precision = (d_fr <= r_rad[None]).any(1).mean()
    recall = (d_fr.T <= f_rad[None]).any(1).mean()
    density = (d_fr <= r_rad[None]).sum() / (k * len(fake))
    coverage = (d_fr.min(0) <= r_rad).mean()
    return precision, recall, density, coverage


def test_matches_brute_force_with_small_blocks():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(70, 5))
    fake = rng.normal(size=(55, 5)) * 1.3 + 0.4
    out = precision_recall(real, fake, k=3, block=16)
    p, r, d, c = _brute(real, fake, 3)
    assert (out["precision"], out["recall"]) == (pytest.approx(p), pytest.approx(r))
    assert (out["density"], out["coverage"]) == (pytest.approx(d), pytest.approx(c))
    assert 0 < out["precision"] < 1 and 0 < out["recall"] < 1


def test_known_configurations():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(400, 8))
    same = precision_recall(real, rng.normal(size=(400, 8)))
    assert same["precision"] > 0.6 and same["recall"] > 0.6
    identical = precision_recall(real, real.copy())
    assert identical["precision"] == 1.0 and identical["recall"] == 1.0
    far = precision_recall(real, rng.normal(size=(400, 8)) + 20)
    assert far["precision"] == 0.0 and far["recall"] == 0.0
    # mode collapse: samples all near the centre are realistic (precision) but cover little (recall)
    collapsed = precision_recall(real, rng.normal(size=(400, 8)) * 0.1)
    assert collapsed["precision"] > 0.95 and collapsed["recall"] < 0.2
