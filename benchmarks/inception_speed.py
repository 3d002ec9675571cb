"""FID Inception on CPU, NCHW vs channels-last (NHWC) weights and inputs, side by side in one run.

Run: .venv/bin/python benchmarks/inception_speed.py [--batch 16] [--repeats 3] [--threads 1]
Writes benchmarks/results/inception_speed.{json,md}: images/s of each layout (alternating, best of --repeats) and
the largest pool3 difference between them on the same images. `vfmtok.eval.inception` uses channels-last on CPU.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent / "results" / "inception_speed"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from vfmtok.eval.inception import get_extractor, preprocess
    from vfmtok.utils.io import write_json, write_text

    nhwc = get_extractor("cpu").model
    nchw = copy.deepcopy(nhwc).to(memory_format=torch.contiguous_format)
    x = preprocess(torch.randint(0, 256, (args.batch, 64, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)))
    arms = {"NCHW": (nchw, x.contiguous()), "channels-last": (nhwc, x.contiguous(memory_format=torch.channels_last))}
    best, feats, load = {k: float("inf") for k in arms}, {}, os.getloadavg()[0]
    with torch.inference_mode():
        for _ in range(args.repeats):
            for name, (model, inp) in arms.items():  # alternating: a slower stretch of the machine hits both
                t = time.perf_counter()
                feats[name] = model(inp)[0]
                best[name] = min(best[name], time.perf_counter() - t)
    rate = {k: args.batch / v for k, v in best.items()}
    diff = (feats["NCHW"] - feats["channels-last"]).abs().max().item()
    rec = {"command": " ".join(["python benchmarks/inception_speed.py", *sys.argv[1:]]), "threads": args.threads,
           "batch": args.batch, "images_per_s": rate, "speedup": rate["channels-last"] / rate["NCHW"], "max_pool3_abs_diff": diff,
           "loadavg_1min_at_start": load}
    write_json(OUT.with_suffix(".json"), rec)
    md = ["# FID Inception on CPU: NCHW vs channels-last", "", f"`{rec['command']}`, {args.threads} thread(s), batch {args.batch}, "
          f"best of {args.repeats} alternating runs; 1-min load average at the start {load:.2f} (other jobs slow both arms alike).", "", "| layout | images/s |", "|---|---|"]
    md += [f"| {k} | {v:.2f} |" for k, v in rate.items()]
    md += ["", f"channels-last / NCHW: **{rec['speedup']:.2f}x**; largest pool3 difference on the same images: {diff:.2e}."]
    write_text(OUT.with_suffix(".md"), "\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
