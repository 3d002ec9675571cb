"""`vfmtok train-generator`: train the class-conditional GPT on extracted codes (or images + a frozen tokenizer).

Single process on CPU, DDP under torchrun, FSDP2 (`--fsdp`, each transformer block sharded) for big presets.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from vfmtok.data.codes import CodeDataset
from vfmtok.data.loaders import EpochStream, shard_folder
from vfmtok.data.shards import ShardDataset
from vfmtok.generator.pairing import check_codes_match, tokenizer_facts
from vfmtok.generator.gpt import GPT, GPTConfig
from vfmtok.generator.rar import RARConfig
from vfmtok.train import generator_arch as G
from vfmtok.train import common as C
from vfmtok.train import sharded as S
from vfmtok.utils.config import apply_overrides, check_ranges, from_dict, to_dict
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.io import write_json
from vfmtok.utils.pretrained import resolve_checkpoint


@dataclass
class GeneratorTrainConfig:
    """A generator training run (saved resolved as run_config.json, reusable with --config)."""

    preset: str = "GPT-B"
    arch: str = "gpt"  # "gpt" trains `model`, "rar" trains `rar` (the preset decides; see generator_arch)
    model: GPTConfig = field(default_factory=GPTConfig)
    rar: RARConfig = field(default_factory=RARConfig)
    permute_anneal: tuple[float, float] = (0.5, 0.75)  # RAR: permutation probability 1 -> 0 between these fractions
    topk_codes: int = 1  # on-the-fly data: also train on the 2nd..k-th nearest code sequences (VFMTok-RAR uses 2)
    warmup_frac: float = 0.0  # used when warmup_steps is 0
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
    # EMA decay warm-up min(decay, (1+step)/(10+step)) so short runs do not export near-initial weights; the
    # paper presets (GPT-B and up) take LlamaGen's fixed decay from step 0 (False), see G.base_fields
    ema_warmup: bool = True
    # linear LR warm-up from (step+1)/warmup (True); from step/warmup (False: 1d-tokenizer's schedule, the first
    # step at lr 0), which the RAR recipe takes
    warmup_from_one: bool = True
    save_every: int = 1000
    keep_last: int = 2
    log_every: int = 10
    precision: str = "bf16"  # autocast on GPU; CPU runs fp32
    seed: int = 0
    num_workers: int = 0
    accum_steps: int = 1  # micro-batches of batch_size per optimiser step (to reach a global batch on fewer GPUs)
    grad_checkpoint: bool = False  # recompute each block's activations in the backward pass (memory for compute)
    compile: bool = False  # torch.compile each transformer block in place (state-dict keys unchanged)
    shuffle_buffer: int = 2000  # --data as tar shards: samples in the streaming shuffle buffer
    fsdp: bool = False
    device: str = "auto"

    def validate(self) -> None:
        """One-line errors for values no run can use (e.g. --set steps=-5)."""
        G.validate(self)
        if self.precision not in ("fp32", "bf16"):
            raise VFMTokError(f"precision must be fp32 or bf16 for training (fp16 would need loss scaling), got '{self.precision}'")
        check_ranges(self, "generator", positive=("steps", "batch_size", "lr", "save_every", "log_every", "keep_last",
                                                  "grad_clip", "accum_steps"),
                     non_negative=("weight_decay", "warmup_steps", "min_lr", "seed", "num_workers"), fraction=("ema_decay", "warmup_frac"))
        if self.lr_schedule not in ("constant", "cosine"):
            raise VFMTokError(f"lr_schedule must be constant or cosine, got '{self.lr_schedule}'")


def _layer(base: GeneratorTrainConfig, overrides: Sequence[str], config: str | Path | None,
           flags: Mapping[str, Any]) -> GeneratorTrainConfig:
    """base -> YAML `config` -> `overrides` -> explicit `flags` (the tokenizer trainer's order too)."""
    return apply_overrides(base, list(overrides or []), config, dict(flags))


def resolve_config(flags: Mapping[str, Any] | None = None, overrides: Sequence[str] = (), config: str | Path | None = None,
                   arch: str | None = None, data_facts=None) -> GeneratorTrainConfig:
    """Preset architecture + the data's vocab/tokens/grid/classes, then YAML, `overrides` and `flags`
    ({GeneratorTrainConfig field: value}, None = not given) on top; validated."""
    flags = dict(flags or {})
    first = _layer(GeneratorTrainConfig(), overrides, config, flags)  # where the data is and which preset
    given = flags.get("preset") is not None or first.preset != GeneratorTrainConfig.preset
    preset, arch = G.choose_preset(first.preset, arch, given)
    facts = data_facts(first) if data_facts else {}
    cfg = _layer(GeneratorTrainConfig(**G.base_fields(preset, arch, facts)), overrides, config, flags)
    cfg.preset, cfg.arch = G.choose_preset(cfg.preset, arch, True)
    cfg.validate()
    return cfg


class ShardedEMA:
    """EMA of FSDP2-sharded parameters: each rank averages its own shard and checkpoints it (train.sharded)."""

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = True):
        self.decay, self.warmup = decay, warmup
        self.params = {n: p.detach().clone() for n, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int | None = None) -> None:
        """The rule of train.common.EMA.update (`ema_decay_at`, warm-up as built), on each rank's shard."""
        d = C.ema_decay_at(self.decay, step if self.warmup else None)
        for n, p in model.named_parameters():
            self.params[n].lerp_(p.detach(), 1.0 - d)

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load full tensors (a single-file checkpoint of an FSDP run from before sharded checkpoints)."""
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
        shards = shard_folder(cfg.data, cfg.split)
        if shards is not None:
            rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
            dataset = ShardDataset(shards, tokenizer.image_size, cfg.batch_size, rank, world, train=True, seed=cfg.seed,
                                   shuffle_buffer=cfg.shuffle_buffer)
        else:
            dataset = ImageFolderDataset(resolve_dataset(cfg.data), tokenizer.image_size, split=cfg.split, train=True, seed=cfg.seed)
        facts, names, n_cls, where = tokenizer_facts(tokenizer), dataset.class_names, len(dataset.classes), f"tokenizer {cfg.tokenizer}"
    else:
        raise VFMTokError("give --codes (from `vfmtok extract-codes`) or --data with --tokenizer")
    m = G.model_config(cfg)
    if n_cls != m.num_classes:
        raise VFMTokError(f"{where}: the data has {n_cls} classes, {cfg.arch.upper()} num_classes is {m.num_classes}")
    check_codes_match(facts, m.vocab_size, m.num_tokens, m.token_grid, where)
    return dataset, facts, names, tokenizer


def _wrap(raw: GPT, cfg: GeneratorTrainConfig, info: C.DistInfo) -> torch.nn.Module:
    """Activation checkpointing (optional), then FSDP2, DDP or nothing."""
    if cfg.grad_checkpoint:
        from torch.distributed._composable import checkpoint

        for blk in raw.blocks:  # composable: parameter names (and so checkpoints) stay as they are
            checkpoint(blk)
    if cfg.compile:  # per block, in place: the unit FSDP2 shards, and parameter names stay as they are
        for blk in raw.blocks:
            blk.compile()
    if cfg.fsdp:
        return _wrap_fsdp(raw, info.device, cfg.precision)
    if info.world_size > 1:
        return DDP(raw, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    return raw


def make_ema(raw: torch.nn.Module, model: torch.nn.Module, cfg: GeneratorTrainConfig) -> Any:
    """The EMA a run keeps (None with ema_decay 0): of the FSDP-sharded `model`, else of the plain `raw` model."""
    if cfg.ema_decay <= 0:
        return None
    return ShardedEMA(model, cfg.ema_decay, cfg.ema_warmup) if cfg.fsdp else C.EMA(raw, cfg.ema_decay, warmup=cfg.ema_warmup)


def make_optimizer(raw: torch.nn.Module, cfg: GeneratorTrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over the model's decay / no-decay groups; the fused kernel (as LlamaGen's creat_optimizer picks) on CUDA
    and CPU, except under FSDP (sharded DTensor parameters)."""
    return torch.optim.AdamW(C.param_groups(raw, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas),
                             fused=device.type in ("cuda", "cpu") and not cfg.fsdp)


