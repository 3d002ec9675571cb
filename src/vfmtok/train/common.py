"""Training plumbing shared by the tokenizer and generator loops: DDP, EMA, LR schedule, checkpoints, logging."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from vfmtok.utils.atomic import LogFileHandler
from vfmtok.utils.distributed import (DistInfo, all_reduce_mean, cleanup_distributed, enable_tf32,  # noqa: F401
                                      exit_code, setup_distributed)
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.io import TRAIN_STATE_NAME, load_train_state, save_train_state, write_text
from vfmtok.utils.pretrained import resolve_checkpoint, save_pretrained


class LogMeter:
    """Running sums of detached 0-dim tensors between log steps, read in one go: one host read per log step.

    Adding never waits for the device; `read` averages each key over the steps that gave it and over ranks (a
    collective under DDP/FSDP, so every rank calls it) and returns Python floats."""

    def __init__(self) -> None:
        self.sums: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def add(self, values: dict[str, torch.Tensor]) -> None:
        """Accumulate one step's values."""
        for k, v in values.items():
            v = v.detach()
            if hasattr(v, "full_tensor"):  # an FSDP2 DTensor (the gradient norm): made whole at read time
                self.sums.setdefault(k, []).append(v)
            else:
                v = v.float().reshape(())
                self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
            self.counts[k] = self.counts.get(k, 0) + 1

    def read(self) -> dict[str, float]:
        """Means since the last read, over steps and ranks; resets the sums."""
        if not self.sums:
            return {}
        keys = list(self.sums)
        total = [sum(t.full_tensor().float().reshape(()) for t in v) if isinstance(v, list) else v
                 for v in (self.sums[k] for k in keys)]
        vec = torch.stack(total) / torch.tensor([self.counts[k] for k in keys], dtype=torch.float32).to(total[0].device)
        vec = all_reduce_mean(vec)
        self.sums, self.counts = {}, {}
        return dict(zip(keys, vec.tolist()))  # the one host read of the interval


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on CUDA; fp32 (no autocast) on CPU, where bf16 is slow."""
    if precision == "fp32" or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        raise VFMTokError(f"unknown precision '{precision}' (fp32, bf16, fp16)")
    return torch.autocast("cuda", dtype=dtype)


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, schedule: str = "constant", min_lr: float = 0.0,
          warmup_from_one: bool = True, warmup_init: float = 0.0) -> float:
    """Linear warm-up from warmup_init ((step+1)/warmup of the way, or step/warmup with warmup_from_one=False), then
    constant or cosine decay to min_lr."""
    if warmup_steps > 0 and step < warmup_steps:
        return warmup_init + (base_lr - warmup_init) * (step + int(warmup_from_one)) / warmup_steps
    if schedule == "constant":
        return base_lr
    if schedule == "cosine":
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * t))
    raise VFMTokError(f"unknown lr schedule '{schedule}' (constant, cosine)")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices/conv kernels only (dim >= 2), none on biases, norms and gains; a model with a
    `decays(name, param)` method (RAR: its reference trainer's rule) decides for itself."""
    decay, no_decay = [], []
    decides = getattr(model, "decays", None)
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if (decides(name, p) if decides else p.dim() >= 2) else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def ema_decay_at(decay: float, step: int | None = None) -> float:
    """The one EMA rule: decay d = min(decay, (1+step)/(10+step)) at `step` (`decay` when no step is given).

    The warm-up keeps short runs from exporting mostly-initial weights (0.999**500 = 0.61)."""
    return decay if step is None else min(decay, (1.0 + step) / (10.0 + step))


