"""One GPT step against LlamaGen's autoregressive/train/train_c2i.py and one RAR step against bytedance/1d-tokenizer's
scripts/train_rar.py (utils/train_utils.py train_one_epoch_generator), for benchmarks/official_training.py.

Each arm starts from the same weights (the official model's, through this project's import key map), sees the same
batch, the same class-dropout draw (same torch seed: both draw one uniform per row first), the same dropout masks
(MaskBank) and, for RAR, the same token orders (drawn once by the official sample_orders, then fed to both).
"""

from __future__ import annotations

import copy
import inspect
import random
import sys
from pathlib import Path
from typing import Any, Mapping, Text, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

import official_harness as H
from vfmtok.generator.gpt import GPT, GPTConfig
from vfmtok.generator.rar import RAR
from vfmtok.official.gpt_import import map_gpt_state
from vfmtok.official.rar_import import import_rar_state
from vfmtok.train import common as C
from vfmtok.train import generator_arch as G
from vfmtok.train.generator import GeneratorTrainConfig, generator_step, make_ema, make_optimizer

CPU = torch.device("cpu")


class Cfg(dict):
    """Attribute access over nested dicts, as the OmegaConf configs of 1d-tokenizer are read."""

    def __getattr__(self, k):
        return self[k]


def _cfg(d: dict) -> Cfg:
    return Cfg({k: _cfg(v) if isinstance(v, dict) else v for k, v in d.items()})


class _Log:
    def info(self, *a, **k):  # the official optimizer factories log their group sizes
        pass


def _label_hook(store: list):
    return lambda mod, args: store.append(args[0].detach().clone())


def _drop_seed(batch: int, p: float) -> int:
    """A torch seed whose first uniform draw drops at least one label and keeps at least one."""
    for s in range(1000):
        torch.manual_seed(s)
        n = int((torch.rand(batch) < p).sum())
        if 0 < n < batch:
            return s
    raise RuntimeError("no seed drops a label")


# --------------------------------------------------------------------------------------------------- GPT
def load_llamagen(root: Path) -> dict[str, Any]:
    """LlamaGen's GPT module, update_ema and creat_optimizer, read from the checkout."""
    with H.official_root(root, ("autoregressive", "utils")):
        gpt = __import__("autoregressive.models.gpt", fromlist=["Transformer"])
        ema = H.load_file(root / "utils" / "ema.py", "official_llamagen_ema")
    opt = H.load_defs(root / "autoregressive" / "train" / "train_c2i.py", ("creat_optimizer",),
                      {"torch": torch, "inspect": inspect})
    return {"Transformer": gpt.Transformer, "ModelArgs": gpt.ModelArgs, "update_ema": ema.update_ema,
            "requires_grad": ema.requires_grad, "creat_optimizer": opt["creat_optimizer"]}


