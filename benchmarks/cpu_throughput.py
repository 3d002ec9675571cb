"""Training throughput on this CPU, ImageFolder vs tar shards side by side: tokenizer images/s, GPT tokens/s, and the
data loader alone (decode + augment), at the CPU presets.

Run: .venv/bin/python benchmarks/cpu_throughput.py [--steps 12] [--threads 1] [--label this]
     PYTHONPATH=<other checkout>/src .venv/bin/python benchmarks/cpu_throughput.py --label main --merge
Writes benchmarks/results/cpu_throughput.{json,md}; --merge keeps the rows of other labels, so a run against another
checkout (the code before the data changes) lands in the same table, each cell the best of that label's runs (the
machine is shared: alternate the checkouts). Rows a checkout cannot run (shards before they existed) are skipped.
Figures are the trainers' own logged rates (img_per_s, tokens/s), which include the first steps.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent / "results"


def _tok_cfg(data: str, steps: int, batch: int):
    from vfmtok.tokenizer.config import get_preset

    cfg = get_preset("vfmtok-cpu-64")
    cfg.train.data, cfg.train.steps, cfg.train.batch_size = data, steps, batch
    cfg.train.cache_features = False  # shards cannot feed the feature cache; both rows run the frozen encoder
    cfg.train.save_every, cfg.train.log_every, cfg.train.reseed_dead_every = steps, steps, 0
    cfg.train.device = "cpu"
    return cfg


def tokenizer_rate(data: str, steps: int, batch: int, work: Path) -> float:
    """img_per_s the tokenizer trainer logs over `steps` steps of vfmtok-cpu-64."""
    from vfmtok.train.tokenizer import train_tokenizer

    run = work / f"tok-{abs(hash(data)) % 10**8}-{time.time_ns()}"
    train_tokenizer(_tok_cfg(data, steps, batch), run)
    rec = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return float(rec[-1]["img_per_s"])


def gpt_rate(data: str, tokenizer: Path, steps: int, batch: int, work: Path) -> float:
    """tokens/s the generator trainer logs, GPT-tiny on images tokenized on the fly by `tokenizer`."""
    from vfmtok.cli import main

    run = work / f"gpt-{time.time_ns()}"
    rc = main(["train-generator", "--data", data, "--tokenizer", str(tokenizer), "--preset", "GPT-tiny", "--steps", str(steps),
               "--batch-size", str(batch), "--log-every", str(steps), "--save-every", str(steps), "--device", "cpu",
               "--out", str(run)])
    if rc:
        raise RuntimeError(f"train-generator exited {rc}")
    rates = re.findall(r"tokens/s (\d+)", (run / "train.log").read_text())
    return float(rates[-1])


def loader_rate(data: str, batches: int, batch: int) -> float:
    """Images/s of decode + random crop/flip + collate, one process, no model."""
    from vfmtok.data.imagefolder import ImageFolderDataset
    from vfmtok.data.sources import resolve_dataset

    try:
        from vfmtok.data.shards import ShardDataset, is_shard_spec
    except ImportError:
        is_shard_spec = lambda s: False  # noqa: E731 (a checkout before shards)
    if is_shard_spec(data):
        loader = torch.utils.data.DataLoader(ShardDataset(data, 64, batch), batch_size=None)
    else:
        ds = ImageFolderDataset(resolve_dataset(data), 64, split="train", train=True)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True)
    t0, n, i = time.perf_counter(), 0, 0
    while i < batches:  # several epochs of the small sample: a single one is too short to time
        start = i
        for x, _ in loader:
            n, i = n + x.shape[0], i + 1
            if i == batches:
                break
        if i == start:
            raise SystemExit(f"{data} gives no batch of {batch} images")
    return n / (time.perf_counter() - t0)


def run(label: str, steps: int, batch: int, work: Path) -> list[dict]:
    """Every row this checkout can run."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # helpers shared with the tests
    from helpers import build_tiny_tokenizer

    kinds = [("ImageFolder (zip)", "sample")]
    try:
        from vfmtok.data.prepare import prepare_shards

        t0 = time.perf_counter()
        kinds.append(("tar shards", str(prepare_shards("sample", work / "shards", shard_size=100))))
        prep_s = time.perf_counter() - t0
    except ImportError:
        prep_s = None
    tiny_tok = build_tiny_tokenizer(work / "tiny-tok")
    rows = []
    for kind, data in kinds:
        base = {"label": label, "data": kind, "threads": torch.get_num_threads()}
        rows.append({**base, "what": f"data loader, 64 px, batch {batch}", "rate": round(loader_rate(data, 200, batch), 1),
                     "unit": "images/s"})
        rows.append({**base, "what": f"train tokenizer vfmtok-cpu-64, batch {batch}, {steps} steps (no feature cache)",
                     "rate": round(tokenizer_rate(data, steps, batch, work), 2), "unit": "images/s"})
        rows.append({**base, "what": f"train GPT-tiny on the fly (tiny tokenizer, 32 px), batch {batch}, {steps} steps",
                     "rate": round(gpt_rate(data, tiny_tok, steps, batch, work)), "unit": "tokens/s"})
    if prep_s is not None:
        rows.append({"label": label, "data": "tar shards", "threads": torch.get_num_threads(),
                     "what": "prepare-data of the sample's 400 train images (one-off)", "rate": round(prep_s, 2), "unit": "s"})
    return rows


