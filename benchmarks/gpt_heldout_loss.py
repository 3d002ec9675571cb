"""Does a GPT overfit its codes? Its next-token loss on train codes beside held-out (validation) codes of one tokenizer.

Run:  .venv/bin/python benchmarks/gpt_heldout_loss.py --gpt NAME=DIR [--gpt ...] --train-codes DIR --val-codes DIR
          [--num 1000] [--name gpt_heldout_loss]
DIR is a checkpoint, run or exported generator folder; the codes folders come from `vfmtok extract-codes` with the
GPT's tokenizer (validation codes: `--split val`). Each loss is the mean cross-entropy (nats per token, teacher
forcing, eval mode, no label dropout) over the same --num seeded-random images, their first (centre) view.
Writes <results>/<name>.json and <name>.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from reproduce_imagenette import named_dirs  # run as a script: benchmarks/ is on sys.path
from vfmtok.data.codes import CodeDataset
from vfmtok.generator.checkpoint import load_generator
from vfmtok.utils.io import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]


def code_batch(folder: str, num: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (n, T), labels (n,)) of `num` seeded-random images of a codes folder, centre view."""
    ds = CodeDataset(folder, random_view=False)
    pick = np.sort(np.random.default_rng(seed).permutation(len(ds))[:num])
    items = [ds[int(i)] for i in pick]
    return torch.stack([ids for ids, _ in items]), torch.tensor([y for _, y in items])


@torch.no_grad()
def mean_loss(model: torch.nn.Module, ids: torch.Tensor, labels: torch.Tensor, batch: int = 100) -> float:
    """Mean next-token cross-entropy of class-conditional `model` over all sequences (nats per token)."""
    total = 0.0
    for i in range(0, len(ids), batch):
        _, loss = model(labels[i:i + batch], ids[i:i + batch, :-1], targets=ids[i:i + batch])
        total += loss.item() * len(ids[i:i + batch])
    return total / len(ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpt", action="append", required=True, metavar="NAME=DIR", help="generator folder, repeatable")
    ap.add_argument("--train-codes", required=True)
    ap.add_argument("--val-codes", required=True)
    ap.add_argument("--num", type=int, default=1000, help="images per codes folder")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--name", default="gpt_heldout_loss", help="stem of the result files")
    args = ap.parse_args()
    data = {split: code_batch(folder, args.num) for split, folder in
            (("train", args.train_codes), ("val", args.val_codes))}
    rows = []
    for name, folder in named_dirs(args.gpt).items():
        model = load_generator(folder).eval()
        losses = {split: mean_loss(model, *batch) for split, batch in data.items()}
        rows.append({"name": name, "gpt": folder, **losses, "gap": losses["val"] - losses["train"]})
        print(f"{name}: train {losses['train']:.4f}  val {losses['val']:.4f}  gap {rows[-1]['gap']:+.4f}")
    command = shlex.join([Path(sys.executable).name] + sys.argv)
    out = Path(args.results)
    write_json(out / f"{args.name}.json", {"command": command, "num": args.num, "train_codes": args.train_codes,
                                           "val_codes": args.val_codes, "rows": rows})
    lines = ["# GPT next-token loss on train codes and on held-out validation codes", "", f"Command: `{command}`", "",
             f"{args.num} images per split (centre view), nats per token; a growing gap is overfitting.", "",
             "| generator | train loss | val loss | val - train |", "|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['train']:.4f} | {r['val']:.4f} | {r['gap']:+.4f} |" for r in rows]
    write_text(out / f"{args.name}.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
