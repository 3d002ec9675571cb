"""The quantiser's math: cosine nearest code, straight-through gradient, loss values, usage statistics."""

import math

import torch
import torch.nn.functional as F

from vfmtok.tokenizer.quantizer import VectorQuantizer, usage_stats


def test_nearest_is_max_cosine_and_codes_unit_norm():
    torch.manual_seed(0)
    vq = VectorQuantizer(64, 8)
    z = torch.randn(3, 10, 8) * 5  # scale must not matter
    out = vq(z)
    cb = vq.codebook()
    assert torch.allclose(cb.norm(dim=-1), torch.ones(64), atol=1e-6)
    cos = F.normalize(z, dim=-1) @ cb.t()
    assert torch.equal(out.indices, cos.argmax(-1))
    assert torch.allclose(out.z_q, cb[out.indices], atol=1e-6)


def test_losses_equal_their_formulas():
    torch.manual_seed(1)
    vq = VectorQuantizer(32, 4, beta=0.25)
    z = torch.randn(2, 5, 4)
    out = vq(z)
    zn = F.normalize(z, dim=-1)
    d = (vq.codebook()[out.indices] - zn).pow(2).mean()
    assert torch.allclose(out.codebook_loss, d)
    assert torch.allclose(out.commit_loss, 0.25 * d)


def test_straight_through_gradient_and_codebook_gradient():
    torch.manual_seed(2)
    vq = VectorQuantizer(16, 4)
    z = torch.randn(2, 3, 4, requires_grad=True)
    out = vq(z)
    w = torch.randn_like(out.z_q)
    (out.z_q * w).sum().backward()
    # Straight-through: d(z_q)/dz is the Jacobian of the normalisation, nonzero.
    assert z.grad.abs().sum() > 0
    z2 = torch.randn(2, 3, 4, requires_grad=True)
    vq.embedding.weight.grad = None
    vq(z2).codebook_loss.backward()
    g = vq.embedding.weight.grad
    used = vq.nearest(z2).unique()
    assert g[used].abs().sum() > 0
    mask = torch.ones(16, dtype=torch.bool)
    mask[used] = False
    assert g[mask].abs().sum() == 0  # only selected codes move


def test_usage_stats_uniform_and_single():
    ids = torch.arange(8).repeat(4)
    s = usage_stats(ids, 16)
    assert s["usage"] == 0.5 and math.isclose(s["perplexity"], 8.0, rel_tol=1e-9)
    s1 = usage_stats(torch.zeros(10, dtype=torch.long), 16)
    assert s1["usage"] == 1 / 16 and math.isclose(s1["perplexity"], 1.0)


def test_window_and_dead_code_reseed():
    torch.manual_seed(3)
    vq = VectorQuantizer(32, 4, usage_window=10)
    vq.train()
    z = torch.randn(1, 25, 4)
    vq(z)
    assert (vq._recent >= 0).sum() == 10  # only the window is kept
    vq(z[:, :1].repeat(1, 10, 1))  # fill the window with one code
    assert vq.usage()["usage"] == 1 / 32
    n = vq.reseed_dead_codes(torch.randn(50, 4), torch.Generator().manual_seed(0))
    assert n == 31
    assert torch.allclose(vq.codebook().norm(dim=-1), torch.ones(32), atol=1e-5)


def test_usage_window_is_a_ring_of_the_latest_ids():
    """After any sequence of batches the window holds exactly the last `usage_window` ids (naive reference: the
    concatenation of all ids, cut to its tail), whatever the batch sizes and wrap-arounds."""
    vq = VectorQuantizer(64, 4, usage_window=7).train()
    seen = []
    for n in (3, 5, 2, 9, 7, 1, 4):
        idx = torch.randint(0, 64, (1, n))
        vq._record(idx)
        seen += idx.flatten().tolist()
        pos = int(vq._recent_pos)
        ring = vq._recent.tolist()
        assert ring[pos:] + ring[:pos] == seen[-7:] or (len(seen) < 7 and ring[:pos] == seen)
