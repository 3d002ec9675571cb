"""Speculative Jacobi decoding vs standard sampling on the bundled pair: sequential passes, wall time, quality.

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/jacobi_decoding.py [--windows 4 8 16 32] [--seeds 0 1 2]
Writes benchmarks/results/jacobi_decoding.{json,md}; keeps the speed figures and the quality runs in
runs/jacobi_decoding/ (--runs; each file is reused on a rerun, so `--no-quality` first and a second call later works).
  (a) speed, one process, arms interleaved: sequential forward passes per image and ids wall time at batch 1 and 32
      (CPU, 1 thread), standard sampling beside every window K (the tokenizer's decode is the same for all: left out);
  (b) quality with the model's recommended sampling, for standard sampling and one window (--quality-window, default
      the K fastest at batch 1), --jobs runs at a time (after one tiny run has cached the reference statistics and
      the classifier): `vfmtok eval-generator` (gFID / precision / recall of
      --per-class samples per class against Imagenette val) per sampling seed, and `vfmtok class-consistency` on
      the first --cc-per-class of them per class (classifier fit once, seed 0).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from reproduce_imagenette import cli  # run as a script: benchmarks/ is on sys.path
from vfmtok.generator.checkpoint import load_generator
from vfmtok.generator.generate import generate
from vfmtok.generator.jacobi import jacobi_generate
from vfmtok.utils.io import atomic_path, read_json, write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "src" / "vfmtok" / "assets" / "models" / "imagenette64"


def timed_ids(gpt, labels: torch.Tensor, window: int | None, seed: int, sampling: dict) -> tuple[float, int]:
    """(seconds, sequential forward passes) of one batch of ids; window None = standard sampling."""
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    if window is None:
        generate(gpt, labels, generator=gen, **sampling)
        passes = gpt.config.num_tokens
    else:
        passes = jacobi_generate(gpt, labels, generator=gen, window=window, **sampling)[1].forward_passes
    return time.perf_counter() - t0, passes


def speed(gpt, windows: list[int], sampling: dict, batch: int, batches: int) -> dict:
    """{arm: passes per image and seconds per image} with every arm run on the same label batches, interleaved."""
    arms = {"standard": None, **{f"jacobi K={k}": k for k in windows}}
    secs = {a: [] for a in arms}
    passes = {a: [] for a in arms}
    timed_ids(gpt, torch.zeros(batch, dtype=torch.long), None, 0, sampling)  # warm-up: caches, allocator
    for b in range(batches):
        labels = (torch.arange(batch) + b * batch) % gpt.config.num_classes
        for arm, k in arms.items():
            s, p = timed_ids(gpt, labels, k, b, sampling)
            secs[arm].append(s)
            passes[arm].append(p)
    n = batch * batches
    return {arm: {"window": arms[arm], "images": n, "passes_per_batch_mean": statistics.mean(passes[arm]),
                  "passes_per_batch_min": min(passes[arm]), "passes_per_batch_max": max(passes[arm]),
                  "seconds_per_image": sum(secs[arm]) / n,
                  "speedup_vs_standard": sum(secs["standard"]) / sum(secs[arm])} for arm in arms}


def wait_for(path: Path, what: str, limit_s: float = 5400) -> None:
    """Block until another task has written `path` (the shared reference statistics / classifier)."""
    t0 = time.monotonic()
    while not path.is_file():
        if time.monotonic() - t0 > limit_s:
            raise SystemExit(f"gave up waiting for {what} ({path})")
        time.sleep(10)


def draw_samples(npz: Path, window: int | None, seed: int, args) -> None:
    """--per-class samples per class of the bundled pair (its recommended sampling) into npz (arr_0, labels)."""
    from vfmtok.generator.pairing import load_gpt_tokenizer
    from vfmtok.generator.sample import generate_images

    torch.set_num_threads(1)
    gpt = load_generator(BUNDLED / "generator", device="cpu")
    tok = load_gpt_tokenizer(gpt, None, torch.device("cpu"))
    t, k, p = gpt.sampling_args()
    labels = torch.arange(gpt.config.num_classes).repeat_interleave(args.per_class)
    par = {} if window is None else {"parallel": "jacobi", "window": window}
    images = generate_images(gpt, tok, labels, temperature=t, top_k=k, top_p=p, seed=seed, batch_size=32, **par)
    with atomic_path(npz) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, arr_0=images, labels=labels.numpy())


def reference(args) -> dict:
    """Inception statistics of the Imagenette val reference (--ref-images of them), computed once into the runs folder."""
    stats = Path(args.runs) / "reference_stats.npz"
    if not stats.is_file():
        ref_n = [] if args.ref_images is None else ["--ref-num-images", str(args.ref_images)]
        tiny = Path(args.runs) / "reference_run"
        tiny.mkdir(parents=True, exist_ok=True)
        cli(["eval-generator", "--gpt", str(BUNDLED / "generator"), "--ref", args.data, "--ref-split", "val", *ref_n,
             "--images-per-class", "1", "--second-encoder", "none", "--device", "cpu", "--save-ref-stats", str(stats),
             "--out", str(tiny / "eval_generator.json")])
    return {}


def probe_options(args) -> list[str]:
    """The classifier's real images per class (train / val), the same for every run."""
    return ["--train-per-class", str(args.probe_train), "--val-per-class", str(args.probe_val)]


