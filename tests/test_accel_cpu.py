"""vfmtok.accel.cpu.accelerate: the swapped-in modules compute what the plain GPT computes, and only where they apply."""

import pytest
import torch
import torch.nn.functional as F

import vfmtok.accel.cpu as accel
import vfmtok.accel.cpu_kernels as ck
from vfmtok.generator.generate import generate
from vfmtok.generator.gpt import GPT, KVCache, RMSNorm, create_gpt

pytestmark = pytest.mark.skipif(not ck.available(), reason=f"compiled CPU kernels unavailable: {ck.unavailable_reason()}")


def nano() -> GPT:
    torch.manual_seed(0)
    gpt = create_gpt("GPT-nano", vocab_size=50, num_tokens=12, token_grid=(3, 4), num_classes=5).eval()
    torch.nn.init.normal_(gpt.head.weight, std=0.5)
    return gpt


def test_packed_linear_equals_linear_and_falls_back_where_it_must(monkeypatch):
    monkeypatch.setattr(accel, "PACKED_MIN_MACS", 0)
    calls = []
    real = ck.packed_linear
    monkeypatch.setattr(ck, "packed_linear", lambda *a: calls.append(1) or real(*a))
    base = torch.nn.Linear(64, 96)
    m = accel.PackedLinear(base)
    x = torch.randn(4, 64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), base(x), rtol=1e-5, atol=1e-5)
        assert len(calls) == 1
        m(torch.randn(accel.PACKED_ROWS[1] + 1, 64))  # too many rows
        m(x[:1])  # one row: a GEMV, left to F.linear
        assert len(calls) == 1
        base.weight.mul_(2)  # changed in place: the stale panels must not be used
        torch.testing.assert_close(m(x), base(x))
        assert len(calls) == 1
    m2 = accel.PackedLinear(base)
    m2(x.requires_grad_(True)).sum().backward()  # autograd needs the real weight
    assert len(calls) == 1 and base.weight.grad is not None


def test_blocked_cache_attends_like_the_dense_cache():
    torch.manual_seed(0)
    dense = KVCache(4, 24, 2, 16, torch.float32, "cpu")
    blocked = accel.BlockedKVCache(4, 24, 2, 16, torch.float32, "cpu")
    blocked.kv.fill_(float("nan"))  # nothing beyond the written prefix may leak in
    mask = torch.ones(24, 24, dtype=torch.bool).tril()[None, None]
    k, v, q = torch.randn(3, 2, 19, 16), torch.randn(3, 2, 19, 16), torch.randn(3, 2, 19, 16)
    pos = torch.arange(18)  # a chunk, then one decode step
    for cache in (dense, blocked):
        out_chunk = cache.attend(pos, q[:, :, :18], k[:, :, :18], v[:, :, :18], mask[:, :, pos])
        ref_chunk = F.scaled_dot_product_attention(q[:, :, :18], k[:, :, :18], v[:, :, :18], is_causal=True)
        torch.testing.assert_close(out_chunk, ref_chunk, rtol=1e-5, atol=1e-5)
        p = torch.tensor([18])
        out = cache.attend(p, q[:, :, 18:], k[:, :, 18:], v[:, :, 18:], mask[:, :, p])
        torch.testing.assert_close(out, F.scaled_dot_product_attention(q[:, :, 18:], k, v), rtol=1e-5, atol=1e-5)


def test_accelerate_swaps_in_and_restores_the_plain_modules():
    gpt = nano()
    keys = list(gpt.state_dict())
    plain = {n: type(m) for n, m in gpt.named_modules()}
    with accel.accelerate(gpt) as on:
        assert on and gpt.cache_class is accel.BlockedKVCache
        assert isinstance(gpt.head, accel.PackedLinear) and isinstance(gpt.norm, accel.FusedRMSNorm)
        assert isinstance(gpt.blocks[0].feed_forward, accel.FusedFeedForward)
        assert list(gpt.state_dict()) == keys  # the same parameters under the same names
        assert gpt.head.weight is gpt.state_dict(keep_vars=True)["head.weight"]
        with accel.accelerate(gpt) as inner:  # nested: nothing swapped twice
            assert inner and isinstance(gpt.head, accel.PackedLinear) and list(gpt.state_dict()) == keys
        assert gpt.cache_class is accel.BlockedKVCache
    assert gpt.cache_class is KVCache and list(gpt.state_dict()) == keys
    assert {n: type(m) for n, m in gpt.named_modules()} == plain
    assert gpt.blocks[0].attention.kv_cache is None  # the blocked caches are freed


def test_greedy_ids_are_the_same_with_and_without_acceleration():
    gpt = nano()
    labels = torch.tensor([0, 3, 4])
    ids = generate(gpt, labels, temperature=0)
    with accel.accelerate(gpt):
        fast = generate(gpt, labels, temperature=0)
        assert isinstance(gpt.blocks[0].attention.kv_cache, accel.BlockedKVCache)
        fast_cfg = generate(gpt, labels, cfg_scale=3.0, temperature=0)
    assert torch.equal(fast, ids) and torch.equal(fast_cfg, generate(gpt, labels, cfg_scale=3.0, temperature=0))
    assert torch.equal(gpt(labels, ids[:, :-1])[0].argmax(-1), ids)  # and greedy decoding agrees with the full pass


def test_accelerate_does_nothing_where_it_does_not_apply(monkeypatch):
    gpt = nano()
    with accel.accelerate(gpt, enabled=False) as on:
        assert not on and isinstance(gpt.norm, RMSNorm)
    half = nano().to(torch.bfloat16)
    assert "bfloat16" in accel.unavailable_reason(half)
    with accel.accelerate(half) as on:
        assert not on and half.cache_class is KVCache
    monkeypatch.setattr(ck, "ENABLED", False)
    with accel.accelerate(gpt) as on:
        assert not on and "disabled" in accel.unavailable_reason(gpt)
