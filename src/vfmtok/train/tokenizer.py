"""`vfmtok train-tokenizer`: train VFMTok (or the VQGAN baseline) on an image folder; CPU or torchrun DDP."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from vfmtok.data.imagefolder import ImageFolderDataset
from vfmtok.data.sources import resolve_dataset
from vfmtok.encoders.base import EncoderOutput, drop_frozen_state, frozen_prefixes
from vfmtok.tokenizer.base import TokenizerBase
from vfmtok.tokenizer.build import build_tokenizer
from vfmtok.tokenizer.config import TokenizerRunConfig, get_preset
from vfmtok.tokenizer.losses import TokenizerLoss
from vfmtok.train import common as C
from vfmtok.utils import args as A
from vfmtok.utils.config import apply_overrides, to_dict
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.images import save_pairs_grid
from vfmtok.utils.io import load_state_strict, resolve_checkpoint, write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of train-tokenizer."""
    p.add_argument("--preset", default="vfmtok-cpu-64", help="starting config (see vfmtok.tokenizer.config.PRESETS)")
    A.add_all(p, "config", "set")
    A.add(p, "data", default=None, help=f"{A.DATA_HELP} (sets train.data)")
    A.add(p, "steps", help="optimisation steps (sets train.steps)")
    A.add(p, "batch_size", default=None, help="per-process batch size (sets train.batch_size)")
    A.add(p, "lr", help="peak learning rate (sets train.lr)")
    A.add(p, "out", help="run folder (checkpoints, logs, samples)")
    A.add(p, "resume")
    A.add(p, "device", default=None, help=f"{A.DEVICE_CHOICES} (sets train.device, default auto)")


# flag (args attribute) -> the config field it sets
FLAG_FIELDS = {"data": "train.data", "steps": "train.steps", "batch_size": "train.batch_size", "lr": "train.lr",
               "device": "train.device"}


def resolve_config(args: argparse.Namespace) -> TokenizerRunConfig:
    """Preset -> YAML (--config) -> --set -> explicit flags, then validated."""
    flags = {field: getattr(args, name, None) for name, field in FLAG_FIELDS.items()}
    cfg = apply_overrides(get_preset(args.preset), args.overrides, args.config, flags)
    cfg.train.validate()
    return cfg


def run(args: argparse.Namespace) -> int:
    """Entry point of the CLI command."""
    cfg = resolve_config(args)
    train_tokenizer(cfg, Path(args.out), resume=args.resume)
    return 0


def _image_dataset(cfg: TokenizerRunConfig) -> ImageFolderDataset:
    """The augmented training images (listed before the run folder is touched: bad data leaves nothing behind)."""
    t = cfg.train
    return ImageFolderDataset(resolve_dataset(t.data), cfg.model.image_size, split=t.split, train=True,
                              min_scale=t.min_scale, seed=t.seed)


def _make_dataset(cfg: TokenizerRunConfig, model: TokenizerBase, run_dir: Path, info: C.DistInfo, log,
                  base: ImageFolderDataset):
    """Plain augmented images, or (for VFMTok) cached frozen-encoder features of augmented views."""
    t = cfg.train
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


def _unpack(batch, device):
    if len(batch) == 4:  # cached: image, label, levels, target
        img, _, levels, target = batch
        return img.to(device), EncoderOutput([lv.to(device).float() for lv in levels], target.to(device).float())
    img, _ = batch
    return img.to(device), None


