"""Training pieces checked with numbers: LR schedule, EMA warm-up, hinge and feature-cosine losses, resume equality."""

import math
import zipfile

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from vfmtok.data.sources import EMBEDDED_SAMPLE
from vfmtok.tokenizer.losses import feature_cosine_loss, hinge_d_loss
from vfmtok.train.common import EMA, lr_at
from vfmtok.utils.errors import VFMTokError


def test_lr_warmup_is_linear_then_constant():
    assert [lr_at(s, 1.0, 4, 100) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_at(0, 3e-4, 0, 10) == 3e-4  # no warm-up


def test_lr_cosine_starts_at_peak_ends_at_min_and_is_halfway_in_the_middle():
    base, lo, warm, total = 2e-3, 1e-5, 10, 110
    assert lr_at(warm, base, warm, total, "cosine", lo) == pytest.approx(base)
    assert lr_at(warm + 50, base, warm, total, "cosine", lo) == pytest.approx((base + lo) / 2)
    assert lr_at(total, base, warm, total, "cosine", lo) == pytest.approx(lo)
    assert lr_at(total + 40, base, warm, total, "cosine", lo) == pytest.approx(lo)  # stays at the floor
    t = 0.3
    want = lo + 0.5 * (base - lo) * (1 + math.cos(math.pi * t))
    assert lr_at(warm + 30, base, warm, total, "cosine", lo) == pytest.approx(want)
    values = [lr_at(s, base, warm, total, "cosine", lo) for s in range(warm, total + 1)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone decay
    with pytest.raises(VFMTokError, match="unknown lr schedule"):
        lr_at(50, base, warm, total, "linear")


def test_ema_warmup_decay_and_frozen_parts():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    model[1].weight.requires_grad_(False)  # frozen: copied once, never averaged
    ema = EMA(model, decay=0.999)
    p0 = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].weight.add_(5.0)
        model[1].running_mean.fill_(7.0)
    ema.update(model, step=0)  # warm-up decay min(0.999, 1/10) = 0.1
    assert torch.allclose(ema.module[0].weight, 0.1 * p0 + 0.9 * (p0 + 1.0))
    assert torch.equal(ema.module[1].running_mean, torch.full((2,), 7.0))  # buffers are copied
    assert torch.equal(ema.module[1].weight, torch.ones(2))  # frozen parameter untouched
    before = ema.module[0].weight.clone()
    ema.update(model, step=10**6)  # late: the configured decay caps the warm-up value
    assert torch.allclose(ema.module[0].weight, 0.999 * before + 0.001 * (p0 + 1.0))
    before = ema.module[0].weight.clone()
    ema.update(model, step=5)  # (1+5)/(10+5) = 0.4
    assert torch.allclose(ema.module[0].weight, 0.4 * before + 0.6 * (p0 + 1.0))


def test_hinge_loss_values_and_margin():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5])
    assert float(hinge_d_loss(real, fake)) == pytest.approx(0.5 * ((0 + 0.5) / 2 + (0 + 1.5) / 2))
    r = torch.tensor([1.5, 3.0], requires_grad=True)
    f = torch.tensor([-1.2, -4.0], requires_grad=True)
    loss = hinge_d_loss(r, f)
    loss.backward()
    assert float(loss.detach()) == 0.0 and r.grad.abs().sum() == 0 and f.grad.abs().sum() == 0  # beyond the margin: no push
    r2 = torch.tensor([0.0], requires_grad=True)
    hinge_d_loss(r2, torch.tensor([0.0])).backward()
    assert float(r2.grad) == pytest.approx(-0.5)  # raise D(real) inside the margin


def test_feature_cosine_loss_matches_a_per_position_reference():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 5, 3, 4, generator=g), torch.randn(2, 5, 3, 4, generator=g)
    ref = []
    for b in range(2):
        for y in range(3):
            for x in range(4):
                u, v = pred[b, :, y, x], target[b, :, y, x]
                ref.append(1 - float(u @ v) / float(u.norm() * v.norm()))
    assert float(feature_cosine_loss(pred, target)) == pytest.approx(sum(ref) / len(ref), abs=1e-6)
    assert float(feature_cosine_loss(pred, 3.0 * pred)) == pytest.approx(0.0, abs=1e-6)  # scale-free
    assert float(feature_cosine_loss(pred, -pred)) == pytest.approx(2.0, abs=1e-6)
    with pytest.raises(ValueError, match="feature shapes differ"):
        feature_cosine_loss(pred, target[:, :4])
    assert F.cosine_similarity(pred, pred, dim=1).shape == (2, 3, 4)  # channels are dim 1, as the loss assumes


@pytest.fixture(scope="module")
def one_image_folder(tmp_path_factory):
    """One sample image in one class folder: with batch size 1 every epoch is that image, whatever the shuffle."""
    root = tmp_path_factory.mktemp("one")
    with zipfile.ZipFile(EMBEDDED_SAMPLE) as z:
        name = sorted(n for n in z.namelist() if n.endswith(".jpg") and "/train/" in n)[0]
        (root / "c").mkdir()
        (root / "c" / "a.jpg").write_bytes(z.read(name))
    return root


@pytest.mark.slow
def test_tokenizer_resume_reaches_the_uninterrupted_weights(tmp_path, one_image_folder):
    """Resumed after 2 of 4 steps == trained 4 steps straight, bit for bit (CPU).

    One image, batch 1: the data each step sees does not depend on where the loader restarts. With more images
    a resumed run sees another batch order (the shuffle position is not restored on resume yet), and parameters
    whose gradient is zero in exact arithmetic (biases before a GroupNorm) then drift apart at float-noise level.
    """
    from test_train_tokenizer import tiny_run
    from vfmtok.train.tokenizer import train_tokenizer

    def cfg(steps):
        c = tiny_run(steps, save_every=2, data=str(one_image_folder))
        c.train.batch_size = 1
        return c

    straight = train_tokenizer(cfg(4), tmp_path / "a")
    train_tokenizer(cfg(2), tmp_path / "b")
    mid = load_file(tmp_path / "b" / "checkpoints" / "step_0000002" / "model.safetensors")
    resumed = train_tokenizer(cfg(4), tmp_path / "b", resume=True)
    assert straight.name == resumed.name == "step_0000004"
    a = load_file(straight / "model.safetensors")  # EMA weights
    b = load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys() and len(a) > 10
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert any(not torch.equal(a[k], mid[k]) for k in a)  # the last two steps did change the weights
    sa = torch.load(straight / "train_state.pt", weights_only=True)
    sb = torch.load(resumed / "train_state.pt", weights_only=True)
    assert sa["step"] == sb["step"] == 4
    assert [k for k in sa["model"] if not torch.equal(sa["model"][k], sb["model"][k])] == []
