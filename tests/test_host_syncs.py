"""Training steps without host syncs: no `.item()`-like read of the device between log steps, and the tokenizer's
loss in one dynamo graph (docs/training-hot-paths.md)."""

from __future__ import annotations

import pytest
import torch

from vfmtok.tokenizer.build import build_tokenizer
from vfmtok.tokenizer.config import get_preset
from vfmtok.tokenizer.dino_disc import FrozenDINOSmall
from vfmtok.train import common as C
from vfmtok.train.tokenizer import build_parts, tokenizer_step
from vfmtok.utils.syncs import HostSyncCounter, host_step_counters

CPU = torch.device("cpu")


def test_counter_sees_every_kind_of_read():
    x = torch.arange(4.0)
    with HostSyncCounter() as c:
        y = x * 2  # device work only
    assert c.count == 0
    with HostSyncCounter() as c:
        x.sum().item(), float(x[1]), int(x[2]), bool(x[3] > 0), x.nonzero()
    assert c.ops == {"aten._local_scalar_dense": 4, "aten.nonzero": 1}
    # Exempt only by identity, not by value; the counter holds the exempt tensor so that its id is never reused by
    # a fresh view (repeated because id reuse depends on the allocator).
    counts = []
    for _ in range(200):
        with HostSyncCounter(host_scalars=[y[0]]) as c:
            float(y[0]), float(y[1])
        counts.append(c.count)
    assert set(counts) == {2}


def paper_layout_small():
    """The paper preset's layout (DINOv2-reg encoder, ViT decoder with the official interpolation and feature norm,
    dual reconstruction, 2 x MSE, LPIPS-VGG, the frozen-DINO discriminator) at a size a CPU steps in seconds."""
    cfg = get_preset("vfmtok-paper")
    m = cfg.model
    m.encoder, m.encoder_pretrained, m.image_size, m.encoder_input_size = "dinov2_vits14_reg", False, 64, 56
    m.num_tokens, m.width, m.enc_depth, m.enc_heads, m.enc_ffn = 16, 64, 1, 4, 128
    m.codebook_size, m.dec_depth, m.dec_heads, m.pix_ch = 256, 1, 4, 16
    cfg.loss.gan_start, cfg.loss.disc_pretrained = 0, False  # GAN on from the first step, random frozen DINO
    cfg.train.batch_size, cfg.train.precision, cfg.train.warmup_steps = 2, "fp32", 1
    return cfg


@pytest.fixture(scope="module")
def paper_parts():
    torch.manual_seed(0)
    cfg = paper_layout_small()
    assert cfg.loss.lpips_weight > 0 and cfg.loss.gan_weight > 0 and cfg.loss.disc == "dino"
    model = build_tokenizer(cfg.model).train()
    return cfg, build_parts(cfg, model, C.DistInfo())


@pytest.mark.slow
def test_tokenizer_step_reads_nothing_from_the_device_between_log_steps(paper_parts):
    cfg, p = paper_parts
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    meter = C.LogMeter()
    logs, _ = tokenizer_step(p, [(x, None)], 0, cfg, CPU)  # creates the optimiser states
    meter.add(logs)
    with HostSyncCounter(host_scalars=host_step_counters(p.opt, p.opt_d)) as c:
        logs, _ = tokenizer_step(p, [(x, None)], 1, cfg, CPU)
        meter.add(logs)
    assert {"gen_adv", "disc", "lpips", "feature", "grad_norm"} <= set(logs)  # every term ran
    assert c.count == 0, c.ops
    with HostSyncCounter() as c:  # the log step: one read of every term at once
        means = meter.read()
    assert set(means) == set(logs) and all(isinstance(v, float) for v in means.values())
    with HostSyncCounter(host_scalars=host_step_counters(p.opt, p.opt_d)) as c:  # the counter would see a read
        logs, _ = tokenizer_step(p, [(x, None)], 2, cfg, CPU)
        float(logs["total"])
    assert c.ops["aten._local_scalar_dense"] == 1


def test_dino_discriminator_crops_without_reading_the_device():
    torch.manual_seed(0)
    b = FrozenDINOSmall.__new__(FrozenDINOSmall)  # prepare() only: no ViT needed
    torch.nn.Module.__init__(b)
    b.register_buffer("x_scale", torch.ones(1, 3, 1, 1))
    b.register_buffer("x_shift", torch.zeros(1, 3, 1, 1))
    x = torch.arange(3 * 300 * 300, dtype=torch.float32).view(1, 3, 300, 300)
    crops = 0
    with HostSyncCounter() as c:
        outs = [b.prepare(x) for _ in range(12)]
    assert c.count == 0
    for y in outs:
        r, col = divmod(int(y[0, 0, 0, 0]), 300)
        if torch.equal(y, x[..., r:r + 224, col:col + 224]):
            crops += 1
        else:  # otherwise the area resize of the whole image
            torch.testing.assert_close(y, torch.nn.functional.interpolate(x, size=(224, 224), mode="area"))
    assert 0 < crops < 12  # both branches are taken (p = 0.5 each; 12 draws with this seed)


