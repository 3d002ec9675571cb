"""Sampling: greedy top-k=1, cache vs no cache, CFG (scale 1, formula, interval), seeds, top-k/top-p filters."""

import pytest
import torch

from vfmtok.generator.generate import draw, draw_noise, generate, guided_logits, sample_next, top_k_top_p_filter
from vfmtok.generator.gpt import create_gpt
from vfmtok.utils.errors import VFMTokError


@pytest.fixture(scope="module")
def gpt():
    torch.manual_seed(0)
    m = create_gpt("GPT-nano", vocab_size=40, num_tokens=12, token_grid=(3, 4), num_classes=6)
    torch.nn.init.normal_(m.head.weight, std=0.3)
    with torch.no_grad():
        m.class_emb.weight.mul_(20)  # a strong class signal, so CFG visibly changes the logits
    return m.eval()


def greedy_reference(m, labels, scale=1.0, interval=-1):
    """Greedy decoding by full forward passes (no cache), guidance computed by hand."""
    ids = torch.zeros(len(labels), m.config.num_tokens, dtype=torch.long)
    null = torch.full_like(labels, m.null_class)
    for t in range(m.config.num_tokens):
        cond = m(labels, ids[:, :t])[0][:, -1]
        logits = cond
        if scale > 1.0 and (interval < 0 or t <= interval + 1):  # LlamaGen: tokens 0 .. interval + 1 are guided
            uncond = m(null, ids[:, :t])[0][:, -1]
            logits = uncond + scale * (cond - uncond)
        ids[:, t] = logits.argmax(-1)
    return ids


