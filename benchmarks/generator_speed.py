"""Generator decode speed, every variant side by side in one process: `generate()`'s decode step eager and compiled
whole (`--compile`: forward + CFG + filter + draw in one graph, with inductor default and max-autotune, freezing on),
the plain model's decode step compiled alone (inductor default / max-autotune-no-cudagraphs, freezing on; sampling
eager after it, as before the whole-step compile), and optionally LlamaGen's own `generate()` from a checkout given
by path (eager, and compiled as its sample_c2i.py --compile does: the model under mode='reduce-overhead').

    python benchmarks/generator_speed.py --llamagen /path/to/LlamaGen          # GPT-B, batch 1 and 32, 1 thread
    python benchmarks/generator_speed.py --preset GPT-nano --batches 2 --steps 4 --rounds 1   # smoke

Each variant is compiled and warmed up first (that time is reported apart), then the timed rounds interleave the
variants (each round times `--steps` decode steps of every variant), and the best round counts: load from other
processes hits every variant alike. GPT-B at the paper's data shape (vocab 16384, 256 tokens on a 16x16 grid, 1000
classes), random weights, fp32, no CFG, temperature 1, no top-k. Writes benchmarks/results/generator_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from vfmtok.generator import generate as G
from vfmtok.generator.gpt import create_gpt
from vfmtok.utils.io import write_json, write_text

DATA = dict(vocab_size=16384, num_tokens=256, token_grid=(16, 16), num_classes=1000)
MODES = {"default": "default", "max-autotune": "max-autotune-no-cudagraphs"}


def cpu_description() -> str:
    """CPU model name from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ours(model, batch: int, steps: int, compiled: str | None) -> Callable[[], int]:
    """`steps` decode steps as generate() runs them (decode_token, randoms drawn per step); returns the ids made."""
    dev, V = model.head.weight.device, model.config.vocab_size
    step = G.compiled_decode_token(compiled, dev.type) if compiled else G.decode_token
    gen = torch.Generator(device=dev).manual_seed(0)

    def run() -> int:
        last = torch.zeros(batch, 1, dtype=torch.long, device=dev)
        for t in range(1, steps + 1):
            nxt = step(model, last, torch.full((1,), t, dtype=torch.long, device=dev),
                       G.draw_noise(batch, V, "icdf", gen, dev), None, None, 1.0, 0, 1.0)
            last = nxt.view(-1, 1)
        return batch * steps
    return run


def plain(model, batch: int, steps: int, mode: str) -> Callable[[], int]:
    """The model's decode step compiled alone (freezing on), the sampling eager after it."""
    dev = model.head.weight.device
    options = G.compile_options(mode, dev)
    step = torch.compile(G.decode_step, fullgraph=True, dynamic=False, options=options)
    gen = torch.Generator(device=dev).manual_seed(0)

    def run() -> int:
        last = torch.zeros(batch, 1, dtype=torch.long, device=dev)
        for t in range(1, steps + 1):
            logits = step(model, last, torch.full((1,), t, dtype=torch.long, device=dev))
            last = G.sample_next(logits, 1.0, 0, 1.0, gen).view(-1, 1)
        return batch * steps
    return run


def llamagen(path: Path, batch: int, steps: int, compiled: bool) -> Callable[[], int]:
    """LlamaGen's generate() on its GPT-B (same data shape, random weights, cache for the whole image): steps + 1
    tokens incl. its prefill."""
    sys.path.insert(0, str(path))
    from autoregressive.models.generate import generate as lg_generate
    from autoregressive.models.gpt import GPT_B

    torch.manual_seed(0)
    model = GPT_B(vocab_size=DATA["vocab_size"], block_size=DATA["num_tokens"], num_classes=DATA["num_classes"],
                  cls_token_num=1, model_type="c2i").eval()
    # Its generate() sizes the KV cache to the tokens asked for; a real run asks for the whole image (256 + the
    # class token), which is also the cache vfmtok decodes against here, so both attend over the same positions.
    own_setup = model.setup_caches
    model.setup_caches = lambda max_batch_size, max_seq_length, dtype: own_setup(
        max_batch_size, DATA["num_tokens"] + 1, dtype)
    if compiled:  # as its autoregressive/sample/sample_c2i.py --compile
        model = torch.compile(model, mode="reduce-overhead", fullgraph=True)
    labels = torch.arange(batch) % DATA["num_classes"]

    def run() -> int:
        with torch.no_grad():
            lg_generate(model, labels, steps + 1, cfg_scale=1.0, temperature=1.0, top_k=0, top_p=1.0, sample_logits=True)
        return batch * (steps + 1)
    return run


def variants(model, batch: int, steps: int, lg_path: Path | None, lg_compile: bool = True
             ) -> dict[str, Callable[[], Callable[[], int]]]:
    """name -> factory of a timed callable (the factory compiles nothing; the first calls do)."""
    out = {"eager (vfmtok sample)": lambda: ours(model, batch, steps, None)}
    for name, mode in MODES.items():
        out[f"whole step compiled, {name} + freezing"] = lambda m=mode: ours(model, batch, steps, m)
    for name, mode in MODES.items():
        out[f"plain decode step compiled, {name} + freezing"] = lambda m=mode: plain(model, batch, steps, m)
    if lg_path is not None:
        out["LlamaGen generate() eager"] = lambda: llamagen(lg_path, batch, steps, False)
        if lg_compile:
            out["LlamaGen generate() compiled (its --compile)"] = lambda: llamagen(lg_path, batch, steps, True)
    return out


