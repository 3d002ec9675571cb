"""Sampling speed of RAR-B vs GPT-B side by side: same data shape (16384 codes, 256 tokens, 1000 classes), same
batch, the same shared KV cache, decode step and sampler (`vfmtok.generator.generate`), plain eager torch.

    python benchmarks/rar_speed.py                      # CPU: prefill + 8 timed decode steps, extrapolated to 256
    python benchmarks/rar_speed.py --device cuda --full # GPU: whole images through generate(), also compiled

Writes benchmarks/results/rar_speed.{json,md} (--out). Random weights: speed does not depend on them;
both models run the same plain torch code path.
`decode_timing` is the function a larger benchmark (benchmarks/generator_speed.py) can call per model.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

from vfmtok.generator.generate import decode_step, generate, sample_next
from vfmtok.generator.gpt import create_gpt
from vfmtok.generator.rar import create_rar
from vfmtok.utils.io import write_json, write_text

DATA = dict(vocab_size=16384, num_tokens=256, token_grid=(16, 16), num_classes=1000)
OUT = Path(__file__).resolve().parent / "results"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def decode_timing(model: torch.nn.Module, batch: int, steps: int, warmup: int = 2) -> dict[str, float]:
    """Seconds of the prefill and mean seconds of one decode step (logits + draw) after `warmup` untimed steps."""
    device = model.head.weight.device
    labels = torch.arange(batch, device=device) % model.config.num_classes
    model.setup_caches(batch, model.config.num_tokens + 1)
    _sync(device)
    t0 = time.perf_counter()
    ids = sample_next(model(labels, input_pos=torch.zeros(1, dtype=torch.long, device=device))[0][:, -1])
    _sync(device)
    prefill = time.perf_counter() - t0
    for t in range(1, warmup + 1):
        ids = sample_next(decode_step(model, ids[:, None], torch.full((1,), t, device=device)))
    _sync(device)
    t0 = time.perf_counter()
    for t in range(warmup + 1, warmup + 1 + steps):
        ids = sample_next(decode_step(model, ids[:, None], torch.full((1,), t, device=device)))
    _sync(device)
    per_step = (time.perf_counter() - t0) / steps
    return {"prefill_s": prefill, "step_s": per_step,
            "image_s_extrapolated": prefill + per_step * (model.config.num_tokens - 1)}


@torch.no_grad()
def full_timing(model: torch.nn.Module, batch: int, compile: bool = False) -> float:
    """Seconds of one whole generate() call (second call: the first warms caches / compiles)."""
    device = model.head.weight.device
    labels = torch.arange(batch, device=device) % model.config.num_classes
    generate(model, labels, compile=compile)
    _sync(device)
    t0 = time.perf_counter()
    generate(model, labels, compile=compile)
    _sync(device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8, help="timed decode steps (the rest of the 256 is extrapolated)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--full", action="store_true", help="also time whole images through generate() (eager, compiled)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    rows = {}
    for name, build in (("GPT-B", create_gpt), ("RAR-B", create_rar)):
        torch.manual_seed(0)
        model = build(name, **DATA).to(device=device, dtype=dtype).eval()
        row = {"params": sum(p.numel() for p in model.parameters()), **decode_timing(model, args.batch, args.steps)}
        if args.full:
            row["image_s_eager"] = full_timing(model, args.batch)
            row["image_s_compiled"] = full_timing(model, args.batch, compile=True)
        rows[name] = row
        del model
    info = {"command": " ".join(["python", "benchmarks/rar_speed.py", *sys.argv[1:]]),
            "load_average_1min_after": round(os.getloadavg()[0], 1),  # the CPU may be shared with other jobs
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "threads": torch.get_num_threads(), "torch": torch.__version__, "batch": args.batch, "dtype": args.dtype,
            "models": rows}
    out = Path(args.out)
    write_json(out / "rar_speed.json", info)
    lines = [f"# RAR-B vs GPT-B sampling, batch {args.batch}, {args.dtype}, {info['device']} "
             f"({info['threads']} threads)", "", f"`{info['command']}` (plain eager torch, random weights; "
             f"1-min load average {info['load_average_1min_after']} when it finished)", "",
             "| model | params | prefill s | decode step s | 256 tokens s (prefill + 255 x step, extrapolated) |"
             + (" whole image s (eager) | whole image s (compiled) |" if args.full else ""),
             "|---|---|---|---|---|" + ("---|---|" if args.full else "")]
    for name, r in rows.items():
        extra = f" {r['image_s_eager']:.2f} | {r['image_s_compiled']:.2f} |" if args.full else ""
        lines.append(f"| {name} | {r['params'] / 1e6:.1f}M | {r['prefill_s']:.4f} | {r['step_s']:.4f} | "
                     f"{r['image_s_extrapolated']:.2f} |{extra}")
    write_text(out / "rar_speed.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
