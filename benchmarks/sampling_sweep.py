"""Class consistency of exported pairs over sampling settings (temperature x top-k, no CFG): the evidence behind a
model's recommended sampling (`vfmtok export --temperature/--top-k`).

Run:  .venv/bin/python benchmarks/sampling_sweep.py --model vfmtok=runs/my-export [--model vqgan=DIR] \
          [--temperature 1.0] [--top-k 0 5 10 20] [--per-class 50] [--seed 1]
Each setting is one `vfmtok class-consistency` run (kept in --runs; re-running skips what exists). Choose with one
seed here and report with another (benchmarks/bundled_model.py uses seed 0), so the reported number is not the
maximum of the sweep's noise. Writes <results>/<name>.json and <name>.md (--name, default sampling_sweep).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from reproduce_imagenette import cli, named_dirs  # run as a script: benchmarks/ is on sys.path
from vfmtok.utils.io import read_json, write_json, write_text

ROOT = Path(__file__).resolve().parents[1]


def sweep(model: Path, out: Path, args) -> list[dict]:
    """One class-consistency result per (temperature, top-k) for one exported model folder."""
    rows = []
    for t in args.temperature:
        for k in args.top_k:
            path = out / f"cc_T{t:g}_k{k}_seed{args.seed}.json"
            if not path.is_file():
                cli(["class-consistency", "--gpt", str(model / "generator"), "--data", args.data, "--per-class",
                     str(args.per_class), "--cfg-scale", "1.0", "--temperature", str(t), "--top-k", str(k),
                     "--seed", str(args.seed), "--device", args.device, "--out", str(path)])
            m = read_json(path)["metrics"]
            p, n = m["class_consistency"], m["num_samples"]
            rows.append({"temperature": t, "top_k": k, "class_consistency": p, "samples": n,
                         "binomial_sd": math.sqrt(p * (1 - p) / n), "real_val_top1": m["real_val_top1"]})
    return rows


def write_tables(results: dict[str, list[dict]], folder: Path, command: str, seed: int, name: str) -> None:
    """<name>.json and a Markdown table, the best setting per model marked."""
    write_json(folder / f"{name}.json", {"command": command, "seed": seed, "models": results})
    lines = ["# Class consistency over sampling settings (no CFG)", "", f"Command: `{command}`", "",
             f"Sampling seed {seed}; each cell: top-1 of the real-image classifier on the samples "
             "(+- binomial standard deviation).", "", "| model | temperature | top-k | samples | class consistency |",
             "|---|---|---|---|---|"]
    for model, rows in results.items():
        best = max(rows, key=lambda r: r["class_consistency"])
        for r in rows:
            mark = " **(best)**" if r is best else ""
            lines.append(f"| {model} | {r['temperature']:g} | {r['top_k'] or 'off'} | {r['samples']} | "
                         f"{r['class_consistency']:.1%} +- {r['binomial_sd']:.1%}{mark} |")
    write_text(folder / f"{name}.md", "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, metavar="NAME=DIR", help="exported model folder, repeatable")
    ap.add_argument("--temperature", type=float, nargs="+", default=[1.0])
    ap.add_argument("--top-k", type=int, nargs="+", default=[0, 5, 10, 20])
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", default="imagenette")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "sampling_sweep"), help="per-setting result files")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--name", default="sampling_sweep", help="stem of the result files")
    args = ap.parse_args()
    models = named_dirs(args.model)
    results = {name: sweep(Path(d), Path(args.runs) / name, args) for name, d in models.items()}
    write_tables(results, Path(args.results), " ".join([Path(sys.executable).name] + sys.argv), args.seed, args.name)
    print(json.dumps({n: max(r, key=lambda x: x["class_consistency"]) for n, r in results.items()}, indent=1))


if __name__ == "__main__":
    main()
