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
import torch.distributed as dist
from tqdm import tqdm

from vfmtok.eval.protocol import LABEL_KINDS, PROTOCOLS, for_protocol, get_protocol, make_labels, protocol_record
from vfmtok.utils import args as A
from vfmtok.utils.errors import require
from vfmtok.utils.io import atomic_path, write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `vfmtok sample-npz`."""
    p.add_argument("--gpt", required=True, help="GPT checkpoint folder, run folder or Hub id")
    p.add_argument("--tokenizer", default=None, help="tokenizer (default: the one recorded in the GPT's config)")
    p.add_argument("--num-images", type=int, default=50000)
    p.add_argument("--protocol", default="official", choices=list(PROTOCOLS))
    p.add_argument("--labels", default=None, choices=list(LABEL_KINDS), help="default: the protocol's (official: random)")
    p.add_argument("--cfg-scale", type=float, default=1.0)
    p.add_argument("--cfg-interval", type=int, default=-1)
    A.add_all(p, "temperature", "top_k", "top_p")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32, help="per rank and step")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"], help="GPT weights on CUDA")
    p.add_argument("--compile", action="store_true", help="torch.compile the decode step (as the official --compile)")
    A.add_all(p, "parallel", "window")
    p.add_argument("--out", type=Path, required=True, help="output .npz")


def _settings_key(args: argparse.Namespace, labels: torch.Tensor) -> str:
    keys = ("gpt", "tokenizer", "protocol", "cfg_scale", "cfg_interval", "temperature", "top_k", "top_p", "seed",
            "batch_size", "precision", "parallel", "window")
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
                                      compile=args.compile, parallel=args.parallel, window=args.window))
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


def run(args: argparse.Namespace) -> int:
    """Entry point of `vfmtok sample-npz`."""
    from vfmtok.train.common import cleanup_distributed, setup_distributed
    from vfmtok.utils.io import file_sha256

    require(args.num_images >= 1 and args.batch_size >= 1, "--num-images and --batch-size must be >= 1")
    require(str(args.out).endswith(".npz"), f"--out must end in .npz, got {args.out}")
    protocol = get_protocol(args.protocol)
    info = setup_distributed(args.device)
    try:
        gpt, tok = _load_models(args, info.device, protocol)
        kind = args.labels or protocol.labels
        labels = make_labels(int(gpt.config.num_classes), args.num_images, kind, args.seed)
        key = _settings_key(args, labels)
        _rank_part(args, gpt, tok, labels, info.rank, info.world_size, key)
        if info.world_size > 1:
            dist.barrier()
        if info.is_main:
            images = merge_parts(args.out, info.world_size, labels, args.batch_size)
            write_json(args.out.with_suffix(".json"), {
                "protocol": protocol_record(protocol, kind), "num_images": len(images),
                "resolution": int(images.shape[1]), "world_size": info.world_size,
                "gpt": str(args.gpt), "tokenizer_hash": getattr(tok, "checkpoint_hash", None),
                "npz_sha256": file_sha256(args.out),
                "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                              if not k.startswith("_")}})
            print(f"wrote {args.out} ({len(images)} images at {images.shape[1]} px, {info.world_size} rank(s))")
        if info.world_size > 1:
            dist.barrier()
    finally:
        cleanup_distributed()
    return 0