def classifier(args) -> dict:
    """Fit (and cache) the class-consistency classifier once, on a throwaway sample file."""
    done = Path(args.runs) / "classifier.done"
    if not done.is_file():
        tiny = Path(args.runs) / "classifier_run"
        tiny.mkdir(parents=True, exist_ok=True)
        npz = tiny / "noise.npz"
        rng = np.random.default_rng(0)
        np.savez(npz, arr_0=rng.integers(0, 255, (10, 64, 64, 3), dtype=np.uint8), labels=np.arange(10))
        cli(["class-consistency", "--samples", str(npz), "--data", args.data, "--device", "cpu", "--seed", "0",
             *probe_options(args), "--out", str(tiny / "class_consistency.json")])
        done.write_text("ok\n")
    return {}


def quality(arm: str, window: int | None, seed: int, args) -> dict:
    """gFID / P / R of --per-class samples per class of one arm and sampling seed, class consistency of some of them."""
    if arm == "reference":
        return reference(args)
    if arm == "classifier":
        return classifier(args)
    out = Path(args.runs) / f"{arm}_seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    gen, cc, npz = out / "eval_generator.json", out / "class_consistency.json", out / "samples.npz"
    stats = Path(args.runs) / "reference_stats.npz"  # one reference for every run (a subset would follow --seed)
    if not npz.is_file():
        draw_samples(npz, window, seed, args)
    if not gen.is_file():
        wait_for(stats, "the reference statistics")
        cli(["eval-generator", "--samples", str(npz), "--ref", str(stats), "--second-encoder", "none",
             "--device", "cpu", "--out", str(gen)])
    if not cc.is_file():
        wait_for(Path(args.runs) / "classifier.done", "the classifier")
        part = out / f"samples_{args.cc_per_class}_per_class.npz"
        with np.load(npz, allow_pickle=False) as z:
            labels = z["labels"]
            keep = np.concatenate([np.flatnonzero(labels == c)[: args.cc_per_class] for c in np.unique(labels)])
            np.savez(part, arr_0=z["arr_0"][keep], labels=labels[keep])
        cli(["class-consistency", "--samples", str(part), "--data", args.data, "--device", "cpu", "--seed", "0",
             *probe_options(args), "--out", str(cc)])
    g, c = read_json(gen), read_json(cc)
    run = g["metrics"]["runs"][0]
    return {"arm": arm, "window": window, "seed": seed, "gFID": run["gFID"], "precision": run["precision"],
            "recall": run["recall"], "class_consistency": c["metrics"]["class_consistency"],
            "num_images": run["num_images"], "cc_images": c["metrics"]["num_samples"],
            "commands": {"eval_generator": g["command"], "class_consistency": c["command"]}}


def _task(item) -> dict:
    (arm, window, seed), args = item
    return quality(arm, window, seed, args)


def summary(rows: list[dict], key: str) -> str:
    """'mean +- sd (v1, v2, ..)' over seeds."""
    vals = [r[key] for r in rows]
    fmt = {"class_consistency": ".1%", "gFID": ".1f"}.get(key, ".3f")
    sd = f" +- {statistics.stdev(vals):{fmt}}" if len(vals) > 1 else ""
    return f"{statistics.mean(vals):{fmt}}{sd} ({', '.join(f'{v:{fmt}}' for v in vals)})"


