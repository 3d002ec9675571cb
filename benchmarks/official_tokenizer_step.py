"""One full tokenizer training step through the model: this project's VFMTok paper preset against the official
VQModel + VQLoss (CVMI-Lab/VFMTok2 tokenizer/utils/vqgan_train.py), for benchmarks/official_training.py
--tokenizer-step.

Both arms start from the same weights: the official model is built on CPU (official_tokenizer_model.build: DINOv2
cut to its first 4 blocks, random weights) and this project's model is loaded from its state dict through the
import key maps (official/tokenizer_import.py map_tokenizer_state for the tokenizer, dinov2_to_timm for the
backbone, cut to the same 4 blocks). Same image batch; the decoder's dropout masks come from one MaskBank in both
arms (its call list is compared). The official feature-cosine term is given the 576 patch rows of its target
(the released trainer passes 581 rows, CLS + 4 registers + patches, against a 576-row prediction and fails):
a deliberate harness choice, the one reading under which the shapes agree, and the one this project implements.
LPIPS and the DINO discriminator are the shared stand-ins of official_tokenizer.py. The step is taken before the
GAN start (the GAN terms are compared at the loss level around the start, official_tokenizer.loss_compare).
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn

import official_harness as H
import official_tokenizer as OT
import official_tokenizer_model as OTM
from vfmtok.encoders.vit import level_block_indices
from vfmtok.official.tokenizer_import import dinov2_to_timm, map_tokenizer_state
from vfmtok.tokenizer.build import build_tokenizer
from vfmtok.tokenizer.config import get_preset
from vfmtok.train.tokenizer import tokenizer_optimizer

PREFIX_ROWS = 5  # CLS + 4 registers at the head of the official target `latent`


def _backbone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The official frozen DINOv2 in facebookresearch layout (its prefix inside VQModel stripped)."""
    state = model.state_dict()
    key = next(k for k in state if "backbone" in k and k.endswith("cls_token"))
    pre = key[: -len("cls_token")]
    return {k[len(pre):]: v for k, v in state.items() if k.startswith(pre)}


def build_pair(root: Path) -> tuple[nn.Module, nn.Module]:
    """(official VQModel, this project's paper-preset model loaded from it), both in training mode."""
    torch.manual_seed(0)
    official = OTM.build(root)
    cfg = dataclasses.replace(get_preset("vfmtok-paper").model, encoder_pretrained=False)
    ours = build_tokenizer(cfg)
    vit = ours.encoder.model
    vit.blocks = vit.blocks[: OTM.DEPTH]  # the same cut as the official backbone
    ours.encoder.blocks = level_block_indices(OTM.DEPTH)
    fb = _backbone_state(official)
    vit.load_state_dict(dinov2_to_timm(fb, vit.state_dict(), "official backbone"), strict=True)
    trainable = {k: v for k, v in official.state_dict().items()}
    ours.load_trainable_state_dict(map_tokenizer_state(trainable, cfg), source="official VQModel")
    return official, ours.train()


