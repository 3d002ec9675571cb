"""Discriminators for the adversarial loss: PatchGAN, or trainable heads on frozen VGG16 features."""

from __future__ import annotations

import torch
import torch.nn as nn

from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.layout import cpu_channels_last


class PatchGAN(nn.Module):
    """Pix2pix/taming PatchGAN: strided convs -> a map of real/fake logits."""

    def __init__(self, ch: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, ch, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = ch
        for i in range(1, n_layers + 1):
            cout = ch * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(c, cout, 4, stride, 1, bias=False), nn.GroupNorm(min(32, cout // 4), cout), nn.LeakyReLU(0.2)]
            c = cout
        layers.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(cpu_channels_last(x)).contiguous()


class FeatureDiscriminator(nn.Module):
    """Trainable 1x1/3x3 conv heads on every level of a frozen pretrained encoder (VGG16 by default)."""

    def __init__(self, encoder: nn.Module, ch: int = 64):
        super().__init__()
        self.encoder = encoder  # frozen; gradients flow to the input image only
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, ch, 1), nn.LeakyReLU(0.2), nn.Conv2d(ch, ch, 3, padding=1),
                          nn.LeakyReLU(0.2), nn.Conv2d(ch, 1, 1))
            for c, _, _ in encoder.level_shapes()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The encoder's forward() runs without grad; here the generator needs gradients through it.
        levels, _ = self.encoder._features(self.encoder.preprocess(x))
        return torch.cat([h(f).flatten(1) for h, f in zip(self.heads, levels)], dim=1)


def build_discriminator(kind: str, image_size: int, ch: int = 64, n_layers: int = 3, weights: str | None = None,
                        pretrained: bool = True) -> nn.Module:
    """'patchgan', 'vgg_features' or 'dino' (frozen DINO ViT-S/16 from the local file `weights`)."""
    if kind == "dino":
        from vfmtok.tokenizer.dino_disc import DINO_URL, DINODiscriminator

        if pretrained and not weights:
            raise VFMTokError(f"the DINO discriminator needs loss.disc_weights=<dino_deitsmall16_pretrain.pth> "
                              f"(from {DINO_URL}), or loss.disc_pretrained=false for a random frozen backbone")
        return DINODiscriminator(weights if pretrained else None)
    if kind == "patchgan":
        return PatchGAN(ch, n_layers)
    if kind == "vgg_features":
        from vfmtok.encoders import create_encoder

        return FeatureDiscriminator(create_encoder("vgg16_imagenet", pretrained=True, image_size=image_size), ch)
    raise VFMTokError(f"unknown discriminator '{kind}' (patchgan, vgg_features, dino)")
