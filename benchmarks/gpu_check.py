"""One-GPU check, every figure side by side in one run: bf16 training steps/s + peak memory of the paper tokenizer
(random DINOv2-L weights; eager and compiled) and GPT-B/L, eager vs compiled sampling of GPT-B with CFG at batch 1, 32
and 256 (images/s, graphs compiled after warm-up, ids equal to eager's), the bundled generator's standard vs
speculative Jacobi decoding (images/s, sequential passes), the load time of a saved GPT-XL, a 1-GPU nccl
DDP run.

Run: bash benchmarks/gpu_check.sh          (under 10 minutes on one GPU; writes benchmarks/results/gpu/)
     python benchmarks/gpu_check.py --dry-run --out DIR   (CPU, tiny configs, well under a minute; in `make test`)
Each section records its error instead of stopping the run; a global time budget skips what no longer fits.
The training steps are the trainers' own (`tokenizer_step`, `generator_step`), on random data of the real shapes.
"""

from __future__ import annotations

import argparse
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
        "tokens": 256, "sample_batches": (1, 32, 256), "sample_gpt": "GPT-B", "steps": 6, "ddp_steps": 20,
        "budget_s": 480, "compiled_steps": 6, "load_gpt": "GPT-XL", "compile_backend": "inductor"}  # budget: fits the sh timeout and a 10-minute call
DRY = {"tok_preset": "tiny", "tok_batch": 2, "gpts": ("GPT-nano",), "gpt_batch": 2, "vocab": 64, "tokens": 16,
       "sample_batches": (1, 2, 4), "sample_gpt": "GPT-nano", "steps": 2, "ddp_steps": 2, "budget_s": 200, "compiled_steps": 1,
       "load_gpt": "GPT-nano", "compile_backend": "eager"}  # dry run: dynamo capture checked, no inductor codegen


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
    """Paper tokenizer (random-init DINOv2) training steps/s, before and after the GAN starts, eager and compiled."""
    from torch._dynamo.utils import counters

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
    for mode in ("eager", "compiled"):
        if mode == "compiled" and clock.left() <= 0:
            rows.append({"section": "train tokenizer", "what": f"{s['tok_preset']} compiled",
                         "error": "skipped: time budget spent"})
            break
        if mode == "compiled":  # as train.compile does: the model compiled in place, the first steps compile
            parts.model.compile(backend=s["compile_backend"])
        for phase, step in (("before GAN", 0), ("with GAN", cfg.loss.gan_start)):
            if parts.losses.disc is None and phase == "with GAN":
                continue
            t0 = time.perf_counter()
            tokenizer_step(parts, micro, step, cfg, dev)  # warm-up (compilation happens here)
            first = time.perf_counter() - t0
            counters.clear()
            sec = clock.timed(lambda: tokenizer_step(parts, micro, step, cfg, dev), warmup=0,
                              reps=s["steps"] if mode == "eager" else s["compiled_steps"])
            row = {"section": "train tokenizer", "what": f"{s['tok_preset']} {phase} {mode}", "batch": B, "image_size": S,
                   "steps_per_s": round(1 / sec, 3), "images_per_s": round(B / sec, 1), "first_call_s": round(first, 1),
                   "peak_mem_gib": clock.peak_gib(), "lpips": cfg.loss.lpips_weight > 0}
            if mode == "compiled":  # graphs dynamo compiled during the timed steps (0 when every step reuses them)
                row["recompiles"] = int(counters["stats"]["unique_graphs"])
            rows.append(row)
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


def _dry_compile(s: dict) -> None:
    """Dry run: the decode step and the Jacobi window step are captured whole (fullgraph) by dynamo with the
    dry run's backend instead of inductor's codegen."""
    import vfmtok.generator.generate as G
    import vfmtok.generator.jacobi as J

    if s["compile_backend"] == "inductor":
        return
    step = torch.compile(G.decode_token, fullgraph=True, backend=s["compile_backend"], dynamic=False)
    window = torch.compile(J.window_step, fullgraph=True, backend=s["compile_backend"], dynamic=False)
    G.compiled_decode_token = lambda mode=None, device_type=None: step
    J.compiled_window_step = lambda mode=None: window


