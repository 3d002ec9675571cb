"""Generator speed: sampling with the static KV cache vs recomputing the prefix, per-step cost early vs late,
training tokens/s, and achieved FLOP/s against this machine's matmul throughput.

The reference throughput is the fastest of torch.mm (torch's BLAS, MKL on x86) and oneDNN (vfmtok.utils.linear) on
2048^3, and of the packed decode kernel (vfmtok.utils.cpu_kernels) at its best shape, 128 x 2048 x 2048 with the
weights in cache; on AMD CPUs MKL runs its AVX2 path and oneDNN is ~2x faster. Sampling is also timed, in the same run,
without the compiled kernels (oneDNN linears, torch attention) and then with torch's BLAS too; training with and
without oneDNN.

    python benchmarks/generator_speed.py                    # GPT-tiny and GPT-B, batch 1 and 32 (a few minutes on CPU)
    python benchmarks/generator_speed.py --presets GPT-nano --batches 1 4   # smoke run

Writes benchmarks/results/generator_speed.{json,md}. Models use the paper's data shape (vocab 16384, 256 tokens on
a 16x16 grid, 1000 classes) with random weights; speed does not depend on the weights. The no-cache total for a
whole image is integrated from timed forward passes at a few prefix lengths (a quadratic in the length fits the
linear layers plus attention); where it is cheap enough it is also measured directly, to check the estimate.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vfmtok.generator.generate import generate
from vfmtok.generator.gpt import GPT, count_params, create_gpt
from vfmtok.train.common import autocast, param_groups
from vfmtok.utils import cpu_kernels
from vfmtok.utils.io import write_json, write_text
from vfmtok.utils.linear import linear, onednn_available, onednn_enabled, packed_linears

DATA = dict(vocab_size=16384, num_tokens=256, token_grid=(16, 16), num_classes=1000)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, reps: int = 1) -> float:
    """Seconds for one call of fn (device synchronised); the best of `reps` calls, as the CPU is shared."""
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def cpu_description() -> str:
    """CPU model, family and whether it has AVX-512 (from /proc/cpuinfo where there is one)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    field = lambda key: next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith(key)), "?")  # noqa: E731
    return f"{field('model name')} (family {field('cpu family')}, {'AVX-512' if ' avx512f' in info else 'no AVX-512'})"


def matmul_fn(device: torch.device, dtype: torch.dtype, backend: str, n: int = 2048) -> tuple[Callable[[], object], int]:
    """A matmul and its FLOPs: torch.mm (torch's BLAS: MKL on x86 CPUs) or vfmtok's oneDNN linear on n x n x n, or
    the packed decode kernel at its best shape (128 rows x n x n, the n x n weights in cache)."""
    if backend == "packed":
        x, w = torch.randn(128, n), cpu_kernels.pack_weight(torch.randn(n, n))
        return (lambda: cpu_kernels.packed_linear(x, w, n)), 2 * 128 * n * n
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return ((lambda: torch.mm(a, b)) if backend == "mm" else (lambda: linear(a, b))), 2 * n ** 3


def matmul_backends(device: torch.device, dtype: torch.dtype) -> list[str]:
    """The matmul backends to measure: oneDNN and the packed kernel as well where the model's layers can use them."""
    if device.type != "cpu" or dtype != torch.float32:
        return ["mm"]
    return ["mm"] + ["onednn"] * onednn_available() + ["packed"] * cpu_kernels.available()


@torch.no_grad()
def matmul_gflops(device: torch.device, dtype: torch.dtype, backend: str = "mm", n: int = 2048, seconds: float = 2.0
                  ) -> float:
    """Throughput of one backend's matmul (see matmul_fn), timed for about `seconds`."""
    fn, flops = matmul_fn(device, dtype, backend, n)
    fn()
    reps, total = 0, 0.0
    while total < seconds:
        total += timed(fn, device)
        reps += 1
    return flops * reps / total / 1e9


