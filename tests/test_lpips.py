"""LPIPS v0.1: metric properties, frozen weights with input gradients, recorded values."""

from functools import lru_cache

import pytest
import torch
from torch import nn

from vfmtok.data.imagefolder import ImageFolderDataset
from vfmtok.data.sources import resolve_dataset
from vfmtok.encoders.lpips import LPIPS
from vfmtok.utils.errors import VFMTokError


@lru_cache(maxsize=None)
def _lpips(net: str) -> LPIPS:
    return LPIPS(net)


@lru_cache(maxsize=None)
def _images():
    ds = ImageFolderDataset(resolve_dataset("sample"), 64, split="val")
    x = torch.stack([ds[i][0] for i in range(0, 40, 5)])  # 8 images, classes 0..3
    y = torch.stack([ds[i][0] for i in range(1, 41, 5)])
    return x, y


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_metric_properties(net):
    lp = _lpips(net)
    x, y = _images()
    with torch.no_grad():
        d_xy, d_yx, d_xx = lp(x, y), lp(y, x), lp(x, x)
        assert d_xy.shape == (8,)
        assert d_xx.abs().max() < 1e-6
        torch.testing.assert_close(d_xy, d_yx, rtol=1e-5, atol=1e-6)
        assert d_xy.min() > 0.1  # different real photos are far apart (measured 0.28-0.72)
        g = torch.Generator().manual_seed(0)
        x4 = x[:4]
        noise = torch.randn(x4.shape, generator=g)
        ds = torch.stack([lp(x4, (x4 + s * noise).clamp(-1, 1)) for s in (0.03, 0.1, 0.3)])
    assert (ds[1:] > ds[:-1]).all()  # grows with noise strength, for every image


@pytest.mark.parametrize("net,n_ch", [("alex", [64, 192, 384, 256, 256]), ("vgg", [64, 128, 256, 512, 512])])
def test_frozen_heads_and_input_gradients(net, n_ch):
    lp = _lpips(net)
    assert [h.shape[1] for h in lp.heads] == n_ch
    assert all((h >= 0).all() and h.sum() > 0 for h in lp.heads)  # v0.1 heads are trained non-negative
    assert not any(p.requires_grad for p in lp.parameters())
    parent = nn.Module()
    parent.lpips = lp
    parent.train()
    assert not lp.training
    x, y = _images()
    # a black/white pair has all-zero feature positions: the gradient must still be finite
    x = torch.cat([x[:2], -torch.ones(1, 3, 64, 64)]).clone().requires_grad_(True)
    y = torch.cat([y[:2], torch.ones(1, 3, 64, 64)])
    lp(x, y).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[:2].abs().sum() > 0
    assert all(p.grad is None for p in lp.parameters())
    # a gradient step on the input lowers the distance: usable as a training loss
    z = x.detach()[:2].clone().requires_grad_(True)
    d0 = lp(z, y[:2]).sum()
    d0.backward()
    with torch.no_grad():
        d1 = lp(z - 0.05 * z.grad / z.grad.abs().max(), y[:2]).sum()
    assert d1 < d0


def test_recorded_values():
    # Recorded with this module on the embedded sample (val, 64 px, images 0 vs 1 and 5 vs 6). While writing
    # it, the same numbers (max |diff| 0.0) came from the official `lpips` 0.1.4 package code with its own
    # v0.1 head files (identical to ours) and our converted conv weights, which checks the scaling layer,
    # unit normalisation, layer taps and heads. The conv weights are checked in test_encoders.py.
    x, y = _images()
    with torch.no_grad():
        alex = _lpips("alex")(x[:2], y[:2])
        vgg = _lpips("vgg")(x[:2], y[:2])
    torch.testing.assert_close(alex, torch.tensor([0.4839, 0.4434]), rtol=0, atol=2e-4)
    torch.testing.assert_close(vgg, torch.tensor([0.6401, 0.7194]), rtol=0, atol=2e-4)


def test_bad_input_is_a_clear_error():
    with pytest.raises(VFMTokError, match="unknown LPIPS net 'squeeze'"):
        LPIPS("squeeze")
    lp = _lpips("alex")
    with pytest.raises(VFMTokError, match="same shape"):
        lp(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 32, 32))
    with pytest.raises(VFMTokError, match="at least 32x32"):
        lp(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16))
