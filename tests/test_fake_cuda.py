"""Device placement proven without a GPU: models on a fake CUDA device (FakeTensorMode) run their forwards,
`generate()` and the sampling loop of sample-npz; a tensor made on the CPU inside a forward (a `torch.zeros(...)`
without device=) meets the CUDA tensors and raises, which a real GPU would only show at run time.

Models are built under torch.device("cuda") (those whose init reads values, RAR's and the tokenizer's truncated
normal, are built on the CPU and moved); the forwards run outside that default device, so a stray factory call
lands on the CPU as it would for a user."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from vfmtok.generator import sample as S
from vfmtok.generator.generate import generate
from vfmtok.generator.gpt import create_gpt
from vfmtok.generator.rar import create_rar
from vfmtok.tokenizer.api import VFMTokenizer
from vfmtok.tokenizer.build import build_tokenizer
from vfmtok.tokenizer.config import get_preset

CUDA = torch.device("cuda", 0)


@pytest.fixture(scope="module")
def fake():
    return FakeTensorMode(allow_non_fake_inputs=True)  # real CPU inputs (labels, moved weights) become fake


def tokenizer_model():
    cfg = get_preset("tiny").model
    cfg.encoder_pretrained = False
    torch.manual_seed(0)
    return build_tokenizer(cfg)


def tiny_generators(fake, tok):
    data = dict(vocab_size=tok.codebook_size, num_tokens=tok.num_tokens, token_grid=tuple(tok.token_grid), num_classes=4)
    with fake, torch.device("cuda"):
        gpt = create_gpt("GPT-nano", **data).eval()
    rar = create_rar("RAR-nano", **data).eval()
    with fake:
        rar = rar.to(CUDA)
    return gpt, rar


class Stray(torch.nn.Module):
    """A deliberately bad module: a bias made on the CPU at every call."""

    def forward(self, x):
        return x + torch.ones(x.shape[-1])


def test_a_cpu_tensor_in_a_forward_raises(fake):
    with fake:
        x = torch.zeros(2, 8, device=CUDA)
        with pytest.raises(Exception, match="(?i)device"):
            Stray()(x)
        assert (x + torch.ones(8, device=CUDA)).device == CUDA  # the same sum on one device is fine


def test_models_generate_and_sample_on_fake_cuda(fake, monkeypatch):
    model = tokenizer_model()
    with fake:
        model = model.to(CUDA)
    tok = VFMTokenizer(model)
    gpt, rar = tiny_generators(fake, tok)
    assert gpt.head.weight.device == CUDA and rar.head.weight.device == CUDA and tok.device == CUDA
    with fake:
        x = torch.rand(2, 3, tok.image_size, tok.image_size, device=CUDA) * 2 - 1
        out = model.train()(x)  # training forward: the feature branch runs
        assert out.feature_pred is not None and out.feature_pred.device == CUDA
        model.eval()
        ids = tok.encode(x)
        assert ids.device == CUDA and tok.decode(ids).device == CUDA
        labels = torch.tensor([0, 3], device=CUDA)
        runs = {gpt: dict(cfg_scale=2.0, top_k=5, top_p=0.9), rar: dict(cfg_scale=3.0, cfg_power=1.5, sampler="race")}
        for m, kw in runs.items():  # one generate() each (fake dispatch is slow): CFG, filters, both draws
            logits = m(labels, ids[:, :-1])[0]
            assert logits.device == CUDA and logits.shape == (2, tok.num_tokens, tok.codebook_size)
            assert generate(m, labels, **kw).device == CUDA
        # sample-npz's loop (`generate_images` without the host copy); a CUDA generator needs a real driver
        monkeypatch.setattr(S, "seeded_generator", lambda device, seed: None)
        batches = list(S.image_batches(rar, tok, [0, 1, 2], cfg_scale=1.5, cfg_power=2.0, top_k=3, batch_size=2))
        assert [tuple(b.shape) for b in batches] == [(2, tok.image_size, tok.image_size, 3), (1, tok.image_size, tok.image_size, 3)]


def test_a_jacobi_pass_runs_on_fake_cuda(fake):
    """One speculative Jacobi iteration (window forward, CFG-combined target, verification, fresh drafts) on the
    fake CUDA device; the decode loop itself reads one value per pass (when to stop), which fake tensors cannot."""
    from vfmtok.generator.jacobi import _init_drafts, target_probs, verify, window_step

    data = dict(vocab_size=32, num_tokens=16, token_grid=(4, 4), num_classes=4)
    with fake, torch.device("cuda"):
        gpt = create_gpt("GPT-nano", **data).eval()
    B, K, V = 2, 4, 32
    with fake:
        gpt.setup_caches(2 * B, 17)
        labels = torch.tensor([1, 2], device=CUDA)
        cond = torch.cat([labels, torch.full_like(labels, gpt.null_class)])
        gpt(cond, torch.zeros(2 * B, K - 1, dtype=torch.long, device=CUDA), input_pos=torch.arange(K, device=CUDA))
        window = torch.zeros(2 * B, K, dtype=torch.long, device=CUDA)
        logits = window_step(gpt, window, torch.arange(1, K + 1, device=CUDA))
        scales, guide = torch.full((K,), 2.0, device=CUDA), torch.ones(K, dtype=torch.bool, device=CUDA)
        p = target_probs(logits, B, scales, guide, 1.0, 5, 0.9)
        drafts, q = _init_drafts(p[:, -1], K, "uniform", None)
        new, kept = verify(p, q, drafts, torch.zeros(B, dtype=torch.long, device=CUDA), None)
        fresh, q2 = _init_drafts(p[:, -1], 2, "last", None)
        assert {t.device for t in (logits, p, new, kept, fresh, q2)} == {CUDA}
        assert p.shape == (B, K, V) and new.shape == (B, K) and kept.shape == (B,)
