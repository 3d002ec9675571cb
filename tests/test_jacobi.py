"""Speculative Jacobi decoding: same distribution as standard sampling, same greedy ids, fewer forward passes."""

import itertools

import pytest
import torch
from scipy.stats import chisquare

from vfmtok.generator import jacobi
from vfmtok.generator.generate import generate
from vfmtok.generator.gpt import GPT, GPTConfig
from vfmtok.generator.rar import RAR, RARConfig
from vfmtok.utils.errors import VFMTokError


def randomised(model: torch.nn.Module, std: float, seed: int) -> torch.nn.Module:
    """Every parameter redrawn (the default init zeroes the head and adaLN, which makes predictions uniform)."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.data = torch.randn(p.shape, generator=g) * std
    return model.eval()


def tiny_gpt(vocab: int = 4, grid: tuple[int, int] = (2, 2), std: float = 0.5, seed: int = 0, dim: int = 32,
             n_layer: int = 2) -> GPT:
    cfg = GPTConfig(vocab_size=vocab, num_tokens=grid[0] * grid[1], token_grid=grid, num_classes=2, dim=dim,
                    n_layer=n_layer, n_head=2, multiple_of=16)
    return randomised(GPT(cfg), std, seed)


def tiny_rar(vocab: int = 16, grid: tuple[int, int] = (4, 4), seed: int = 0) -> RAR:
    cfg = RARConfig(vocab_size=vocab, num_tokens=grid[0] * grid[1], token_grid=grid, num_classes=3, dim=32,
                    n_layer=2, n_head=2, mlp_dim=64, pos_slack=2, step_slack=2)
    return randomised(RAR(cfg), 0.3, seed)


SAMPLING = dict(cfg_scale=2.0, temperature=0.9, top_k=3)  # every part of the target: CFG, temperature, top-k


def sequence_probs(model: GPT, label: int, cfg_scale: float, temperature: float, top_k: int) -> torch.Tensor:
    """Exact probability of each of the V^N id sequences (in itertools.product order) under standard sampling."""
    V, N = model.config.vocab_size, model.config.num_tokens
    seqs = torch.tensor(list(itertools.product(range(V), repeat=N)))
    n = len(seqs)
    labels = torch.tensor([label] * n + [model.null_class] * n)
    with torch.no_grad():
        logits = model(labels, torch.cat([seqs, seqs])[:, :-1])[0]  # full causal pass: (2n, N, V)
    scales = torch.full((N,), cfg_scale)
    p = jacobi.target_probs(logits, n, scales, torch.ones(N, dtype=torch.bool), temperature, top_k, 1.0)
    return p.gather(-1, seqs[..., None])[..., 0].prod(-1)


def chi_square_p(ids: torch.Tensor, probs: torch.Tensor, vocab: int) -> float:
    """p-value of the sampled sequences' counts against `probs` (cells expecting < 5 pooled into one)."""
    code = (ids * vocab ** torch.arange(ids.shape[1] - 1, -1, -1)).sum(1)  # product order: first id most significant
    counts = torch.bincount(code, minlength=len(probs)).double()
    expected = probs.double() * len(ids)
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big].sum()[None]])
    exp = torch.cat([expected[big], expected[~big].sum()[None]])
    obs, exp = (obs, exp) if exp[-1] > 0 else (obs[:-1], exp[:-1])
    return float(chisquare(obs.numpy(), exp.numpy() * obs.sum().item() / exp.sum().item()).pvalue)


def sample(model, n: int, seed: int, **kw) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return generate(model, torch.ones(n, dtype=torch.long), generator=gen, **SAMPLING, **kw)


@pytest.fixture(scope="module")
def oracle():
    m = tiny_gpt(dim=16, n_layer=1)
    return m, sequence_probs(m, 1, **SAMPLING)


def test_oracle_is_a_non_trivial_distribution(oracle):
    _, probs = oracle
    assert abs(float(probs.sum()) - 1) < 1e-5
    assert (probs > 0.005).sum() >= 10 and probs.max() < 0.5  # many sequences share the mass: the test has power


@pytest.mark.parametrize("window,init", [(3, "uniform"), (2, "last")])
def test_jacobi_keeps_the_sequence_distribution(oracle, window, init):
    """Chi-square of 8,000 whole sequences against the exact distribution, for standard and Jacobi sampling."""
    m, probs = oracle
    standard = sample(m, 8000, 0)
    gen = torch.Generator().manual_seed(1)
    ids, stats = jacobi.jacobi_generate(m, torch.ones(8000, dtype=torch.long), generator=gen, window=window,
                                        init=init, **SAMPLING)
    assert chi_square_p(standard, probs, 4) > 1e-3
    assert chi_square_p(ids, probs, 4) > 1e-3
    assert stats.window == window and stats.forward_passes <= 4


@pytest.mark.parametrize("rule", [
    lambda p_d, q_d, u: torch.ones_like(u, dtype=torch.bool),  # accept every draft
    lambda p_d, q_d, u: p_d >= q_d,  # deterministic threshold instead of a coin with probability min(1, p/q)
])
def test_a_broken_acceptance_rule_fails_the_same_test(oracle, monkeypatch, rule):
    m, probs = oracle
    monkeypatch.setattr(jacobi, "accepts", rule)
    gen = torch.Generator().manual_seed(1)
    ids, _ = jacobi.jacobi_generate(m, torch.ones(8000, dtype=torch.long), generator=gen, window=3, **SAMPLING)
    assert chi_square_p(ids, probs, 4) < 1e-6