def flops_per_decoded_token(model: GPT) -> float:
    """2 x non-embedding params (blocks + head) + attention (QK^T and AV) at the mean context of a 256-token image."""
    c = model.config
    mean_ctx = (c.num_tokens + 1) / 2  # token t (0-based) attends to t + 1 positions: the class + t ids
    return 2 * count_params(c, non_embedding=True) + 4 * c.n_layer * c.dim * mean_ctx


def build(preset: str, device: torch.device, dtype: torch.dtype) -> GPT:
    torch.manual_seed(0)
    m = create_gpt(preset, **DATA)
    torch.nn.init.normal_(m.head.weight, std=0.02)  # non-degenerate sampling distribution
    return m.to(device, dtype).eval()


@torch.no_grad()
def per_step_ms(model: GPT, B: int, device: torch.device, positions: range) -> float:
    """Median time (ms) of one cached decode step at the given sequence positions."""
    model.setup_caches(B, model.config.num_tokens + 1)
    model(torch.zeros(B, dtype=torch.long, device=device), input_pos=torch.zeros(1, dtype=torch.long, device=device))
    tok = torch.zeros(B, 1, dtype=torch.long, device=device)
    times = [timed(lambda: model(None, tok, input_pos=torch.tensor([t], device=device)), device) for t in positions]
    return 1e3 * statistics.median(times)


@torch.no_grad()
def gemm_only_ms(model: GPT, B: int, device: torch.device, dtype: torch.dtype) -> float:
    """One decode step's linear layers alone (the model's own modules, (B, in) inputs): the ceiling for these shapes."""
    lins = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    xs = {m.in_features: torch.randn(B, m.in_features, device=device, dtype=dtype) for m in lins}
    run = lambda: [m(xs[m.in_features]) for m in lins]  # noqa: E731
    run()
    return 1e3 * timed(run, device, reps=3)