class EMA:
    """Exponential moving average of a model's parameters (buffers copied), kept as a frozen module copy."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, shared: tuple[nn.Module, ...] = (), warmup: bool = True):
        self.decay, self.warmup = decay, warmup
        # Frozen submodules (e.g. a 300M-param encoder) are shared with the copy, not duplicated.
        memo = {id(m): m for m in shared}
        self.module = copy.deepcopy(unwrap(model), memo).eval()
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int | None = None) -> None:
        """ema = d * ema + (1 - d) * param over trainable parameters, d = ema_decay_at(decay, step) when the EMA was
        built with warmup=True, else the fixed decay (the official trainers' update_ema)."""
        d = ema_decay_at(self.decay, step if self.warmup else None)
        src = dict(unwrap(model).named_parameters())
        for name, p in self.module.named_parameters():
            q = src[name]
            if q.requires_grad:
                p.lerp_(q.detach(), 1.0 - d)
        src_b = dict(unwrap(model).named_buffers())
        for name, b in self.module.named_buffers():
            if b is not src_b[name]:
                b.copy_(src_b[name])


def unwrap(model: nn.Module) -> nn.Module:
    """Strip DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def setup_logging(run_dir: Path, is_main: bool, name: str = "vfmtok") -> logging.Logger:
    """Logger writing to run_dir/train.log (append) and stderr, on rank 0 only."""
    logger = logging.getLogger(f"{name}.{run_dir}")
    logger.handlers.clear()
    logger.propagate = False
    if is_main:
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
        fh = LogFileHandler(run_dir / "train.log")
        fh.setFormatter(fmt)
        logger.addHandler(fh)
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(fmt)
        sh.setLevel(logging.WARNING)  # tqdm owns the terminal; details go to the file
        logger.addHandler(sh)
        logger.setLevel(logging.INFO)
    else:
        logger.addHandler(logging.NullHandler())
    return logger


# --- checkpoints -------------------------------------------------------------------------------
# Layout: run_dir/checkpoints/step_0001000/{model.safetensors (EMA weights if any), config.json, train_state.pt}
#         run_dir/latest.txt -> name of the newest complete checkpoint (written last, atomically).


def _checkpoint_paths(run_dir: Path, step: int) -> tuple[Path, Path]:
    """(the checkpoint folder of `step`, the hidden folder it is built in)."""
    ckdir = Path(run_dir) / "checkpoints"
    return ckdir / f"step_{step:07d}", ckdir / f".step_{step:07d}.tmp"


def _is_complete(run_dir: Path, folder: Path) -> bool:
    latest = Path(run_dir) / "latest.txt"
    return latest.is_file() and latest.read_text().strip() == folder.name and (folder / TRAIN_STATE_NAME).is_file()


def begin_checkpoint(run_dir: Path, step: int, is_main: bool) -> Path | None:
    """The hidden folder that every rank writes its shards of `step`'s checkpoint into (rank 0 sweeps stale ones and
    creates it; a collective); None when that checkpoint is complete already (a resumed, finished run)."""
    folder, tmp = _checkpoint_paths(run_dir, step)
    done = _is_complete(run_dir, folder)
    if is_main and not done:
        _sweep_stale(folder.parent)
        tmp.mkdir(parents=True)
    if dist.is_initialized():
        dist.barrier()
    return None if done else tmp


def _sweep_stale(ckdir: Path) -> None:
    from vfmtok.utils.atomic import sweep_temporaries

    sweep_temporaries(ckdir, depth=1)  # left by a killed save (the run folder is locked: none is in progress)


def save_checkpoint(run_dir: Path, step: int, export_state: dict[str, torch.Tensor] | None, config: dict[str, Any],
                    model_type: str, train_state: dict[str, Any], keep_last: int = 2, prebuilt: bool = False) -> Path:
    """Write a complete checkpoint folder (built hidden, renamed into place), then point latest.txt at it; prune.

    prebuilt: the hidden folder already holds what every rank wrote (begin_checkpoint); export_state None: no
    model.safetensors (the weights are in those shards)."""
    import shutil

    from vfmtok.utils.atomic import atomic_path, sweep_temporaries

    run_dir = Path(run_dir)
    folder, tmp = _checkpoint_paths(run_dir, step)
    ckdir, latest = folder.parent, run_dir / "latest.txt"
    if _is_complete(run_dir, folder):
        return folder  # a resumed, finished run saving its last step again: that checkpoint is complete already
    if not prebuilt:
        sweep_temporaries(ckdir, depth=1)  # left by a killed save (the run folder is locked: none is in progress)
        # A folder already there comes from a killed run, after its rename but before latest.txt moved: nothing
        # points at it, so the new one replaces it.
        with atomic_path(folder, folder=True) as t:
            save_pretrained(t, export_state, config, model_type)
            save_train_state(t / TRAIN_STATE_NAME, train_state)
    else:  # every rank wrote its shards into tmp (begin_checkpoint): add rank 0's files, then rename it into place
        save_pretrained(tmp, export_state, config, model_type)
        save_train_state(tmp / TRAIN_STATE_NAME, train_state)
        if folder.exists():
            old = ckdir / f".{folder.name}.old"
            os.replace(folder, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, folder)
    write_text(latest, folder.name + "\n")
    olds = sorted(p for p in ckdir.glob("step_*") if p.is_dir() and p != folder)
    for p in olds[: max(0, len(olds) - (keep_last - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return folder


def open_metrics(run_dir: Path, after_step: int = 0):
    """run_dir/metrics.jsonl opened for appending; lines past `after_step` (from an interrupted run that is being
    resumed from an older checkpoint) are dropped first, so each step appears once."""
    path = Path(run_dir) / "metrics.jsonl"
    if path.is_file():
        kept = []
        for line in path.read_text().splitlines():
            try:
                if int(json.loads(line).get("step", 0)) <= after_step:
                    kept.append(line + "\n")
            except (ValueError, AttributeError):  # a line cut short by a kill
                continue
        write_text(path, "".join(kept))
    return open(path, "a")


def load_resume_state(run_dir: Path) -> tuple[Path, dict[str, Any]]:
    """(checkpoint folder, train state) of the newest checkpoint in run_dir; one-line error when there is none."""
    if not (Path(run_dir) / "latest.txt").is_file():
        raise VFMTokError(f"--resume: no checkpoint in {run_dir}")
    folder = resolve_checkpoint(run_dir)
    return folder, load_train_state(folder / TRAIN_STATE_NAME)


def rng_state() -> dict[str, Any]:
    """This process's RNG states (torch, CUDA, python, numpy) as tensors/primitives (weights_only-loadable)."""
    st = {"torch": torch.get_rng_state(), "python": random.getstate()}
    np_st = np.random.get_state()
    st["numpy"] = (np_st[0], torch.from_numpy(np_st[1].astype(np.int64)), *np_st[2:])
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    """Restore the RNG states saved by rng_state (older checkpoints hold the torch state only)."""
    torch.set_rng_state(st["torch"])
    if "python" in st:
        v, internal, gauss = st["python"]
        random.setstate((v, tuple(internal), gauss))
    if "numpy" in st:
        name, keys, *rest = st["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def gather_rng_states() -> list[dict[str, Any]]:
    """Every rank's rng_state(), in rank order (a collective under DDP; a one-element list otherwise)."""
    mine = rng_state()
    if not dist.is_initialized():
        return [mine]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, mine)
    return out


def restore_rank_rng(saved: Any, info: DistInfo, where: str) -> None:
    """Set this rank's RNG from a checkpoint's per-rank list; the run must resume with the world size it had."""
    states = saved if isinstance(saved, list) else [saved]  # checkpoints before per-rank states
    if len(states) != info.world_size:
        raise VFMTokError(f"--resume: {where} was saved by {len(states)} processes, this run has {info.world_size}; "
                          "resume with the same number of processes (the data order and RNG streams depend on it)")
    set_rng_state(states[info.rank])


@contextlib.contextmanager
def grad_sync(model: nn.Module, enabled: bool):
    """Skip the gradient all-reduce (DDP no_sync / FSDP2 requires_gradient_sync) for all but the last micro-batch."""
    if enabled:
        yield
    elif isinstance(model, nn.parallel.DistributedDataParallel):
        with model.no_sync():
            yield
    elif hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield
