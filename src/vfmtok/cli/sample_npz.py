"""`vfmtok sample-npz`: N samples into one ADM .npz (torchrun for several ranks)."""

from __future__ import annotations
import argparse
from pathlib import Path
import torch.distributed as dist
from vfmtok.eval.protocol import LABEL_KINDS, PROTOCOLS, get_protocol, make_labels, protocol_record
from vfmtok.cli import args as A
from vfmtok.utils.errors import require
from vfmtok.utils.io import write_json

from vfmtok.official.sample_npz import (_load_models, _rank_part, _settings_key, merge_parts)


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
    p.add_argument("--out", type=Path, required=True, help="output .npz")


def run(args: argparse.Namespace) -> int:
    """Entry point of `vfmtok sample-npz`."""
    from vfmtok.utils.distributed import cleanup_distributed, setup_distributed
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
