"""benchmarks/gpt_heldout_loss.py: the batched mean loss equals a naive per-token mean; NAME=DIR arguments parse."""

import pytest
import torch

from vfmtok.generator.gpt import create_gpt


def test_mean_loss_is_the_per_token_mean_over_uneven_batches(load_benchmark):
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
    got = load_benchmark("gpt_heldout_loss").mean_loss(m, ids, labels, batch=3)  # batches of 3, 3, 1
    assert abs(got - naive) < 1e-5


def test_named_dirs_splits_at_the_last_equals_sign_and_refuses_a_bare_path(load_benchmark):
    named_dirs = load_benchmark("reproduce_imagenette").named_dirs
    assert named_dirs(["a=x/y", "TENCROP=1: b=/r/z"]) == {"a": "x/y", "TENCROP=1: b": "/r/z"}
    with pytest.raises(SystemExit, match="want NAME=DIR"):
        named_dirs(["runs/export"])