@torch.no_grad()
def interleaved_fraction(model: GPT, B: int, device: torch.device, dtype: torch.dtype, n: int = 2048) -> float:
    """Median over 16 positions of (decode-step FLOP/s) / (FLOP/s of the fastest matmul backend timed right after).

    Pairing each step with adjacent matmuls keeps the ratio meaningful on a CPU shared with other jobs.
    """
    c = model.config
    model.setup_caches(B, c.num_tokens + 1)
    model(torch.zeros(B, dtype=torch.long, device=device), input_pos=torch.zeros(1, dtype=torch.long, device=device))
    tok = torch.zeros(B, 1, dtype=torch.long, device=device)
    mms = [matmul_fn(device, dtype, k, n) for k in matmul_backends(device, dtype)]
    fracs = []
    for t in range(8, c.num_tokens, c.num_tokens // 16):
        step_s = timed(lambda: model(None, tok, input_pos=torch.tensor([t], device=device)), device)
        mm_rate = max(flops / timed(fn, device) for fn, flops in mms)
        step_flops = B * (2 * count_params(c, non_embedding=True) + 4 * c.n_layer * c.dim * (t + 1))
        fracs.append((step_flops / step_s) / mm_rate)
    return statistics.median(fracs)


@torch.no_grad()
def nocache_forward_s(model: GPT, B: int, T: int, device: torch.device, reps: int = 1) -> float:
    """One recompute-the-prefix step that sees T positions (class + T-1 ids), next-token logits only."""
    labels = torch.zeros(B, dtype=torch.long, device=device)
    idx = torch.zeros(B, T - 1, dtype=torch.long, device=device)
    return timed(lambda: model(labels, idx, last_only=True), device, reps)


def estimate_nocache_total(model: GPT, B: int, device: torch.device, reps: int, lengths=(16, 128, 256)) -> tuple[float, dict]:
    """Seconds to sample one batch without the cache: sum over T = 1..N of a quadratic fitted to timed steps."""
    nocache_forward_s(model, B, lengths[0], device)  # warm-up
    pts = {T: nocache_forward_s(model, B, T, device, reps) for T in lengths}
    coef = np.polyfit(list(pts), list(pts.values()), deg=len(pts) - 1)
    total = float(np.polyval(coef, np.arange(1, model.config.num_tokens + 1)).sum())
    return total, {str(k): round(v * 1e3, 2) for k, v in pts.items()}


def bench_sampling(preset: str, B: int, device: torch.device, dtype: torch.dtype, measure_nocache: bool) -> dict:
    model = build(preset, device, dtype)
    N = model.config.num_tokens
    labels = torch.arange(B, device=device) % 1000
    gen = torch.Generator(device=device).manual_seed(0)
    reps = 3 if count_params(model.config, non_embedding=True) < 2e7 else 1  # repeat what takes seconds
    with torch.no_grad():
        generate(model, labels[:1], generator=gen)  # warm-up (kernels built and loaded)

    def run() -> float:
        """One timed batch. Its KV caches are allocated beforehand, as when sampling batch after batch (0.2 s for
        GPT-B at batch 32); packing the weights, which generate() does per call, is timed."""
        model.setup_caches(B, N + 1)
        return timed(lambda: generate(model, labels, generator=gen), device, reps)

    cached_s = run()
    backends = matmul_backends(device, dtype)
    plain_s = blas_s = None
    if "packed" in backends:  # the same run without the compiled kernels: oneDNN linears, torch attention
        with cpu_kernels.enabled(False):
            plain_s = run()
    if "onednn" in backends:  # ... and with every linear layer on torch's BLAS as well
        with cpu_kernels.enabled(False), onednn_enabled(False):
            blas_s = run()
    with packed_linears(model):  # what generate() does, held for the step timings below
        early = per_step_ms(model, B, device, range(1, 17))
        late = per_step_ms(model, B, device, range(N - 16, N))
        paired = interleaved_fraction(model, B, device, dtype)
        gemm_ms = gemm_only_ms(model, B, device, dtype)
    model.clear_caches()
    est_s, points = estimate_nocache_total(model, B, device, reps)
    row = {"preset": preset, "batch": B, "device": device.type, "dtype": str(dtype).replace("torch.", ""),
           "params_M": round(count_params(model.config) / 1e6, 2),
           "cache_s": round(cached_s, 3), "cache_tokens_per_s": round(B * N / cached_s, 1),
           "cache_images_per_s": round(B / cached_s, 3),
           "cache_tokens_per_s_no_kernels": None if plain_s is None else round(B * N / plain_s, 1),
           "cache_tokens_per_s_torch_blas": None if blas_s is None else round(B * N / blas_s, 1),
           "step_ms_early": round(early, 3), "step_ms_late": round(late, 3), "late_over_early": round(late / early, 3),
           "nocache_s_est": round(est_s, 3), "nocache_tokens_per_s_est": round(B * N / est_s, 1),
           "nocache_step_ms_at_T": points, "speedup_est": round(est_s / cached_s, 2)}
    if measure_nocache:
        meas = timed(lambda: generate(model, labels, generator=gen, use_cache=False), device)
        row.update(nocache_s_measured=round(meas, 3), speedup_measured=round(meas / cached_s, 2))
    flops = flops_per_decoded_token(model)
    row.update(flops_per_token_G=round(flops / 1e9, 4), achieved_gflops=round(flops * B * N / cached_s / 1e9, 1),
               step_vs_adjacent_matmul=round(paired, 3), gemm_only_ms=round(gemm_ms, 3),
               gemm_only_gflops=round(2 * count_params(model.config, non_embedding=True) * B / gemm_ms / 1e6, 1))
    return row


def bench_training(preset: str, B: int, device: torch.device, steps: int = 2) -> dict:
    torch.manual_seed(0)
    model = create_gpt(preset, **DATA).to(device).train()
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-4, betas=(0.9, 0.95))
    ids = torch.randint(0, DATA["vocab_size"], (B, DATA["num_tokens"]), device=device)
    labels = torch.randint(0, 1000, (B,), device=device)

    def step():
        with autocast(device, "bf16"):
            _, loss = model(labels, ids[:, :-1], targets=ids)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    step()  # warm-up
    s = sum(timed(step, device) for _ in range(steps)) / steps
    tokens = B * DATA["num_tokens"]
    row = {"preset": preset, "batch": B, "device": device.type, "step_s": round(s, 3),
           "tokens_per_s": round(tokens / s, 1),
           "achieved_gflops": round(6 * count_params(model.config, non_embedding=True) * tokens / s / 1e9, 1),
           "tokens_per_s_torch_blas": None}
    if "onednn" in matmul_backends(device, torch.float32):  # the same steps with every linear layer on torch's BLAS
        with onednn_enabled(False):
            step()
            row["tokens_per_s_torch_blas"] = round(tokens / (sum(timed(step, device) for _ in range(steps)) / steps), 1)
    return row