def bench_batch(model, batch: int, steps: int, rounds: int, lg_path: Path | None, lg_compile: bool = True) -> list[dict]:
    """Warm every variant up (compile time apart), then `rounds` interleaved timed rounds; best round per variant."""
    torch._dynamo.reset()
    G.compiled_decode_token.cache_clear()
    model.setup_caches(batch, DATA["num_tokens"] + 1)
    runs, warm = {}, {}
    for name, factory in variants(model, batch, steps, lg_path, lg_compile).items():
        t = time.perf_counter()
        runs[name] = factory()
        runs[name]()
        warm[name] = time.perf_counter() - t
        print(f"batch {batch}: {name} warm-up {warm[name]:.1f} s", flush=True)
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, run in runs.items():
            t = time.perf_counter()
            n = run()
            best[name] = max(best.get(name, 0.0), n / (time.perf_counter() - t))
    picked = f"whole step compiled, {[k for k, v in MODES.items() if v == G.cpu_compile_mode(batch)][0]} + freezing"
    return [{"batch": batch, "variant": name, "tokens_per_s": round(best[name], 2), "warmup_s": round(warm[name], 1),
             "is_compile_flag": name == picked} for name in runs]


def clean_command(cmd: str) -> str:
    """The command as recorded: no local paths (the LlamaGen checkout and the output name are placeholders)."""
    cmd = re.sub(r"--out \S+", "--out OUT", cmd)
    return re.sub(r"--llamagen (--llamagen )?\S+", "--llamagen LLAMAGEN_CHECKOUT", cmd)


def table(rows: list[dict]) -> str:
    """Markdown: tokens/s per variant, its ratio to eager and to the best plain compiled variant."""
    lines = ["| batch | variant | tokens/s | vs eager | vs best plain compiled | warm-up s (compile) |", "|---|---|---|---|---|---|"]
    for batch in sorted({r["batch"] for r in rows}):
        group = [r for r in rows if r["batch"] == batch]
        eager = next(r["tokens_per_s"] for r in group if r["variant"].startswith("eager"))
        best_plain = max(r["tokens_per_s"] for r in group if r["variant"].startswith("plain"))
        for r in group:
            name = r["variant"] + (" **= `--compile`**" if r["is_compile_flag"] else "")
            lines.append(f"| {batch} | {name} | {r['tokens_per_s']} | {r['tokens_per_s'] / eager:.2f}x | "
                         f"{r['tokens_per_s'] / best_plain:.2f}x | {r['warmup_s']} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="GPT-B")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    p.add_argument("--steps", type=int, default=24, help="decode steps per timed round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--llamagen", type=Path, default=None, help="a LlamaGen checkout (FoundationVision/LlamaGen)")
    p.add_argument("--no-llamagen-compile", action="store_true", help="skip LlamaGen's compiled run (minutes of compile)")
    p.add_argument("--out", default="benchmarks/results/generator_speed")
    p.add_argument("--combine", nargs="+", type=Path, default=None,
                   help="only merge the .json files of earlier runs (e.g. one process per batch size) into --out")
    args = p.parse_args()
    if args.combine:
        runs = [json.loads(f.read_text()) for f in args.combine]
        rows = [r for run in runs for r in run["rows"]]
        head = (f"# Generator decode speed\n\n{runs[0]['cpu']}, torch {runs[0]['torch']}, {runs[0]['threads']} thread(s); "
                "one process per batch size (variants of one batch size side by side in one process), commands:\n\n"
                + "".join(f"- `{clean_command(run['command'])}`, then `--combine` of the .json files\n" for run in runs) + "\n"
                + "".join(dict.fromkeys(run["note"] for run in runs)))
        write_json(args.out + ".json", {**runs[0], "rows": rows, "command": [clean_command(run["command"]) for run in runs]})
        write_text(args.out + ".md", head + table(rows) + "\n")
        print(table(rows))
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_gpt(args.preset, **DATA).eval()
    cmd = clean_command("python benchmarks/generator_speed.py " + " ".join(
        "LLAMAGEN_CHECKOUT" if a == str(args.llamagen) else a for a in sys.argv[1:]))
    note = (f"{args.preset}, random weights, fp32, no CFG, temperature 1, no top-k. Bounded run (load average "
            f"{os.getloadavg()[0]:.1f} at its start): {args.steps} decode steps per round, best of {args.rounds} "
            "interleaved rounds after each variant's warm-up; tokens/s are comparable within a batch size only. "
            "Both KV caches hold the full image "
            "(256 tokens + the class token), as in a real run; LlamaGen's rounds count its prefill as a token "
            f"({args.steps + 1} per round) and include its per-call cache set-up.\n\n")
    rows = []
    with torch.no_grad():
        for batch in args.batches:  # results written after each batch size: a killed run keeps what it measured
            rows += bench_batch(model, batch, args.steps, args.rounds, args.llamagen, not args.no_llamagen_compile)
            print(table(rows), flush=True)
            write_json(args.out + ".json", {"cpu": cpu_description(), "torch": torch.__version__, "threads": args.threads,
                                            "preset": args.preset, "steps": args.steps, "rounds": args.rounds,
                                            "command": cmd, "note": note, "rows": rows})
            write_text(args.out + ".md", f"# Generator decode speed\n\n{cpu_description()}, torch {torch.__version__}, "
                                         f"{args.threads} thread(s); command: `{cmd}`\n\n{note}" + table(rows) + "\n")


if __name__ == "__main__":
    main()
