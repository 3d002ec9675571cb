"""Invariants the fault suite checks after every kill and at the end of every trial (see fault_suite.py)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np


def check_files(out: Path) -> tuple[int, list[str]]:
    """Parse every JSON, safetensors, npy/npz, train state in `out`; (files checked, problems)."""
    import torch
    from safetensors import safe_open

    problems, n = [], 0
    if not out.exists():
        return 0, []
    for p in sorted(out.rglob("*")):
        if not p.is_file() or p.name.endswith(".tmp") or ".partial" in str(p.relative_to(out)).split(os.sep)[0] \
                or any(part.startswith(".") and part.endswith(".tmp") for part in p.relative_to(out).parts):
            continue
        try:
            if p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix == ".safetensors":
                with safe_open(str(p), "pt") as f:
                    for k in f.keys():
                        f.get_tensor(k)
            elif p.suffix == ".jsonl":
                [json.loads(line) for line in p.read_text().splitlines()]
            elif p.suffix == ".npy":
                np.load(p, mmap_mode="r")
            elif p.suffix == ".npz":
                with np.load(p, allow_pickle=False) as z:
                    [z[k] for k in z.files]
            elif p.suffix == ".pt":
                torch.load(p, map_location="cpu", weights_only=True)
            elif p.suffix == ".tar":
                import tarfile

                with tarfile.open(p) as t:
                    for m in t.getmembers():
                        if m.isfile():
                            t.extractfile(m).read()
            elif p.suffix == ".png":
                from PIL import Image

                with Image.open(p) as im:
                    im.load()
            else:
                continue
            n += 1
        except Exception as e:  # any failure to parse is what this suite looks for
            problems.append(f"{p.relative_to(out)}: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
    latest = out / "latest.txt"
    if latest.is_file():
        ck = out / "checkpoints" / latest.read_text().strip()
        for f in ("model.safetensors", "config.json", "train_state.pt"):
            if not (ck / f).is_file():
                problems.append(f"latest.txt names {ck.name}, which lacks {f}")
    for ck in (out / "checkpoints").glob("step_*") if (out / "checkpoints").is_dir() else []:
        missing = [f for f in ("model.safetensors", "config.json", "train_state.pt") if not (ck / f).is_file()]
        if missing:
            problems.append(f"checkpoint folder {ck.name} is incomplete (no {', '.join(missing)})")
    return n, problems


def latest_step(out: Path) -> int | None:
    latest = out / "latest.txt"
    return int(latest.read_text().strip().split("_")[1]) if latest.is_file() else None


def resumed_steps(out: Path) -> list[int]:
    log = out / "train.log"
    return [int(m) for m in re.findall(r"resumed from .* at step (\d+)", log.read_text())] if log.is_file() else []


def compare(name: str, ref: Path, out: Path) -> list[str]:
    """The finished output equals the reference run's."""
    import torch
    from safetensors.torch import load_file

    if name in ("train-tokenizer", "train-generator"):
        a = load_file(str(ref / "checkpoints" / (ref / "latest.txt").read_text().strip() / "model.safetensors"))
        b = load_file(str(out / "checkpoints" / (out / "latest.txt").read_text().strip() / "model.safetensors"))
        diff = [k for k in a if k not in b or not torch.equal(a[k], b[k])]
        if diff:
            worst = max(float((a[k] - b[k]).abs().max()) for k in diff if k in b)
            return [f"final weights differ from the uninterrupted run in {len(diff)}/{len(a)} tensors "
                    f"(e.g. {diff[0]}, max |diff| {worst:.3g})"]
    elif name == "extract-codes":
        idx = json.loads((ref / "index.json").read_text())
        for s in idx["shards"]:
            for key in ("codes", "labels"):
                if not np.array_equal(np.load(ref / s[key]), np.load(out / s[key])):
                    return [f"{s[key]} differs from the uninterrupted run"]
    elif name == "prepare-data":
        import tarfile

        for s in json.loads((ref / "index.json").read_text())["shards"]:
            with tarfile.open(ref / s["name"]) as x, tarfile.open(out / s["name"]) as y:
                a = {m.name: x.extractfile(m).read() for m in x.getmembers() if m.isfile()}
                b = {m.name: y.extractfile(m).read() for m in y.getmembers() if m.isfile()}
            if a != b:
                return [f"{s['name']} differs from the uninterrupted run"]
    elif name == "sample":
        with np.load(ref / "samples.npz") as x, np.load(out / "samples.npz") as y:
            if not np.array_equal(x["arr_0"], y["arr_0"]):
                return ["samples.npz differs from the uninterrupted run"]
    elif name == "eval-generator":
        x, y = (json.loads((p / "eval.json").read_text())["metrics"] for p in (ref, out))
        if x != y:
            return ["eval.json metrics differ from the uninterrupted run"]
    return []


def fingerprint(out: Path, files: tuple[str, ...]) -> dict[str, bytes]:
    """Bytes of the finished outputs (and the checkpoint latest.txt names)."""
    fp = {f: (out / f).read_bytes() for f in files if (out / f).is_file()}
    if (out / "latest.txt").is_file():
        ck = out / "checkpoints" / (out / "latest.txt").read_text().strip() / "model.safetensors"
        fp["checkpoint"] = ck.read_bytes() if ck.is_file() else b""
    return fp
