"""`vfmtok sample-npz`: N samples into one ADM-style `.npz` (arr_0 uint8 NHWC + labels), on one process or across
ranks with torchrun (`torchrun --nproc_per_node 8 -m vfmtok.cli sample-npz ...`), by default with the official
protocol (decode at 336, bicubic to 256, random labels).

Global batch b (labels[b*bs:(b+1)*bs], seed + b) is drawn by rank b % world, so the file does not depend on the
number of ranks. Each rank keeps its batches in OUT.partR.npz (reused on a rerun with the same settings); rank 0
merges them into OUT (atomic) and removes the parts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vfmtok.eval.protocol import for_protocol
from vfmtok.utils.errors import require
from vfmtok.utils.io import atomic_path


def _settings_key(args: argparse.Namespace, labels: torch.Tensor) -> str:
    keys = ("gpt", "tokenizer", "protocol", "cfg_scale", "cfg_interval", "temperature", "top_k", "top_p", "seed",
            "batch_size", "precision")
    blob = json.dumps({k: str(getattr(args, k)) for k in keys}, sort_keys=True).encode() + labels.numpy().tobytes()
    return hashlib.sha256(blob).hexdigest()[:16]


def _load_models(args: argparse.Namespace, device: torch.device, protocol):
    from vfmtok.generator.gpt import GPT
    from vfmtok.generator.pairing import load_gpt_tokenizer

    gpt = GPT.from_pretrained(args.gpt, device=device)
    args.temperature, args.top_k, args.top_p = gpt.sampling_args(args.temperature, args.top_k, args.top_p)
    if device.type == "cuda" and args.precision != "fp32":
        gpt = gpt.to(torch.bfloat16 if args.precision == "bf16" else torch.float16)
    return gpt, for_protocol(load_gpt_tokenizer(gpt, args.tokenizer, device), protocol)


def _rank_part(args, gpt, tok, labels: torch.Tensor, rank: int, world: int, key: str) -> Path:
    """Draw this rank's batches into OUT.partR.npz (kept when it already holds them)."""
    from vfmtok.generator.sample import generate_images

    part = args.out.with_name(f"{args.out.name}.part{rank}.npz")
    batches = list(range(rank, -(-len(labels) // args.batch_size), world))
    if part.is_file():
        with np.load(part, allow_pickle=False) as z:
            if str(z["key"]) == key and z["batches"].tolist() == batches:
                return part
    chunks = []
    for b in tqdm(batches, desc=f"rank {rank}", unit="batch", disable=None):
        lab = labels[b * args.batch_size:(b + 1) * args.batch_size]
        chunks.append(generate_images(gpt, tok, lab, args.cfg_scale, args.cfg_interval, args.temperature, args.top_k,
                                      args.top_p, seed=args.seed + b, batch_size=args.batch_size,
                                      compile=args.compile))
    arr = np.concatenate(chunks) if chunks else np.zeros((0, tok.image_size, tok.image_size, 3), np.uint8)
    with atomic_path(part) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, arr_0=arr, batches=np.asarray(batches, np.int64), key=np.asarray(key))
    return part


def merge_parts(out: Path, world: int, labels: torch.Tensor, batch_size: int) -> np.ndarray:
    """Interleave the ranks' batches back into label order; write OUT atomically; remove the parts."""
    parts = [out.with_name(f"{out.name}.part{r}.npz") for r in range(world)]
    loaded = []
    for p in parts:
        with np.load(p, allow_pickle=False) as z:
            loaded.append((z["batches"].tolist(), z["arr_0"]))
    pieces = {}
    for batches, arr in loaded:
        start = 0
        for b in batches:
            n = len(labels[b * batch_size:(b + 1) * batch_size])
            pieces[b], start = arr[start:start + n], start + n
    images = np.concatenate([pieces[b] for b in sorted(pieces)])
    require(len(images) == len(labels), f"merged {len(images)} images for {len(labels)} labels")
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, arr_0=images, labels=labels.numpy().astype(np.int64))
    for p in parts:
        p.unlink()
    return images
