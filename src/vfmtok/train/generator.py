"""`vfmtok train-generator`: train the class-conditional GPT on extracted codes (or images + a frozen tokenizer).

Single process on CPU, DDP under torchrun, FSDP2 (`--fsdp`, each transformer block sharded) for big presets.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from vfmtok.data.codes import CodeDataset
from vfmtok.generator.pairing import check_codes_match, tokenizer_facts
from vfmtok.generator.gpt import GPT, GPTConfig, preset_config
from vfmtok.train import common as C
from vfmtok.utils import args as A
from vfmtok.utils.config import apply_overrides, check_ranges, from_dict, to_dict
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.io import resolve_checkpoint, write_json


@dataclass
class GeneratorTrainConfig:
    """A generator training run (saved resolved as run_config.json, reusable with --config)."""

    preset: str = "GPT-B"
    model: GPTConfig = field(default_factory=GPTConfig)
    codes: str = ""  # codes folder from extract-codes, or:
    data: str = ""  # images (ImageFolder path/zip, 'sample', 'imagenette') tokenized on the fly with:
    tokenizer: str = ""
    split: str = "train"
    steps: int = 10000
    batch_size: int = 32  # per process
    lr: float = 1e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    min_lr: float = 0.0
    ema_decay: float = 0.9999  # 0 disables EMA
    save_every: int = 1000
    keep_last: int = 2
    log_every: int = 10
    precision: str = "bf16"  # autocast on GPU; CPU runs fp32
    seed: int = 0
    num_workers: int = 0
    fsdp: bool = False
    device: str = "auto"

    def validate(self) -> None:
        """One-line errors for values no run can use (e.g. --set steps=-5)."""
        self.model.validate()
        if self.precision not in ("fp32", "bf16"):
            raise VFMTokError(f"precision must be fp32 or bf16 for training (fp16 would need loss scaling), got '{self.precision}'")
        check_ranges(self, "generator", positive=("steps", "batch_size", "lr", "save_every", "log_every", "keep_last",
                                                  "grad_clip"),
                     non_negative=("weight_decay", "warmup_steps", "min_lr", "seed", "num_workers"), fraction=("ema_decay",))
        if self.lr_schedule not in ("constant", "cosine"):
            raise VFMTokError(f"lr_schedule must be constant or cosine, got '{self.lr_schedule}'")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `vfmtok train-generator`."""
    p.add_argument("--codes", default=None, help="codes folder written by `vfmtok extract-codes`")
    A.add(p, "data", default=None, help="or: images to tokenize on the fly (needs --tokenizer)")
    A.add(p, "tokenizer", help="tokenizer checkpoint/run folder for --data")
    A.add(p, "out", help="run folder (checkpoints, train.log, run_config.json)")
    p.add_argument("--preset", default=None, help="GPT-nano, GPT-tiny, GPT-B, GPT-L, GPT-XL, GPT-XXL, GPT-2B, GPT-3B")
    A.add(p, "steps")
    A.add(p, "batch_size", default=None, help="per-process batch size")
    A.add(p, "lr")
    p.add_argument("--warmup-steps", type=A.non_negative_int, default=None)
    p.add_argument("--ema-decay", type=A.decay, default=None, help="0 disables EMA")
    p.add_argument("--save-every", type=A.positive_int, default=None)
    p.add_argument("--log-every", type=A.positive_int, default=None)
    A.add(p, "num_workers", default=None)
    A.add(p, "device", default=None, help=f"{A.DEVICE_CHOICES} (default auto)")
    A.add(p, "precision", default=None, choices=["fp32", "bf16"], help="bf16 autocast on GPU (default)")
    A.add(p, "seed", default=None)
    p.add_argument("--fsdp", action="store_true", default=None, help="shard with FSDP2 (torchrun; for big presets)")
    A.add_all(p, "resume", "config", "set")


_FLAGS = ("codes", "data", "tokenizer", "preset", "steps", "batch_size", "lr", "warmup_steps", "ema_decay",
          "save_every", "log_every", "num_workers", "device", "precision", "seed", "fsdp")


def _layer(base: GeneratorTrainConfig, args: argparse.Namespace) -> GeneratorTrainConfig:
    """base -> YAML (--config) -> --set -> explicit flags (the tokenizer trainer's order too)."""
    return apply_overrides(base, args.overrides, args.config, {name: getattr(args, name, None) for name in _FLAGS})


