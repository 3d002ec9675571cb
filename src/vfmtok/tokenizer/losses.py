"""Tokenizer losses: pixel, LPIPS, feature cosine, VQ terms, and the adversarial game."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vfmtok.tokenizer.base import TokenizerOutput
from vfmtok.tokenizer.config import LossConfig
from vfmtok.tokenizer.discriminator import build_discriminator
from vfmtok.utils.errors import VFMTokError


def feature_cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean over positions of 1 - cos(pred, target) along channels; (B,C,H,W) each."""
    if pred.shape != target.shape:
        raise ValueError(f"feature shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    return (1.0 - F.cosine_similarity(pred.float(), target.float(), dim=1)).mean()


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """0.5 * (relu(1 - D(x)) + relu(1 + D(x_hat)))."""
    return 0.5 * (F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean())


class TokenizerLoss(nn.Module):
    """Generator-side total loss and the discriminator's loss, with every weight from LossConfig."""

    def __init__(self, cfg: LossConfig, image_size: int):
        super().__init__()
        self.cfg = cfg
        if cfg.pixel_loss not in ("l1", "l2"):
            raise VFMTokError(f"pixel_loss must be l1 or l2, got '{cfg.pixel_loss}'")
        self.lpips = None
        if cfg.lpips_weight > 0:
            from vfmtok.encoders.lpips import LPIPS

            self.lpips = LPIPS(net=cfg.lpips_net)
        self.disc = build_discriminator(cfg.disc, image_size, cfg.disc_ch, cfg.disc_layers, cfg.disc_weights,
                                        cfg.disc_pretrained) if cfg.gan_weight > 0 else None

    def gan_active(self, step: int) -> bool:
        return self.disc is not None and step >= self.cfg.gan_start

    def generator_loss(self, images: torch.Tensor, out: TokenizerOutput, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss for the tokenizer and a dict of its (unweighted) terms."""
        c = self.cfg
        recon = out.recon.float()
        pix = F.mse_loss(recon, images) if c.pixel_loss == "l2" else F.l1_loss(recon, images)
        total = c.pixel_weight * pix + c.codebook_weight * out.codebook_loss + out.commit_loss
        logs = {"pixel": pix.item(), "codebook": out.codebook_loss.item(), "commit": out.commit_loss.item()}
        if self.lpips is not None:
            lp = self.lpips(recon, images).mean()
            total = total + c.lpips_weight * lp
            logs["lpips"] = lp.item()
        if out.feature_pred is not None and c.feature_weight > 0:
            fl = feature_cosine_loss(out.feature_pred, out.feature_target)
            total = total + c.feature_weight * fl
            logs["feature"] = fl.item()
        if self.gan_active(step):
            self.disc.requires_grad_(False)  # no D gradients from the G step
            g = F.softplus(-self.disc(recon)).mean()
            self.disc.requires_grad_(True)
            for m in self.disc.modules():  # frozen backbones (VGG16, DINO) stay frozen
                if getattr(m, "excluded_from_checkpoint", False):
                    m.requires_grad_(False)
            total = total + c.gan_weight * g
            logs["gen_adv"] = g.item()
        logs["total"] = total.item()
        return total, logs

    def discriminator_loss(self, images: torch.Tensor, recon: torch.Tensor,
                           disc: nn.Module | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Hinge loss of D (or its DDP wrapper `disc`) on real images vs detached reconstructions, times the GAN weight."""
        disc = disc or self.disc
        real = disc(images.detach())
        fake = disc(recon.detach().float())
        d = hinge_d_loss(real, fake)
        return self.cfg.gan_weight * d, {"disc": d.item(), "logits_real": real.mean().item(), "logits_fake": fake.mean().item()}
