"""Generator sampling speed, every backend variant side by side in one run: plain eager and plain + torch.compile
(default, default with freezing, max-autotune with freezing). The compiled CPU kernels this project had
(vfmtok.accel.cpu) were measured with this script at commit 0706983 (`--variants eager compile compile-freezing
accel`, benchmarks/results/generator_speed.md) and removed: they did not beat compile + freezing by 1.3x.

    python benchmarks/generator_speed.py                                   # GPT-B, batch 1 and 32, 1 and 2 threads
    python benchmarks/generator_speed.py --presets GPT-nano --batches 2 --threads 1 --variants eager compile   # smoke
    python benchmarks/generator_speed.py --presets GPT-B RAR-B --batches 32 --variants eager compile-freezing  # RAR vs GPT

Each thread count runs in its own subprocess (compiled CPU code fixes its thread count when it is generated). Within
one process the variants run one after another on the same model, each after its own warm-up; compile time is
reported apart from sampling time. Models use the paper's data shape (vocab 16384, 256 tokens on a 16x16 grid, 1000
classes) with random weights: speed does not depend on the weights. Writes benchmarks/results/generator_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import torch

from vfmtok.generator import generate as gen_mod
from vfmtok.generator.gpt import create_gpt
from vfmtok.generator.rar import create_rar
from vfmtok.train.generator_arch import arch_of_preset
from vfmtok.utils.io import write_json, write_text

DATA = dict(vocab_size=16384, num_tokens=256, token_grid=(16, 16), num_classes=1000)
VARIANTS = {  # name -> (compile argument, inductor freezing)
    "eager": (False, False),
    "compile": (True, False),
    "compile-freezing": (True, True),
    "compile-max-autotune-freezing": ("max-autotune", True),
}


def cpu_description() -> str:
    """CPU model name from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def matmul_gflops(device: torch.device, n: int = 2048, reps: int = 3) -> float:
    """Best fp32 torch.mm rate at n^3 (the plain path's BLAS), as a reference for the FLOP/s columns."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def create_model(preset: str) -> torch.nn.Module:
    """A GPT or RAR preset (by its name) at the paper's data shape, random weights."""
    return (create_rar if arch_of_preset(preset) == "rar" else create_gpt)(preset, **DATA)


