"""Load time of a GPT checkpoint folder: random init + copy (the loader before issue 36) vs meta device + assign.

Run: .venv/bin/python benchmarks/load_time.py [--preset GPT-XL] [--repeats 2] [--threads 1] [--folder DIR]
Writes a random `--preset` GPT (ImageNet sizes: 16384 codes, 256 tokens, 1000 classes) as an fp16 folder (what
`vfmtok export` writes) into --folder (a temporary folder by default), then loads it alternately both ways in
this one process (best of --repeats each) and checks that both give the same weights.
Writes benchmarks/results/load_time.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent / "results" / "load_time"


def load_before(folder: Path) -> torch.nn.Module:
    """The loader as it was: build with a full random init, then copy the checkpoint into it."""
    from vfmtok.generator.gpt import GPT, GPTConfig
    from vfmtok.utils.config import from_dict
    from vfmtok.utils.io import load_state_strict
    from vfmtok.utils.pretrained import load_pretrained

    state, config, _ = load_pretrained(folder, "gpt")
    model = GPT(from_dict(GPTConfig, config["gpt"]))
    load_state_strict(model, state, str(folder))
    return model.eval()


def load_after(folder: Path) -> torch.nn.Module:
    """The loader now: `GPT.from_pretrained` (meta device, assign=True)."""
    from vfmtok.generator.gpt import GPT

    return GPT.from_pretrained(folder)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="GPT-XL")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--folder", type=Path, default=None, help="where to write the checkpoint (default: a temp folder)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from vfmtok.generator.gpt import count_params, create_gpt
    from vfmtok.utils.io import write_json, write_text

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or Path(tmp) / args.preset
        torch.manual_seed(0)
        model = create_gpt(args.preset, vocab_size=16384, num_tokens=256, num_classes=1000)
        n_params = count_params(model.config)
        model.save_pretrained(folder, dtype=torch.float16)
        ref = {k: v.clone() for k, v in model.state_dict().items()}
        del model
        size = (folder / "model.safetensors").stat().st_size
        arms = {"before: random init + copy": load_before, "after: meta device + assign": load_after}
        best = {k: float("inf") for k in arms}
        load = os.getloadavg()[0]
        for _ in range(args.repeats):
            for name, fn in arms.items():  # alternating: a slower stretch of the shared machine hits both
                t = time.perf_counter()
                m = fn(folder)
                best[name] = min(best[name], time.perf_counter() - t)
                same = all(torch.equal(v, ref[k].half().float()) for k, v in m.state_dict().items())
                assert same, f"{name} loaded different weights"
                del m
    before, after = best.values()
    result = {"preset": args.preset, "params": n_params, "file_bytes": size, "file_dtype": "fp16", "threads": args.threads,
              "repeats": args.repeats, "seconds_best": best, "speedup": before / after, "loadavg_1min_at_start": load,
              "command": " ".join([Path(sys.executable).name] + sys.argv), "torch": torch.__version__}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    write_json(OUT.with_suffix(".json"), result)
    lines = [f"# Load time of a {args.preset} folder ({n_params / 1e6:.0f} M parameters, fp16 file of "
             f"{size / 2**30:.2f} GiB, loaded to fp32 on CPU)", "",
             f"Command: `{result['command']}`; torch {torch.__version__}; {args.threads} thread(s); best of "
             f"{args.repeats} alternating runs in one process. The machine was shared with other jobs (1-min load "
             f"average {load:.1f} at start): compare the two rows, not the absolute seconds.", "",
             "| loader | seconds (best) |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in best.items()]
    lines += ["", f"Speedup: {before / after:.2f}x. Both loaders give identical weights (checked in the run)."]
    write_text(OUT.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
