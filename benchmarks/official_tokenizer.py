"""The tokenizer objective and update against CVMI-Lab/VFMTok2 tokenizer/utils/vqgan_train.py, for
benchmarks/official_training.py.

What runs from the checkout: VQLoss (its __init__ and forward, commons/losses/vq_loss.py, with gan_loss.py's
softplus_g_loss), the learning-rate scheduler (commons/engine/lr_scheduler.py, timm's CosineLRScheduler) and
update_ema (commons/engine/ema.py); the optimizer is the one vqgan_train.py builds (torch.optim.Adam, its betas).
VQLoss.__init__ would download VGG16/LPIPS and DINO weights; it is given stand-ins instead, one shared object per
network for both arms (a small random perceptual network, this project's DINO discriminator with a random frozen
backbone), so the comparison is of how the terms are formed, weighted and scheduled, not of those networks.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

import official_harness as H
from vfmtok.tokenizer.base import TokenizerOutput
from vfmtok.tokenizer.config import get_preset
from vfmtok.tokenizer.dino_disc import DINODiscriminator
from vfmtok.tokenizer.losses import TokenizerLoss
from vfmtok.train import common as C


class StandInPerceptual(nn.Module):
    """A fixed random two-layer conv distance, (B, 1, 1, 1) like LPIPS; the same instance serves both arms."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(8, 8, 3, 2, 1)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.2
            p.requires_grad_(False)

    def forward(self, x, y):
        f = lambda t: self.c2(F.relu(self.c1(t)))  # noqa: E731
        return (f(x) - f(y)).pow(2).mean(dim=(1, 2, 3), keepdim=True)


class OfficialDiscCall(nn.Module):
    """DinoDisc's call convention, forward(input0, input1=None) -> (D(input0), D(input1) or None), around ours."""

    def __init__(self, disc: nn.Module):
        super().__init__()
        self.d = disc

    def forward(self, input0, input1=None):
        return self.d(input0), self.d(input1) if input1 is not None else None


def load_official(root: Path, perceptual: nn.Module, disc: nn.Module) -> dict[str, Any]:
    """VQLoss built by its own __init__ (vqgan_train.py's arguments), the scheduler factory and update_ema."""
    gan = H.load_defs(root / "commons" / "losses" / "gan_loss.py", ("softplus_g_loss",), {"torch": torch})
    env = {"torch": torch, "nn": nn, "F": F, **gan, "LPIPS": lambda: perceptual, "get_world_size": lambda: 1,
           "DINODiscriminator": lambda norm_type: OfficialDiscCall(disc), "StyleGANDiscriminator": None,
           "PatchGANDiscriminator": None}
    d = H.load_defs(root / "commons" / "losses" / "vq_loss.py",
                    ("hinge_d_loss", "vanilla_d_loss", "non_saturating_d_loss", "hinge_gen_loss",
                     "non_saturating_gen_loss", "adopt_weight", "VQLoss"), env)
    # vqgan_train.py: VQLoss(disc_start=args.disc_start, ...) with its argparse defaults (train_tok.sh keeps them)
    vq = d["VQLoss"](disc_start=20000, disc_weight=0.5, disc_type="dinogan", disc_loss="hinge",
                     gen_adv_loss="softplus_g_loss", image_size=336, perceptual_weight=1.0,
                     reconstruction_weight=1.0, reconstruction_loss="l2", codebook_weight=1.0)
    sched = H.load_file(root / "commons" / "engine" / "lr_scheduler.py", "official_vfmtok_lr_scheduler")
    ema = H.load_file(root / "commons" / "engine" / "ema.py", "official_vfmtok_ema")
    return {"vq_loss": vq, "build_scheduler": sched.build_scheduler, "update_ema": ema.update_ema}


def _inputs(seed: int, batch: int = 2, size: int = 224, ch: int = 16, side: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    return {"images": images, "recon": (images + 0.3 * torch.randn(images.shape, generator=g)).clamp(-1, 1),
            "pred": torch.randn(batch, ch, side, side, generator=g), "target": torch.randn(batch, ch, side, side, generator=g),
            "cb": torch.rand((), generator=g), "commit": 0.25 * torch.rand((), generator=g)}


def _leaves(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.clone().requires_grad_(True) if k != "images" and k != "target" else v.clone()) for k, v in x.items()}


def paired_loss(loss_cfg: Any, perceptual: nn.Module, disc: nn.Module) -> TokenizerLoss:
    """TokenizerLoss with the given (paper) weights around the shared stand-in networks (built without them, as
    their constructors would download weights)."""
    ours = TokenizerLoss(dataclasses.replace(loss_cfg, lpips_weight=0.0, disc="patchgan", gan_weight=0.0), 336)
    ours.cfg, ours.lpips, ours.disc = loss_cfg, perceptual, disc
    return ours


