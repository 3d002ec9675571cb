"""The whole decode step compiled (`generate(compile=...)`): the same ids as eager for the same sampler and seed,
and no recompilation after warm-up across a run with a padded last partial batch (GPT and RAR, CFG on and off)."""

import pytest
import torch
from torch._dynamo.utils import counters

from vfmtok.generator.generate import generate
from vfmtok.generator.gpt import create_gpt
from vfmtok.generator.rar import create_rar

DATA = dict(vocab_size=48, num_tokens=6, token_grid=(2, 3), num_classes=5)


def tiny(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    m = create_gpt("GPT-nano", **DATA) if arch == "gpt" else create_rar("RAR-nano", **DATA)
    with torch.no_grad():  # random, non-zero head and adaLN so that ids depend on the class and on guidance
        for p in m.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return m.eval()


@pytest.mark.parametrize("arch,cfg", [("gpt", 1.0), ("gpt", 3.0), ("rar", 0.0), ("rar", 4.0)])
def test_compiled_whole_step_equals_eager_and_never_recompiles(arch, cfg):
    torch._dynamo.reset()
    m = tiny(arch)
    power = 1.5 if arch == "rar" else None  # RAR's schedule: a different scale every step, read from a tensor
    kw = dict(cfg_scale=cfg, cfg_interval=-1 if arch == "rar" else 1, cfg_power=power, temperature=1.3, top_k=20,
              top_p=0.9, sampler="icdf")
    labels = torch.tensor([0, 3, 4, 1, 2])
    run = lambda lab, seed, **c: generate(m, lab, generator=torch.Generator().manual_seed(seed), **kw, **c)  # noqa: E731
    compiled = lambda lab, seed: run(lab, seed, compile="default", pad_to=3)  # noqa: E731
    compiled(labels[:3], 9)  # warm-up: the one compilation
    counters.clear()
    full, part = compiled(labels[:3], 1), compiled(labels[3:], 2)  # a whole run: batches of 3, the last one of 2
    assert counters["stats"]["unique_graphs"] == 0 and not counters["recompiles"]
    assert torch.equal(full, run(labels[:3], 1)) and torch.equal(part, run(labels[3:], 2))
    assert part.shape == (2, 6)
    assert not torch.equal(full, run(labels[:3], 3))  # the seed matters: the equality above is not vacuous
    if cfg == 3.0:  # the count can fail: a batch of another size, not padded, compiles a second graph
        run(labels[3:], 2, compile="default")
        assert counters["stats"]["unique_graphs"] >= 1