def sampling(s: dict, clock: Clock, precision: str) -> list[dict]:
    """Images/s of generate() with CFG 2.0 (KV cache), eager and with the whole decode step compiled; for the
    compiled runs, the graphs dynamo compiles after the warm-up (0 expected) and whether the ids equal eager's."""
    from torch._dynamo.utils import counters

    import vfmtok.generator.generate as G
    from vfmtok.generator.gpt import create_gpt

    dev, rows = clock.device, []
    _dry_compile(s)
    torch.manual_seed(0)
    gpt = create_gpt(s["sample_gpt"], vocab_size=s["vocab"], num_tokens=s["tokens"], token_grid=_grid(s["tokens"])).to(dev).eval()
    if dev.type == "cuda" and precision == "bf16":
        gpt = gpt.to(torch.bfloat16)
    for batch in s["sample_batches"]:
        labels = torch.arange(batch, device=dev) % gpt.config.num_classes
        run = lambda compile: G.generate(gpt, labels, cfg_scale=2.0, compile=compile,  # noqa: E731
                                         generator=torch.Generator(device=dev).manual_seed(0))
        ids = {}
        for mode in ("eager", "compiled"):
            row = {"section": "sample", "what": f"{s['sample_gpt']} CFG 2.0 {mode}", "batch": batch, "cfg_scale": 2.0}
            clock.reset_peak()
            t0 = time.perf_counter()
            ids[mode] = run(mode == "compiled")  # warm-up (compilation happens here)
            first = time.perf_counter() - t0
            counters.clear()
            sec = clock.timed(lambda: run(mode == "compiled"), warmup=0, reps=2)
            if mode == "compiled":
                row.update(recompiles=int(counters["stats"]["unique_graphs"]), ids_equal_eager=bool(torch.equal(ids["eager"], ids["compiled"])),
                           note=f"backend {s['compile_backend']}")
            rows.append({**row, "images_per_s": round(batch / sec, 2), "first_call_s": round(first, 1),
                         "peak_mem_gib": clock.peak_gib()})
    return rows


BUNDLED = Path(__file__).resolve().parents[1] / "src" / "vfmtok" / "assets" / "models" / "imagenette64" / "generator"


def jacobi_sampling(s: dict, clock: Clock, precision: str) -> list[dict]:
    """Images/s and sequential forward passes of the bundled generator (its own sampling, top-k 5), standard
    decoding vs speculative Jacobi decoding with windows 8 and 16, all compiled, side by side at each batch size."""
    from torch._dynamo.utils import counters

    import vfmtok.generator.jacobi as J
    from vfmtok.generator.checkpoint import load_generator
    from vfmtok.generator.generate import generate

    dev, rows = clock.device, []
    _dry_compile(s)
    gpt = load_generator(BUNDLED, device=dev).eval()
    if dev.type == "cuda" and precision == "bf16":
        gpt = gpt.to(torch.bfloat16)
    n = gpt.config.num_tokens
    arms = {"standard": None, "jacobi K=8": 8, "jacobi K=16": 16}
    for batch in s["sample_batches"]:
        if clock.left() <= 0:
            rows.append({"section": "jacobi", "batch": batch, "error": "skipped: time budget spent"})
            continue
        labels = torch.arange(batch, device=dev) % gpt.config.num_classes
        passes: dict[str, int] = {}

        def run(arm: str):
            gen = torch.Generator(device=dev).manual_seed(0)
            if arms[arm] is None:
                passes[arm] = n
                return generate(gpt, labels, top_k=5, generator=gen, compile=True)
            ids, stats = J.jacobi_generate(gpt, labels, top_k=5, generator=gen, compile=True, window=arms[arm])
            passes[arm] = stats.forward_passes
            return ids

        for arm in arms:
            t0 = time.perf_counter()
            run(arm)  # warm-up (compilation happens here)
            first = time.perf_counter() - t0
            counters.clear()
            sec = clock.timed(lambda: run(arm), warmup=0, reps=2)
            rows.append({"section": "jacobi", "what": f"bundled 64px GPT top-k 5, {arm}, compiled", "batch": batch,
                         "images_per_s": round(batch / sec, 2), "sequential_passes": passes[arm],
                         "first_call_s": round(first, 1), "recompiles": int(counters["stats"]["unique_graphs"])})
        base = rows[-len(arms)]["images_per_s"]
        for r in rows[-len(arms):]:
            r["note"] = f"{r['images_per_s'] / base:.2f}x standard"
    return rows


def load_time(s: dict, clock: Clock, precision: str, work: Path) -> list[dict]:
    """Seconds from a saved generator folder to a model on the device (`load_generator`), weights stored in bf16."""
    from vfmtok.generator.checkpoint import load_generator
    from vfmtok.generator.gpt import create_gpt

    torch.manual_seed(0)
    model = create_gpt(s["load_gpt"], vocab_size=s["vocab"], num_tokens=s["tokens"], token_grid=_grid(s["tokens"]))
    folder = model.save_pretrained(work / "load", dtype=torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    del model
    t0 = time.perf_counter()
    loaded = load_generator(folder, device=clock.device)
    clock.sync()
    sec = time.perf_counter() - t0
    ok = sum(p.numel() for p in loaded.parameters()) == n and loaded.head.weight.device.type == clock.device.type
    return [{"section": "load", "what": f"{s['load_gpt']} bf16 safetensors -> {clock.device.type}", "wall_s": round(sec, 2),
             "params_m": round(n / 1e6, 1), "ok": ok}]


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


# Quick sections first: the tokenizer's compile (DINOv2-L, minutes) comes last, so a slow compile cannot starve them.
SECTIONS = (("train GPT", gpt_training), ("sample", sampling), ("load", load_time), ("DDP", ddp_run),
            ("jacobi", jacobi_sampling), ("train tokenizer", tokenizer_training))


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
                args = (s, clock, precision, Path(tmp)) if fn in (ddp_run, load_time) else (s, clock, precision)
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
            "sequential_passes", "recompiles", "ids_equal_eager", "wall_s", "ok", "note", "error"]
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
