"""The paper preset's losses and precision: 2 x MSE, the frozen-DINO discriminator, fp32 attention regions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vfmtok.encoders.base import drop_frozen_state
from vfmtok.tokenizer.base import TokenizerOutput
from vfmtok.tokenizer.config import LossConfig, get_preset
from vfmtok.tokenizer.dino_disc import BatchNormLocal, DINODiscriminator
from vfmtok.tokenizer.losses import TokenizerLoss
from vfmtok.utils.errors import VFMTokError


def test_paper_preset_pixel_loss_is_twice_mse():
    loss_cfg = get_preset("vfmtok-paper").loss
    assert (loss_cfg.pixel_weight, loss_cfg.disc, loss_cfg.pixel_loss) == (2.0, "dino", "l2")
    cfg = LossConfig(pixel_weight=loss_cfg.pixel_weight, lpips_weight=0.0, gan_weight=0.0)
    images, recon = torch.rand(2, 3, 8, 8) * 2 - 1, torch.rand(2, 3, 8, 8) * 2 - 1
    zero = torch.zeros(())
    total, _ = TokenizerLoss(cfg, 8).generator_loss(images, TokenizerOutput(recon, torch.zeros(2, 4), zero, zero), 0)
    expected = F.mse_loss(recon, images) + F.mse_loss(recon, images)  # the official rec_loss
    torch.testing.assert_close(total, expected)


@pytest.fixture(scope="module")
def disc():
    torch.manual_seed(0)
    return DINODiscriminator(None)


def test_dino_discriminator_shapes_and_trainable_heads(disc):
    x = torch.rand(3, 3, 336, 336) * 2 - 1
    assert disc(x).shape == (3, 5 * 196)
    assert all(not p.requires_grad for p in disc.backbone.parameters())
    # per head: SN-Conv1d(384, 384, 1) + BN + SN-Conv1d(384, 384, 9) + BN + SN-Conv1d(384, 1, 1): 7.39M for 5 heads
    per_head = (384 * 384 + 384) + 768 + (384 * 384 * 9 + 384) + 768 + (384 + 1)
    assert sum(p.numel() for p in disc.parameters() if p.requires_grad) == 5 * per_head == 7_386_245
    saved = drop_frozen_state(disc, disc.state_dict())
    assert saved and not any(k.startswith("backbone.") for k in saved)


def test_dino_crop_or_resize(disc):
    x = torch.rand(2, 3, 336, 336) * 2 - 1
    shapes = {tuple(disc.backbone.prepare(x).shape) for _ in range(6)}
    assert shapes == {(2, 3, 224, 224)}
    small = torch.rand(1, 3, 224, 224)
    ref = (small - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 2 + 1) / (2 * torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
    torch.testing.assert_close(disc.backbone.prepare(small), ref)  # 224 in: ImageNet-normalised, not resized


def test_dino_weights_from_file(tmp_path, disc):
    vit = disc.backbone.vit
    state = {k: torch.randn_like(v) for k, v in vit.state_dict().items()}
    torch.save(state, tmp_path / "dino_deitsmall16_pretrain.pth")
    d = DINODiscriminator(tmp_path / "dino_deitsmall16_pretrain.pth")
    torch.testing.assert_close(d.backbone.vit.pos_embed, state["pos_embed"], rtol=0, atol=0)
    b = d.backbone.vit.blocks[0].attn.qkv.bias
    assert torch.equal(b[384:768], torch.zeros(384)) and torch.equal(b[:384], state["blocks.0.attn.qkv.bias"][:384])
    torch.save({"foo": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(VFMTokError, match="not a DINO ViT-S/16"):
        DINODiscriminator(tmp_path / "other.pth")
    with pytest.raises(VFMTokError, match="disc_weights"):
        TokenizerLoss(LossConfig(disc="dino", lpips_weight=0.0), 64)


def test_batchnorm_local_groups_of_eight():
    bn = BatchNormLocal(4)
    x = torch.randn(16, 4, 10)
    y = bn(x)
    g = x[:8]
    ref = (g - g.mean((0, 2), keepdim=True)) / torch.sqrt(g.var((0, 2), keepdim=True, unbiased=False) + 1e-6)
    torch.testing.assert_close(y[:8], ref)
    x2 = x.clone()
    x2[12] += 5.0  # another group: the first group's output must not move
    assert torch.equal(bn(x2)[:8], y[:8]) and not torch.equal(bn(x2)[8:], y[8:])


def test_generator_step_keeps_dino_backbone_frozen(disc):
    loss = TokenizerLoss(LossConfig(disc="patchgan", lpips_weight=0.0, gan_start=0), 64)
    loss.disc = disc  # what LossConfig(disc="dino", disc_pretrained=False) builds, without a second ViT-S init
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    recon = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    zero = torch.zeros(())
    total, logs = loss.generator_loss(images, TokenizerOutput(recon, torch.zeros(2, 4), zero, zero), 0)
    total.backward()
    assert "gen_adv" in logs and recon.grad is not None and recon.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in loss.disc.backbone.parameters())
    assert all(p.requires_grad for p in loss.disc.heads.parameters())


def test_fp32_regions_under_bf16_autocast():
    from vfmtok.tokenizer.region_encoder import RegionEncoder

    torch.manual_seed(0)
    enc = RegionEncoder([16] * 4, 32, 16, 1, 4, 2, 64).eval()
    levels = [torch.randn(2, 16, 6, 6) for _ in range(4)]
    seen = {}

    def hook(name):
        def fn(mod, args, out):
            seen[name] = ([a.detach().clone() if torch.is_tensor(a) else a for a in args], out)
        return fn

    layer = enc.layers[0]
    layer.cross.register_forward_hook(hook("cross"))
    layer.self_attn.register_forward_hook(hook("self"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        enc(levels)
        assert layer.ffn[0](torch.randn(2, 32)).dtype == torch.bfloat16  # autocast is live around the regions
    for name in ("cross", "self"):
        args, out = seen[name]
        assert out.dtype == torch.float32 and all(a.dtype == torch.float32 for a in args if torch.is_tensor(a))
    args, out = seen["cross"]
    torch.testing.assert_close(out, layer.cross(*args), rtol=0, atol=0)  # the same as a plain fp32 call
    args, out = seen["self"]
    torch.testing.assert_close(out, layer.self_attn(*args, causal=True), rtol=0, atol=0)