@pytest.mark.parametrize("make,kw", [
    (lambda: tiny_gpt(vocab=16, grid=(4, 4), std=0.3), dict(cfg_scale=2.5)),
    (lambda: tiny_gpt(vocab=16, grid=(4, 4), std=0.3), dict(cfg_scale=2.5, cfg_interval=3)),
    (tiny_rar, dict(cfg_scale=3.0, cfg_power=2.0)),
    (tiny_rar, dict(cfg_scale=0.5, cfg_power=1.0)),  # RAR guides below 1 too (its official rule): anti-guidance
    (tiny_rar, dict()),
])
@pytest.mark.parametrize("window", [4, 16])
def test_greedy_ids_equal_standard_greedy(make, kw, window):
    m = make()
    labels = torch.tensor([0, 1, 2, 1, 0, 2])
    standard = generate(m, labels, temperature=0.0, **kw)
    fast = generate(m, labels, temperature=0.0, parallel="jacobi", window=window, **kw)
    assert torch.equal(fast, standard)
    assert len(set(standard.flatten().tolist())) > 3  # the ids vary: equality is not trivial


def counting(model) -> list:
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_forward_passes_fewer_on_a_confident_model_and_at_most_one_per_token():
    confident = tiny_gpt(vocab=16, grid=(4, 4), std=0.3)
    with torch.no_grad():  # every hidden state is the same vector and the head favours id 5 by a wide margin
        for b in confident.blocks:
            b.attention.wo.weight.zero_()
            b.feed_forward.w2.weight.zero_()
        confident.tok_emb.weight.fill_(1.0)
        confident.class_emb.weight.fill_(1.0)
        confident.norm.weight.fill_(1.0)
        confident.head.weight.zero_()
        confident.head.weight[5] = 2.0
    calls = counting(confident)
    gen = torch.Generator().manual_seed(0)
    ids, stats = jacobi.jacobi_generate(confident, torch.tensor([0, 1]), generator=gen, window=15)
    assert stats.forward_passes == len(calls) <= 3 < 16  # 16 tokens in at most 3 sequential passes
    assert (ids == 5).all()
    hard = tiny_gpt(vocab=16, grid=(4, 4), std=1.0)
    calls = counting(hard)
    for window in (1, 8):
        calls.clear()
        _, stats = jacobi.jacobi_generate(hard, torch.arange(2).repeat(8), generator=gen, window=window)
        assert stats.forward_passes == len(calls) <= 16
    assert stats.forward_passes > 3  # random drafts on an unsure model are mostly rejected
    calls.clear()
    _, one = jacobi.jacobi_generate(hard, torch.tensor([0]), generator=gen, window=1)
    assert one.forward_passes == len(calls) == 16  # a window of 1 is standard decoding: one pass per id


def test_window_step_compiles_once_without_graph_breaks(monkeypatch):
    from torch._dynamo.testing import CompileCounter

    counter = CompileCounter()
    compiled = torch.compile(jacobi.window_step, fullgraph=True, dynamic=False, backend=counter)
    monkeypatch.setattr(jacobi, "compiled_window_step", lambda mode=None: compiled)
    m = tiny_gpt(vocab=16, grid=(4, 4), std=0.3)
    labels = torch.tensor([0, 1, 1])
    ids, stats = jacobi.jacobi_generate(m, labels, temperature=0.0, compile=True, window=4, cfg_scale=2.0)
    assert torch.equal(ids, generate(m, labels, temperature=0.0, cfg_scale=2.0))
    assert stats.forward_passes > 2 and counter.frame_count == 1  # every window after the prefill: one graph


def test_bad_arguments_are_one_line_errors():
    m = tiny_gpt()
    with pytest.raises(VFMTokError, match="parallel decoding"):
        generate(m, torch.tensor([0]), parallel="medusa")
    with pytest.raises(VFMTokError, match="window"):
        generate(m, torch.tensor([0]), parallel="jacobi", window=0)
    with pytest.raises(VFMTokError, match="KV cache"):
        generate(m, torch.tensor([0]), parallel="jacobi", use_cache=False)


def test_sample_and_eval_commands_take_parallel_jacobi(tiny_pair, tmp_path, capsys):
    """`vfmtok sample --parallel jacobi --window K` samples and records it; a bad mode is one line and exit 2."""
    import json

    from vfmtok.cli import main
    from vfmtok.cli.eval_options import add_arguments

    out = tmp_path / "s"
    common = ["sample", "--gpt", str(tiny_pair / "gpt"), "--class", "tench", "--per-class", "2", "--device", "cpu"]
    assert main([*common, "--parallel", "jacobi", "--window", "4", "--out", str(out)]) == 0
    info = json.loads((out / "sample_info.json").read_text())
    assert info["parallel"] == "jacobi" and info["window"] == 4
    capsys.readouterr()
    assert main([*common, "--parallel", "medusa", "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "unknown parallel decoding 'medusa'" in err and "Traceback" not in err
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p, "eval-generator")
    args = p.parse_args(["--ref", "x", "--parallel", "jacobi", "--window", "8"])
    assert (args.parallel, args.window) == ("jacobi", 8)
