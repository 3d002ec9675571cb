"""What the whole-step compile can save on a CPU: the sampling part of a decode step (`sample_logits`: filter,
softmax, the inverse-CDF draw) eager and compiled, beside the GPT-B forward of one decode step (compiled, freezing),
side by side in one process, 1 thread. Its share of the step bounds what fusing it into the step's graph can gain.

    python benchmarks/sampling_cost.py            # writes benchmarks/results/sampling_cost.{json,md}
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

import torch

from generator_speed import DATA, clean_command, cpu_description  # run as a script: benchmarks/ is on sys.path
from vfmtok.generator import generate as G
from vfmtok.generator.gpt import create_gpt
from vfmtok.utils.io import write_json, write_text


def best_ms(fns: dict[str, Callable[[], object]], reps: int, rounds: int) -> dict[str, float]:
    """Best per-call milliseconds of each function over interleaved rounds of `reps` calls."""
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            for _ in range(reps):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t) / reps * 1e3)
    return best


def measure(model, batch: int, rounds: int) -> dict:
    """Milliseconds of the forward step and of the sampling part (eager / compiled) at one batch size."""
    opts = G.compile_options(G.cpu_compile_mode(batch), torch.device("cpu"))
    step = torch.compile(G.decode_step, fullgraph=True, dynamic=False, options=opts)
    sample = torch.compile(G.sample_logits, fullgraph=True, dynamic=False, options=opts)
    model.setup_caches(batch, DATA["num_tokens"] + 1)
    last, pos = torch.zeros(batch, 1, dtype=torch.long), torch.ones(1, dtype=torch.long)
    logits = step(model, last, pos)
    noise = G.draw_noise(batch, DATA["vocab_size"], "icdf", torch.Generator().manual_seed(0))
    assert torch.equal(G.sample_logits(logits, noise), sample(logits, noise))  # same ids: the same computation
    ms = best_ms({"forward step (compiled)": lambda: step(model, last, pos),
                  "sampling eager": lambda: G.sample_logits(logits, noise),
                  "sampling compiled": lambda: sample(logits, noise)}, reps=5 if batch > 1 else 20, rounds=rounds)
    return {"batch": batch, "ms": {k: round(v, 3) for k, v in ms.items()},
            "sampling_share_of_step": round(ms["sampling eager"] / ms["forward step (compiled)"], 4)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/sampling_cost")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = create_gpt("GPT-B", **DATA).eval()
    with torch.no_grad():
        rows = [measure(model, b, args.rounds) for b in args.batches]
    cmd = clean_command(" ".join(["python benchmarks/sampling_cost.py", *sys.argv[1:]]))
    write_json(args.out + ".json", {"cpu": cpu_description(), "torch": torch.__version__, "command": cmd, "rows": rows})
    lines = ["# The sampling part of a decode step on CPU", "",
             f"{cpu_description()}, torch {torch.__version__}, 1 thread; `{cmd}`; GPT-B, vocab 16384, no top-k, "
             f"best of {args.rounds} interleaved rounds.", "",
             "| batch | forward step compiled, ms | sampling eager, ms | sampling compiled, ms | sampling / step |",
             "|---|---|---|---|---|"]
    for r in rows:
        m = r["ms"]
        lines.append(f"| {r['batch']} | {m['forward step (compiled)']} | {m['sampling eager']} | "
                     f"{m['sampling compiled']} | {r['sampling_share_of_step']:.2%} |")
    write_text(args.out + ".md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
