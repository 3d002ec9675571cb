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

    def generator_loss(self, images: torch.Tensor, out: TokenizerOutput, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss for the tokenizer and a dict of its (unweighted) terms as detached 0-dim tensors.

        The terms stay on the device: reading them (`float`) waits for the device, so trainers read them only at log steps.
        """
        adversarial = self.gan_active(step)
        if not adversarial:
            return self.generator_terms(images, out, False)
        self.disc.requires_grad_(False)  # no D gradients from the G step
        try:
            return self.generator_terms(images, out, True)
        finally:
            self.disc.requires_grad_(True)
            for m in self.disc.modules():  # frozen backbones (VGG16, DINO) stay frozen
                if getattr(m, "excluded_from_checkpoint", False):
                    m.requires_grad_(False)

    def generator_terms(self, images: torch.Tensor, out: TokenizerOutput, adversarial: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The tensor part of generator_loss (no host reads, no data-dependent branch: one graph under torch.compile)."""
        c = self.cfg
        recon = out.recon.float()
        pix = F.mse_loss(recon, images) if c.pixel_loss == "l2" else F.l1_loss(recon, images)
        total = c.pixel_weight * pix + c.codebook_weight * out.codebook_loss + out.commit_loss
        logs = {"pixel": pix, "codebook": out.codebook_loss, "commit": out.commit_loss}
        if self.lpips is not None:
            lp = self.lpips(recon, images).mean()
            total = total + c.lpips_weight * lp
            logs["lpips"] = lp
        if out.feature_pred is not None and c.feature_weight > 0:
            fl = feature_cosine_loss(out.feature_pred, out.feature_target)
            total = total + c.feature_weight * fl
            logs["feature"] = fl
        if adversarial:
            g = F.softplus(-self.disc(recon)).mean()
            total = total + c.gan_weight * g
            logs["gen_adv"] = g
        logs["total"] = total
        return total, {k: v.detach() for k, v in logs.items()}

    def discriminator_loss(self, images: torch.Tensor, recon: torch.Tensor,
                           disc: nn.Module | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Hinge loss of D (or its DDP wrapper `disc`) on real images vs detached reconstructions, times the GAN weight;
        its terms as detached 0-dim tensors."""
        disc = disc or self.disc
        real = disc(images.detach())
        fake = disc(recon.detach().float())
        d = hinge_d_loss(real, fake)
        logs = {"disc": d, "logits_real": real.mean(), "logits_fake": fake.mean()}
        return self.cfg.gan_weight * d, {k: v.detach() for k, v in logs.items()}
