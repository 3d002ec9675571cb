"""`vfmtok demo` (what `make demo` runs): the command-line face of vfmtok.demo_run.run_demo.

Default: the bundled model samples every class, reconstructs held-out images and shows token ids and anchor
regions; a tokenizer and a GPT train briefly from scratch; one report.html. `--full`: the whole from-scratch
pipeline with evaluation (`make demo-full`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vfmtok.demo_run import DemoConfig, run_demo
from vfmtok.cli import args as A


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of demo."""
    A.add(p, "out", required=False, default="runs/demo", help="output folder (re-running resumes finished stages)")
    A.add(p, "data", default="sample", help="labelled images (default: the embedded Imagenette sample, offline)")
    p.add_argument("--full", action="store_true", help="the whole from-scratch pipeline with evaluation (~13 min on 2 cores)")
    p.add_argument("--model", type=Path, default=None, help="exported model to show (default: the bundled one)")
    p.add_argument("--tokenizer-steps", type=A.positive_int, default=None, help="from-scratch tokenizer steps")
    p.add_argument("--generator-steps", type=A.positive_int, default=None, help="from-scratch generator steps")
    A.add(p, "per_class", default=None, help="samples per class (default 4; 8 with --full)")
    A.add(p, "device")
    p.add_argument("--quick", action="store_true", help="a tiny smoke run of every stage (tests use it)")
    p.add_argument("--arch", default="gpt", choices=["gpt", "rar"], help="from-scratch generator: GPT-tiny or RAR-tiny")


def run(args: argparse.Namespace) -> int:
    """Run the demo and print the report's path."""
    report = run_demo(DemoConfig(out=Path(args.out), data=args.data, full=args.full, model=args.model,
                                 tokenizer_steps=args.tokenizer_steps, generator_steps=args.generator_steps,
                                 per_class=args.per_class, arch=args.arch, device=args.device, smoke=args.quick))
    print(f"\nreport: {report}")
    return 0
