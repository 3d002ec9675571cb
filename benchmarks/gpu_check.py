"""One-GPU check, every figure side by side in one run: bf16 training steps/s + peak memory of the paper tokenizer
(random DINOv2-L weights) and GPT-B/L, eager vs compiled sampling of GPT-B at batch 32 and 256, a 1-GPU nccl DDP run.

Run: bash benchmarks/gpu_check.sh          (about 5-8 minutes on one GPU; writes benchmarks/results/gpu/)
     python benchmarks/gpu_check.py --dry-run --out DIR   (CPU, tiny configs, well under a minute; in `make test`)
Each section records its error instead of stopping the run; a global time budget skips what no longer fits.
The training steps are the trainers' own (`tokenizer_step`, `generator_step`), on random data of the real shapes.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from vfmtok.utils.io import write_json, write_text

OUT = Path(__file__).resolve().parent / "results" / "gpu"

# (real, dry-run) settings of each section.
REAL = {"tok_preset": "vfmtok-paper", "tok_batch": 16, "gpts": ("GPT-B", "GPT-L"), "gpt_batch": 32, "vocab": 16384,
        "tokens": 256, "sample_batches": (32, 256), "sample_gpt": "GPT-B", "steps": 6, "ddp_steps": 20, "budget_s": 450}
DRY = {"tok_preset": "tiny", "tok_batch": 2, "gpts": ("GPT-nano",), "gpt_batch": 2, "vocab": 64, "tokens": 16,
       "sample_batches": (2, 4), "sample_gpt": "GPT-nano", "steps": 2, "ddp_steps": 2, "budget_s": 50}


class Clock:
    """Wall time with CUDA synchronisation, peak memory, and the run's time budget."""

    def __init__(self, device: torch.device, budget_s: float):
        self.device, self.deadline = device, time.perf_counter() + budget_s

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return round(torch.cuda.max_memory_allocated() / 2**30, 2) if self.device.type == "cuda" else None

    def timed(self, fn: Callable[[], Any], warmup: int, reps: int) -> float:
        """Median seconds of fn() after `warmup` calls."""
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(reps):
            self.sync()
            t = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - t)
        return sorted(times)[len(times) // 2]

    def left(self) -> float:
        return self.deadline - time.perf_counter()


def tokenizer_training(s: dict, clock: Clock, precision: str) -> list[dict]:
    """Paper tokenizer (random-init DINOv2) training steps/s, before and after the GAN starts."""
    from vfmtok.tokenizer.build import build_tokenizer
    from vfmtok.tokenizer.config import get_preset
    from vfmtok.train.common import DistInfo
    from vfmtok.train.tokenizer import build_parts, tokenizer_step

    cfg = get_preset(s["tok_preset"])
    cfg.model.encoder_pretrained = False
    cfg.train.precision = precision
    if not _lpips_weights_present():
        cfg.loss.lpips_weight = 0.0
    dev = clock.device
    clock.reset_peak()
    torch.manual_seed(0)
    parts = build_parts(cfg, build_tokenizer(cfg.model).to(dev), DistInfo(device=dev))
    B, S = s["tok_batch"], cfg.model.image_size
    micro = [(torch.rand(B, 3, S, S, device=dev) * 2 - 1, None)]
    rows = []
    for phase, step in (("before GAN", 0), ("with GAN", cfg.loss.gan_start)):
        if parts.losses.disc is None and phase == "with GAN":
            continue
        sec = clock.timed(lambda: tokenizer_step(parts, micro, step, cfg, dev), warmup=1, reps=s["steps"])
        rows.append({"section": "train tokenizer", "what": f"{s['tok_preset']} {phase}", "batch": B, "image_size": S,
                     "steps_per_s": round(1 / sec, 3), "images_per_s": round(B / sec, 1), "peak_mem_gib": clock.peak_gib(),
                     "lpips": cfg.loss.lpips_weight > 0})
    return rows


def _lpips_weights_present() -> bool:
    try:
        from vfmtok.eval.lpips import LPIPS

        LPIPS(net="vgg")
        return True
    except Exception:  # no offline VGG/LPIPS weights on this machine: measure without the LPIPS term
        return False


def gpt_training(s: dict, clock: Clock, precision: str) -> list[dict]:
    """GPT training steps/s and tokens/s (the trainer's step, fused AdamW on CUDA)."""
    from vfmtok.generator.gpt import GPT, preset_config
    from vfmtok.train.generator import GeneratorTrainConfig, generator_step

    dev, rows = clock.device, []
    for name in s["gpts"]:
        clock.reset_peak()
        cfg = GeneratorTrainConfig(preset=name, precision=precision, ema_decay=0.9999)
        cfg.model = preset_config(name, vocab_size=s["vocab"], num_tokens=s["tokens"], token_grid=_grid(s["tokens"]))
        torch.manual_seed(0)
        model = GPT(cfg.model).to(dev)
        from vfmtok.train.common import EMA

        ema = EMA(model, cfg.ema_decay)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, fused=dev.type == "cuda")
        B = s["gpt_batch"]
        micro = [(torch.randint(0, s["vocab"], (B, s["tokens"]), device=dev), torch.randint(0, 1000, (B,), device=dev))]
        sec = clock.timed(lambda: generator_step(model, opt, micro, 0, cfg, dev, ema), warmup=1, reps=s["steps"])
        rows.append({"section": "train GPT", "what": name, "batch": B, "steps_per_s": round(1 / sec, 3),
                     "tokens_per_s": round(B * s["tokens"] / sec), "peak_mem_gib": clock.peak_gib(),
                     "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1)})
        del model, ema, opt
    return rows


def _grid(n: int) -> tuple[int, int]:
    side = int(round(n**0.5))
    return side, side


def sampling(s: dict, clock: Clock, precision: str) -> list[dict]:
    """Images/s of generate() (KV cache, CFG 2.0), eager and, where generate() offers it, compiled."""
    from vfmtok.generator.generate import generate
    from vfmtok.generator.gpt import create_gpt

    dev, rows = clock.device, []
    can_compile = "compile" in inspect.signature(generate).parameters
    if can_compile and dev.type == "cpu":
        # Dry run: inductor's CPU code generation alone takes about a minute, so trace the decode step with the
        # 'eager' backend instead; this still checks the fullgraph capture and the compile=True call path.
        import vfmtok.generator.generate as G

        traced = torch.compile(G.decode_step, fullgraph=True, backend="eager", dynamic=False)
        G.compiled_decode_step = lambda mode=None: traced  # generate(compile=True) looks it up in the module
    torch.manual_seed(0)
    gpt = create_gpt(s["sample_gpt"], vocab_size=s["vocab"], num_tokens=s["tokens"], token_grid=_grid(s["tokens"])).to(dev).eval()
    if dev.type == "cuda" and precision == "bf16":
        gpt = gpt.to(torch.bfloat16)
    for batch in s["sample_batches"]:
        labels = torch.arange(batch, device=dev) % gpt.config.num_classes
        for mode in ("eager", "compiled"):
            row = {"section": "sample", "what": f"{s['sample_gpt']} {mode}", "batch": batch, "cfg_scale": 2.0}
            if mode == "compiled" and not can_compile:
                rows.append({**row, "note": "generate() has no compile= argument in this checkout"})
                continue
            kw = {"compile": True} if mode == "compiled" else {}
            clock.reset_peak()
            t0 = time.perf_counter()
            generate(gpt, labels, cfg_scale=2.0, **kw)  # warm-up (compilation happens here)
            first = time.perf_counter() - t0
            sec = clock.timed(lambda: generate(gpt, labels, cfg_scale=2.0, **kw), warmup=0, reps=2)
            if mode == "compiled" and dev.type == "cpu":
                row["note"] = "dynamo backend 'eager' (dry run)"
            rows.append({**row, "images_per_s": round(batch / sec, 1), "first_call_s": round(first, 1),
                         "peak_mem_gib": clock.peak_gib()})
    return rows


def ddp_run(s: dict, clock: Clock, precision: str, work: Path) -> list[dict]:
    """`torchrun --nproc_per_node 1 vfmtok train-generator` on synthetic codes: nccl on CUDA (gloo on CPU)."""
    from vfmtok.data.codes import CodeWriter

    n = 64 * s["gpt_batch"] if clock.device.type == "cuda" else 8
    tok = {"checkpoint_hash": "synthetic", "checkpoint_path": "none", "codebook_size": s["vocab"], "num_tokens": s["tokens"],
           "token_grid": list(_grid(s["tokens"])), "image_size": 256}
    codes = work / "codes"
    w = CodeWriter(codes, {"tokenizer": tok, "class_names": None, "num_classes": 10, "views": ["center"], "source": {}}, n, 1)
    rng = np.random.default_rng(0)
    w.append(rng.integers(0, s["vocab"], (n, 1, s["tokens"]), dtype=np.uint16), rng.integers(0, 10, n))
    preset = s["gpts"][0]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "vfmtok.cli",
           "train-generator", "--codes", str(codes), "--preset", preset, "--batch-size", str(s["gpt_batch"]),
           "--steps", str(s["ddp_steps"]), "--log-every", str(s["ddp_steps"]), "--save-every", str(s["ddp_steps"]),
           "--device", clock.device.type, "--precision", precision if clock.device.type == "cuda" else "fp32",
           "--out", str(work / "run")]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=max(30, int(clock.left())),
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - t0
    log = (work / "run" / "train.log").read_text() if (work / "run" / "train.log").is_file() else ""
    tps = [float(x.split("tokens/s")[1].split()[0]) for x in log.splitlines() if "tokens/s" in x]
    row = {"section": "DDP", "what": f"{preset} torchrun x1 ({'nccl' if clock.device.type == 'cuda' else 'gloo'})",
           "batch": s["gpt_batch"], "steps": s["ddp_steps"], "ok": res.returncode == 0, "wall_s": round(wall, 1),
           "tokens_per_s": tps[-1] if tps else None}
    if res.returncode != 0:
        row["error"] = (res.stderr or res.stdout).strip().splitlines()[-1:][0] if (res.stderr or res.stdout).strip() else "failed"
    return [row]


SECTIONS = (("train tokenizer", tokenizer_training), ("train GPT", gpt_training), ("sample", sampling), ("DDP", ddp_run))


def run_all(dry: bool, device: torch.device, precision: str, out: Path) -> dict:
    """Every section in order within the budget; failures are recorded as rows with an error."""
    s = DRY if dry else REAL
    clock = Clock(device, s["budget_s"])
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in SECTIONS:
            if clock.left() <= 0:
                rows.append({"section": name, "error": "skipped: time budget spent"})
                continue
            try:
                args = (s, clock, precision, Path(tmp)) if fn is ddp_run else (s, clock, precision)
                rows += fn(*args)
            except Exception as e:  # one broken section must not hide the others' figures
                rows.append({"section": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
                traceback.print_exc()
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": device.type, "precision": precision,
           "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None, "dry_run": dry,
           "cpu_threads": torch.get_num_threads()}
    result = {"env": env, "rows": rows}
    write_json(out / "gpu_check.json", result)
    write_text(out / "gpu_check.md", to_markdown(result))
    return result


def to_markdown(result: dict) -> str:
    """One table of every row."""
    keys = ["section", "what", "batch", "steps_per_s", "images_per_s", "tokens_per_s", "peak_mem_gib", "first_call_s",
            "wall_s", "ok", "note", "error"]
    used = [k for k in keys if any(k in r for r in result["rows"])]
    env = result["env"]
    lines = [f"# GPU check ({'dry run, ' if env['dry_run'] else ''}{env['gpu'] or env['device']}, torch {env['torch']}, "
             f"{env['precision']})", "", "Written by `benchmarks/gpu_check.py`; random weights and data of the real shapes.", "",
             "| " + " | ".join(used) + " |", "|" + "---|" * len(used)]
    for r in result["rows"]:
        lines.append("| " + " | ".join("" if r.get(k) is None else str(r.get(k)) for k in used) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny configs on CPU (checks the script, measures nothing useful)")
    ap.add_argument("--out", default=None, help=f"output folder (default {OUT}; a dry run needs --out)")
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    args = ap.parse_args()
    if args.dry_run:
        torch.set_num_threads(1)
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA device (use --dry-run on CPU)", file=sys.stderr)
        return 2
    else:
        device = torch.device("cuda")
    if args.dry_run and args.out is None:
        print("gpu_check: --dry-run needs --out (the committed results are the GPU's)", file=sys.stderr)
        return 2
    precision = "fp32" if args.dry_run else args.precision  # CPU runs fp32 whatever is asked
    result = run_all(args.dry_run, device, precision, Path(args.out) if args.out else OUT)
    print(json.dumps(result, indent=1))
    return 1 if any("error" in r for r in result["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