@pytest.mark.slow
def test_tokenizer_loss_is_one_dynamo_graph(paper_parts):
    cfg, p = paper_parts
    model = p.model
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    out = model(x)
    torch._dynamo.reset()
    p.losses.disc.requires_grad_(False)  # as generator_loss sets it around the compiled part
    try:
        ex = torch._dynamo.explain(p.losses.generator_terms)(x, out, True)
    finally:
        p.losses.disc.heads.requires_grad_(True)
    assert ex.graph_count == 1 and ex.graph_break_count == 0, ex.break_reasons

    def with_a_read(images, o, adversarial):
        total, logs = p.losses.generator_terms(images, o, adversarial)
        return total * float(logs["pixel"])  # a host read inside: dynamo must break the graph here

    torch._dynamo.reset()
    assert torch._dynamo.explain(with_a_read)(x, out, False).graph_break_count >= 1


@pytest.mark.parametrize("preset", ["GPT-nano", "RAR-nano"])
def test_generator_step_reads_nothing_from_the_device_between_log_steps(preset):
    from vfmtok.train import generator_arch as G
    from vfmtok.train.generator import GeneratorTrainConfig, generator_step

    facts = {"vocab_size": 64, "num_tokens": 16, "token_grid": (4, 4), "num_classes": 3}
    arch = G.arch_of_preset(preset)
    cfg = GeneratorTrainConfig(**{**G.base_fields(preset, arch, facts), "steps": 10, "ema_decay": 0.99, "precision": "fp32"})
    torch.manual_seed(0)
    model = G.build_model(cfg)
    opt = torch.optim.AdamW(C.param_groups(model, cfg.weight_decay), lr=cfg.lr)
    ema = C.EMA(model, cfg.ema_decay)
    g = torch.Generator().manual_seed(1)
    micro = [(torch.randint(0, 64, (4, 16), generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(2)]
    meter = C.LogMeter()
    loss, gnorm, _ = generator_step(model, opt, micro, 0, cfg, CPU, ema)
    with HostSyncCounter(host_scalars=host_step_counters(opt)) as c:
        loss, gnorm, _ = generator_step(model, opt, micro, 1, cfg, CPU, ema)  # 2 micro-batches, EMA on
        meter.add({"loss": loss, "grad_norm": gnorm})
    assert c.count == 0, c.ops
    with HostSyncCounter() as c:
        float(loss)
    assert c.count == 1


def test_compiled_tokenizer_training_compiles_once_across_steps():
    """As `--compile` trains (the model compiled in place, the loss terms beside it), steps after the first reuse
    the graphs: the quantizer's usage window changes every step and must not be a guard (as a Python int it cost a
    recompile per step, then eager fallback at the cache limit); the loss terms add one graph when the GAN starts."""
    from torch._dynamo.testing import CompileCounter

    torch.manual_seed(0)
    cfg = paper_layout_small()
    cfg.loss.gan_start = 2
    model = build_tokenizer(cfg.model).train()
    torch._dynamo.reset()
    on_model, on_loss = CompileCounter(), CompileCounter()
    model.compile(backend=on_model)
    p = build_parts(cfg, model, C.DistInfo())
    p.losses.generator_terms = torch.compile(p.losses.generator_terms, backend=on_loss)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    counts = []
    for step in range(4):
        tokenizer_step(p, [(x, None)], step, cfg, CPU)
        counts.append((on_model.frame_count, on_loss.frame_count))
    m, g = counts[0]
    assert m >= 1 and g >= 1 and counts == [(m, g), (m, g), (m, g + 1), (m, g + 1)], counts
    assert int(model.quantizer._recent_pos) == 4 * 2 * cfg.model.num_tokens  # the window still advances


@pytest.mark.parametrize("preset", ["GPT-nano", "RAR-nano"])
def test_compiled_generator_blocks_compile_once_across_steps(preset):
    """The generator trainer compiles each block in place (`train.generator._wrap`); steps after the first reuse
    the graphs (RAR's per-step random order included)."""
    from torch._dynamo.testing import CompileCounter

    from vfmtok.train import generator_arch as G
    from vfmtok.train.generator import GeneratorTrainConfig, generator_step

    facts = {"vocab_size": 64, "num_tokens": 16, "token_grid": (4, 4), "num_classes": 3}
    cfg = GeneratorTrainConfig(**{**G.base_fields(preset, G.arch_of_preset(preset), facts), "steps": 10,
                                  "precision": "fp32"})
    torch.manual_seed(0)
    model = G.build_model(cfg)
    torch._dynamo.reset()
    counter = CompileCounter()
    for blk in model.blocks:
        blk.compile(backend=counter)
    opt = torch.optim.AdamW(C.param_groups(model, cfg.weight_decay), lr=cfg.lr)
    g = torch.Generator().manual_seed(1)
    micro = [(torch.randint(0, 64, (4, 16), generator=g), torch.randint(0, 3, (4,), generator=g))]
    counts = []
    for step in range(4):
        generator_step(model, opt, micro, step, cfg, CPU)
        counts.append(counter.frame_count)
    assert counts[0] >= 1 and counts == [counts[0]] * 4
