"""The paper's discriminator: a frozen DINO (v1) ViT-S/16 with 5 trainable spectral-norm heads (reference doc 1.9).

Read from the official `commons/discriminator/discriminator_dino.py` (a VAR/StyleGAN-T style DINO discriminator):
images in [-1, 1] are ImageNet-normalised, then (when larger than 224) randomly cropped to 224 with p = 0.5 or
area-resized to 224 (bicubic when smaller); the readouts are patch tokens + CLS after the position embedding and
after blocks 2, 5, 8, 11; each head is SN-Conv1d(k=1)-BNLocal-LeakyReLU, a residual SN-Conv1d(k=9, circular)
-BNLocal-LeakyReLU block scaled by 1/sqrt(2), and SN-Conv1d(k=1) to one logit per token.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from vfmtok.utils.errors import VFMTokError

DINO_URL = "https://dl.fbaipublicfiles.com/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth"
KEY_BLOCKS = (2, 5, 8, 11)
_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class FrozenDINOSmall(nn.Module):
    """DINO ViT-S/16 (timm layout, tanh-GELU as the official copy) returning 5 readouts (B, 384, 196); frozen."""

    excluded_from_checkpoint = True
    size = 224

    def __init__(self, weights: str | Path | None = None):
        super().__init__()
        import timm

        init = {"weight_init": "skip"} if weights is not None else {}  # no random init of weights about to be loaded
        self.vit = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, act_layer="gelu_tanh",
                                     **init)
        if weights is not None:
            self._load(Path(weights))
        m, s = torch.tensor(_MEAN), torch.tensor(_STD)
        self.register_buffer("x_scale", (0.5 / s).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("x_shift", ((0.5 - m) / s).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        super().train(False)

    def _load(self, path: Path) -> None:
        if not path.is_file():
            raise VFMTokError(f"DINO weights not found: {path} (download {DINO_URL})")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise VFMTokError(f"cannot read DINO weights {path}: {str(e).splitlines()[0]}") from None
        if isinstance(state, dict) and isinstance(state.get("teacher"), dict):  # a full DINO training checkpoint
            state = {k[len("backbone."):]: v for k, v in state["teacher"].items() if k.startswith("backbone.")}
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        for k, v in state.items():
            if k.endswith(".attn.qkv.bias"):  # the official copy zeroes the key bias (softmax-invariant anyway)
                c = v.numel() // 3
                state[k] = torch.cat([v[:c], torch.zeros_like(v[c:2 * c]), v[2 * c:]])
        missing, unexpected = self.vit.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise VFMTokError(f"{path} is not a DINO ViT-S/16 checkpoint (missing {len(missing)} keys, "
                              f"unexpected {len(unexpected)}, e.g. {(missing or unexpected)[0]})")

    def train(self, mode: bool = True) -> "FrozenDINOSmall":
        """Always eval."""
        return super().train(False)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images -> normalised 224 x 224 (random 224 crop with p = 0.5 when larger, else resize), fp32.

        The coin and the crop offsets are drawn on x's device and applied by indexing and `where`: no host read, no
        data-dependent branch (both candidates are computed; the resize is cheap next to the ViT)."""
        x = self.x_scale * x.float() + self.x_shift
        h, w = x.shape[-2:]
        s = self.size
        if (h, w) == (s, s):
            return x
        resized = F.interpolate(x, size=(s, s), mode="area" if h > s else "bicubic")
        if not (h > s and w > s):
            return resized
        i = torch.randint(0, h - s + 1, (), device=x.device)
        j = torch.randint(0, w - s + 1, (), device=x.device)
        ar = torch.arange(s, device=x.device)
        crop = x[..., (i + ar)[:, None], (j + ar)[None, :]]
        coin = torch.rand((), device=x.device) <= 0.5
        return torch.where(coin, crop, resized)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Readouts (B, C, L): patch tokens + CLS after the position embedding and after the key blocks."""
        with torch.autocast(x.device.type, enabled=False):
            t = self.vit.patch_embed(self.prepare(x))
            t = torch.cat([self.vit.cls_token.expand(t.shape[0], -1, -1), t], 1) + self.vit.pos_embed
        outs = [(t[:, 1:] + t[:, :1]).transpose(1, 2)]
        for i, blk in enumerate(self.vit.blocks):
            t = blk(t)
            if i in KEY_BLOCKS:
                outs.append((t[:, 1:].float() + t[:, :1].float()).transpose(1, 2))
        return outs


class BatchNormLocal(nn.Module):
    """Batch norm with statistics per group of `virtual_bs` samples (over samples and positions), in fp32."""

    def __init__(self, channels: int, virtual_bs: int = 8, eps: float = 1e-6):
        super().__init__()
        self.virtual_bs, self.eps = virtual_bs, eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = math.ceil(x.shape[0] / self.virtual_bs)
        parts = []
        for g in torch.tensor_split(x.float(), groups, dim=0):
            mean = g.mean(dim=(0, 2), keepdim=True)
            var = g.var(dim=(0, 2), keepdim=True, unbiased=False)
            parts.append((g - mean) / torch.sqrt(var + self.eps))
        return torch.cat(parts) * self.weight[None, :, None] + self.bias[None, :, None]


def _sn_conv(cin: int, cout: int, k: int) -> nn.Conv1d:
    conv = nn.Conv1d(cin, cout, k, padding=k // 2, padding_mode="circular" if k > 1 else "zeros")
    return nn.utils.spectral_norm(conv, n_power_iterations=1, dim=0, eps=1e-12)


class _Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.fn(x) + x) * (1 / math.sqrt(2))


def _block(c: int, k: int) -> nn.Sequential:
    return nn.Sequential(_sn_conv(c, c, k), BatchNormLocal(c), nn.LeakyReLU(0.2))


class DINODiscriminator(nn.Module):
    """Frozen DINO ViT-S/16 + 5 trainable heads -> (B, 5 * 196) logits."""

    def __init__(self, weights: str | Path | None = None, kernel: int = 9):
        super().__init__()
        self.backbone = FrozenDINOSmall(weights)
        c = self.backbone.vit.embed_dim
        self.heads = nn.ModuleList(
            nn.Sequential(_block(c, 1), _Residual(_block(c, kernel)), _sn_conv(c, 1, 1))
            for _ in range(len(KEY_BLOCKS) + 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        acts = self.backbone(x)
        return torch.cat([h(a).flatten(1) for h, a in zip(self.heads, acts)], dim=1)