def best_of(old: list[dict], new: list[dict]) -> list[dict]:
    """Merge runs: per (label, data, measurement) the best figure (highest rate; lowest seconds) and the run count.

    The machine is shared, so alternating runs of two checkouts and keeping each one's best compares them fairly.
    """
    key = lambda r: (r["label"], r["data"], r["what"])  # noqa: E731
    merged = {key(r): r for r in old}
    for r in new:
        k, prev = key(r), merged.get(key(r))
        if prev is None:
            merged[k] = {**r, "runs": 1}
            continue
        better = r["rate"] < prev["rate"] if r["unit"] == "s" else r["rate"] > prev["rate"]
        merged[k] = {**(r if better else prev), "runs": prev.get("runs", 1) + 1}
    return list(merged.values())


def to_markdown(rows: list[dict]) -> str:
    """Rows grouped by measurement, one column per label x data kind."""
    cols = sorted({(r["label"], r["data"]) for r in rows})
    whats = list(dict.fromkeys(r["what"] for r in rows))
    lines = ["# CPU training throughput: ImageFolder vs tar shards", "",
             "Written by `benchmarks/cpu_throughput.py`; labels are the checkouts measured, each cell the best of its runs "
             f"({max(r.get('runs', 1) for r in rows)} at most; threads and counts in the JSON).", "",
             "| measurement | unit | " + " | ".join(f"{lab}: {d}" for lab, d in cols) + " |", "|---|---|" + "---|" * len(cols)]
    for w in whats:
        cells = {(r["label"], r["data"]): r for r in rows if r["what"] == w}
        unit = next(iter(cells.values()))["unit"]
        lines.append(f"| {w} | {unit} | " + " | ".join(str(cells[c]["rate"]) if c in cells else "" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--label", default="this checkout")
    ap.add_argument("--merge", action="store_true", help="keep other labels' rows already in the JSON")
    ap.add_argument("--out", default=str(OUT / "cpu_throughput"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from vfmtok.utils.io import write_json, write_text

    with tempfile.TemporaryDirectory() as tmp:
        rows = run(args.label, args.steps, args.batch, Path(tmp))
    out = Path(args.out)
    old = json.loads(out.with_suffix(".json").read_text())["rows"] if args.merge and out.with_suffix(".json").is_file() else []
    rows = best_of(old, rows)
    write_json(out.with_suffix(".json"), {"rows": rows})
    write_text(out.with_suffix(".md"), to_markdown(rows))
    print(to_markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
