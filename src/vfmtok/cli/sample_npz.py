"""`vfmtok sample-npz`: N samples into one ADM .npz (torchrun for several ranks)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vfmtok.cli import args as A
from vfmtok.cli.common import config_from
from vfmtok.eval.protocol import LABEL_KINDS, PROTOCOLS
from vfmtok.generator.sampling import SamplingConfig
from vfmtok.official.sample_npz import NpzSamplingConfig, sample_npz


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `vfmtok sample-npz`."""
    p.add_argument("--gpt", required=True, help="GPT or RAR checkpoint folder, run folder or Hub id")
    p.add_argument("--tokenizer", default=None, help="tokenizer (default: the one recorded in the GPT's config)")
    p.add_argument("--num-images", type=int, default=50000)
    p.add_argument("--protocol", default="official", choices=list(PROTOCOLS))
    p.add_argument("--labels", default=None, choices=list(LABEL_KINDS), help="default: the protocol's (official: random)")
    p.add_argument("--cfg-scale", type=float, default=1.0,
                   help="guidance scale; a GPT guides when > 1.0 (LlamaGen), a RAR when != 0 (official RAR)")
    p.add_argument("--cfg-interval", type=int, default=-1, help=A.CFG_INTERVAL_HELP)
    p.add_argument("--cfg-power", type=A.non_negative_float, default=None, help=A.CFG_POWER_HELP)
    A.add_all(p, "temperature", "top_k", "top_p")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32, help="per rank and step")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"], help="GPT weights on CUDA")
    p.add_argument("--compile", action="store_true", help="torch.compile the decode step (as the official --compile)")
    A.add_all(p, "parallel", "window")
    p.add_argument("--out", type=Path, required=True, help="output .npz")


def run(args: argparse.Namespace) -> int:
    """Entry point of `vfmtok sample-npz`."""
    config = config_from(args, NpzSamplingConfig, sampling=config_from(args, SamplingConfig))
    record = sample_npz(config)
    if record is not None:
        print(f"wrote {args.out} ({record['num_images']} images at {record['resolution']} px, "
              f"{record['world_size']} rank(s))")
    return 0