def loss_compare(root: Path, steps: tuple[int, ...] = (19998, 19999, 20000), **loss_fields: Any) -> dict[str, Any]:
    """Generator and discriminator losses of VQLoss.forward vs TokenizerLoss on the same inputs, around the GAN start."""
    torch.manual_seed(0)
    perceptual, disc = StandInPerceptual(), DINODiscriminator(None).train()
    O = load_official(root, perceptual, disc)
    cfg = get_preset("vfmtok-paper")
    cfg.loss = dataclasses.replace(cfg.loss, **loss_fields)
    ours = paired_loss(cfg.loss, perceptual, disc)
    out: dict[str, Any] = {"paper_loss_config": {k: getattr(cfg.loss, k) for k in (
        "pixel_loss", "pixel_weight", "lpips_weight", "feature_weight", "codebook_weight", "gan_weight", "gan_start")}}
    for step in steps:
        x = _inputs(step)
        a, b = _leaves(x), _leaves(x)
        # official: latent / dinov2 are (B, N, C) token rows; ours (B, C, h, w) maps of the same features
        tok = lambda t: t.flatten(2).transpose(1, 2)  # noqa: E731
        cb = (a["cb"], a["commit"], torch.zeros(()), torch.zeros(()))
        torch.manual_seed(step)
        l_off, sim = O["vq_loss"](cb, a["images"], (a["recon"], tok(a["target"]), tok(a["pred"])), optimizer_idx=0,
                                  global_step=step + 1, last_layer=None, logger=None)  # vqgan_train: train_steps + 1
        l_off.backward()
        torch.manual_seed(step)
        o = TokenizerOutput(b["recon"], torch.zeros(2, 16, dtype=torch.long), b["cb"], b["commit"], b["pred"], b["target"])
        l_ours, logs = ours.generator_loss(b["images"], o, step)
        l_ours.backward()
        d_off = O["vq_loss"](cb, x["images"], (x["recon"], None, None), optimizer_idx=1, global_step=step + 1)
        d_ours = ours.discriminator_loss(x["images"], x["recon"])[0] if ours.gan_active(step) else torch.zeros(())
        out[f"step_{step}"] = {
            "gan_active": {"official": step + 1 >= 20000, "ours": ours.gan_active(step)},
            "generator_loss": {"ours": float(l_ours.detach()), "official": float(l_off.detach()), "rel": H.rel_err(l_ours, l_off)},
            "feature_cosine": {"ours": logs.get("feature"), "official": float(sim.detach())},
            "input_grads": H.compare({k: b[k].grad for k in ("recon", "pred", "cb", "commit")},
                                     {k: a[k].grad for k in ("recon", "pred", "cb", "commit")}),
            "discriminator_loss": {"ours": float(d_ours.detach()), "official": float(d_off.detach()), "rel": H.rel_err(d_ours, d_off)},
        }
    return out


