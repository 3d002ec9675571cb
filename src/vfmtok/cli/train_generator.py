"""`vfmtok train-generator`: options, the data facts that size the GPT, then `train_generator`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from vfmtok.cli import args as A
from vfmtok.data.codes import CodeDataset
from vfmtok.data.loaders import shard_folder
from vfmtok.data.shards import load_index
from vfmtok.generator.pairing import tokenizer_facts
from vfmtok.train import common as C
from vfmtok.train import generator_arch as G
from vfmtok.train import generator as TG
from vfmtok.train.generator import GeneratorTrainConfig, train_generator
from vfmtok.utils.errors import VFMTokError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `vfmtok train-generator`."""
    p.add_argument("--codes", default=None, help="codes folder written by `vfmtok extract-codes`")
    A.add(p, "data", default=None, help="or: images to tokenize on the fly (needs --tokenizer)")
    A.add(p, "tokenizer", help="tokenizer checkpoint/run folder for --data")
    A.add(p, "out", help="run folder (checkpoints, train.log, run_config.json)")
    p.add_argument("--preset", default=None, help="GPT-nano, GPT-tiny, GPT-B, GPT-L, GPT-XL, GPT-XXL, GPT-2B, GPT-3B, "
                   "RAR-nano, RAR-tiny, RAR-B, RAR-L, RAR-XL, RAR-XL-4096, RAR-XXL")
    p.add_argument("--arch", default=None, choices=list(G.ARCHS), help="generator architecture (default: the preset's; "
                   "rar alone means RAR-B with the reference RAR recipe)")
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
    p.add_argument("--accum-steps", type=A.positive_int, default=None,
                   help="micro-batches per optimiser step (gradient accumulation)")
    p.add_argument("--grad-checkpoint", action="store_true", default=None, help="activation checkpointing of every block")
    p.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile every block (the first steps include compilation; logged apart)")
    A.add_all(p, "resume", "config", "set")


# options that set the GeneratorTrainConfig field of the same name
_FLAGS = ("codes", "data", "tokenizer", "preset", "steps", "batch_size", "lr", "warmup_steps", "ema_decay",
          "save_every", "log_every", "num_workers", "device", "precision", "seed", "fsdp", "accum_steps", "grad_checkpoint",
          "compile")


def resolve_config(args: argparse.Namespace, data_facts=None) -> GeneratorTrainConfig:
    """The config the command line asks for (`TG.resolve_config` with the flags that were given)."""
    flags = {name: getattr(args, name, None) for name in _FLAGS}
    return TG.resolve_config(flags, args.overrides, args.config, getattr(args, "arch", None), data_facts)


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
            shards = shard_folder(cfg.data, cfg.split)
            n_cls = len(load_index(shards).classes if shards else ImageFolderDataset(resolve_dataset(cfg.data), 8, split=cfg.split).classes)
        else:
            raise VFMTokError("give --codes (from `vfmtok extract-codes`) or --data with --tokenizer")
        return {"vocab_size": int(t["codebook_size"]), "num_tokens": int(t["num_tokens"]),
                "token_grid": tuple(t["token_grid"]), "num_classes": n_cls}

    cfg = resolve_config(args, data_facts)
    folder = train_generator(cfg, Path(args.out), resume=args.resume, tokenizer=loaded.get("tok"))
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"checkpoint: {folder}")
    return 0
