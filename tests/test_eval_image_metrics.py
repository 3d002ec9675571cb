"""PSNR, SSIM (against an independent scipy implementation of the skimage definition), codebook usage."""

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from vfmtok.eval.image_metrics import CodeUsage, psnr, ssim, uint8_to_signed, uint8_to_unit
from vfmtok.utils.images import to_uint8


def _ssim_scipy(x: np.ndarray, y: np.ndarray) -> float:
    """skimage.structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)."""
    vals = []
    for c in range(x.shape[0]):
        a, b = x[c], y[c]
        f = lambda t: gaussian_filter(t, sigma=1.5, truncate=3.5, mode="reflect")  # noqa: E731
        ma, mb = f(a), f(b)
        va, vb, cab = f(a * a) - ma * ma, f(b * b) - mb * mb, f(a * b) - ma * mb
        c1, c2 = 0.01 ** 2, 0.03 ** 2
        s = ((2 * ma * mb + c1) * (2 * cab + c2)) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2))
        vals.append(s[5:-5, 5:-5].mean())  # skimage crops (win_size - 1) // 2 = 5 pixels
    return float(np.mean(vals))


def test_ssim_matches_reference_definition():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(2, 3, 40, 33))
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1)
    ours = ssim(torch.from_numpy(x), torch.from_numpy(y))
    for i in range(2):
        assert float(ours[i]) == pytest.approx(_ssim_scipy(x[i], y[i]), abs=1e-10)
    assert torch.allclose(ssim(torch.from_numpy(x), torch.from_numpy(x)), torch.ones(2, dtype=torch.float64))
    worse = ssim(torch.from_numpy(x), torch.from_numpy(np.clip(x + rng.normal(0, 0.3, x.shape), 0, 1)))
    assert (worse < ours).all()


def test_psnr_known_values():
    x = torch.full((2, 3, 8, 8), 0.5, dtype=torch.float64)
    assert torch.allclose(psnr(x, x + 0.1), torch.full((2,), 20.0, dtype=torch.float64))
    assert float(psnr(x, x)[0]) == pytest.approx(100.0)  # capped


def test_uint8_roundtrip():
    u8 = torch.randint(0, 256, (2, 5, 6, 3), dtype=torch.uint8)
    assert torch.equal(to_uint8(uint8_to_signed(u8)), u8)
    assert torch.allclose(uint8_to_unit(u8), u8.permute(0, 3, 1, 2).double() / 255)
    assert to_uint8(torch.tensor([-3.0, -1.0, 0.0, 1.0, 2.0]).view(1, 1, 1, 5))[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]


def test_to_uint8_rounds_to_nearest_and_saturates():
    x = torch.rand(4, 3, 9, 7, generator=torch.Generator().manual_seed(0)) * 2.4 - 1.2
    u8 = to_uint8(x)
    assert u8.dtype == torch.uint8 and u8.shape == (4, 9, 7, 3) and u8.device.type == "cpu"
    exact = ((x.double() + 1) * 127.5).clamp(0, 255).permute(0, 2, 3, 1)
    assert float((u8.double() - exact).abs().max()) <= 0.5 + 1e-4  # nearest level, not truncation (error up to 1)
    inside = (exact > 0.5) & (exact < 254.5)
    ref = torch.floor(exact + 0.5)  # naive reference: round half up
    close_to_half = ((exact - exact.floor()) - 0.5).abs() < 1e-3  # float32 noise decides these
    assert torch.equal(u8.double()[inside & ~close_to_half], ref[inside & ~close_to_half])
    assert int(u8[(exact <= 0.0)].max()) == 0 and int(u8[(exact >= 255.0)].min()) == 255


def test_code_usage_and_perplexity():
    u = CodeUsage(16)
    u.update(torch.tensor([[0, 1], [2, 3]]))
    u.update(torch.tensor([[0, 1, 2, 3]]))
    s = u.summary()
    assert s["codebook_usage"] == 0.25 and s["codes_used"] == 4
    assert s["perplexity"] == pytest.approx(4.0) and s["entropy_bits"] == pytest.approx(2.0)
    v = CodeUsage(4)
    v.update(torch.tensor([0, 0, 0, 1]))
    p = np.array([0.75, 0.25])
    assert v.summary()["perplexity"] == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    with pytest.raises(ValueError, match="out of range"):
        v.update(torch.tensor([4]))