def resolve_config(args: argparse.Namespace, data_facts=None) -> GeneratorTrainConfig:
    """Preset architecture + the data's vocab/tokens/grid/classes, then YAML, --set and flags on top; validated."""
    first = _layer(GeneratorTrainConfig(), args)  # where the data is and which preset
    facts = data_facts(first) if data_facts else {}
    cfg = _layer(GeneratorTrainConfig(preset=first.preset, model=preset_config(first.preset, **facts)), args)
    cfg.validate()
    return cfg


class ResumableSampler(torch.utils.data.Sampler):
    """Seeded per-epoch permutation split across ranks (drop_last); can skip a prefix once, to resume mid-epoch."""

    def __init__(self, n: int, rank: int, world: int, seed: int):
        self.n, self.rank, self.world, self.seed = n, rank, world, seed
        self.epoch, self._skip = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip(self, k: int) -> None:
        """Drop the first k indices of the next epoch iterated."""
        self._skip = k

    def __len__(self) -> int:
        return self.n // self.world

    def __iter__(self) -> Iterator[int]:
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100003 + self.epoch))
        mine = perm[self.rank:: self.world][: len(self)].tolist()
        start, self._skip = self._skip, 0
        return iter(mine[start:])


class ShardedEMA:
    """EMA of FSDP2-sharded parameters: each rank averages its own shard; export gathers full tensors."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.params = {n: p.detach().clone() for n, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int | None = None) -> None:
        """Same rule (and decay warm-up) as train.common.EMA.update."""
        d = self.decay if step is None else min(self.decay, (1.0 + step) / (10.0 + step))
        for n, p in model.named_parameters():
            self.params[n].lerp_(p.detach(), 1.0 - d)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Full (unsharded) CPU tensors; a collective, so every rank calls it."""
        return {n: (t.full_tensor() if hasattr(t, "full_tensor") else t).cpu() for n, t in self.params.items()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        from torch.distributed.tensor import DTensor, distribute_tensor

        for n, t in self.params.items():
            src = state[n].to(t.device, t.dtype)
            if isinstance(t, DTensor):
                t.to_local().copy_(distribute_tensor(src, t.device_mesh, t.placements).to_local())
            else:
                t.copy_(src)


def _wrap_fsdp(model: GPT, device: torch.device, precision: str) -> torch.nn.Module:
    """FSDP2: shard every transformer block, then the root (embeddings, head)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy()
    if device.type == "cuda" and precision in ("bf16", "fp16"):
        low = torch.bfloat16 if precision == "bf16" else torch.float16
        mp = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32)
    for blk in model.blocks:
        fully_shard(blk, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    return model


def _training_data(cfg: GeneratorTrainConfig, device: torch.device, tokenizer: Any):
    """(dataset, tokenizer facts, class names, tokenizer or None), checked against the GPT config."""
    if cfg.codes and cfg.data:
        raise VFMTokError("give either --codes or --data, not both")
    if cfg.codes:
        dataset = CodeDataset(cfg.codes, seed=cfg.seed)
        facts, names, n_cls, where = dataset.tokenizer, dataset.class_names, dataset.num_classes, f"codes {cfg.codes}"
    elif cfg.data:
        from vfmtok.data.imagefolder import ImageFolderDataset
        from vfmtok.data.sources import resolve_dataset

        if tokenizer is None:
            if not cfg.tokenizer:
                raise VFMTokError("--data needs --tokenizer (or train on --codes from `vfmtok extract-codes`)")
            from vfmtok.tokenizer.api import load_tokenizer

            tokenizer = load_tokenizer(cfg.tokenizer, device=device)
        dataset = ImageFolderDataset(resolve_dataset(cfg.data), tokenizer.image_size, split=cfg.split, train=True, seed=cfg.seed)
        facts, names, n_cls, where = tokenizer_facts(tokenizer), dataset.class_names, len(dataset.classes), f"tokenizer {cfg.tokenizer}"
    else:
        raise VFMTokError("give --codes (from `vfmtok extract-codes`) or --data with --tokenizer")
    if n_cls != cfg.model.num_classes:
        raise VFMTokError(f"{where}: the data has {n_cls} classes, GPT num_classes is {cfg.model.num_classes}")
    check_codes_match(facts, cfg.model.vocab_size, cfg.model.num_tokens, cfg.model.token_grid, where)
    return dataset, facts, names, tokenizer


def train_generator(cfg: GeneratorTrainConfig, run_dir: Path, resume: bool = False, tokenizer: Any = None) -> Path:
    """Train; returns the newest checkpoint folder (model.safetensors holds EMA weights when EMA is on)."""
    cfg.validate()
    info = C.setup_distributed(cfg.device)
    device, run_dir = info.device, Path(run_dir)
    if (run_dir / "latest.txt").exists() and not resume:
        raise VFMTokError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    if cfg.fsdp and not dist.is_initialized():
        raise VFMTokError("--fsdp needs a distributed launch (torchrun --nproc_per_node N ...)")
    dataset, tok_facts, class_names, tokenizer = _training_data(cfg, device, tokenizer)
    per_rank = len(dataset) // info.world_size
    if per_rank < cfg.batch_size:
        raise VFMTokError(f"{len(dataset)} training images is less than one global batch ({cfg.batch_size} x {info.world_size})")
    sampler = ResumableSampler(len(dataset), info.rank, info.world_size, cfg.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                                         num_workers=cfg.num_workers, persistent_workers=False,
                                         generator=torch.Generator().manual_seed(cfg.seed))  # keeps the global RNG untouched
    steps_per_epoch = per_rank // cfg.batch_size
    log = C.setup_logging(run_dir, info.is_main, "vfmtok.gpt")

    # --- model, optimizer, EMA (identical init on every rank) ---
    C.seed_everything(cfg.seed)
    raw = GPT(cfg.model).to(device)
    raw.class_names, raw.tokenizer_info = class_names, tok_facts
    if cfg.fsdp:
        model = _wrap_fsdp(raw, device, cfg.precision)
    elif info.world_size > 1:
        model = DDP(raw, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        model = raw
    ema = None
    if cfg.ema_decay > 0:
        ema = ShardedEMA(model, cfg.ema_decay) if cfg.fsdp else C.EMA(raw, cfg.ema_decay)
    opt = torch.optim.AdamW(C.param_groups(raw, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas),
                            fused=device.type == "cuda" and not cfg.fsdp)
    full = StateDictOptions(full_state_dict=True, cpu_offload=True)

    step = 0
    if resume:
        folder, st = C.load_resume_state(run_dir)
        saved = from_dict(GPTConfig, st["gpt"], where=f"{folder} gpt")
        if to_dict(saved) != to_dict(cfg.model):
            raise VFMTokError(f"--resume: {folder} was trained with another GPT config; use the same preset/--set values")
        set_state_dict(model, opt, model_state_dict=st["model"], optim_state_dict=st["optimizer"],
                       options=StateDictOptions(full_state_dict=True))
        if ema is not None and st.get("ema") is not None:
            (ema.module if isinstance(ema, C.EMA) else ema).load_state_dict(st["ema"])
        step = int(st["step"])
        log.info("resumed from %s at step %d", folder, step)
    # Dropout / label-dropout streams: distinct per rank; a single process resumes its exact RNG state.
    if resume and info.world_size == 1:
        C.set_rng_state(st["rng"])
    else:
        C.seed_everything((cfg.seed * 1000 + info.rank) * 1000003 + step)
    if info.is_main:
        write_json(run_dir / "run_config.json", to_dict(cfg))  # JSON is YAML: `--config` reads it back
        log.info("GPT %s: %.2fM params, %d images, %s", cfg.preset, sum(p.numel() for p in raw.parameters()) / 1e6,
                 len(dataset), "FSDP" if cfg.fsdp else f"DDP x{info.world_size}" if info.world_size > 1 else "1 process")

    def checkpoint(at: int) -> Path | None:
        # Gathering is collective (FSDP); only rank 0 writes.
        model_sd, opt_sd = get_state_dict(model, opt, options=full)
        ema_sd = None
        if ema is not None:
            ema_sd = ema.state_dict() if isinstance(ema, ShardedEMA) else {k: v.cpu() for k, v in ema.module.state_dict().items()}
        folder = None
        if info.is_main:
            config = {**raw.export_config(), "step": at, "train": to_dict(cfg)}
            st = {"step": at, "gpt": to_dict(cfg.model), "model": model_sd, "optimizer": opt_sd, "ema": ema_sd,
                  "rng": C.rng_state(), "world_size": info.world_size}
            folder = C.save_checkpoint(run_dir, at, ema_sd if ema_sd is not None else model_sd, config, "gpt", st,
                                       keep_last=cfg.keep_last)
            log.info("step %d: saved %s", at, folder)
        if dist.is_initialized():
            dist.barrier()
        return folder

    sampler.skip((step % steps_per_epoch) * cfg.batch_size)
    batches = C.infinite_loader(loader, start_epoch=step // steps_per_epoch)
    tokens_per_step = cfg.batch_size * cfg.model.num_tokens * info.world_size
    bar = tqdm(total=cfg.steps, initial=step, desc="train-generator", unit="step", dynamic_ncols=True,
               disable=not info.is_main or None)
    model.train()
    metrics_f = C.open_metrics(run_dir, step) if info.is_main else None
    loss_sum, n_sum, t0 = torch.zeros((), device=device), 0, time.perf_counter()
    while step < cfg.steps:
        _, (x, labels) = next(batches)
        labels = labels.to(device)
        if cfg.codes:
            ids = x.to(device)
        else:
            with torch.no_grad():
                ids = tokenizer.encode(x.to(device)).to(device)
        lr = C.lr_at(step, cfg.lr, cfg.warmup_steps, cfg.steps, cfg.lr_schedule, cfg.min_lr)
        for g in opt.param_groups:
            g["lr"] = lr
        with C.autocast(device, cfg.precision):
            _, loss = model(labels, ids[:, :-1], targets=ids)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if ema is not None:
            ema.update(model, step)  # decay warm-up: short runs do not export (almost) the initial weights
        step += 1
        loss_sum += loss.detach()
        n_sum += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            mean_loss = float(C.all_reduce_mean(loss_sum / n_sum))
            gn = float(gnorm.full_tensor() if hasattr(gnorm, "full_tensor") else gnorm)
            tps = tokens_per_step * n_sum / max(1e-9, time.perf_counter() - t0)
            if not math.isfinite(mean_loss):
                raise VFMTokError(f"step {step}: loss is {mean_loss}; lower --lr or check the codes")
            log.info("step %d loss %.4f lr %.3g grad_norm %.3f tokens/s %.0f", step, mean_loss, lr, gn, tps)
            if metrics_f is not None:  # one JSON line per log interval, as the tokenizer trainer writes
                metrics_f.write(json.dumps({"step": step, "loss": mean_loss, "lr": lr, "grad_norm": gn,
                                            "tokens_per_s": round(tps, 1)}) + "\n")
                metrics_f.flush()
            bar.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{tps:.0f}")
            loss_sum, n_sum, t0 = torch.zeros((), device=device), 0, time.perf_counter()
        bar.update(1)
        if step % cfg.save_every == 0 or step == cfg.steps:
            checkpoint(step)
    bar.close()
    if metrics_f is not None:
        metrics_f.close()
    log.info("done at step %d", step)
    C.cleanup_distributed()
    return resolve_checkpoint(run_dir)


def run(args: argparse.Namespace) -> int:
    """Entry point of `vfmtok train-generator`."""
    loaded: dict[str, Any] = {}

    def data_facts(cfg: GeneratorTrainConfig) -> dict[str, Any]:
        # vocab / tokens / grid / classes of the training data (codes index, or tokenizer + image folder).
        if cfg.codes:
            ds = CodeDataset(cfg.codes)
            t, n_cls = ds.tokenizer, ds.num_classes
        elif cfg.data and cfg.tokenizer:
            from vfmtok.data.imagefolder import ImageFolderDataset
            from vfmtok.data.sources import resolve_dataset
            from vfmtok.tokenizer.api import load_tokenizer

            loaded["tok"] = load_tokenizer(cfg.tokenizer, device=C.setup_distributed(cfg.device).device)
            t = tokenizer_facts(loaded["tok"])
            n_cls = len(ImageFolderDataset(resolve_dataset(cfg.data), 8, split=cfg.split).classes)
        else:
            raise VFMTokError("give --codes (from `vfmtok extract-codes`) or --data with --tokenizer")
        return {"vocab_size": int(t["codebook_size"]), "num_tokens": int(t["num_tokens"]),
                "token_grid": tuple(t["token_grid"]), "num_classes": n_cls}

    cfg = resolve_config(args, data_facts)
    folder = train_generator(cfg, Path(args.out), resume=args.resume, tokenizer=loaded.get("tok"))
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"checkpoint: {folder}")
    return 0
