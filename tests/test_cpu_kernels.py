"""vfmtok.accel.cpu_kernels: the compiled decode kernels equal their torch definitions and check their arguments.

y = x W^T through packed panels; softmax(q K^T / sqrt(D)) V through the blocked cache with an online softmax.
"""

import math

import pytest
import torch

import vfmtok.accel.cpu_kernels as ck

pytestmark = pytest.mark.skipif(not ck.available(), reason=f"compiled CPU kernels unavailable: {ck.unavailable_reason()}")


@pytest.mark.parametrize("m, n, k", [(1, 5, 7), (8, 32, 16), (9, 40, 33), (32, 96, 64), (64, 100, 130)])
@pytest.mark.parametrize("threads", [1, 2])
def test_packed_linear_equals_matmul(m, n, k, threads, monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setattr(ck, "PARALLEL_MIN_WORK", 1)  # small shapes take the threaded path too
    x, w = torch.randn(m, k), torch.randn(n, k)
    p = ck.pack_weight(w)
    assert p.shape == (math.ceil(n / 32), k, 32) and p[-1, :, n % 32 or 32:].abs().sum() == 0  # zero-padded panel
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        y = ck.packed_linear(x.view(1, m, k), p, n)
    finally:
        torch.set_num_threads(before)
    assert y.shape == (1, m, n)
    torch.testing.assert_close(y[0], x @ w.t(), rtol=1e-5, atol=1e-5 * math.sqrt(k))


@pytest.mark.parametrize("n", [768, 40])  # vector body only, and a scalar tail
def test_rms_norm_and_silu_mul_equal_torch(n):
    torch.manual_seed(0)
    x, w = torch.randn(3, 5, n) * 3, torch.randn(n)
    want = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w
    torch.testing.assert_close(ck.rms_norm(x, w, 1e-5), want, rtol=1e-5, atol=1e-6)
    a, b = torch.randn(7, n) * 6, torch.randn(7, n)
    a[0, :6] = torch.tensor([0.0, -0.0, 100.0, -100.0, 88.0, -88.0])  # saturating and signed-zero gates
    torch.testing.assert_close(ck.silu_mul(a, b), torch.nn.functional.silu(a) * b, rtol=1e-5, atol=1e-6)


def test_elementwise_kernels_only_without_autograd():
    x = torch.randn(2, 16)
    with torch.no_grad():
        assert ck.for_inference(x)
        assert not ck.for_inference(x.double()) and not ck.for_inference(x.bfloat16())
        with ck.enabled(False):
            assert not ck.for_inference(x)
    assert not ck.for_inference(x)  # grad mode on: training keeps torch's differentiable ops


def blocked_cache(k: torch.Tensor, v: torch.Tensor, capacity: int) -> torch.Tensor:
    """(R, S, D) keys and values -> (R, capacity/16, 2, 16 D) blocks [K (D, 16) | V (16, D)], garbage past S."""
    r, s, d = k.shape
    kv = torch.full((r, capacity // 16, 2, 16 * d), float("nan"))  # positions past `length` must not be read
    kb = kv[:, :, 0].view(r, -1, d, 16)
    vb = kv[:, :, 1].view(r, -1, 16, d)
    for pos in range(s):
        kb[:, pos // 16, :, pos % 16] = k[:, pos]
        vb[:, pos // 16, pos % 16] = v[:, pos]
    return kv


@pytest.mark.parametrize("length", [1, 15, 16, 17, 40])
@pytest.mark.parametrize("d", [16, 64])
@pytest.mark.parametrize("spread", [1.0, 30.0])  # 30: scores tens apart, so the running max and exp tails matter
def test_decode_attention_equals_softmax_reference(length, d, spread):
    torch.manual_seed(length)
    rows = 6
    q, k, v = spread * torch.randn(rows, d), torch.randn(rows, length, d), torch.randn(rows, length, d)
    kv = blocked_cache(k, v, 48)
    out = ck.decode_attention(q, kv, length, d**-0.5)
    q64, k64, v64 = q.double(), k.double(), v.double()  # exact reference; fp32 score rounding alone is ~1e-6
    p = torch.softmax((k64 @ q64[:, :, None])[..., 0] * d**-0.5, dim=-1)  # (rows, length)
    ref = (p[:, :, None] * v64).sum(1)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("length", [1, 16, 17, 33])
def test_decode_attention_writes_the_new_position_first(length):
    torch.manual_seed(0)
    rows, d = 5, 32
    q, k, v = torch.randn(rows, d), torch.randn(rows, length, d), torch.randn(rows, length, d)
    kv = blocked_cache(k[:, :-1], v[:, :-1], 48)  # the prefix before this step
    out = ck.decode_attention(q, kv, length, d**-0.5, k[:, -1], v[:, -1])
    full = blocked_cache(k, v, 48)
    assert torch.allclose(kv, full, rtol=0, atol=0, equal_nan=True)  # the new key and value landed in their slots only
    torch.testing.assert_close(out, ck.decode_attention(q, full, length, d**-0.5))


def test_wrappers_check_bounds_with_explicit_errors():
    """Raw pointers go to C only after checks that `python -O` keeps (ValueError, not assert)."""
    w = ck.pack_weight(torch.randn(40, 16))
    with pytest.raises(ValueError, match="do not fit"):
        ck.packed_linear(torch.randn(3, 17), w, 40)  # K mismatch
    with pytest.raises(ValueError, match="do not fit"):
        ck.packed_linear(torch.randn(3, 16), w, 80)  # more outputs than panels
    with pytest.raises(ValueError, match="fp32 CPU"):
        ck.packed_linear(torch.randn(3, 16).double(), w, 40)
    kv = torch.zeros(4, 2, 2, 16 * 16)
    with pytest.raises(ValueError, match="length"):
        ck.decode_attention(torch.randn(4, 16), kv, 33, 0.25)  # past the 32 cached positions
    with pytest.raises(ValueError, match="does not fit"):
        ck.decode_attention(torch.randn(3, 16), kv, 5, 0.25)  # rows mismatch
    with pytest.raises(ValueError, match="R x D"):
        ck.decode_attention(torch.randn(4, 16), kv, 5, 0.25, torch.randn(4, 8), torch.randn(4, 8))
    with pytest.raises(ValueError, match="weight of 8"):
        ck.rms_norm(torch.randn(2, 8), torch.randn(7), 1e-5)
    with pytest.raises(ValueError, match="same-shape"):
        ck.silu_mul(torch.randn(2, 8), torch.randn(2, 9))


def test_build_failure_is_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(ck, "_lib", None)
    monkeypatch.setattr(ck, "_reason", None)
    monkeypatch.setenv("VFMTOK_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    assert not ck.available()
    assert "could not build cpu_kernels.c" in ck.unavailable_reason()
    assert not list((tmp_path / "kernels").glob("*"))  # no half-written library left behind
    assert not ck.attention_supported("cpu", torch.float32, 64)