def test_top_k_1_is_greedy(gpt):
    labels = torch.tensor([0, 3, 5])
    ids = generate(gpt, labels, top_k=1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(ids, greedy_reference(gpt, labels))
    assert torch.equal(generate(gpt, labels, temperature=0), ids)


def test_cache_and_recompute_paths_sample_the_same_ids(gpt):
    labels = torch.tensor([1, 2, 2, 4])
    a = generate(gpt, labels, generator=torch.Generator().manual_seed(3))
    b = generate(gpt, labels, generator=torch.Generator().manual_seed(3), use_cache=False)
    assert torch.equal(a, b)


def test_cfg_scale_one_equals_conditional_path(gpt):
    labels = torch.tensor([0, 1, 5])
    logits = torch.randn(6, 40)
    assert torch.allclose(guided_logits(logits, 1.0), logits[:3], atol=1e-6)
    plain = generate(gpt, labels, cfg_scale=1.0, generator=torch.Generator().manual_seed(5))
    # LlamaGen guides only when cfg_scale > 1.0: a scale below 1 runs the single conditional branch too.
    below = generate(gpt, labels, cfg_scale=0.5, generator=torch.Generator().manual_seed(5))
    assert torch.equal(plain, below)
    guided = generate(gpt, labels, cfg_scale=4.0, generator=torch.Generator().manual_seed(5))
    assert not torch.equal(plain, guided)


def test_cfg_interval_counts_as_llamagen_does(gpt):
    from vfmtok.generator.generate import cfg_applies

    assert [cfg_applies(t, 2) for t in range(6)] == [True, True, True, True, False, False]  # tokens 0 .. k + 1
    assert all(cfg_applies(t, -1) for t in range(6))
    labels = torch.tensor([0, 2, 4])
    ids = generate(gpt, labels, cfg_scale=3.0, cfg_interval=0, top_k=1)
    assert torch.equal(ids, greedy_reference(gpt, labels, 3.0, 0))


@pytest.mark.parametrize("interval", [-1, 5])
def test_cfg_matches_hand_computed_guidance(gpt, interval):
    labels = torch.tensor([0, 2, 4])
    ids = generate(gpt, labels, cfg_scale=3.0, cfg_interval=interval, top_k=1)
    assert torch.equal(ids, greedy_reference(gpt, labels, 3.0, interval))
    assert not torch.equal(ids, greedy_reference(gpt, labels))  # guidance changed the result


def test_seeds_reproduce_and_differ(gpt):
    labels = torch.tensor([0, 1, 2, 3])
    run = lambda s: generate(gpt, labels, cfg_scale=2.0, generator=torch.Generator().manual_seed(s))  # noqa: E731
    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


def test_top_k_top_p_filters():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = lambda x: torch.isfinite(x).sum().item()  # noqa: E731
    assert kept(top_k_top_p_filter(logits, top_k=2)) == 2
    assert kept(top_k_top_p_filter(logits, top_p=0.7)) == 2  # 0.5 < 0.7 <= 0.8
    assert kept(top_k_top_p_filter(logits, top_p=0.85)) == 3
    assert kept(top_k_top_p_filter(logits, top_p=0.3)) == 1  # the best token always stays
    assert torch.equal(top_k_top_p_filter(logits), logits)
    shuffled = logits[:, [2, 0, 3, 1]]
    assert torch.isfinite(top_k_top_p_filter(shuffled, top_p=0.7)).tolist() == [[False, True, False, True]]


def test_top_p_keeps_the_token_that_crosses_the_threshold():
    """LlamaGen's rule: a token is dropped only when the mass of the better tokens exceeds top_p."""
    torch.manual_seed(0)
    logits = torch.randn(1, 10)
    cum = logits.sort(descending=True).values.softmax(-1).cumsum(-1)[0]
    for j in range(8):  # top_p exactly the mass of the best j + 1 tokens: token j + 1 crosses it and stays
        kept = torch.isfinite(top_k_top_p_filter(logits, top_p=cum[j].item())).sum().item()
        assert kept == j + 2


def test_temperature_changes_the_sampling_distribution():
    probs = torch.tensor([0.6, 0.3, 0.1])
    logits = probs.log().expand(20000, 3)
    g = torch.Generator().manual_seed(0)
    freq = torch.bincount(sample_next(logits, 1.0, generator=g), minlength=3).float() / 20000
    assert (freq - probs).abs().max() < 0.02
    sharp = probs ** 2 / (probs ** 2).sum()  # temperature 0.5 squares the probabilities
    freq = torch.bincount(sample_next(logits, 0.5, generator=g), minlength=3).float() / 20000
    assert (freq - sharp).abs().max() < 0.02


@pytest.mark.parametrize("sampler", ["icdf", "race"])
@pytest.mark.parametrize("vocab", [1024, 300])  # two-level draw (blocks of 128) and the flat one
def test_draw_follows_the_probabilities_and_never_picks_zeros(vocab, sampler):
    torch.manual_seed(0)
    probs = torch.rand(vocab) ** 4
    probs[torch.randperm(vocab)[: vocab // 3]] = 0  # a third of the ids impossible, incl. whole runs below
    probs[128:256] = 0
    probs /= probs.sum()
    n = 200_000 if sampler == "icdf" else 40_000  # the race draws n x vocab randoms
    ids = draw(probs.expand(n, vocab).contiguous(), draw_noise(n, vocab, sampler, torch.Generator().manual_seed(1)))
    freq = torch.bincount(ids, minlength=vocab).double() / n
    assert freq[probs == 0].sum() == 0
    assert ((freq - probs) ** 2 / probs.clamp(min=1e-12))[probs > 0].sum() * n < 1.3 * vocab  # chi-square / dof ~ 1
    # The same uniform picks the same id as a flat inverse CDF (two levels only regroup the sum).
    u = torch.rand(1000, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    cdf = probs.double().cumsum(0)
    flat = torch.searchsorted(cdf, (u * cdf[-1]).clamp(max=cdf[-1].item() * (1 - 1e-12)), right=True)[:, 0]
    if sampler == "icdf":
        two = draw(probs.double().expand(1000, vocab).contiguous(), u)
        assert (two == flat).float().mean() > 0.99


def test_bad_arguments(gpt):
    with pytest.raises(VFMTokError):
        generate(gpt, torch.tensor([[0, 1]]))
    with pytest.raises(VFMTokError):
        generate(gpt, torch.tensor([0]), top_p=0.0)