def gpt_setup(root: Path, dim: int, n_layer: int, n_head: int, vocab: int, side: int, classes: int, batch: int,
              seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """Both GPTs at identical weights, their optimizers and EMAs as each trainer builds them, and one batch."""
    L = load_llamagen(root)
    torch.manual_seed(seed)
    args = dict(lr=1e-4, weight_decay=5e-2, beta1=0.9, beta2=0.95, max_grad_norm=1.0, dropout_p=0.1, token_dropout_p=0.1)
    off = L["Transformer"](L["ModelArgs"](dim=dim, n_layer=n_layer, n_head=n_head, multiple_of=64, vocab_size=vocab,
                                          block_size=side * side, num_classes=classes, cls_token_num=1, model_type="c2i",
                                          resid_dropout_p=args["dropout_p"], ffn_dropout_p=args["dropout_p"],
                                          drop_path_rate=0.0, token_dropout_p=args["token_dropout_p"])).to(dtype)
    H.perturb(off, seed=seed)
    off_ema = copy.deepcopy(off)
    L["requires_grad"](off_ema, False)
    off_opt = L["creat_optimizer"](off, args["weight_decay"], args["lr"], (args["beta1"], args["beta2"]), _Log())
    L["update_ema"](off_ema, off, decay=0)
    cfg = GPTConfig(vocab_size=vocab, num_tokens=side * side, token_grid=(side, side), num_classes=classes, dim=dim,
                    n_layer=n_layer, n_head=n_head, multiple_of=64)
    tcfg = GeneratorTrainConfig(**{**G.base_fields("GPT-B", "gpt", {}), "model": cfg}, steps=1000, batch_size=batch)
    ours = GPT(cfg).to(dtype)
    ours.load_state_dict(H.map_exact(lambda d: map_gpt_state(d, cfg, "official"), off.state_dict()), strict=True)
    ema = make_ema(ours, ours, tcfg)
    opt = make_optimizer(ours, tcfg, CPU)
    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(0, vocab, (batch, side * side), generator=g)
    labels = torch.randint(0, classes, (batch,), generator=g)
    return dict(L=L, args=args, off=off, off_ema=off_ema, off_opt=off_opt, ours=ours, ema=ema, opt=opt, tcfg=tcfg,
                ids=ids, labels=labels, cfg=cfg)


def gpt_official_step(s: dict[str, Any], capture: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The body of train_c2i.py's loop at fp32 (GradScaler disabled), one process: (loss, grad norm)."""
    off, opt = s["off"], s["off_opt"]
    off.train()
    _, loss = off(cond_idx=s["labels"], idx=s["ids"][:, :-1], targets=s["ids"])
    loss.backward()
    gn = torch.nn.utils.clip_grad_norm_(off.parameters(), s["args"]["max_grad_norm"])
    if capture:
        s["off_grads"] = H.grads(off)
    opt.step()
    opt.zero_grad(set_to_none=True)
    s["L"]["update_ema"](s["off_ema"], off)
    return loss.detach(), gn


def gpt_ours_step(s: dict[str, Any], step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """vfmtok's train-generator step (generator_step): (loss, grad norm)."""
    s["ours"].train()
    loss, gn, _ = generator_step(s["ours"], s["opt"], [(s["ids"], s["labels"])], step, s["tcfg"], CPU, s["ema"])
    return loss, gn


def gpt_compare(root: Path, dtype: torch.dtype = torch.float32, **shape: Any) -> dict[str, Any]:
    """One GPT step of each trainer from the same state: loss, clipped grads, update, EMA update."""
    s = gpt_setup(root, dtype=dtype, **shape)
    cfg = s["cfg"]
    mapped = lambda d: H.map_exact(lambda x: map_gpt_state(x, cfg, "official"), d)  # noqa: E731  official -> ours
    w0, e0 = H.params(s["ours"]), H.params(s["ema"].module)
    seed = _drop_seed(s["labels"].shape[0], 0.1)
    bank = H.MaskBank(seed)
    seen_off, seen_ours = [], []
    s["off"].cls_embedding.embedding_table.register_forward_pre_hook(_label_hook(seen_off))
    s["ours"].class_emb.register_forward_pre_hook(_label_hook(seen_ours))
    torch.manual_seed(seed)
    with bank.installed():
        loss_off, gn_off = gpt_official_step(s)
    calls_off = list(bank.calls)
    bank.reset()
    torch.manual_seed(seed)
    with bank.installed():
        loss_ours, gn_ours = gpt_ours_step(s)
    g_off = mapped(s["off_grads"])
    r = {
        "shape": shape, "class_dropout_masks_equal": bool(torch.equal(seen_off[0].flatten(), seen_ours[0])),
        "labels_dropped": int((seen_ours[0] == cfg.num_classes).sum()),
        "dropout_calls_equal": calls_off == bank.calls, "dropout_calls": len(calls_off),
        "loss": {"ours": float(loss_ours), "official": float(loss_off), "rel": H.rel_err(loss_ours, loss_off)},
        "grad_norm": {"ours": float(gn_ours), "official": float(gn_off), "rel": H.rel_err(gn_ours, gn_off),
                      "clipped": float(gn_off) > s["args"]["max_grad_norm"]},
        "grads": H.compare(H.grads(s["ours"]), mapped(s["off_grads"])),
        "weights_after": H.compare(H.params(s["ours"]), mapped(H.params(s["off"]))),
        "update": H.compare(H.delta(H.params(s["ours"]), w0), H.delta(mapped(H.params(s["off"])), w0)),
        "update_where_grad_above_100eps": H.compare(H.large_grad_part(H.delta(H.params(s["ours"]), w0), g_off),
                                                    H.large_grad_part(H.delta(mapped(H.params(s["off"])), w0), g_off)),
        "ema_after": H.compare(H.params(s["ema"].module), mapped(H.params(s["off_ema"]))),
        # at decay 0.9999 one step moves the EMA by 1e-4 x the update: below fp32 resolution, measurable in fp64
        "ema_update": H.compare(H.delta(H.params(s["ema"].module), e0), H.delta(mapped(H.params(s["off_ema"])), e0)),
        "settings": {"lr": s["tcfg"].lr, "betas": list(s["tcfg"].betas), "weight_decay": s["tcfg"].weight_decay,
                     "grad_clip": s["tcfg"].grad_clip, "ema_decay": s["tcfg"].ema_decay,
                     "ema_warmup": s["tcfg"].ema_warmup},
    }
    return r


# --------------------------------------------------------------------------------------------------- RAR
# The key-norm bias adds q.b to every logit of a query's row: softmax ignores it, so its true gradient is 0 and
# both trainers compute rounding noise (~1e-9 of the other gradients), which AdamW's first step turns into +-lr.
ZERO_GRAD = ("attn.k_norm.bias",)

def load_rar(root: Path) -> dict[str, Any]:
    """1d-tokenizer's RAR model, ARLoss, optimizer / scheduler factories and annealing rule, read from the checkout.

    modeling/modules/__init__.py imports every model's loss (einops, diffusion, open_clip); RAR needs only BaseModel,
    so `modeling.modules` is given just base_model.py from the checkout.
    """
    import types

    with H.official_root(root, ("modeling", "utils")):
        base = H.load_file(root / "modeling" / "modules" / "base_model.py", "modeling.modules.base_model")
        pkg = types.ModuleType("modeling.modules")
        pkg.__path__, pkg.BaseModel = [str(root / "modeling" / "modules")], base.BaseModel
        sys.modules["modeling.modules"] = pkg
        rar = __import__("modeling.rar", fromlist=["RAR"])
        sched = H.load_file(root / "utils" / "lr_schedulers.py", "official_rar_lr_schedulers")
    env = {"torch": torch, "nn": nn, "F": F, "Mapping": Mapping, "Text": Text, "Tuple": Tuple,
           "AdamW": torch.optim.AdamW, "get_scheduler": sched.get_scheduler}
    fns = H.load_defs(root / "utils" / "train_utils.py", ("create_optimizer", "create_lr_scheduler",
                                                          "get_rar_random_ratio"), env)
    fns.update(H.load_defs(root / "modeling" / "modules" / "losses.py", ("ARLoss",), env))
    return {"RAR": rar.RAR, **fns}


def rar_config(dim: int, n_layer: int, n_head: int, vocab: int, side: int, classes: int, batch: int, steps: int) -> Cfg:
    """configs/training/generator/rar.yaml with the model shrunk and the schedule scaled to `steps`."""
    return _cfg({
        "model": {"vq_model": {"codebook_size": vocab, "finetune_decoder": False},
                  "generator": {"hidden_size": dim, "num_hidden_layers": n_layer, "num_attention_heads": n_head,
                                "intermediate_size": 4 * dim, "dropout": 0.1, "attn_drop": 0.1,
                                "class_label_dropout": 0.1, "image_seq_len": side * side,
                                "condition_num_classes": classes, "use_checkpoint": False,
                                "randomness_anneal_start": steps // 2, "randomness_anneal_end": steps * 3 // 4}},
        "optimizer": {"name": "adamw", "params": {"learning_rate": 4e-4, "beta1": 0.9, "beta2": 0.96,
                                                  "weight_decay": 0.03}},
        "lr_scheduler": {"scheduler": "cosine", "params": {"learning_rate": 4e-4, "warmup_steps": steps // 4,
                                                           "end_lr": 1e-5}},
        "training": {"max_train_steps": steps, "max_grad_norm": 1.0, "per_gpu_batch_size": batch},
    })


def rar_setup(root: Path, dim: int, n_layer: int, n_head: int, vocab: int, side: int, classes: int, batch: int,
              steps: int = 16, at: int = 10, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """Both RARs at identical weights with each trainer's optimizer and schedule advanced to step `at`."""
    R = load_rar(root)
    conf = rar_config(dim, n_layer, n_head, vocab, side, classes, batch, steps)
    torch.manual_seed(seed)
    off = R["RAR"](conf).to(dtype)
    H.perturb(off, seed=seed)
    off_opt, _ = R["create_optimizer"](conf, _Log(), off, None, need_discrminator=False)
    sched, _ = R["create_lr_scheduler"](conf, _Log(), Cfg(num_processes=1), off_opt)
    for _ in range(at):  # the scheduler stepped once per finished step (lr only: no optimizer state is made)
        sched.step()
    cfg = import_rar_state(off.state_dict(), where="official RAR")[0]
    ours = RAR(cfg).to(dtype)
    ours.load_state_dict(_to_ours(off.state_dict()), strict=True)
    tcfg = GeneratorTrainConfig(**{**G.base_fields("RAR-B", "rar", {}), "rar": cfg}, steps=steps, batch_size=batch)
    opt = make_optimizer(ours, tcfg, CPU)
    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(0, vocab, (batch, side * side), generator=g)
    labels = torch.randint(0, classes, (batch,), generator=g)
    return dict(R=R, conf=conf, off=off, off_opt=off_opt, sched=sched, loss_module=R["ARLoss"](conf), ours=ours,
                opt=opt, tcfg=tcfg, ids=ids, labels=labels, cfg=cfg, at=at)


def rar_official_step(s: dict[str, Any], step: int, capture: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The rar branch of train_one_epoch_generator (pretokenized data, one process): (loss, grad norm)."""
    R, conf, off = s["R"], s["conf"], s["off"]
    off.train()
    off.set_random_ratio(R["get_rar_random_ratio"](conf, step))
    condition = off.preprocess_condition(s["labels"], cond_drop_prob=conf.model.generator.class_label_dropout)
    logits, labels = off(s["ids"], condition, return_labels=True)
    loss, _ = s["loss_module"](logits, labels)
    loss.backward()
    gn = torch.nn.utils.clip_grad_norm_(off.parameters(), conf.training.max_grad_norm)
    if capture:
        s["off_grads"] = H.grads(off)
    s["off_opt"].step()
    s["sched"].step()
    s["off_opt"].zero_grad(set_to_none=True)
    return loss.detach(), gn


def _to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return H.map_exact(lambda d: import_rar_state(d, where="official RAR")[1], state)


def rar_compare(root: Path, dtype: torch.dtype = torch.float32, **shape: Any) -> dict[str, Any]:
    """One RAR step of each trainer at an annealing step (permutation ratio strictly between 0 and 1)."""
    s = rar_setup(root, dtype=dtype, **shape)
    R, conf, at, off, ours = s["R"], s["conf"], s["at"], s["off"], s["ours"]
    steps = conf.training.max_train_steps
    ratio_off = [R["get_rar_random_ratio"](conf, k) for k in range(steps + 1)]
    ratio_ours = [G.permute_ratio(k, steps, s["tcfg"].permute_anneal) for k in range(steps + 1)]
    lr_off = [conf.lr_scheduler.params.learning_rate * s["sched"].lr_lambdas[0](k) for k in range(steps)]
    lr_ours = [C.lr_at(k, s["tcfg"].lr, G.effective_warmup(s["tcfg"]), steps, s["tcfg"].lr_schedule, s["tcfg"].min_lr,
                       s["tcfg"].warmup_from_one) for k in range(steps)]
    random.seed(3)  # the official draw of this step's orders (python random per row, torch.randperm)
    torch.manual_seed(3)
    off.set_random_ratio(ratio_off[at])
    orders = off.sample_orders(s["ids"])
    off.sample_orders = lambda x: orders
    G_sample = G.sample_orders
    G.sample_orders = lambda b, n, ratio, device="cpu", generator=None: orders
    w0 = H.params(ours)
    seed = _drop_seed(s["labels"].shape[0], 0.1)
    bank = H.MaskBank(seed)
    try:
        torch.manual_seed(seed)
        with bank.installed():
            loss_off, gn_off = rar_official_step(s, at)
        calls_off = list(bank.calls)
        bank.reset()
        torch.manual_seed(seed)
        with bank.installed():
            ours.train()
            loss_ours, gn_ours, lr = generator_step(ours, s["opt"], [(s["ids"], s["labels"])], at, s["tcfg"], CPU)
    finally:
        G.sample_orders = G_sample
    permuted = int((orders != torch.arange(orders.shape[1])).any(1).sum())
    g_off = _grads_to_ours(s["off_grads"], off)
    return {
        "shape": shape, "step": at, "of_steps": steps, "permute_ratio": ratio_off[at], "rows_permuted": permuted,
        "permute_ratio_schedule_equal": all(abs(a - b) < 1e-12 for a, b in zip(ratio_ours, ratio_off)),
        "lr_schedule_max_rel": max(H.rel_err(torch.tensor(a), torch.tensor(b)) for a, b in zip(lr_ours, lr_off)),
        "lr_at_step": {"ours": lr, "official": lr_off[at]},
        "dropout_calls_equal": calls_off == bank.calls, "dropout_calls": len(calls_off),
        "loss": {"ours": float(loss_ours), "official": float(loss_off), "rel": H.rel_err(loss_ours, loss_off)},
        "grad_norm": {"ours": float(gn_ours), "official": float(gn_off), "rel": H.rel_err(gn_ours, gn_off),
                      "clipped": float(gn_off) > conf.training.max_grad_norm},
        "grads": H.compare(H.grads(ours), _grads_to_ours(s["off_grads"], off), ZERO_GRAD),
        "weights_after": H.compare(H.params(ours), _to_ours(H.params(off)), ZERO_GRAD),
        "update": H.compare(H.delta(H.params(ours), w0), H.delta(_to_ours(H.params(off)), w0), ZERO_GRAD),
        "update_where_grad_above_100eps": H.compare(H.large_grad_part(H.delta(H.params(ours), w0), g_off),
                                                    H.large_grad_part(H.delta(_to_ours(H.params(off)), w0), g_off),
                                                    ZERO_GRAD),
        "settings": {"lr": s["tcfg"].lr, "betas": list(s["tcfg"].betas), "weight_decay": s["tcfg"].weight_decay,
                     "grad_clip": s["tcfg"].grad_clip, "schedule": "cosine", "warmup_steps": G.effective_warmup(s["tcfg"]),
                     "min_lr": s["tcfg"].min_lr, "ema": "none (use_ema: False)"},
    }


def _grads_to_ours(g: dict[str, torch.Tensor], off: nn.Module) -> dict[str, torch.Tensor]:
    # the import reshapes and splits the official tables; gradients go through the same map
    full = {n: g.get(n, torch.zeros_like(p)) for n, p in off.named_parameters()}
    return _to_ours(full)


def gpt_time(root: Path, warmup: int, reps: int, **shape: Any) -> dict[str, Any]:
    """Seconds per training step of each trainer (native dropout and attention kernels, fp32, eager)."""
    s = gpt_setup(root, **shape)
    return H.time_pair(lambda: gpt_ours_step(s), lambda: gpt_official_step(s, capture=False), warmup, reps)


def rar_time(root: Path, warmup: int, reps: int, **shape: Any) -> dict[str, Any]:
    """Seconds per RAR training step of each trainer at the annealing step (about half the rows permuted)."""
    s = rar_setup(root, **shape)
    s["ours"].train()
    return H.time_pair(lambda: generator_step(s["ours"], s["opt"], [(s["ids"], s["labels"])], s["at"], s["tcfg"], CPU),
                       lambda: rar_official_step(s, s["at"], capture=False), warmup, reps)
