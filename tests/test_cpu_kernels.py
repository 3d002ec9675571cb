"""vfmtok.utils.cpu_kernels: the compiled decode kernels equal their torch definitions, and are used only where they apply.

y = x W^T through packed panels; softmax(q K^T / sqrt(D)) V through the blocked cache with an online softmax.
"""

import math

import pytest
import torch

import vfmtok.utils.cpu_kernels as ck
import vfmtok.utils.linear as lin

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


def test_packed_linears_switches_layers_on_and_off(monkeypatch):
    monkeypatch.setattr(lin, "PACKED_MIN_MACS", 0)
    torch.manual_seed(0)
    net = torch.nn.Sequential(lin.Linear(64, 96), torch.nn.GELU(), lin.Linear(96, 32, bias=False))
    x, big = torch.randn(4, 64), torch.randn(lin.PACKED_ROWS[1] + 1, 64)
    with torch.no_grad():
        ref, ref_big = net(x), net(big)
        with lin.packed_linears(net) as n:
            assert n == 2 and all("_packed" in m.__dict__ for m in (net[0], net[2]))
            with lin.packed_linears(net) as inner:  # nested: nothing repacked, nothing freed early
                assert inner == 0
            assert "_packed" in net[0].__dict__
            torch.testing.assert_close(net(x), ref, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(net(big), ref_big, rtol=1e-5, atol=1e-5)  # too many rows: linear()
            net[0].weight.mul_(2)  # changed in place: the stale panels must not be used
            assert not torch.allclose(net(x), ref, atol=1e-3)
            net[0].weight.div_(2)
        assert not any("_packed" in m.__dict__ for m in net.modules())  # the extra copy is freed


def test_packed_path_is_taken_and_gradients_bypass_it(monkeypatch):
    monkeypatch.setattr(lin, "PACKED_MIN_MACS", 0)
    calls = []
    real = ck.packed_linear
    monkeypatch.setattr(ck, "packed_linear", lambda *a: calls.append(1) or real(*a))
    m = lin.Linear(16, 8)
    x = torch.randn(3, 16, requires_grad=True)
    with lin.packed_linears(m):
        with torch.no_grad():
            m(x)
        assert len(calls) == 1
        m(x).sum().backward()  # autograd needs the real weight: the packed kernel is skipped
        assert len(calls) == 1 and m.weight.grad is not None
        m.weight.grad = None
        m(x.detach()).sum().backward()  # also when only the weight wants a gradient
        assert len(calls) == 1 and m.weight.grad is not None
        with ck.enabled(False), torch.no_grad():
            m(x)
        with torch.no_grad():
            m(x[:1])  # one row: a GEMV, left to linear()
        assert len(calls) == 1


def test_gpt_sampling_same_ids_with_and_without_kernels():
    from vfmtok.generator.generate import generate
    from vfmtok.generator.gpt import create_gpt

    torch.manual_seed(0)
    gpt = create_gpt("GPT-nano", vocab_size=50, num_tokens=12, token_grid=(3, 4), num_classes=5).eval()
    torch.nn.init.normal_(gpt.head.weight, std=0.5)
    labels = torch.tensor([0, 3, 4])
    ids = generate(gpt, labels, temperature=0)  # greedy: equal logits up to rounding give equal ids
    assert gpt.blocks[0].attention.kv_cache.layout == "blocks"
    with ck.enabled(False):
        ids_torch = generate(gpt, labels, temperature=0)
        assert gpt.blocks[0].attention.kv_cache.layout == "keys_last"  # caches rebuilt for the torch path
    assert torch.equal(ids, ids_torch)
    logits_full, _ = gpt(labels, ids[:, :-1])
    assert torch.equal(logits_full.argmax(-1), ids)  # and greedy decoding agrees with the full forward pass


def test_build_failure_is_reported_and_falls_back(tmp_path, monkeypatch):
    monkeypatch.setattr(ck, "_lib", None)
    monkeypatch.setattr(ck, "_reason", None)
    monkeypatch.setenv("VFMTOK_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    assert not ck.available()
    assert "could not build cpu_kernels.c" in ck.unavailable_reason()
    assert not list((tmp_path / "kernels").glob("*"))  # no half-written library left behind
    assert not ck.attention_supported("cpu", torch.float32, 64)
    m = lin.Linear(16, 8)
    with lin.packed_linears(m) as n:
        assert n == 0