def linear_params(model: torch.nn.Module) -> int:
    """Weights of the Linear layers: a token costs 2 FLOPs per one (both architectures; embeddings are lookups)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def run_variant(model, name: str, batch: int, device: torch.device) -> dict:
    """Warm up (compiles where the variant compiles), then time one whole 256-token generate() at `batch` rows."""
    compile_arg, freezing = VARIANTS[name]
    labels = torch.arange(batch, device=device) % DATA["num_classes"]
    gen = torch.Generator(device=device)
    with ExitStack() as stack:
        if compile_arg:
            gen_mod.compiled_decode_step.cache_clear()
            torch._dynamo.reset()
            stack.enter_context(torch._inductor.config.patch(freezing=freezing))
        t = time.perf_counter()
        model.setup_caches(batch, DATA["num_tokens"] + 1)
        step = gen_mod.compiled_decode_step(compile_arg if isinstance(compile_arg, str) else None) \
            if compile_arg else gen_mod.decode_step
        with torch.no_grad():
            model(labels, input_pos=torch.zeros(1, dtype=torch.long, device=device))
            for t_pos in range(1, 4):  # the inputs generate() passes: fresh contiguous (rows, 1) ids, long positions
                step(model, torch.zeros(batch, 1, dtype=torch.long, device=device),
                     torch.full((1,), t_pos, dtype=torch.long, device=device))
        warm = time.perf_counter() - t
        gen.manual_seed(0)
        t = time.perf_counter()
        with torch._dynamo.config.patch(error_on_recompile=True):  # a recompile inside the timed run is an error
            ids = gen_mod.generate(model, labels, generator=gen, compile=compile_arg)
        if device.type == "cuda":
            torch.cuda.synchronize()
        secs = time.perf_counter() - t
    model.clear_caches()
    return {"variant": name, "batch": batch, "seconds": round(secs, 3), "warmup_s": round(warm, 1),
            "tokens_per_s": round(ids.numel() / secs, 1), "images_per_s": round(batch / secs, 3)}


def worker(args: argparse.Namespace) -> dict:
    """One thread count: every preset x batch x variant, in this process."""
    torch.set_num_threads(args.threads[0])
    device = torch.device(args.device)
    out = {"threads": args.threads[0], "device": str(device), "matmul_gflops": [round(matmul_gflops(device), 1)], "rows": []}
    for preset in args.presets:
        torch.manual_seed(0)
        model = create_model(preset).to(device).eval()
        flops = 2 * linear_params(model)
        for batch in args.batches:
            for name in args.variants:
                row = {"preset": preset, **run_variant(model, name, batch, device)}
                if "tokens_per_s" in row:
                    row["gflops"] = round(row["tokens_per_s"] * flops / 1e9, 1)
                out["rows"].append(row)
                print(json.dumps(row), flush=True)
    out["matmul_gflops"].append(round(matmul_gflops(device), 1))
    return out


def table(results: list[dict]) -> str:
    """Markdown: tokens/s per variant and its ratio to plain eager."""
    lines = ["| threads | preset | batch | variant | tokens/s | vs eager | warm-up s (compile) | GFLOP/s (2 x Linear params) |",
             "|---|---|---|---|---|---|---|---|"]
    for res in results:
        groups: dict[tuple, list[dict]] = {}
        for r in res["rows"]:
            groups.setdefault((r["preset"], r.get("batch")), []).append(r)
        for (preset, batch), rows in groups.items():
            rate = {r["variant"]: r["tokens_per_s"] for r in rows if "tokens_per_s" in r}
            for r in rows:
                if "tokens_per_s" not in r:
                    lines.append(f"| {res['threads']} | {preset} | {batch} | {r['variant']} | skipped: {r['skipped']} | | | |")
                    continue
                rel = f"{r['tokens_per_s'] / rate['eager']:.2f}x" if "eager" in rate else ""
                lines.append(f"| {res['threads']} | {preset} | {batch} | {r['variant']} | {r['tokens_per_s']} | {rel} | "
                             f"{r['warmup_s']} | {r['gflops']} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", nargs="+", default=["GPT-B"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="benchmarks/results/generator_speed")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return
    results = []
    for n in args.threads:
        cmd = [sys.executable, __file__, "--worker", "--threads", str(n), "--device", args.device,
               "--presets", *args.presets, "--batches", *map(str, args.batches), "--variants", *args.variants]
        env = {**os.environ, "OMP_NUM_THREADS": str(n)}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        lines = []
        for line in proc.stdout:  # rows are shown as they come
            lines.append(line)
            if not line.startswith("RESULT "):
                sys.stdout.write(line)
                sys.stdout.flush()
        if proc.wait() != 0:
            sys.exit(f"worker for {n} thread(s) failed with exit status {proc.returncode}")
        results.append(json.loads(next(ln for ln in lines if ln.startswith("RESULT "))[7:]))
    head = (f"# Generator sampling speed\n\n{cpu_description()}, torch {torch.__version__}; command: "
            f"`python benchmarks/generator_speed.py {' '.join(sys.argv[1:])}`\n\n"
            "One whole 256-token generate() per row (no CFG), after a warm-up; the variants of one thread count run in "
            "one process, one after another. torch.mm 2048^3 GFLOP/s before/after: "
            + "; ".join(f"{r['threads']} thread(s) {r['matmul_gflops']}" for r in results) + "\n\n")
    write_json(args.out + ".json", {"cpu": cpu_description(), "torch": torch.__version__, "results": results})
    write_text(args.out + ".md", head + table(results) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