def train_tokenizer(cfg: TokenizerRunConfig, run_dir: Path, resume: bool = False) -> Path:
    """Train; returns the folder of the final checkpoint (EMA weights)."""
    cfg.train.validate()
    info = C.setup_distributed(cfg.train.device)
    t = cfg.train
    run_dir = Path(run_dir)
    if run_dir.exists() and (run_dir / "latest.txt").exists() and not resume:
        raise VFMTokError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    images = _image_dataset(cfg)
    log = C.setup_logging(run_dir, info.is_main)
    C.seed_everything(t.seed + info.rank)
    device = info.device

    model = build_tokenizer(cfg.model).to(device)
    frozen = (model.encoder,) if hasattr(model, "encoder") else ()
    dataset, image_ds = _make_dataset(cfg, model, run_dir, info, log, images)
    if len(dataset) < t.batch_size * info.world_size:
        raise VFMTokError(f"dataset has {len(dataset)} images, fewer than one global batch ({t.batch_size * info.world_size})")
    sampler = DistributedSampler(dataset, shuffle=True, seed=t.seed) if info.world_size > 1 else None
    loader = DataLoader(dataset, batch_size=t.batch_size, shuffle=sampler is None, sampler=sampler, drop_last=True,
                        num_workers=t.num_workers, persistent_workers=t.num_workers > 0,
                        generator=torch.Generator().manual_seed(t.seed))
    losses = TokenizerLoss(cfg.loss, cfg.model.image_size).to(device)
    ema = C.EMA(model, t.ema_decay, shared=frozen)
    opt = torch.optim.AdamW(C.param_groups(model, t.weight_decay), lr=t.lr, betas=tuple(t.betas))
    opt_d = None
    if losses.disc is not None:
        d_params = [p for p in losses.disc.parameters() if p.requires_grad]
        opt_d = torch.optim.AdamW(d_params, lr=t.disc_lr, betas=tuple(t.betas), weight_decay=0.0)

    step = 0
    if resume:
        folder, st = C.load_resume_state(run_dir)
        model.load_trainable_state_dict(st["model"], source=str(folder))
        ema.module.load_trainable_state_dict(st["ema"], source=str(folder))
        opt.load_state_dict(st["optimizer"])
        if opt_d is not None and "disc" in st:
            load_state_strict(losses.disc, st["disc"], str(folder), exclude_prefixes=tuple(frozen_prefixes(losses.disc)))
            opt_d.load_state_dict(st["disc_optimizer"])
        C.set_rng_state(st["rng"])
        step = int(st["step"])
        log.info("resumed from %s at step %d", folder, step)
    if info.is_main:
        write_json(run_dir / "run_config.json", to_dict(cfg))

    ddp_model = DDP(model, find_unused_parameters=True) if info.world_size > 1 else model
    ddp_disc = None
    if losses.disc is not None and info.world_size > 1:
        ddp_disc = DDP(losses.disc, find_unused_parameters=True)
    class_names = image_ds.class_names
    val_ds = ImageFolderDataset(image_ds.path, cfg.model.image_size, split="val")

    def checkpoint(at: int) -> Path:
        export = ema.module.trainable_state_dict()
        config = {"model": to_dict(cfg.model), "class_names": class_names, "step": at, "train": to_dict(t), "loss": to_dict(cfg.loss)}
        st = {"model": model.trainable_state_dict(), "ema": export, "optimizer": opt.state_dict(), "step": at, "rng": C.rng_state()}
        if opt_d is not None:
            st["disc"] = drop_frozen_state(losses.disc, losses.disc.state_dict())  # not the frozen VGG
            st["disc_optimizer"] = opt_d.state_dict()
        return C.save_checkpoint(run_dir, at, export, config, cfg.model.arch, st)

    metrics_f = C.open_metrics(run_dir, step) if info.is_main else None
    bar = tqdm(total=t.steps, initial=step, disable=not info.is_main or None, desc="train-tokenizer", dynamic_ncols=True)
    batches = C.infinite_loader(loader, start_epoch=step * t.batch_size * info.world_size // max(1, len(dataset)))
    t0, seen = time.time(), 0
    model.train()
    gen = torch.Generator().manual_seed(t.seed + 1)
    folder = None
    while step < t.steps:
        _, batch = next(batches)
        images, enc = _unpack(batch, device)
        lr = C.lr_at(step, t.lr, t.warmup_steps, t.steps, t.lr_schedule)
        for g in opt.param_groups:
            g["lr"] = lr
        with C.autocast(device, t.precision):
            out = ddp_model(images, enc)
            loss, logs = losses.generator_loss(images, out, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        opt.step()
        if losses.gan_active(step):
            with C.autocast(device, t.precision):
                d_loss, d_logs = losses.discriminator_loss(images, out.recon, disc=ddp_disc)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            torch.nn.utils.clip_grad_norm_(losses.disc.parameters(), t.grad_clip)
            opt_d.step()
            logs.update(d_logs)
        ema.update(model, step)
        step += 1
        seen += images.shape[0] * info.world_size
        if info.is_main and (step % t.log_every == 0 or step == t.steps):
            usage = model.quantizer.usage()
            ips = seen / max(1e-9, time.time() - t0)
            rec = {"step": step, "lr": lr, "grad_norm": float(gnorm), "img_per_s": round(ips, 2), **usage, **logs}
            metrics_f.write(json.dumps(rec) + "\n")
            metrics_f.flush()
            log.info(json.dumps(rec))
            bar.set_postfix(loss=f"{logs['total']:.3f}", usage=f"{usage['usage']:.2f}", ips=f"{ips:.1f}")
        # After logging: re-seeding restarts the usage window, which would log as zero usage.
        if t.reseed_dead_every and step % t.reseed_dead_every == 0 and step < t.steps:
            n = model.quantizer.reseed_dead_codes(out.pre_quant, gen)
            log.info("step %d: re-seeded %d dead codes", step, n)
        bar.update(1)
        if info.is_main and (step % t.save_every == 0 or step == t.steps):
            folder = checkpoint(step)
        if t.sample_every and info.is_main and step % t.sample_every == 0:
            write_recon_grid(ema.module, val_ds, run_dir / f"recon_step{step:07d}.png", device)
    bar.close()
    if metrics_f:
        metrics_f.close()
    if info.is_main:
        folder = folder or checkpoint(step)
        write_recon_grid(ema.module, val_ds, run_dir / "recon.png", device)
        log.info("done: %s", folder)
    if dist.is_initialized():
        dist.barrier()
    C.cleanup_distributed()
    return resolve_checkpoint(run_dir)


@torch.no_grad()
def write_recon_grid(model: TokenizerBase, ds: ImageFolderDataset, path: Path, device: torch.device, n: int = 8) -> Path:
    """PNG of (original | reconstruction) pairs for n images spread over the (validation) set."""
    was = model.training
    model.eval()
    step = max(1, len(ds) // n)
    x = torch.stack([ds[i * step][0] for i in range(min(n, len(ds)))]).to(device)
    recon = model.decode(model.encode(x))
    model.train(was)
    return save_pairs_grid(path, x, recon)