def update_compare(root: Path, warmup: int = 200, steps: int = 500, **train: Any) -> dict[str, Any]:
    """The paper preset's optimizer, LR schedule and EMA vs vqgan_train.py's (Adam, timm cosine from lr to lr_min =
    lr after a warm-up from 1e-7, update_ema at 0.9999), the warm-up shortened to `warmup` steps; and the
    discriminator's Adam, which the official loop steps from step 0 with a zero loss (weight 0 before the GAN start)."""
    from vfmtok.train.tokenizer import tokenizer_optimizer

    t = dataclasses.replace(get_preset("vfmtok-paper").train, warmup_steps=warmup, steps=steps, **train)
    O = load_official(root, StandInPerceptual(), nn.Identity())
    torch.manual_seed(0)
    # fp64: one EMA step at 0.9999 moves the weights by 1e-4 x the update, below fp32 resolution
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.Flatten(), nn.Linear(8 * 6 * 6, 4)).double()
    off, ours = copy.deepcopy(net), copy.deepcopy(net)
    opt_off = torch.optim.Adam(off.parameters(), lr=t.lr, betas=tuple(t.betas))  # vqgan_train.py
    sched = O["build_scheduler"](opt_off, steps // 100, 100, t.lr, warmup, 1e-7, None)  # args.lr is lr_min there
    opt_ours = tokenizer_optimizer(ours, t)
    ema_off, ema_ours = copy.deepcopy(off), C.EMA(ours, t.ema_decay, warmup=t.ema_warmup)
    O["update_ema"](ema_off, off, decay=0)
    lr_off, lr_ours = [], []
    g = torch.Generator().manual_seed(1)
    w0, e0 = H.params(ours), H.params(ema_ours.module)
    for s in range(steps):
        sched.step_update(s + 1)  # before the optimizer step, as the loop does
        lr_off.append(opt_off.param_groups[0]["lr"])
        lr_ours.append(C.lr_at(s, t.lr, t.warmup_steps, t.steps, t.lr_schedule, warmup_init=t.warmup_init_lr))
    for group in opt_ours.param_groups:  # one step at the warm-up's end, from the same state and gradients
        group["lr"] = lr_ours[warmup]
    for group in opt_off.param_groups:
        group["lr"] = lr_off[warmup]
    for a, b in zip(off.parameters(), ours.parameters()):
        a.grad = torch.randn(a.shape, generator=g, dtype=torch.float64)
        b.grad = a.grad.clone()
    opt_off.step()
    opt_ours.step()
    O["update_ema"](ema_off, off)
    ema_ours.update(ours, warmup)
    pairs = [(a, b) for a, b in zip(lr_ours, lr_off)]
    return {
        "settings": {"lr": t.lr, "betas": list(t.betas), "weight_decay": t.weight_decay, "warmup_init_lr": t.warmup_init_lr,
                     "ema_decay": t.ema_decay, "ema_warmup": t.ema_warmup, "grad_clip": t.grad_clip},
        "lr_schedule_max_rel": max(H.rel_err(torch.tensor(a), torch.tensor(b)) for a, b in pairs),
        "update": H.compare(H.delta(H.params(ours), w0), H.delta(H.params(off), w0)),
        "ema_update": H.compare(H.delta(H.params(ema_ours.module), e0), H.delta(H.params(ema_off), e0)),
        "disc_adam": disc_adam_start(t.lr, tuple(t.betas), get_preset("vfmtok-paper").loss.gan_start),
    }


def disc_adam_start(lr: float, betas: tuple[float, float], start: int, after: tuple[int, ...] = (1, 10, 50)) -> dict:
    """Update size of the discriminator's first steps after the GAN start: the official Adam has stepped `start`
    times on zero gradients by then (m = v = 0 but its bias corrections spent), ours starts fresh. Measured on one
    random tensor with the same gradient sequence; ratio official / ours of the update norm."""
    g = torch.Generator().manual_seed(2)
    grads = [torch.randn(1000, generator=g) for _ in range(max(after))]
    norms = {}
    for name, idle in (("official", start), ("ours", 0)):
        p = nn.Parameter(torch.zeros(1000))
        opt = torch.optim.Adam([p], lr=lr, betas=betas)
        p.grad = torch.zeros(1000)
        for _ in range(idle):  # vqgan_train.py: optimizer_disc.step() on the zero-weighted loss every step
            opt.step()
        out = []
        for k, gk in enumerate(grads, 1):
            before = p.detach().clone()
            p.grad = gk.clone()
            opt.step()
            if k in after:
                out.append(float((p.detach() - before).norm()))
        norms[name] = out
    return {f"step_{k}_ratio": o / u for k, o, u in zip(after, norms["official"], norms["ours"])}


MISSING = [
    "The GAN terms through the full models: the model step (--tokenizer-step, below) runs at step 0, before the GAN "
    "start; those terms are compared on given tensors above.",
    "LPIPS and the DINO discriminator are shared stand-ins (their official constructors download weights).",
]


def tokenizer_compare(root: Path, timing: bool = False, warmup: int = 2, reps: int = 7) -> dict[str, Any]:
    """The loss terms (around the GAN start) and the update rules; the model-level step is listed as missing."""
    before = {"weight_decay": 0.05, "ema_warmup": True, "warmup_init_lr": 0.0}  # the preset before issue 33
    res = {"losses": loss_compare(root), "losses_with_gan_start_20000_as_before": loss_compare(root, (19999,), gan_start=20000),
           "update": update_compare(root),
           "update_with_the_settings_before_issue_33": update_compare(root, **before), "missing": MISSING}
    lines = ["| step (0-based) | GAN on: official / ours | generator loss rel | input grads rel (worst) | "
             "discriminator loss rel |", "|---|---|---|---|---|"]
    for k, v in res["losses"].items():
        if k.startswith("step_"):
            lines.append(f"| {k[5:]} | {v['gan_active']['official']} / {v['gan_active']['ours']} | "
                         f"{v['generator_loss']['rel']:.2e} | {v['input_grads']['max_rel']:.2e} "
                         f"({v['input_grads']['worst']}) | {v['discriminator_loss']['rel']:.2e} |")
    old = res["losses_with_gan_start_20000_as_before"]["step_19999"]
    lines.append(f"| 19999, gan_start 20000 as before issue 33 | {old['gan_active']['official']} / "
                 f"{old['gan_active']['ours']} | {old['generator_loss']['rel']:.2e} | {old['input_grads']['max_rel']:.2e} "
                 f"({old['input_grads']['worst']}) | {old['discriminator_loss']['rel']:.2e} |")
    u, b = res["update"], res["update_with_the_settings_before_issue_33"]
    lines += ["", f"Paper loss config: `{res['losses']['paper_loss_config']}`.", "",
              "| update rule (fp64) | paper preset now | settings before issue 33 |", "|---|---|---|",
              f"| LR schedule over 500 steps (warm-up 200), max rel | {u['lr_schedule_max_rel']:.2e} | "
              f"{b['lr_schedule_max_rel']:.2e} |",
              f"| one optimizer update (Adam vs AdamW), rel | {u['update']['max_rel']:.2e} | {b['update']['max_rel']:.2e} |",
              f"| one EMA update, rel | {u['ema_update']['max_rel']:.2e} | {b['ema_update']['max_rel']:.2e} |", "",
              "Discriminator Adam at the GAN start (official: stepped from step 0 on a zero loss), update norm "
              "official / ours after 1, 10, 50 steps: " + ", ".join(f"{v:.2f}" for v in u["disc_adam"].values()) + ".",
              "", "Not compared:", ""] + [f"- {m}" for m in MISSING] + [""]
    res["md"] = lines
    return res
