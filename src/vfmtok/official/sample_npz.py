"""`vfmtok sample-npz`: N samples into one ADM-style `.npz` (arr_0 uint8 NHWC + labels), on one process or across
ranks with torchrun (`torchrun --nproc_per_node 8 -m vfmtok.cli sample-npz ...`), by default with the official
protocol (decode at 336, bicubic to 256, random labels).

Global batch b (labels[b*bs:(b+1)*bs], seed + b) is drawn by rank b % world, so the file does not depend on the
number of ranks. Each rank keeps its batches in OUT.partR.npz (reused on a rerun with the same settings); rank 0
merges them into OUT (atomic) and removes the parts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import torch.distributed as dist

from vfmtok.eval.protocol import for_protocol, get_protocol, make_labels, protocol_record
from vfmtok.generator.sampling import SamplingConfig, sample_images
from vfmtok.utils.distributed import cleanup_distributed, setup_distributed
from vfmtok.utils.errors import require
from vfmtok.utils.io import file_sha256, save_npz, write_json


@dataclass
class NpzSamplingConfig:
    """What `sample_npz` draws: `num_images` from `gpt` (+ `tokenizer`, default the recorded one) into `out` (.npz)."""

    gpt: str | Path
    out: Path
    tokenizer: str | Path | None = None
    num_images: int = 50000
    protocol: str = "official"
    labels: str | None = None  # "balanced" / "random"; default: the protocol's (official: random)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # seed + b draws global batch b
    device: str = "auto"
    precision: str = "bf16"  # GPT weights on CUDA

    def record(self) -> dict[str, Any]:
        """Every setting, flat and JSON-ready (the .json beside the .npz)."""
        flat = {**{f.name: getattr(self, f.name) for f in fields(self) if f.name != "sampling"},
                **dataclasses.asdict(self.sampling)}
        return {k: str(v) if isinstance(v, Path) else v for k, v in flat.items()}


def _settings_key(config: NpzSamplingConfig, labels: torch.Tensor) -> str:
    keys = ("gpt", "tokenizer", "protocol", "cfg_scale", "cfg_interval", "cfg_power", "temperature", "top_k", "top_p", "seed",
            "batch_size", "precision", "parallel", "window")
    flat = config.record()
    blob = json.dumps({k: str(flat[k]) for k in keys}, sort_keys=True).encode() + labels.numpy().tobytes()
    return hashlib.sha256(blob).hexdigest()[:16]


def _load_models(config: NpzSamplingConfig, device: torch.device, protocol) -> tuple[Any, Any, NpzSamplingConfig]:
    from vfmtok.generator.checkpoint import load_generator
    from vfmtok.generator.pairing import load_gpt_tokenizer

    gpt = load_generator(config.gpt, device=device)  # a GPT or a RAR, by its config.json
    config = dataclasses.replace(config, sampling=config.sampling.for_model(gpt))
    if device.type == "cuda" and config.precision != "fp32":
        gpt = gpt.to(torch.bfloat16 if config.precision == "bf16" else torch.float16)
    return gpt, for_protocol(load_gpt_tokenizer(gpt, config.tokenizer, device), protocol), config


def _rank_part(config: NpzSamplingConfig, gpt, tok, labels: torch.Tensor, rank: int, world: int, key: str) -> Path:
    """Draw this rank's batches into OUT.partR.npz (kept when it already holds them)."""
    out, bs = Path(config.out), config.sampling.batch_size
    part = out.with_name(f"{out.name}.part{rank}.npz")
    batches = list(range(rank, -(-len(labels) // bs), world))
    if part.is_file():
        with np.load(part, allow_pickle=False) as z:
            if str(z["key"]) == key and z["batches"].tolist() == batches:
                return part
    chunks = []
    for b in tqdm(batches, desc=f"rank {rank}", unit="batch", disable=None):
        lab = labels[b * bs:(b + 1) * bs]
        chunks.append(sample_images(gpt, tok, lab, dataclasses.replace(config.sampling, seed=config.sampling.seed + b)))
    arr = np.concatenate(chunks) if chunks else np.zeros((0, tok.image_size, tok.image_size, 3), np.uint8)
    save_npz(part, arr_0=arr, batches=np.asarray(batches, np.int64), key=np.asarray(key))
    return part


def sample_npz(config: NpzSamplingConfig) -> dict[str, Any]:
    """Draw the samples on this rank (every rank of a torchrun job calls it); rank 0 merges them into `config.out` and
    writes the record beside it (.json), which it returns (None on the other ranks)."""
    out = Path(config.out)
    require(config.num_images >= 1 and config.sampling.batch_size >= 1, "--num-images and --batch-size must be >= 1")
    require(str(out).endswith(".npz"), f"--out must end in .npz, got {out}")
    protocol = get_protocol(config.protocol)
    info = setup_distributed(config.device)
    record = None
    try:
        gpt, tok, config = _load_models(config, info.device, protocol)
        kind = config.labels or protocol.labels
        labels = make_labels(int(gpt.config.num_classes), config.num_images, kind, config.sampling.seed)
        key = _settings_key(config, labels)
        _rank_part(config, gpt, tok, labels, info.rank, info.world_size, key)
        if info.world_size > 1:
            dist.barrier()
        if info.is_main:
            images = merge_parts(out, info.world_size, labels, config.sampling.batch_size)
            record = {"protocol": protocol_record(protocol, kind), "num_images": len(images),
                      "resolution": int(images.shape[1]), "world_size": info.world_size,
                      "gpt": str(config.gpt), "tokenizer_hash": getattr(tok, "checkpoint_hash", None),
                      "npz_sha256": file_sha256(out), "arguments": config.record()}
            write_json(out.with_suffix(".json"), record)
        if info.world_size > 1:
            dist.barrier()
    finally:
        cleanup_distributed()
    return record


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
    save_npz(out, arr_0=images, labels=labels.numpy().astype(np.int64))
    for p in parts:
        p.unlink()
    return images