def _official_named(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _mapped(d: dict[str, torch.Tensor], cfg) -> dict[str, torch.Tensor]:
    return H.map_exact(lambda x: map_tokenizer_state(x, cfg), d)  # the key map casts to fp32: keep fp64 exact


class Arms:
    """Both models, losses and optimisers, with one step function each (the trainers' step without data loading)."""

    def __init__(self, root: Path, batch: int = 1, seed: int = 0, dtype: torch.dtype = torch.float32):
        self.official, self.ours = (m.to(dtype) for m in build_pair(root))
        self.cfg = get_preset("vfmtok-paper")
        perceptual, disc = OT.StandInPerceptual().to(dtype), OT.DINODiscriminator(None).train().to(dtype)
        self.O = OT.load_official(root, perceptual, disc)
        self.loss = OT.paired_loss(self.cfg.loss, perceptual, disc)
        t = self.cfg.train
        self.lr = t.lr  # the step is taken at the peak LR (the schedules are compared apart)
        self.opt_off = torch.optim.Adam(self.official.parameters(), lr=t.lr, betas=tuple(t.betas))  # vqgan_train.py
        self.opt_ours = tokenizer_optimizer(self.ours, t)
        self.clip = t.grad_clip
        g = torch.Generator().manual_seed(seed)
        self.images = (torch.rand(batch, 3, 336, 336, generator=g) * 2 - 1).to(dtype)
        self.bank = H.MaskBank(seed + 11)

    def official_step(self) -> dict[str, Any]:
        """vqgan_train.py's generator half at train_steps 0 (GAN off), then its discriminator half."""
        m, vq = self.official, self.O["vq_loss"]
        self.opt_off.zero_grad()
        self.bank.reset()
        (dec, latent, pred), diff, _ = m(self.images)
        latent = latent[:, PREFIX_ROWS:]  # the patch rows (module docstring)
        loss, sim = vq(diff, self.images, (dec, latent, pred), optimizer_idx=0, global_step=1,
                       last_layer=m.decoder.last_layer)  # a property there
        loss.backward()
        calls = list(self.bank.calls)
        norm = torch.nn.utils.clip_grad_norm_(m.parameters(), self.clip)
        grads = {k: v.grad.detach().clone() for k, v in _official_named(m).items()}
        self.opt_off.step()
        d_loss = vq(diff, self.images, (dec, None, None), optimizer_idx=1, global_step=1)
        return {"loss": loss.detach(), "grad_norm": norm, "grads": grads, "calls": calls, "d_loss": d_loss.detach()}

    def ours_step(self) -> dict[str, Any]:
        """train.tokenizer.tokenizer_step's generator half at step 0 (GAN off: no discriminator pass)."""
        m = self.ours
        for group in self.opt_ours.param_groups:
            group["lr"] = self.lr
        self.opt_ours.zero_grad(set_to_none=True)
        self.bank.reset()
        out = m(self.images, None)
        loss, _ = self.loss.generator_loss(self.images, out, 0)
        loss.backward()
        calls = list(self.bank.calls)
        norm = torch.nn.utils.clip_grad_norm_(m.parameters(), self.clip)
        grads = H.grads(m)
        self.opt_ours.step()
        return {"loss": loss.detach(), "grad_norm": norm, "grads": grads, "calls": calls}


def _trainable_ours(model: nn.Module, d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    keys = set(model.trainable_state_dict())
    return {k: v for k, v in d.items() if k in keys}


# The key projections' biases get a zero true gradient (softmax ignores a shift every key shares in a row): both
# arms compute rounding noise there, so those tensors are reported apart.
APART = ("attn.k.bias",)


@contextlib.contextmanager
def fp32_casts_keep_fp64(on: bool) -> Iterator[None]:
    """In the fp64 run, make Tensor.float() leave fp64 tensors alone: both codes up-cast to fp32 in places (for
    bf16/fp16 safety), which would mix dtypes or round the fp64 comparison back to fp32."""
    saved = torch.Tensor.float
    if on:
        torch.Tensor.float = lambda self, *a, **k: self if self.dtype == torch.float64 else saved(self, *a, **k)
    try:
        yield
    finally:
        torch.Tensor.float = saved


def step_compare(root: Path, timing: bool = True, warmup: int = 1, reps: int = 2,
                 dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """Loss, gradients (clipped) and weights after one Adam step, official vs ours; then step times (fp32 only)."""
    A = Arms(root, dtype=dtype)
    cfg = A.cfg.model
    w0 = _trainable_ours(A.ours, H.params(A.ours))
    with A.bank.installed(), fp32_casts_keep_fp64(dtype == torch.float64):
        off = A.official_step()
        ours = A.ours_step()
    w_off = _mapped({k: v.detach() for k, v in A.official.state_dict().items()}, cfg)
    w_ours = _trainable_ours(A.ours, H.params(A.ours))
    g_off = _mapped(off["grads"], cfg)
    g_ours = _trainable_ours(A.ours, ours["grads"])
    res = {
        "config": {"image_size": 336, "batch": A.images.shape[0], "dinov2_blocks": OTM.DEPTH, "step": 0,
                   "lr": A.lr, "betas": list(A.cfg.train.betas), "grad_clip": A.clip,
                   "trainable_params_M": round(sum(v.numel() for v in w0.values()) / 1e6, 2)},
        "loss": {"ours": float(ours["loss"]), "official": float(off["loss"]), "rel": H.rel_err(ours["loss"], off["loss"])},
        "grad_norm": {"ours": float(ours["grad_norm"]), "official": float(off["grad_norm"]),
                      "rel": H.rel_err(ours["grad_norm"], off["grad_norm"])},
        "dropout_calls_equal": off["calls"] == ours["calls"], "dropout_calls": len(off["calls"]),
        "grads": H.compare(g_ours, g_off, APART),
        "weights_after": H.compare(w_ours, w_off, APART),
        "update": H.compare(H.delta(w_ours, w0), H.delta(w_off, w0), APART),
        "update_where_grad_above_100eps": H.compare(H.large_grad_part(H.delta(w_ours, w0), g_off),
                                                    H.large_grad_part(H.delta(w_off, w0), g_off), APART),
        "official_disc_loss_before_start": float(off["d_loss"]),
    }
    if timing and dtype == torch.float32:
        def run_off():
            with A.bank.installed():
                A.official_step()

        def run_ours():
            with A.bank.installed():
                A.ours_step()

        res["time"] = H.time_pair(run_ours, run_off, warmup, reps)
        res["time"].update(warmup=warmup, reps=reps)
    return res


def tokenizer_step(root: Path, timing: bool = True, warmup: int = 1, reps: int = 2) -> dict[str, Any]:
    """step_compare in fp32 (with the step times) and fp64 (formula differences apart from fp32 rounding)."""
    res: dict[str, Any] = {}
    try:
        res["float64"] = step_compare(root, False, dtype=torch.float64)
    except Exception as e:  # recorded, not hidden: an fp32-only op in either model
        res["float64"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0]}"}
    res["float32"] = step_compare(root, timing, warmup, reps)
    res["md"] = _md(res)
    return res


def _cell(e: dict[str, Any] | None) -> str:
    if e is None:
        return "-"
    if "error" in e:
        return e["error"]
    if "max_rel" not in e:
        return f"{e['rel']:.2e}" + (f" (ours {e['ours']:.6f}, official {e['official']:.6f})" if "ours" in e else "")
    return f"{e['max_rel']:.2e} ({e['worst']})"


def _md(r: dict[str, Any]) -> list[str]:
    f32, f64 = r["float32"], r["float64"]
    lines = ["### One full step through the model (`--tokenizer-step`)", "",
             f"Configuration: `{f32['config']}`; the official target's 576 patch rows (not its 581) in the feature "
             "cosine; LPIPS and the DINO discriminator shared stand-ins; step 0 (before the GAN start), Adam at the "
             "peak LR.", "", "| compared | fp32 rel. error (worst tensor) | fp64 rel. error (worst tensor) |",
             "|---|---|---|"]
    for key, label in (("loss", "generator loss"), ("grad_norm", "grad norm (before clipping)"),
                       ("grads", "gradients (after clipping)"), ("weights_after", "weights after the step"),
                       ("update", "the update (weights after - before)"),
                       ("update_where_grad_above_100eps", "the update where the official abs(grad) > 100 x Adam eps")):
        lines.append(f"| {label} | {_cell(f32.get(key))} | {_cell(f64.get(key)) if 'error' not in f64 else f64['error']} |")
    lines += ["", f"Dropout calls equal: {f32['dropout_calls_equal']} ({f32['dropout_calls']} calls)."]
    apart = {k: v for k, v in f32.get("grads", {}).get("apart", {}).items()}
    if apart:
        worst = max(apart, key=lambda k: apart[k]["rel"])
        lines.append(f"Reported apart: the {len(apart)} key-projection biases (`{APART[0]}`), whose true gradient is "
                     f"zero (softmax ignores a shift every key shares): fp32 grads rel up to {apart[worst]['rel']:.2e} "
                     f"at official norm {apart[worst]['official_norm']:.2e} ({worst}).")
    lines.append("")
    t = f32.get("time")
    if t:
        lines += [f"Step time (median of {t['reps']} after {t['warmup']} warm-up, 1 thread, fp32, eager, batch "
                  f"{f32['config']['batch']}, interleaved in one process): ours {t['ours_s']:.1f} s, official "
                  f"{t['official_s']:.1f} s, official / ours = **{t['speedup']:.2f}**.", ""]
    return lines
