"""The official trainers' rules the paper presets take (issue 33; benchmarks/official_training.py compares the step)."""

import torch
import torch.nn as nn

from vfmtok.tokenizer.config import get_preset
from vfmtok.train import common as C
from vfmtok.train import generator_arch as G
from vfmtok.train.generator import GeneratorTrainConfig


def test_warmup_variants_match_their_reference_formulas():
    # 1d-tokenizer (LambdaLR stepped after the optimizer): step s runs at lr * s / W, the first at 0
    assert [C.lr_at(s, 4e-4, 4, 16, "cosine", 1e-5, warmup_from_one=False) for s in range(3)] == [0.0, 1e-4, 2e-4]
    # timm's CosineLRScheduler as VFMTok2 steps it (step_update(s + 1) first): init + (s + 1) * (lr - init) / W
    lrs = [C.lr_at(s, 1e-4, 4, 100, "constant", warmup_init=1e-7) for s in range(6)]
    want = [1e-7 + (s + 1) * (1e-4 - 1e-7) / 4 for s in range(3)] + [1e-4] * 3
    assert max(abs(a - b) for a, b in zip(lrs, want)) < 1e-18
    assert C.lr_at(0, 1e-4, 4, 100) == 2.5e-5  # the project's default is unchanged


def test_ema_without_warmup_uses_the_fixed_decay():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    fixed, warm = C.EMA(model, 0.9, warmup=False), C.EMA(model, 0.9)
    before = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    fixed.update(model, step=0)
    warm.update(model, step=0)  # warm-up decay min(0.9, 1/10) = 0.1
    torch.testing.assert_close(fixed.module.weight, before + 0.1)
    torch.testing.assert_close(warm.module.weight, before + 0.9)


def test_paper_presets_take_the_official_rules():
    t, loss = get_preset("vfmtok-paper").train, get_preset("vfmtok-paper").loss
    assert (t.weight_decay, t.ema_decay, t.ema_warmup, t.warmup_init_lr) == (0.0, 0.9999, False, 1e-7)
    assert loss.gan_start == 19_999  # vqgan_train.py's global_step is train_steps + 1
    small = get_preset("vfmtok-cpu-64").train
    assert small.ema_warmup and small.warmup_init_lr == 0.0
    gpt_b = GeneratorTrainConfig(**G.base_fields("GPT-B", "gpt", {}))
    tiny = GeneratorTrainConfig(**G.base_fields("GPT-tiny", "gpt", {}))
    rar = GeneratorTrainConfig(**G.base_fields("RAR-B", "rar", {}))
    assert (gpt_b.ema_warmup, tiny.ema_warmup) == (False, True)
    assert (rar.warmup_from_one, gpt_b.warmup_from_one) == (False, True)
