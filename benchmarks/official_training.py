"""Train as the official code trains: one step of this project's trainers against the official ones, and step time
side by side (issue 33). Never part of CI; the official code is imported from the checkouts given, never copied here.

    git --git-dir=<bare LlamaGen> archive HEAD | tar -x -C /scratch/LlamaGen     # likewise 1d-tokenizer, VFMTok2
    python benchmarks/official_training.py --llamagen /scratch/LlamaGen --rar /scratch/1d-tokenizer \\
        --vfmtok2 /scratch/VFMTok2 --workdir /scratch/run

For each generator: the same initial weights (the official model's, perturbed so no gradient is structurally zero,
loaded through this project's import key map), the same batch, class-dropout draw, dropout masks and (RAR) token
orders; compared are the loss, the clipped gradients, the weights after the optimizer step, the update itself and
the EMA, in fp32 and in fp64 (fp64 separates formula differences from fp32 rounding). Then step times at a larger
shape, interleaved in one process with 1 thread. Writes benchmarks/results/official_training.{json,md}.
--tokenizer-step adds one step through the full official tokenizer and this project's paper preset loaded from it
(official_tokenizer_step.py); --keep-previous keeps the sections of the results file that a run does not compute.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import official_generators as OG  # noqa: E402
import official_report as OR  # noqa: E402

CHECK_SHAPE = dict(dim=128, n_layer=2, n_head=4, vocab=512, side=8, classes=10, batch=8)
TIME_SHAPE = dict(dim=256, n_layer=4, n_head=4, vocab=4096, side=16, classes=10, batch=4)


def _command(argv: list[str]) -> str:
    """The command line with every path shortened to SCRATCH/<its last part> (the results name no local folders)."""
    out = [f"SCRATCH/{Path(x).name}" if os.sep in x else x for x in argv]
    return "python benchmarks/official_training.py " + " ".join(out)


def _keep(res: dict, prev: dict) -> None:
    """Sections of a previous results file this run did not compute, kept with the command that measured them."""
    kept = [k for k in ("gpt", "rar", "tokenizer") if k in prev and k not in res]
    kept += [f"tokenizer.{k}" for k in ("model_probe", "model_step")
             if k in prev.get("tokenizer", {}) and "tokenizer" in res and k not in res["tokenizer"]]
    for k in kept:
        if k.startswith("tokenizer."):
            res["tokenizer"][k[10:]] = prev["tokenizer"][k[10:]]
        else:
            res[k] = prev[k]
    if kept:
        res["kept_from_previous_run"] = {"sections": kept, "command": prev.get("kept_from_previous_run", {}).get(
            "command", prev.get("command")), "date": prev.get("kept_from_previous_run", {}).get("date", prev.get("date"))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--llamagen", type=Path, help="FoundationVision/LlamaGen checkout (GPT step)")
    p.add_argument("--rar", type=Path, help="bytedance/1d-tokenizer checkout (RAR step)")
    p.add_argument("--vfmtok2", type=Path, help="CVMI-Lab/VFMTok2 checkout (tokenizer step)")
    p.add_argument("--workdir", type=Path, required=True, help="scratch folder to run in (outside the repository)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "official_training")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps of each arm before timing")
    p.add_argument("--reps", type=int, default=7, help="timed steps of each arm (median reported)")
    p.add_argument("--no-timing", action="store_true")
    p.add_argument("--tokenizer-model", action="store_true",
                   help="also build and run the official tokenizer model on CPU (needs --extra-path)")
    p.add_argument("--tokenizer-step", action="store_true",
                   help="also one full tokenizer step through both models, and its step time (needs --extra-path)")
    p.add_argument("--step-reps", type=int, default=2, help="timed tokenizer model steps of each arm (median)")
    p.add_argument("--keep-previous", action="store_true",
                   help="keep the sections of the existing results file that this run does not compute")
    p.add_argument("--extra-path", type=Path, help="folder with einops, omegaconf, kornia, cv2 (pip install --target)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")  # the schedule advanced to a mid-run step
    out = a.out.resolve()
    prev = json.loads(out.with_suffix(".json").read_text()) if a.keep_previous and out.with_suffix(".json").exists() else {}
    a.workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(a.workdir)
    res: dict = {"command": _command(argv if argv is not None else sys.argv[1:]),
                 "torch": torch.__version__, "cpu": platform.processor() or platform.machine(), "threads": 1,
                 "machine": "2 CPU cores shared with six other jobs: compare the ratios, not the seconds",
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "check_shape": CHECK_SHAPE,
                 "time_shape": TIME_SHAPE}
    for name, root, compare, timer in (("gpt", a.llamagen, OG.gpt_compare, OG.gpt_time),
                                       ("rar", a.rar, OG.rar_compare, OG.rar_time)):
        if root is None:
            continue
        res[name] = {dt: compare(root.resolve(), dtype=getattr(torch, dt), **CHECK_SHAPE) for dt in ("float32", "float64")}
        if not a.no_timing:
            res[name]["time"] = timer(root.resolve(), a.warmup, a.reps, **TIME_SHAPE)
        print(name, json.dumps({k: v.get("loss") if isinstance(v, dict) else v for k, v in res[name].items()}))
    if a.vfmtok2 is not None:
        import official_tokenizer as OT

        if a.extra_path:
            sys.path.append(str(a.extra_path.resolve()))
        res["tokenizer"] = OT.tokenizer_compare(a.vfmtok2.resolve(), timing=not a.no_timing, warmup=a.warmup,
                                                reps=a.reps)
        if a.tokenizer_model:
            import official_tokenizer_model as OTM

            vq = OT.load_official(a.vfmtok2.resolve(), OT.StandInPerceptual(), torch.nn.Identity())["vq_loss"]
            res["tokenizer"]["model_probe"] = OTM.probe(a.vfmtok2.resolve(), vq)
        if a.tokenizer_step:
            import official_tokenizer_step as OTS

            res["tokenizer"]["model_step"] = OTS.tokenizer_step(a.vfmtok2.resolve(), timing=not a.no_timing,
                                                                warmup=1, reps=a.step_reps)
    _keep(res, prev)
    OR.write(res, out)
    print(f"wrote {out}.json and {out}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