def write_results(res: dict, folder: Path) -> None:
    """jacobi_decoding.json and .md."""
    write_json(folder / "jacobi_decoding.json", res)
    n = res["num_tokens"]
    lines = ["# Speculative Jacobi decoding on the bundled pair (imagenette64, GPT-tiny, 64 ids per image)", "",
             f"Command: `{res['command']}`", "",
             f"Sampling: {res['sampling']} (the model's recommendation), no CFG. CPU, 1 thread, on a machine shared "
             "with other jobs: the times are ratios of arms run interleaved in one process, not absolute speeds. "
             "Wall time is ids only (the tokenizer's decode is the same for every arm). Sequential forward passes "
             f"include the prefill; standard sampling needs {n} per image. The speed figures are measured once and "
             "kept in the runs folder's speed.json (a rerun reuses them).", ""]
    for batch, arms in res["speed"].items():
        lines += [f"## Batch {batch}", "", "| decoding | images | sequential passes per batch (min-max) | "
                  "ms per image | speed vs standard |", "|---|---|---|---|---|"]
        for arm, m in arms.items():
            lines.append(f"| {arm} | {m['images']} | {m['passes_per_batch_mean']:.1f} ({m['passes_per_batch_min']}-"
                         f"{m['passes_per_batch_max']}) | {1000 * m['seconds_per_image']:.1f} | "
                         f"{m['speedup_vs_standard']:.2f}x |")
        lines.append("")
    if res.get("quality"):
        lines += ["## Quality", "", "| decoding | seeds | samples per seed (gFID / class consistency) | gFID | precision "
                  "| recall | class consistency |", "|---|---|---|---|---|---|---|"]
        for arm, rows in res["quality"].items():
            if rows:
                lines.append(f"| {arm} | {', '.join(str(r['seed']) for r in rows)} | {rows[0]['num_images']} / "
                             f"{rows[0]['cc_images']} | {summary(rows, 'gFID')} | {summary(rows, 'precision')} | "
                             f"{summary(rows, 'recall')} | {summary(rows, 'class_consistency')} |")
        ref = "all" if res.get("ref_images") is None else f"{res['ref_images']} (a seeded subset of the)"
        lines += ["", f"Mean +- sd over sampling seeds (each seed's value in brackets); gFID / precision / recall against "
                  f"{ref} Imagenette val images at 64 px; class consistency = `vfmtok class-consistency --samples` on "
                  f"the first samples of each class, classifier fit on {res.get('probe_train')} real train images per "
                  f"class (its top-1 on {res.get('probe_val')} real val images per class: {res.get('probe_real_top1')})."]
    write_text(folder / "jacobi_decoding.md", "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--speed-batches", type=int, nargs=2, default=[20, 2], metavar=("AT_1", "AT_32"),
                    help="label batches timed at batch 1 and at batch 32")
    ap.add_argument("--quality-window", type=int, default=None, help="default: the fastest at batch 1")
    ap.add_argument("--ref-images", type=int, default=None, help="val images of the gFID reference (default: all)")
    ap.add_argument("--jobs", type=int, default=1, help="quality tasks at a time (reference, classifier, each run)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampling seeds of the quality runs")
    ap.add_argument("--per-class", type=int, default=200, help="gFID samples per class (10 classes)")
    ap.add_argument("--cc-per-class", type=int, default=50, help="of which class consistency scores this many per class")
    ap.add_argument("--probe-train", type=int, default=300, help="real train images per class for the classifier")
    ap.add_argument("--probe-val", type=int, default=100, help="real val images per class for its reference top-1")
    ap.add_argument("--data", default="imagenette")
    ap.add_argument("--no-quality", action="store_true")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "jacobi_decoding"))
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    gpt = load_generator(BUNDLED / "generator", device="cpu").float()
    t, k, p = gpt.sampling_args()
    sampling = {"temperature": t, "top_k": k, "top_p": p}
    res = {"command": " ".join([Path(sys.executable).name] + sys.argv), "num_tokens": gpt.config.num_tokens,
           "sampling": sampling, "threads": torch.get_num_threads(), "speed": {}}
    cached = Path(args.runs) / "speed.json"
    if cached.is_file():
        res["speed"] = read_json(cached)
    else:
        for batch, batches in zip((1, 32), args.speed_batches):
            res["speed"][str(batch)] = speed(gpt, args.windows, sampling, batch, batches)
            print(batch, {a: round(m["passes_per_batch_mean"], 1) for a, m in res["speed"][str(batch)].items()}, flush=True)
        write_json(cached, res["speed"])
    at1 = res["speed"]["1"]
    window = args.quality_window or min(args.windows, key=lambda w: at1[f"jacobi K={w}"]["seconds_per_image"])
    res.update(quality_window=window, ref_images=args.ref_images, probe_train=args.probe_train, probe_val=args.probe_val)
    write_results(res, Path(args.results))
    if not args.no_quality:
        res["quality"] = {"standard": [], f"jacobi K={window}": []}
        tasks = [("reference", None, 0), ("classifier", None, 0)]  # shared by the runs, which wait for them
        tasks += [(arm, w, seed) for seed in args.seeds for arm, w in (("standard", None), (f"jacobi{window}", window))]
        with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
            for (arm, w, seed), row in zip(tasks, pool.imap(_task, [(t, args) for t in tasks])):
                if row:
                    res["quality"]["standard" if w is None else f"jacobi K={w}"].append(row)
                    res["probe_real_top1"] = f"{read_json(Path(args.runs) / f'{arm}_seed{seed}' / 'class_consistency.json')['metrics']['real_val_top1']:.1%}"
                    write_results(res, Path(args.results))
    write_results(res, Path(args.results))


if __name__ == "__main__":
    main()
