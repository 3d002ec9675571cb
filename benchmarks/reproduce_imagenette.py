"""Small-scale reproduction of VFMTok's claims on Imagenette, VFMTok (frozen VGG16) vs a from-scratch VQGAN.

Run:  .venv/bin/python benchmarks/reproduce_imagenette.py [--tok-steps 600] [--gpt-steps 1500] [--variants ...]
Writes benchmarks/results/reproduce_imagenette/{results.json, results.md, *.svg} (--results) and keeps the runs
in runs/reproduce_imagenette/ (--runs) (every stage resumes; re-running skips what is done).

Per tokenizer variant (same token count 64, codebook 1024 x 12, image size, batch and steps):
  train -> eval-tokenizer (rFID / PSNR / SSIM / LPIPS / usage on val) -> linear probe (train -> val).
For the main pair (vfmtok, vqgan): extract codes -> train the same GPT preset -> gFID / precision / recall at
several checkpoints without CFG, and with CFG at the last one. `--generators gpt rar` adds a RAR-tiny arm on the
same codes with the same budget (steps, batch, lr, warm-up, EMA) and the same evaluation (RAR's CFG schedule at the
last checkpoint); its permutation probability anneals 1 -> 0 between 50% and 75% of the steps.
`--seed K` trains everything with training seed K (init, data order) for a training-seed spread
(benchmarks/seed_spread.py); `--gpt-marks 400 800 1600` evaluates, and keeps, the GPT at those steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from vfmtok.utils.io import read_json, write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "reproduce_imagenette"

# name -> (preset, overrides); all share token count, codebook, image size and training budget.
VARIANTS = {
    "vfmtok": ("vfmtok-cpu-64", []),
    "vqgan": ("vqgan-cpu-64", []),
    "vfmtok_no_feature_loss": ("vfmtok-cpu-64", ["model.feature_branch=false"]),
    "vfmtok_last_level_only": ("vfmtok-cpu-64", ["model.levels=[-1]"]),
    "vfmtok_random_encoder": ("vfmtok-cpu-64", ["model.encoder_pretrained=false"]),
    "vfmtok_paper_decoder": ("vfmtok-cpu-64", ["model.dec_anchor_init=false"]),  # mask tokens not started from anchors
}
MAIN = ("vfmtok", "vqgan")


def cli(argv: list[str]) -> None:
    """Run a vfmtok command in-process; stop on failure."""
    from vfmtok.cli import main

    print("$ vfmtok " + " ".join(argv), flush=True)
    rc = main(argv)
    if rc:
        raise SystemExit(f"failed: vfmtok {' '.join(argv)}")


def named_dirs(specs: list[str]) -> dict[str, str]:
    """{NAME: DIR} from repeated NAME=DIR arguments; the last '=' splits, so a name may hold one."""
    for spec in specs:
        if "=" not in spec:
            raise SystemExit(f"want NAME=DIR, got {spec!r}")
    return dict(spec.rsplit("=", 1) for spec in specs)


def metrics_of(path: Path) -> dict:
    return json.loads(path.read_text())["metrics"]


def train_tok(name: str, args, runs: Path) -> Path:
    from vfmtok.utils.pretrained import resolve_checkpoint
    from vfmtok.train.tokenizer import resolve_config, train_tokenizer

    preset, sets = VARIANTS[name]
    sets = sets + [f"train.batch_size={args.batch}", "train.cache_features=false", f"train.lr={args.tok_lr}",
                   f"train.seed={args.seed}", f"train.save_every={max(1, args.tok_steps // 4)}"]
    cfg = resolve_config(preset, sets, flags={"train.data": args.data, "train.steps": args.tok_steps,
                                             "train.device": args.device})
    run = runs / name / "tokenizer"
    latest = run / "latest.txt"
    if not (latest.is_file() and latest.read_text().strip() == f"step_{args.tok_steps:07d}"):
        train_tokenizer(cfg, run, resume=latest.is_file())
    return resolve_checkpoint(run)


def parse_args() -> argparse.Namespace:
    """The reproduction's options (one run folder and results folder per call)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="imagenette")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--tok-steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tok-lr", type=float, default=4e-4)
    ap.add_argument("--gpt-preset", default="GPT-tiny")
    ap.add_argument("--rar-preset", default="RAR-tiny")
    ap.add_argument("--generators", nargs="+", default=["gpt"], choices=["gpt", "rar"],
                    help="generator arms trained on each main tokenizer's codes")
    ap.add_argument("--cfg-power", type=float, default=1.0, help="RAR's CFG schedule power for the RAR arm's CFG eval")
    ap.add_argument("--gpt-steps", type=int, default=600)
    ap.add_argument("--gpt-evals", type=int, default=3, help="gFID at this many evenly spaced checkpoints")
    ap.add_argument("--gpt-marks", type=int, nargs="+", default=None,
                    help="gFID at these GPT steps instead (the last is the GPT's budget; overrides --gpt-steps/--gpt-evals)")
    ap.add_argument("--seed", type=int, default=0, help="training seed of every tokenizer and generator (data order, init)")
    ap.add_argument("--gpt-batch", type=int, default=32)
    ap.add_argument("--codes-per-class", type=int, default=300, help="train images per class tokenized for the GPT (x2 with flips)")
    ap.add_argument("--eval-images", type=int, default=300, help="validation images for rFID/PSNR/...; also gFID samples")
    ap.add_argument("--probe-images", type=int, default=1000, help="images per split (train, val) for the linear probe")
    ap.add_argument("--cfg", type=float, default=2.0, help="CFG scale evaluated at the last GPT checkpoint")
    ap.add_argument("--second-encoder", default="none", help="second-opinion Fréchet distance encoder for eval-tokenizer ('none' skips it)")
    ap.add_argument("--export", action="store_true",
                    help="export the main pair with the lower no-CFG gFID as the bundled model (`vfmtok sample` default)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "reproduce_imagenette"))
    ap.add_argument("--results", default=str(RESULTS), help="folder for results.json / results.md / plots")
    args = ap.parse_args()
    if args.gpt_marks and "rar" in args.generators:  # before any training: the RAR run spaces its marks evenly
        ap.error("the RAR arm takes --gpt-steps/--gpt-evals, not --gpt-marks")
    return args


def main() -> None:
    args = parse_args()
    runs, results = Path(args.runs), Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    command = " ".join([Path(sys.executable).name] + sys.argv)
    for name in args.variants:
        run_variant(name, args, runs, results, command)
    write_results(runs, results)
    print(f"wrote {results / 'results.json'} and {results / 'results.md'}")
    if args.export:
        export_best(runs)


def run_variant(name: str, args: argparse.Namespace, runs: Path, results: Path, command: str) -> None:
    """Train, evaluate and probe one tokenizer variant; a main variant also gets its generator arms."""
    t0 = time.time()
    tok = train_tok(name, args, runs)
    # One result file per variant, so variants can run in parallel processes (docs/results/imagenette.md).
    r_path = runs / name / "result.json"
    r = read_json(r_path) if r_path.is_file() else {}
    r.update(command=command, settings=vars(args), tokenizer=str(tok))
    r["tokenizer_train_seconds"] = r.get("tokenizer_train_seconds") or round(time.time() - t0, 1)
    ev = runs / name / "eval_tokenizer.json"
    if not ev.is_file():
        cli(["eval-tokenizer", str(tok), "--data", args.data, "--split", "val", "--num-images", str(args.eval_images),
             "--second-encoder", args.second_encoder, "--out", str(ev)])
    r["recon"] = metrics_of(ev)
    pr = runs / name / "probe.json"
    if not pr.is_file():
        cli(["probe", str(tok), "--data", args.data, "--num-images", str(args.probe_images), "--out", str(pr)])
    r["probe"] = metrics_of(pr)
    save_variant(r_path, r, runs, results)
    if name not in MAIN:
        return
    codes = runs / name / "codes"
    cli(["extract-codes", "--tokenizer", str(tok), "--data", args.data, "--split", "train", "--out", str(codes),
         "--limit-per-class", str(args.codes_per_class)])
    if "gpt" in args.generators:
        gpt_arm(name, tok, codes, r, r_path, args, runs, results)
    if "rar" in args.generators:
        rar_arm(name, tok, codes, r, r_path, args, runs, results)


def gpt_arm(name: str, tok: Path, codes: Path, r: dict, r_path: Path, args, runs: Path, results: Path) -> None:
    """GPT on one tokenizer's codes, trained up to each evaluation mark in turn (resumed), gFID at every mark."""
    gpt_run = runs / name / "generator"
    curve = r.setdefault("gfid_curve", {})
    marks = gpt_marks(args)
    for k, s in enumerate(marks):
        want = [1.0] + ([args.cfg] if k == len(marks) - 1 else [])  # CFG at the last checkpoint only
        have = {m.get("cfg_scale") for m in curve.get(str(s), [])}
        scales = [c for c in want if c not in have]
        if not scales:
            continue
        latest = gpt_run / "latest.txt"
        done = latest.is_file() and int(latest.read_text().strip().split("_")[-1]) >= s
        if not done:
            cli(["train-generator", "--codes", str(codes), "--preset", args.gpt_preset, "--steps", str(s),
                 "--batch-size", str(args.gpt_batch), "--lr", "1e-3", "--warmup-steps", "100", "--ema-decay", "0.999",
                 "--save-every", str(s), "--seed", str(args.seed), "--set", f"keep_last={len(marks)}",
                 "--out", str(gpt_run), "--device", args.device]
                + (["--resume"] if latest.is_file() else []))
        ge = runs / name / f"eval_generator_step{s}{'' if 1.0 in scales else '_cfg'}.json"
        curve[str(s)] = curve.get(str(s), []) + eval_mark(gpt_run, s, tok, scales, ge, args)
        save_variant(r_path, r, runs, results)


def gpt_marks(args) -> list[int]:
    """GPT steps evaluated (and kept as checkpoints): --gpt-marks, else --gpt-evals evenly spaced up to --gpt-steps."""
    if args.gpt_marks:
        if sorted(set(args.gpt_marks)) != args.gpt_marks or args.gpt_marks[0] < 1:
            raise SystemExit(f"--gpt-marks must be increasing positive steps, got {args.gpt_marks}")
        return args.gpt_marks
    return [round(args.gpt_steps * (i + 1) / args.gpt_evals) for i in range(args.gpt_evals)]


def eval_mark(run: Path, step: int, tok: Path, scales: list[float], out: Path, args, extra: list[str] = ()) -> list:
    """eval-generator runs (one per CFG scale) of the checkpoint of this mark, not the run's latest."""
    cli(["eval-generator", "--gpt", str(run / "checkpoints" / f"step_{step:07d}"), "--tokenizer", str(tok),
         "--ref", args.data, "--ref-split", "val", "--ref-num-images", str(args.eval_images),
         "--images-per-class", str(args.eval_images // 10), "--cfg-scales", *map(str, scales), *extra, "--out", str(out)])
    return metrics_of(out)["runs"]


def rar_arm(name: str, tok: Path, codes: Path, r: dict, r_path: Path, args, runs: Path, results: Path) -> None:
    """RAR-tiny on the same codes and budget as the GPT arm; one run (its r schedule spans all steps), eval per mark."""
    if args.gpt_steps % args.gpt_evals:
        raise SystemExit("the RAR arm needs --gpt-steps divisible by --gpt-evals (one run, a checkpoint per mark)")
    every = args.gpt_steps // args.gpt_evals
    run = runs / name / "generator_rar"
    latest = run / "latest.txt"
    if not (latest.is_file() and int(latest.read_text().strip().split("_")[-1]) >= args.gpt_steps):
        cli(["train-generator", "--codes", str(codes), "--preset", args.rar_preset, "--steps", str(args.gpt_steps),
             "--batch-size", str(args.gpt_batch), "--lr", "1e-3", "--warmup-steps", "100", "--ema-decay", "0.999",
             "--save-every", str(every), "--seed", str(args.seed), "--set", "lr_schedule=constant",
             "--set", f"keep_last={args.gpt_evals}",
             "--out", str(run), "--device", args.device] + (["--resume"] if latest.is_file() else []))
    curve = r.setdefault("gfid_curve_rar", {})
    for k in range(args.gpt_evals):
        s = every * (k + 1)
        want = [1.0] + ([args.cfg] if k == args.gpt_evals - 1 else [])
        scales = [c for c in want if c not in {m.get("cfg_scale") for m in curve.get(str(s), [])}]
        if not scales:
            continue
        ge = runs / name / f"eval_generator_rar_step{s}{'' if 1.0 in scales else '_cfg'}.json"
        curve[str(s)] = curve.get(str(s), []) + eval_mark(run, s, tok, scales, ge, args, ["--cfg-power", str(args.cfg_power)])
        save_variant(r_path, r, runs, results)


def export_best(runs: Path) -> None:
    """Bundle the main pair whose last no-CFG gFID is lowest (see vfmtok.export)."""
    from vfmtok.export import export_pair

    best = {}
    for name in MAIN:
        p = runs / name / "result.json"
        curve = read_json(p).get("gfid_curve", {}) if p.is_file() else {}
        if curve:
            last = curve[max(curve, key=int)]
            best[name] = next(m["gFID"] for m in last if m.get("cfg_scale") == 1.0)
    if not best:
        raise SystemExit("no generator results to export yet: run the main pair first")
    name = min(best, key=best.get)
    out = export_pair(runs / name / "generator", ROOT / "src" / "vfmtok" / "assets" / "models" / "imagenette64",
                      info={"chosen_by": "lowest gFID without CFG at the last GPT checkpoint", "gFID_no_cfg": best})
    print(f"exported {name} -> {out}")


def save_variant(path: Path, result: dict, runs: Path, results: Path) -> None:
    """Write one variant's result.json, then refresh the merged results."""
    write_json(path, result)
    write_results(runs, results)


def write_results(runs: Path, results: Path = RESULTS) -> None:
    """Merge every variant's result.json into results.json, results.md (tables) and convergence.svg."""
    from vfmtok.utils.report import line_chart

    v = {p.parent.name: read_json(p) for p in sorted(runs.glob("*/result.json"))}
    v = {k: v[k] for k in [*VARIANTS, *sorted(set(v) - set(VARIANTS))] if k in v}
    write_json(results / "results.json", {"variants": v})
    lines = ["# Small-scale reproduction on Imagenette (64 px)", "", "Commands and settings, per variant:", ""]
    lines += [f"- {name}: `{r.get('command')}` (" + ", ".join(f"{k}={val}" for k, val in r.get("settings", {}).items()
                                                       if k not in ("runs", "variants", "results")) + ")" for name, r in v.items()]
    lines += ["",
             "## Tokenizers (validation images)", "",
             "| variant | rFID | PSNR | SSIM | LPIPS | codebook usage | perplexity | probe top-1 (tokens mean) | probe top-1 (decoder CLS) | train s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    f = lambda x, d=3: "n/a" if x is None else (f"{x:.{d}f}" if isinstance(x, float) else str(x))
    for name, r in v.items():
        rc, pb = r.get("recon", {}), r.get("probe", {})
        lines.append(f"| {name} | {f(rc.get('rFID'), 2)} | {f(rc.get('PSNR'), 2)} | {f(rc.get('SSIM'))} | {f(rc.get('LPIPS'))} | "
                     f"{f(rc.get('codebook_usage'))} | {f(rc.get('perplexity'), 1)} | {f(probe_top1(pb, 'tokens_mean'))} | {f(probe_top1(pb, 'cls'))} | "
                     f"{f(r.get('tokenizer_train_seconds'), 0)} |")
    lines += ["", "## Generator: gFID / precision / recall vs training steps (same GPT preset; RAR arm: same budget)", "",
              "| tokenizer | generator | steps | CFG | gFID | precision | recall |", "|---|---|---|---|---|---|---|"]
    series = {}
    for name, r in v.items():
        for key, arm in (("gfid_curve", "GPT"), ("gfid_curve_rar", "RAR")):
            label = name if arm == "GPT" else f"{name} (RAR)"
            for s, evals in sorted(r.get(key, {}).items(), key=lambda kv: int(kv[0])):
                for m in evals:
                    lines.append(f"| {name} | {arm} | {s} | {m.get('cfg_scale')} | {f(m.get('gFID'), 2)} | "
                                 f"{f(m.get('precision'))} | {f(m.get('recall'))} |")
                    if m.get("cfg_scale") == 1.0:
                        series.setdefault(label, []).append((int(s), m["gFID"]))
    lines += ["", "Plots: `convergence.svg` (gFID), `precision.svg`, `tokenizer_pixel_mse.svg` (tokenizer training)."]
    write_text(results / "results.md", "\n".join(lines) + "\n")
    if series:
        write_text(results / "convergence.svg", line_chart(series, "gFID (no CFG) vs GPT training steps"))
    prec = {name: [(int(st), m["precision"]) for st, evals in sorted(r.get("gfid_curve", {}).items(), key=lambda kv: int(kv[0]))
                   for m in evals if m.get("cfg_scale") == 1.0 and m.get("precision") is not None] for name, r in v.items()}
    if any(prec.values()):
        write_text(results / "precision.svg", line_chart({k: p for k, p in prec.items() if p},
                                                         "precision (no CFG) vs GPT training steps"))
    curves = {name: training_curve(runs / name / "tokenizer" / "metrics.jsonl") for name in v}
    if any(curves.values()):
        write_text(results / "tokenizer_pixel_mse.svg", line_chart({k: c for k, c in curves.items() if c},
                                                                   "tokenizer pixel MSE (train, 50-step means) vs step"))


def training_curve(path: Path, key: str = "pixel", bin_steps: int = 50) -> list[tuple[int, float]]:
    """Mean of `key` over bins of `bin_steps` steps from a metrics.jsonl (batch-to-batch noise is large)."""
    if not path.is_file():
        return []
    bins: dict[int, list[float]] = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if key in rec:
            bins.setdefault((rec["step"] - 1) // bin_steps, []).append(rec[key])
    return [((b + 1) * bin_steps, sum(x) / len(x)) for b, x in sorted(bins.items())]


def probe_top1(pb: dict, key: str) -> float | None:
    """Validation top-1 of one probe ('tokens_mean' or 'cls') in a probe result, None where it was not run."""
    return (pb.get(key) or {}).get("top1_val")


if __name__ == "__main__":
    main()