def generator_step(model: torch.nn.Module, opt: torch.optim.Optimizer, micro: list, step: int, cfg: GeneratorTrainConfig,
                   device: torch.device, ema: Any = None, tokenizer: Any = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One optimiser step over micro-batches [(ids or images, labels)]; returns (mean loss, grad norm, lr)."""
    lr = C.lr_at(step, cfg.lr, G.effective_warmup(cfg), cfg.steps, cfg.lr_schedule, cfg.min_lr, cfg.warmup_from_one)
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    total = torch.zeros((), device=device)
    k = len(micro)
    for i, (x, labels) in enumerate(micro):
        labels = labels.to(device)
        if tokenizer is None:
            ids = x.to(device)
        else:
            with torch.no_grad():
                ids = G.encode_batch(tokenizer, x.to(device), cfg.topk_codes).to(device)
            labels = labels.repeat_interleave(cfg.topk_codes)
        with C.grad_sync(model, i == k - 1):
            with C.autocast(device, cfg.precision):
                loss = G.training_loss(model, cfg, labels, ids, step)
            (loss / k).backward()
        total += loss.detach() / k
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    if ema is not None:
        ema.update(model, step)  # the decay warm-up, where cfg.ema_warmup built the EMA with it
    return total, gnorm, lr


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
    stream = EpochStream(dataset, cfg.batch_size, info.rank, info.world_size, cfg.seed, cfg.num_workers)
    log = C.setup_logging(run_dir, info.is_main, "vfmtok.gpt")

    # --- model, optimizer, EMA (identical init on every rank) ---
    C.seed_everything(cfg.seed)
    raw = G.build_model(cfg).to(device)
    raw.class_names, raw.tokenizer_info = class_names, tok_facts
    model = _wrap(raw, cfg, info)
    ema = make_ema(raw, model, cfg)
    opt = make_optimizer(raw, cfg, device)
    step = 0
    if resume:
        step = _load(run_dir, cfg, model, opt, ema, info, log)
    else:  # dropout / label-dropout streams: distinct per rank
        C.seed_everything((cfg.seed * 1000 + info.rank) * 1000003)
    if info.is_main:
        write_json(run_dir / "run_config.json", to_dict(cfg))  # JSON is YAML: `--config` reads it back
        log.info("%s %s: %.2fM params, %d images, %s", cfg.arch.upper(), cfg.preset,
                 sum(p.numel() for p in raw.parameters()) / 1e6, getattr(dataset, "num_samples", None) or len(dataset),
                 "FSDP" if cfg.fsdp else f"DDP x{info.world_size}" if info.world_size > 1 else "1 process")
    _loop(cfg, model, raw, opt, ema, stream, step, run_dir, info, log, tokenizer if not cfg.codes else None)
    log.info("done at step %d", cfg.steps)
    C.cleanup_distributed()
    return resolve_checkpoint(run_dir)


def _load(run_dir: Path, cfg: GeneratorTrainConfig, model, opt, ema, info: C.DistInfo, log) -> int:
    """Restore weights, optimiser, EMA and this rank's RNG streams from the newest checkpoint; returns its step.

    A sharded (FSDP) checkpoint is resharded to this run's world size; at another world size the RNG streams are
    re-seeded from (seed, step, rank), as the data order depends on the world size anyway."""
    folder, st = C.load_resume_state(run_dir)
    saved = from_dict(type(G.model_config(cfg)), st["gpt"], where=f"{folder} gpt")
    if to_dict(saved) != to_dict(G.model_config(cfg)):
        raise VFMTokError(f"--resume: {folder} was trained with another model config; use the same preset/--set values")
    step = int(st["step"])
    sharded = S.is_sharded(folder)
    if sharded and not cfg.fsdp:
        raise VFMTokError(f"--resume: {folder} is a sharded checkpoint of an FSDP run; resume it with --fsdp")
    if sharded:
        S.load_sharded(folder, model, opt, ema)
    else:  # one file: DDP and single-process runs (and FSDP runs before sharded checkpoints)
        set_state_dict(model, opt, model_state_dict=st["model"], optim_state_dict=st["optimizer"],
                       options=StateDictOptions(full_state_dict=True))
        if ema is not None and st.get("ema") is not None:
            (ema.module if isinstance(ema, C.EMA) else ema).load_state_dict(st["ema"])
    if sharded and len(st["rng"]) != info.world_size:
        log.warning("resumed at world size %d from a run of %d: same weights and step, new data order and RNG streams",
                    info.world_size, len(st["rng"]))
        C.seed_everything(((cfg.seed * 1000 + info.rank) * 1000003 + step) % 2**63)
    else:
        C.restore_rank_rng(st["rng"], info, str(folder))
    log.info("resumed from %s at step %d", folder, step)
    return step


def _checkpoint(at: int, cfg: GeneratorTrainConfig, model, raw: GPT, opt, ema, run_dir: Path, info: C.DistInfo, log) -> Path | None:
    """Write a checkpoint: FSDP runs through torch.distributed.checkpoint (each rank its shards; the last step also
    model.safetensors, read back from the shards by rank 0), DDP/single runs one file gathered on rank 0."""
    config = {**raw.export_config(), "step": at, "train": to_dict(cfg)}
    st: dict[str, Any] = {"step": at, "gpt": to_dict(G.model_config(cfg)), "world_size": info.world_size}
    export = None
    if cfg.fsdp:
        tmp = C.begin_checkpoint(run_dir, at, info.is_main)
        if tmp is not None:
            S.save_sharded(tmp, model, opt, ema)
        st["rng"] = C.gather_rng_states()
        if info.is_main and tmp is not None and at == cfg.steps:
            S.write_consolidated(tmp, raw.model_type)
    else:
        model_sd, opt_sd = get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        ema_sd = {k: v.cpu() for k, v in ema.module.state_dict().items()} if ema is not None else None
        st.update(model=model_sd, optimizer=opt_sd, ema=ema_sd, rng=C.gather_rng_states())
        export = ema_sd if ema_sd is not None else model_sd
    folder = None
    if info.is_main:
        folder = C.save_checkpoint(run_dir, at, export, config, raw.model_type, st, keep_last=cfg.keep_last,
                                   prebuilt=cfg.fsdp)
        log.info("step %d: saved %s", at, folder)
    if dist.is_initialized():
        dist.barrier()
    return folder


def _loop(cfg: GeneratorTrainConfig, model, raw: GPT, opt, ema, stream: EpochStream, step: int, run_dir: Path,
          info: C.DistInfo, log, tokenizer: Any) -> None:
    """Optimiser steps from `step` to cfg.steps, reading cfg.accum_steps batches each."""
    device = info.device
    batches = stream.from_step(step * cfg.accum_steps)
    start = step
    tokens_per_step = (cfg.batch_size * cfg.accum_steps * cfg.topk_codes * G.model_config(cfg).num_tokens
                       * info.world_size)  # k rows per image with top-k code augmentation
    bar = tqdm(total=cfg.steps, initial=step, desc="train-generator", unit="step", dynamic_ncols=True,
               disable=not info.is_main or None)
    model.train()
    metrics_f = C.open_metrics(run_dir, step) if info.is_main else None
    meter, n_sum, t0 = C.LogMeter(), 0, time.perf_counter()
    while step < cfg.steps:
        micro = [next(batches)[1] for _ in range(cfg.accum_steps)]
        t_step = time.perf_counter()
        loss, gnorm, lr = generator_step(model, opt, micro, step, cfg, device, ema, tokenizer)
        if cfg.compile and step == start:  # compile time, apart from the steady-state tokens/s logged below
            log.info("first step (includes torch.compile): %.1f s", time.perf_counter() - t_step)
        step += 1
        meter.add({"loss": loss, "grad_norm": gnorm})  # device tensors: read only at log steps
        n_sum += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            means = meter.read()
            mean_loss, gn = means["loss"], means["grad_norm"]
            tps = tokens_per_step * n_sum / max(1e-9, time.perf_counter() - t0)
            if not math.isfinite(mean_loss):
                raise VFMTokError(f"step {step}: loss is {mean_loss}; lower --lr or check the codes")
            log.info("step %d loss %.4f lr %.3g grad_norm %.3f tokens/s %.0f", step, mean_loss, lr, gn, tps)
            if metrics_f is not None:  # one JSON line per log interval, as the tokenizer trainer writes
                metrics_f.write(json.dumps({"step": step, "loss": mean_loss, "lr": lr, "grad_norm": gn,
                                            "tokens_per_s": round(tps, 1)}) + "\n")
                metrics_f.flush()
            bar.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{tps:.0f}")
            n_sum, t0 = 0, time.perf_counter()
        bar.update(1)
        if step % cfg.save_every == 0 or step == cfg.steps:
            _checkpoint(step, cfg, model, raw, opt, ema, run_dir, info, log)
    bar.close()
    if metrics_f is not None:
        metrics_f.close()
