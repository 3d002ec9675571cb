"""`vfmtok train-tokenizer`: train VFMTok (or the VQGAN baseline) on an image folder; CPU or torchrun DDP."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from vfmtok.data.imagefolder import ImageFolderDataset
from vfmtok.data.loaders import EpochStream, shard_folder
from vfmtok.data.shards import ShardDataset
from vfmtok.data.sources import resolve_dataset
from vfmtok.encoders.base import EncoderOutput, drop_frozen_state, frozen_prefixes
from vfmtok.tokenizer.api import MODEL_TYPES
from vfmtok.tokenizer.base import DECODER_SIDE, TokenizerBase
from vfmtok.tokenizer.build import build_tokenizer
from vfmtok.tokenizer.config import TokenizerConfig, TokenizerRunConfig, get_preset
from vfmtok.tokenizer.losses import TokenizerLoss
from vfmtok.tokenizer.vit_decoder import ViTDecoder
from vfmtok.train import common as C
from vfmtok.utils.config import apply_overrides, to_dict
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.images import save_pairs_grid
from vfmtok.utils.io import CONFIG_NAME, WEIGHTS_NAME, file_sha256, load_state_strict, read_json, write_json
from vfmtok.utils.pretrained import load_pretrained, resolve_checkpoint


def resolve_config(preset: str = "vfmtok-cpu-64", overrides: Sequence[str] = (), config: str | Path | None = None,
                   flags: Mapping[str, Any] | None = None) -> TokenizerRunConfig:
    """Preset -> YAML `config` -> `overrides` ('a.b=v') -> `flags` ({dotted field: value}, None = not given), validated."""
    cfg = apply_overrides(get_preset(preset), list(overrides or []), config, dict(flags or {}))
    cfg.train.validate()
    return cfg


def _make_dataset(cfg: TokenizerRunConfig, model: TokenizerBase, run_dir: Path, info: C.DistInfo, log):
    """(training set, image set for class names / previews): tar shards, plain augmented images, or (VFMTok) cached
    frozen-encoder features of augmented views."""
    t = cfg.train
    shards = shard_folder(str(t.data), t.split)
    if shards is not None:
        if t.cache_features and cfg.model.arch == "vfmtok":
            raise VFMTokError("the feature cache needs an image folder, not tar shards; add --set train.cache_features=false")
        ds = ShardDataset(shards, cfg.model.image_size, t.batch_size, info.rank, info.world_size, train=True,
                          seed=t.seed, shuffle_buffer=t.shuffle_buffer, min_scale=t.min_scale)
        return ds, ds
    base = ImageFolderDataset(resolve_dataset(t.data), cfg.model.image_size, split=t.split, train=True,
                              min_scale=t.min_scale, seed=t.seed)
    if not (t.cache_features and cfg.model.arch == "vfmtok"):
        return base, base
    from vfmtok.data.feature_cache import CachedFeatureDataset, build_feature_cache

    path = run_dir / "feature_cache"
    if info.is_main:
        log.info("building feature cache at %s (%d images x %d views)", path, len(base), t.cache_views)
        build_feature_cache(model.encoder, base, path, views=t.cache_views, batch_size=max(8, t.batch_size), seed=t.seed)
    if dist.is_initialized():
        dist.barrier()
    return CachedFeatureDataset(path), base


def init_weights(model: TokenizerBase, cfg: TokenizerConfig, source: str) -> tuple[Path, list[str]]:
    """Load a checkpoint's (EMA) weights into a freshly built model of the same config; returns its folder and the
    hashes of the checkpoints whose ids it gives (itself, then its own `same_codes_as`).

    The one difference allowed is a deeper shared ViT decoder (`model.dec_depth`): its first blocks are loaded and the
    new ones start as identity maps, so the grown model computes what the checkpoint did."""
    folder = resolve_checkpoint(source)
    state, config, _ = load_pretrained(folder, MODEL_TYPES, required=("model",))
    ours, theirs = json.loads(json.dumps(to_dict(cfg))), config["model"]
    differ = [k for k in ours if k not in ("encoder_weights", "encoder_pretrained") and theirs.get(k) != ours[k]]
    grown_from = _grown_from(model, differ, theirs, ours)
    if differ and grown_from is None:
        raise VFMTokError(f"train.init_from {folder}: its model config differs in {', '.join(differ)}; "
                          "build the same model (--preset / --set model.*) as that run (only a larger "
                          "model.dec_depth may differ)")
    grown = grown_from is not None
    new_blocks = tuple(f"decoder.blocks.{i}." for i in range(grown_from, ours["dec_depth"])) if grown else ()
    model.load_trainable_state_dict(state, source=str(folder), new_prefixes=new_blocks)
    if grown:
        model.decoder.zero_residuals(grown_from)
    return folder, [file_sha256(folder / WEIGHTS_NAME), *config.get("same_codes_as", [])]


def _grown_from(model: TokenizerBase, differ: list[str], theirs: dict, ours: dict) -> int | None:
    """The checkpoint's decoder depth when the only difference is a deeper ViT decoder here, else None."""
    if differ != ["dec_depth"] or not isinstance(getattr(model, "decoder", None), ViTDecoder):
        return None
    return int(theirs["dec_depth"]) if int(theirs["dec_depth"]) < int(ours["dec_depth"]) else None