def with_gain(fast: float, slow: float | None) -> str:
    """Table cell: a baseline figure and the gain over it ('-' where it was not measured)."""
    return f"{slow} ({fast / slow:.2f}x)" if slow else "-"


def markdown(res: dict) -> str:
    lines = ["# Generator speed", "", f"{res['machine']}", ""]
    names = {"mm": "torch.mm 2048^3 (torch's BLAS: MKL here)", "onednn": "oneDNN 2048^3 (vfmtok.utils.linear)",
             "packed": "vfmtok packed kernel, 128 x 2048 x 2048 (utils/cpu_kernels.c)"}
    for dev, g in res["matmul_gflops"].items():
        runs = "; ".join(f"{names[k]} {v}" for k, v in res["matmul_runs"][dev].items())
        lines.append(f"- matmul throughput ({dev}, {res['matmul_dtype'][dev]}, before and after the runs): {runs} "
                     f"-> reference = the best: **{g:.1f} GFLOP/s**")
    lines += ["- FLOPs per decoded token = 2 x non-embedding params (blocks + head) + 4 x layers x dim x mean context (128.5 positions)",
              "", "## Sampling one 256-token image per row (no CFG): KV cache vs recomputing the prefix", "",
              "| device | preset | batch | cache tok/s | cache img/s | cache tok/s without the compiled kernels (their gain) "
              "| ... and linear layers on torch.mm (total gain) "
              "| no-cache tok/s (est.) | speed-up est. (measured) | cached step ms early / late | no-cache step ms T=16 / 256 | FLOPs/token | achieved GFLOP/s | % of matmul "
              "| % of adjacent matmul (per step) | linear layers alone: ms (GFLOP/s) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["sampling"]:
        peak = res["matmul_gflops"][r["device"]]
        meas = f" ({r['speedup_measured']}x)" if "speedup_measured" in r else ""
        plain = with_gain(r["cache_tokens_per_s"], r.get("cache_tokens_per_s_no_kernels"))
        blas = with_gain(r["cache_tokens_per_s"], r.get("cache_tokens_per_s_torch_blas"))
        lines.append(f"| {r['device']} | {r['preset']} | {r['batch']} | {r['cache_tokens_per_s']} | {r['cache_images_per_s']} "
                     f"| {plain} | {blas} | {r['nocache_tokens_per_s_est']} | {r['speedup_est']}x{meas} | {r['step_ms_early']} / {r['step_ms_late']} "
                     f"| {r['nocache_step_ms_at_T']['16']} / {r['nocache_step_ms_at_T']['256']} "
                     f"| {r['flops_per_token_G'] * 1e3:.1f}M | {r['achieved_gflops']} | {100 * r['achieved_gflops'] / peak:.0f}% "
                     f"| {100 * r['step_vs_adjacent_matmul']:.0f}% | {r['gemm_only_ms']} ({r['gemm_only_gflops']}) |")
    lines += ["", "## Training (forward + backward + AdamW, fp32 on CPU / bf16 autocast on GPU)", "",
              "| device | preset | batch x 256 tokens | s/step | tokens/s | achieved GFLOP/s (6 x params x tokens) "
              "| tokens/s, linear layers on torch.mm (oneDNN gain) |",
              "|---|---|---|---|---|---|---|"]
    for r in res["training"]:
        blas = with_gain(r["tokens_per_s"], r.get("tokens_per_s_torch_blas"))
        lines.append(f"| {r['device']} | {r['preset']} | {r['batch']} | {r['step_s']} | {r['tokens_per_s']} "
                     f"| {r['achieved_gflops']} | {blas} |")
    if res.get("target"):
        lines += ["", f"Target (GPT-B, batch 32, CPU, cached decoding >= 50% of matmul throughput): {res['target']}",
                  "(decode-step timings exclude drawing the next id, ~0.3 ms per step at batch 32; the whole-run figures include it)"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["GPT-tiny", "GPT-B"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--train-batch", type=int, nargs="+", default=[8, 2], help="training batch per preset")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    res = {"machine": f"{cpu_description()}, torch {torch.__version__}, "
                      f"{torch.get_num_threads()} CPU threads" + (f", {torch.cuda.get_device_name()}" if len(devices) > 1 else ""),
           "matmul_gflops": {}, "matmul_runs": {}, "matmul_dtype": {}, "sampling": [], "training": []}
    t_start = time.time()
    for dev in devices:
        dtype = torch.float32 if dev.type == "cpu" else torch.bfloat16
        runs = res["matmul_runs"][dev.type] = {k: [round(matmul_gflops(dev, dtype, k), 1)] for k in matmul_backends(dev, dtype)}
        best = lambda: max(max(v) for v in runs.values())  # noqa: E731
        res["matmul_dtype"][dev.type] = str(dtype).replace("torch.", "")
        print(f"[{dev.type}] matmul GFLOP/s ({dtype}): {runs}", flush=True)
        for preset in args.presets:
            for B in args.batches:
                # Direct no-cache measurement only where it takes seconds (small model, batch 1, or GPU).
                direct = dev.type == "cuda" or (count_params(create_gpt(preset, **DATA).config, True) < 2e7 and B == 1)
                r = bench_sampling(preset, B, dev, dtype, direct)
                res["sampling"].append(r)
                res["matmul_gflops"][dev.type] = best()
                save(res, Path(args.out))
                print(f"[{dev.type}] {preset} b{B}: cache {r['cache_tokens_per_s']} tok/s vs no-cache "
                      f"{r['nocache_tokens_per_s_est']} tok/s (est.) -> {r['speedup_est']}x"
                      + (f" (measured {r['speedup_measured']}x)" if "speedup_measured" in r else "")
                      + f"; step {r['step_ms_early']} ms early vs {r['step_ms_late']} ms late; "
                      f"{r['achieved_gflops']} GFLOP/s", flush=True)
        for preset, B in zip(args.presets, args.train_batch):
            r = bench_training(preset, B, dev)
            res["training"].append(r)
            print(f"[{dev.type}] train {preset} b{B}: {r['tokens_per_s']} tokens/s ({r['step_s']} s/step)", flush=True)
        # The CPU may be shared: measure again and compare against the better figure (the stricter test).
        for k, v in runs.items():
            v.append(round(matmul_gflops(dev, dtype, k), 1))
        res["matmul_gflops"][dev.type] = best()
        print(f"[{dev.type}] matmul again: {runs}", flush=True)
    gb = [r for r in res["sampling"] if r["preset"] == "GPT-B" and r["batch"] == 32 and r["device"] == "cpu"]
    if gb:
        frac, paired = gb[0]["achieved_gflops"] / res["matmul_gflops"]["cpu"], gb[0]["step_vs_adjacent_matmul"]
        res["target"] = (f"whole run {100 * frac:.1f}% of {res['matmul_gflops']['cpu']} GFLOP/s; per step {100 * paired:.1f}% "
                         f"of the fastest matmul timed beside it -> {'met' if min(frac, paired) >= 0.5 else 'NOT met'} "
                         "(both must reach 50%)")
    res["total_runtime_s"] = round(time.time() - t_start, 1)
    md = save(res, Path(args.out))
    print("\n" + md + f"\ntotal runtime {res['total_runtime_s']} s; wrote {args.out}/generator_speed.{{json,md}}")


def save(res: dict, out: Path) -> str:
    """Write the JSON and Markdown results (also after each measurement, so an interrupted run leaves data)."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "generator_speed.json", res)
    md = markdown(res)
    write_text(out / "generator_speed.md", md)
    return md


if __name__ == "__main__":
    main()
