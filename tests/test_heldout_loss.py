"""benchmarks/gpt_heldout_loss.py: the batched mean loss equals a naive per-sequence sum of -log p(next token)."""

import importlib.util
from pathlib import Path

import torch

from vfmtok.generator.gpt import create_gpt

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("gpt_heldout_loss", ROOT / "benchmarks" / "gpt_heldout_loss.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mean_loss_is_the_per_token_mean_over_uneven_batches():
    torch.manual_seed(0)
    m = create_gpt("GPT-nano", vocab_size=40, num_tokens=6, token_grid=(2, 3), num_classes=4).eval()
    ids, labels = torch.randint(0, 40, (7, 6)), torch.randint(0, 4, (7,))
    nll = []
    with torch.no_grad():
        for i in range(7):  # one sequence at a time: class token predicts ids[0], ids[t-1] predicts ids[t]
            logits, _ = m(labels[i:i + 1], ids[i:i + 1, :-1])
            logp = torch.log_softmax(logits[0], -1)
            nll += [-logp[t, ids[i, t]].item() for t in range(6)]
    naive = sum(nll) / len(nll)
    got = _bench().mean_loss(m, ids, labels, batch=3)  # batches of 3, 3, 1
    assert abs(got - naive) < 1e-5