def _preview_images(cfg: TokenizerRunConfig, image_ds, log, n: int = 8) -> torch.Tensor:
    """n validation images (the train set when there is no val split), centre-cropped, for reconstruction grids."""
    t = cfg.train
    if isinstance(image_ds, ShardDataset):
        val = shard_folder(str(t.data), "val")
        src = ShardDataset(val, cfg.model.image_size, 1, train=False) if val and val != image_ds.spec else image_ds
        return src.first_images(n)
    try:
        ds = ImageFolderDataset(image_ds.path, cfg.model.image_size, split="val")
    except VFMTokError:  # training needs no validation split
        log.warning("note: %s has no usable 'val' split; reconstruction previews show training images", t.data)
        ds = ImageFolderDataset(image_ds.path, cfg.model.image_size, split=t.split)
    step = max(1, len(ds) // n)
    return torch.stack([ds[i * step][0] for i in range(min(n, len(ds)))])


def _unpack(batch, device):
    if len(batch) == 4:  # cached: image, label, levels, target
        img, _, levels, target = batch
        return img.to(device), EncoderOutput([lv.to(device).float() for lv in levels], target.to(device).float())
    img, _ = batch
    return img.to(device), None


@dataclass
class TokenizerParts:
    """Everything a tokenizer training step updates, and what a checkpoint must hold to resume it exactly."""

    model: TokenizerBase
    losses: TokenizerLoss
    ema: C.EMA
    opt: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None
    scaler: torch.amp.GradScaler
    reseed_gen: torch.Generator
    ddp_model: torch.nn.Module
    ddp_disc: torch.nn.Module | None

    def train_state(self, step: int) -> dict:
        """Resume state (rank 0 writes it; RNG states come from every rank, so all ranks call this)."""
        q = self.model.quantizer
        st = {"model": self.model.trainable_state_dict(), "ema": self.ema.module.trainable_state_dict(),
              "optimizer": self.opt.state_dict(), "scaler": self.scaler.state_dict(), "step": step,
              "rng": C.gather_rng_states(), "reseed_gen": self.reseed_gen.get_state(),
              "quant_window": _gather_windows(q._recent), "quant_window_pos": int(q._recent_pos)}
        if self.opt_d is not None:
            st["disc"] = drop_frozen_state(self.losses.disc, self.losses.disc.state_dict())  # not the frozen VGG
            st["disc_optimizer"] = self.opt_d.state_dict()
        return st

    def load(self, st: dict, folder: Path, info: C.DistInfo) -> int:
        """Restore a train_state(); returns its step."""
        self.model.load_trainable_state_dict(st["model"], source=str(folder))
        self.ema.module.load_trainable_state_dict(st["ema"], source=str(folder))
        self.opt.load_state_dict(st["optimizer"])
        if "scaler" in st:
            self.scaler.load_state_dict(st["scaler"])
        if self.opt_d is not None and "disc" in st:
            load_state_strict(self.losses.disc, st["disc"], str(folder), exclude_prefixes=tuple(frozen_prefixes(self.losses.disc)))
            self.opt_d.load_state_dict(st["disc_optimizer"])
        if "reseed_gen" in st:
            self.reseed_gen.set_state(st["reseed_gen"])
        if "quant_window" in st:  # the dead-code re-seeding reads it, so it is part of the exact state
            q = self.model.quantizer
            windows = st["quant_window"]
            if isinstance(windows, list) and len(windows) == info.world_size:  # one window per rank
                q._recent.copy_(windows[info.rank])
            elif not isinstance(windows, list):  # before per-rank windows: one window of every rank's ids
                q._recent.copy_(windows) if info.rank == 0 else q._recent.fill_(-1)
            else:
                raise VFMTokError(f"--resume: {folder} was saved by {len(windows)} processes, this run has "
                                  f"{info.world_size}; resume with the same number of processes")
            q._recent_pos.fill_(int(st["quant_window_pos"]))
        C.restore_rank_rng(st["rng"], info, str(folder))
        return int(st["step"])


def tokenizer_optimizer(model: torch.nn.Module, t) -> torch.optim.AdamW:
    """AdamW over the decay / no-decay groups (with train.weight_decay 0, as the paper preset has, it is the official
    trainer's torch.optim.Adam)."""
    return torch.optim.AdamW(C.param_groups(model, t.weight_decay), lr=t.lr, betas=tuple(t.betas))


def _gather_windows(window: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's recent-ids window, in rank order (a collective under DDP; checkpoint steps only)."""
    if not dist.is_initialized():
        return [window.cpu()]
    out = [torch.empty_like(window) for _ in range(dist.get_world_size())]
    dist.all_gather(out, window)
    return [w.cpu() for w in out]


def wrap_ddp(module: torch.nn.Module, info: C.DistInfo, accum_steps: int = 1) -> torch.nn.Module:
    """DDP without the per-step search for unused parameters (find_unused_parameters): the tokenizer's graph is the
    same every step (no data-dependent branch; docs/training-hot-paths.md).

    One micro-batch per step: static_graph, which learns the used parameters in the first step (so a config that
    leaves some unused still trains). Accumulation (no_sync) trips static_graph in DDP (an internal assert), so it
    runs with every parameter expected to get a gradient, as every preset's do. Buffers are not broadcast at each
    forward: the tokenizer's are constants, and each rank keeps its own recent-ids window."""
    if info.world_size == 1:
        return module
    ids = [info.device.index] if info.device.type == "cuda" else None
    return DDP(module, device_ids=ids, static_graph=accum_steps == 1, **_no_buffer_sync())


def _no_buffer_sync() -> dict:
    """DDP's keyword for 'no buffer broadcast at each forward': newer torch renamed it (and warns on the old one)."""
    import inspect

    named = inspect.signature(DDP.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in named else {"broadcast_buffers": False}


def build_parts(cfg: TokenizerRunConfig, model: TokenizerBase, info: C.DistInfo) -> TokenizerParts:
    """Loss, EMA, optimisers, scaler and the DDP wrappers around an already-built tokenizer."""
    t, device = cfg.train, info.device
    frozen = (model.encoder,) if hasattr(model, "encoder") else ()
    losses = TokenizerLoss(cfg.loss, cfg.model.image_size).to(device)
    ema = C.EMA(model, t.ema_decay, shared=frozen, warmup=t.ema_warmup)
    opt = tokenizer_optimizer(model, t)
    opt_d = None
    if losses.disc is not None:
        d_params = [p for p in losses.disc.parameters() if p.requires_grad]
        opt_d = torch.optim.AdamW(d_params, lr=t.disc_lr, betas=tuple(t.betas), weight_decay=0.0)
    # fp16 needs loss scaling; bf16 and fp32 do not (the scaler is then a pass-through).
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and t.precision == "fp16")
    ddp_model = wrap_ddp(model, info, t.accum_steps)
    ddp_disc = wrap_ddp(losses.disc, info, t.accum_steps) if losses.disc is not None and info.world_size > 1 else None
    if t.compile:  # the loss terms in one graph beside the model's (LPIPS, the discriminator's G pass)
        losses.generator_terms = torch.compile(losses.generator_terms)
    return TokenizerParts(model, losses, ema, opt, opt_d, scaler, torch.Generator().manual_seed(t.seed + 1), ddp_model, ddp_disc)


def tokenizer_step(p: TokenizerParts, micro: list, step: int, cfg: TokenizerRunConfig, device: torch.device) -> tuple[dict, object]:
    """One optimiser step over micro-batches (gradient accumulation), then the discriminator's; returns (logs, last output).

    The logs are detached 0-dim tensors: nothing here reads the device (see C.LogMeter for when they are read)."""
    t = cfg.train
    lr = C.lr_at(step, t.lr, t.warmup_steps, t.steps, t.lr_schedule, warmup_init=t.warmup_init_lr)
    for g in p.opt.param_groups:
        g["lr"] = lr
    p.opt.zero_grad(set_to_none=True)
    k, logs, recons = len(micro), {}, []
    for i, (images, enc) in enumerate(micro):
        with C.grad_sync(p.ddp_model, i == k - 1):  # DDP wants the forward inside no_sync too
            with C.autocast(device, t.precision):
                out = p.ddp_model(images, enc)
                loss, logs = p.losses.generator_loss(images, out, step)
            p.scaler.scale(loss / k).backward()
        recons.append(out.recon.detach())
    p.scaler.unscale_(p.opt)
    logs["grad_norm"] = torch.nn.utils.clip_grad_norm_(p.model.parameters(), t.grad_clip).detach()
    p.scaler.step(p.opt)
    if p.losses.gan_active(step):
        p.opt_d.zero_grad(set_to_none=True)
        for i, ((images, _), recon) in enumerate(zip(micro, recons)):
            with C.grad_sync(p.ddp_disc or p.losses.disc, i == k - 1):
                with C.autocast(device, t.precision):
                    d_loss, d_logs = p.losses.discriminator_loss(images, recon, disc=p.ddp_disc)
                p.scaler.scale(d_loss / k).backward()
            logs.update(d_logs)
        p.scaler.unscale_(p.opt_d)
        torch.nn.utils.clip_grad_norm_(p.losses.disc.parameters(), t.grad_clip)
        p.scaler.step(p.opt_d)
    p.scaler.update()
    p.ema.update(p.model, step)
    return logs, out


def train_tokenizer(cfg: TokenizerRunConfig, run_dir: Path, resume: bool = False) -> Path:
    """Train; returns the folder of the final checkpoint (EMA weights)."""
    cfg.train.validate()
    info = C.setup_distributed(cfg.train.device)
    t = cfg.train
    run_dir = Path(run_dir)
    if run_dir.exists() and (run_dir / "latest.txt").exists() and not resume:
        raise VFMTokError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    if t.accum_steps < 1:
        raise VFMTokError("train.accum_steps must be >= 1")
    if shard_folder(str(t.data), t.split) is None:  # list the images before the run folder exists: bad data leaves nothing
        ImageFolderDataset(resolve_dataset(t.data), cfg.model.image_size, split=t.split)
    log = C.setup_logging(run_dir, info.is_main)
    C.seed_everything(t.seed + info.rank)
    device = info.device
    model = build_tokenizer(cfg.model).to(device)
    same_codes: list[str] = []  # what a decoder-only phase's checkpoints record as `same_codes_as`
    if t.init_from and not resume:  # on resume the checkpoint holds the weights
        source, lineage = init_weights(model, cfg.model, t.init_from)
        same_codes = lineage if t.trainable == "decoder" else []
        log.info("initialised from %s", source)
    if t.trainable == "decoder":
        model.train_decoder_only()
        log.info("training the decoder side only (%s); codes stay fixed, dead-code re-seeding is off",
                 ", ".join(DECODER_SIDE))
    dataset, image_ds = _make_dataset(cfg, model, run_dir, info, log)
    if t.compile:  # after the feature cache (built eagerly); in place, so checkpoints keep their keys
        model.compile()
    stream = EpochStream(dataset, t.batch_size, info.rank, info.world_size, t.seed, t.num_workers)
    p = build_parts(cfg, model, info)
    step = 0
    if resume:
        folder, st = C.load_resume_state(run_dir)
        step = p.load(st, folder, info)
        # from the checkpoint, not init_from again: that run may have moved on to a later checkpoint since
        same_codes = read_json(folder / CONFIG_NAME)["config"].get("same_codes_as", [])
        log.info("resumed from %s at step %d", folder, step)
    if info.is_main:
        write_json(run_dir / "run_config.json", to_dict(cfg))
    previews = _preview_images(cfg, image_ds, log) if info.is_main else None
    folder = _loop(cfg, p, stream, step, run_dir, info, log, image_ds.class_names, previews, same_codes)
    C.cleanup_distributed()
    return folder or resolve_checkpoint(run_dir)


def _loop(cfg, p: TokenizerParts, stream: EpochStream, step: int, run_dir: Path, info: C.DistInfo, log,
          class_names, previews, same_codes: list[str]) -> Path | None:
    """Steps from `step` to train.steps; checkpoints (collective: every rank's RNG) and logs on rank 0."""
    t, device, model = cfg.train, info.device, p.model

    def checkpoint(at: int) -> Path | None:
        st = p.train_state(at)
        if not info.is_main:
            return None
        config = {"model": to_dict(cfg.model), "class_names": class_names, "step": at, "train": to_dict(t),
                  "loss": to_dict(cfg.loss), **({"same_codes_as": same_codes} if same_codes else {})}
        return C.save_checkpoint(run_dir, at, st["ema"], config, cfg.model.arch, st)

    metrics_f = C.open_metrics(run_dir, step) if info.is_main else None
    bar = tqdm(total=t.steps, initial=step, disable=not info.is_main or None, desc="train-tokenizer", dynamic_ncols=True)
    batches = stream.from_step(step * t.accum_steps)
    t0, seen, folder, saved_at = time.time(), 0, None, None
    meter = C.LogMeter()
    model.train()
    while step < t.steps:
        micro = [_unpack(next(batches)[1], device) for _ in range(t.accum_steps)]
        logs, out = tokenizer_step(p, micro, step, cfg, device)
        meter.add(logs)
        lr = C.lr_at(step, t.lr, t.warmup_steps, t.steps, t.lr_schedule)
        step += 1
        seen += sum(m[0].shape[0] for m in micro) * info.world_size
        if step % t.log_every == 0 or step == t.steps:  # the only steps that read the device (collectives: all ranks)
            means, usage = meter.read(), model.quantizer.usage()
            ips = seen / max(1e-9, time.time() - t0)
            t0, seen = time.time(), 0
            if info.is_main:
                rec = {"step": step, "img_per_s": round(ips, 2), **usage, **means, "lr": lr}
                metrics_f.write(json.dumps(rec) + "\n")
                metrics_f.flush()
                log.info(json.dumps(rec))
                bar.set_postfix(loss=f"{means['total']:.3f}", usage=f"{usage['usage']:.2f}", ips=f"{ips:.1f}")
        # After logging: re-seeding restarts the usage window, which would log as zero usage.
        if t.reseed_dead_every and t.trainable == "all" and step % t.reseed_dead_every == 0 and step < t.steps:
            n = model.quantizer.reseed_dead_codes(out.pre_quant, p.reseed_gen)
            log.info("step %d: re-seeded %d dead codes", step, n)
        bar.update(1)
        if step % t.save_every == 0 or step == t.steps:
            folder, saved_at = checkpoint(step) or folder, step
        if t.sample_every and info.is_main and step % t.sample_every == 0:
            write_recon_grid(p.ema.module, previews, run_dir / f"recon_step{step:07d}.png", device)
    bar.close()
    if metrics_f:
        metrics_f.close()
    if saved_at != step:  # resumed at the last step: nothing ran
        folder = checkpoint(step) or folder
    if info.is_main:
        write_recon_grid(p.ema.module, previews, run_dir / "recon.png", device)
        log.info("done: %s", folder)
    return folder


@torch.no_grad()
def write_recon_grid(model: TokenizerBase, images: torch.Tensor, path: Path, device: torch.device) -> Path:
    """PNG of (original | reconstruction) pairs for a batch of images."""
    was = model.training
    model.eval()
    x = images.to(device)
    recon = model.decode(model.encode(x))
    model.train(was)
    return save_pairs_grid(path, x, recon)
