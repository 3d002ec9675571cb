"""The official VFMTok tokenizer model (VFMTok2 tokenizer/vfmtok/vq_model.py) built and run on CPU, for
benchmarks/official_training.py --tokenizer-model: how far a model-level step gets.

Harness patches, all in this process only: `.cuda()` is a no-op; modules imported for evaluation and storage only
(torch_fidelity, requests, refile) are empty stand-ins; the CUDA MSDeformAttn op is replaced by the checkout's own
PyTorch fallback `ms_deform_attn_core_pytorch`; DINOv2-L/14-reg4 is built by the checkout with random weights and
cut to its first 4 blocks (levels read after blocks 0-3 instead of 5/11/17/23); the quantizer's usage window
(registered as a buffer holding a Parameter that requires grad) is set not to require grad, without which the
official forward fails in training mode. Needs einops, omegaconf, kornia and cv2 on the path (--extra-path).
"""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

import official_harness as H

DEPTH = 4


def _install_stubs() -> None:
    for name in ("torch_fidelity", "requests", "MultiScaleDeformableAttention"):
        sys.modules.setdefault(name, types.ModuleType(name))
    refile = types.ModuleType("refile")
    refile.smart_open = open
    sys.modules.setdefault("refile", refile)


def build(root: Path) -> nn.Module:
    """VQ_models['VQ-16'] with vqgan_train.py's arguments (train_tok.sh: embed 12, z 512) and configs/vfmtok."""
    _install_stubs()
    torch.Tensor.cuda = lambda self, *a, **k: self
    nn.Module.cuda = lambda self, *a, **k: self
    with H.official_root(root, ("commons", "tokenizer")):
        from commons.modules.ops.functions import ms_deform_attn_func as MF
        from commons.modules.ops.modules import ms_deform_attn as MM
        import commons.modules.pretrained_enc.models_pretrained_enc as MPE
        from omegaconf import OmegaConf
        from tokenizer.vfmtok.vq_model import VQ_models

        class Fallback:
            @staticmethod
            def apply(value, shapes, start, locations, weights, im2col_step):
                return MF.ms_deform_attn_core_pytorch(value, shapes, locations, weights)

        MM.MSDeformAttnFunction = Fallback
        full = MPE.dinov2_vitl14_reg

        def reduced(pretrained=False):
            vit = full(pretrained=False)
            vit.blocks, vit.n_blocks = vit.blocks[:DEPTH], DEPTH
            read = vit.forward_features_levels

            def first_blocks(x, levels=None, masks=None):  # the checkout asks for blocks 5/11/17/23 of 24
                return read(x, levels=list(range(DEPTH)), masks=masks)

            vit.forward_features_levels = first_blocks
            return vit

        MPE.dinov2_vitl14_reg, MPE.load_pretrained_dino_v2 = reduced, lambda model, path: model
        cfg = OmegaConf.load(root / "configs" / "vfmtok" / "vfmtok_config.yaml")
        model = VQ_models["VQ-16"](codebook_size=16384, codebook_slots_embed_dim=12, commit_loss_beta=0.25,
                                   entropy_loss_ratio=0.0, dropout_p=0.0, transformer_config=cfg, z_channels=512)
    model.slot_quantize.codebook_used.requires_grad_(False)
    model.freeze_visual_encoder()
    return model.train()


def probe(root: Path, vq_loss: Any) -> dict[str, Any]:
    """Build the model, run one training-mode forward at 336 px (batch 1), and feed its outputs to the official
    VQLoss's feature-cosine term as vqgan_train.py does."""
    t = time.perf_counter()
    torch.manual_seed(0)
    model = build(root)
    built = time.perf_counter() - t
    x = torch.rand(1, 3, 336, 336) * 2 - 1
    t = time.perf_counter()
    (dec, latent, dinov2), diff, _ = model(x)
    out = {"dinov2_blocks": DEPTH, "trainable_params_M": round(sum(p.numel() for p in model.parameters()
                                                                     if p.requires_grad) / 1e6, 2),
           "build_s": round(built, 1), "forward_s": round(time.perf_counter() - t, 1),
           "shapes": {"reconstruction": list(dec.shape), "latent (target)": list(latent.shape),
                      "dinov2 (prediction)": list(dinov2.shape)}}
    try:
        out["feature_cosine"] = float((1 - vq_loss.cos(dinov2, latent)).mean().detach())
    except RuntimeError as e:
        out["feature_cosine_error"] = str(e).splitlines()[0]
    return out
