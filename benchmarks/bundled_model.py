"""Measure exported tokenizer + GPT pairs the same way, to choose the bundled model (`vfmtok sample`'s default).

Run:  .venv/bin/python benchmarks/bundled_model.py --model vqgan=src/vfmtok/assets/models/imagenette64 \
          [--model vfmtok=runs/my-export] [--runs runs/bundled_model] [--results benchmarks/results]
Per model, with the repo's own commands (each result file is kept; re-running skips what exists):
  (a) `vfmtok eval-tokenizer` on --recon-images Imagenette val images: PSNR / SSIM / LPIPS / rFID / usage;
  (b) `vfmtok class-consistency`, --per-class samples per class without CFG;
  (c) `vfmtok eval-generator`, --gen-per-class samples per class without CFG vs --ref-images val images: gFID / P / R
      (per --gen-seeds sampling seed; mean and sd when several).
(b) and (c) draw with each model's recommended sampling (its GPT config.json "sampling", else T 1 and no top-k).
Writes <results>/<name>.json and <name>.md (--name, default bundled_model), with the targets (PSNR >= 20 dB, class consistency >= 60%);
--record also writes each model's numbers into its model.json and model cards.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # helpers shared with the tests (kept out of the package)

from helpers import record_measured  # noqa: E402
from reproduce_imagenette import cli, named_dirs  # noqa: E402 (run as a script: benchmarks/ is on sys.path)
from vfmtok.utils.io import read_json, write_json, write_text  # noqa: E402
TARGETS = {"PSNR": 20.0, "class_consistency": 0.60}


def measure(name: str, model: Path, out: Path, args) -> dict:
    """Run (a), (b), (c) for one exported model folder; return its merged metrics."""
    out.mkdir(parents=True, exist_ok=True)
    cc, rec, gen = out / "class_consistency.json", out / "eval_tokenizer.json", out / "eval_generator.json"
    common = ["--device", args.device, "--seed", "0"]
    # seed 0 keeps its old file names; for class consistency the seed also picks the probe's training images
    cc_files, gen_files = _seed_files(cc, args.cc_seeds), _seed_files(gen, args.gen_seeds)
    for seed, path in cc_files.items():
        if not path.is_file() and not args.no_run:
            cli(["class-consistency", "--gpt", str(model / "generator"), "--data", args.data, "--per-class",
                 str(args.per_class), "--cfg-scale", "1.0", "--device", args.device, "--seed", str(seed), "--out", str(path)])
    if not rec.is_file() and not args.no_run:
        cli(["eval-tokenizer", str(model / "tokenizer"), "--data", args.data, "--split", "val", "--num-images",
             str(args.recon_images), "--second-encoder", "none", *common, "--out", str(rec)])
    for seed, path in gen_files.items():
        if not path.is_file() and not args.no_run:
            ref_n = [] if args.ref_images is None else ["--ref-num-images", str(args.ref_images)]
            cli(["eval-generator", "--gpt", str(model / "generator"), "--ref", args.data, "--ref-split", "val", *ref_n,
                 "--images-per-class", str(args.gen_per_class), "--cfg-scales", "1.0",
                 "--second-encoder", "none", "--device", args.device, "--seed", str(seed), "--out", str(path)])
    c, r, g = (read_json(p) if p.is_file() else None for p in (cc, rec, gen))
    info = read_json(model / "model.json") if (model / "model.json").is_file() else {}
    res = {"model": str(model), "exported_from": info.get("exported_from"),
           "tokenizer_arch": read_json(model / "tokenizer" / "config.json").get("model_type"),
           "recon": {}, "class_consistency": None, "gFID": None, "commands": {}}
    if r is not None:
        res.update(recon={k: r["metrics"].get(k) for k in ("PSNR", "SSIM", "LPIPS", "rFID", "codebook_usage")},
                   recon_images=r["num_images"])
        res["commands"]["eval_tokenizer"] = r["command"]
    if c is not None:
        m = c["metrics"]
        s = c["data"]["samples"]
        res.update(class_consistency=m["class_consistency"], real_val_top1=m["real_val_top1"],
                   class_consistency_per_class=m["per_class"], class_samples=m["num_samples"],
                   sampling={"temperature": s["temperature"], "top_k": s["top_k"], "top_p": s["top_p"]})
        per_seed = _per_seed(c, cc_files, lambda rec: rec["metrics"]["class_consistency"])
        if len(per_seed) > 1:
            res.update(class_consistency_seeds=per_seed, **_spread("class_consistency", list(per_seed.values())))
        res["commands"]["class_consistency"] = c["command"]
    if g is not None:
        g0 = g["metrics"]["runs"][0]
        res.update(gFID=g0["gFID"], precision=g0.get("precision"), recall=g0.get("recall"), gen_samples=g0["num_images"],
                   ref_images=g["data"]["reference"].get("num_images"))
        res["commands"]["eval_generator"] = g["command"]
        runs = _per_seed(g, gen_files, lambda rec: rec["metrics"]["runs"][0])
        if len(runs) > 1:
            for key in ("gFID", "precision", "recall"):
                res.update({f"{key}_seeds": {k: r[key] for k, r in runs.items()},
                            **_spread(key, [r[key] for r in runs.values()])})
    return res


def _seed_files(first: Path, seeds: list[int]) -> dict[int, Path]:
    """{seed: result file}: seed 0 writes `first`, seed k `<first stem>_seed<k>.json` beside it."""
    return {s: first if s == 0 else first.with_name(f"{first.stem}_seed{s}.json") for s in seeds}


def _per_seed(first: dict, files: dict[int, Path], pick) -> dict:
    """{seed: pick(record)}: seed 0 from its record already read, the other seeds from their files that exist."""
    return {0: pick(first), **{k: pick(read_json(p)) for k, p in files.items() if k != 0 and p.is_file()}}


def _spread(key: str, values: list[float]) -> dict[str, float]:
    """{key_mean, key_sd} over seeds (sample standard deviation)."""
    return {f"{key}_mean": statistics.mean(values), f"{key}_sd": statistics.stdev(values)}


def flat_measured(m: dict) -> dict[str, float]:
    """The numbers of one model's result, named with their sample counts, for its model.json and model cards."""
    rc, n_rec, n_cc, n_gen = m["recon"], m.get("recon_images"), m.get("class_samples"), m.get("gen_samples")
    out = {f"{k}_{n_rec}_val": rc.get(k) for k in ("PSNR", "SSIM", "LPIPS", "rFID")}
    out.update({f"class_consistency_{n_cc}_samples": m["class_consistency"], "classifier_real_val_top1": m.get("real_val_top1"),
                f"gFID_{n_gen}_samples": m["gFID"], "precision": m.get("precision"), "recall": m.get("recall")})
    for key in ("class_consistency", "gFID", "precision", "recall"):
        if f"{key}_mean" in m:
            k = len(m[f"{key}_seeds"])
            out.update({f"{key}_mean_{k}_seeds": m[f"{key}_mean"], f"{key}_sd_{k}_seeds": m[f"{key}_sd"]})
    return {k: float(v) for k, v in out.items() if v is not None}


def shown(sampling: dict | None) -> str:
    """'T 1, top-k 5' (top-p only when on); no CFG anywhere in this table."""
    if not sampling:
        return "not measured"
    extra = f", top-p {sampling['top_p']:g}" if sampling.get("top_p", 1.0) < 1.0 else ""
    return f"T {sampling['temperature']:g}, top-k {sampling['top_k'] or 'off'}{extra}"


def seeded_cell(m: dict, key: str, fmt: str, seeds_label: str = "") -> str:
    """Seed 0's value of a score, or its mean +- sd over seeds (with each seed's value) when several were measured."""
    if m.get(key) is None:
        return "not measured"
    if f"{key}_mean" not in m:
        return f"{m[key]:{fmt}}"
    seeds = ", ".join(f"{v:{fmt}}" for v in m[f"{key}_seeds"].values())
    return f"{m[f'{key}_mean']:{fmt}} +- {m[f'{key}_sd']:{fmt}} ({seeds_label}{seeds})"


def write_tables(results: dict, folder: Path, command: str, stem: str = "bundled_model") -> None:
    """<stem>.json and a Markdown table <stem>.md with the targets marked."""
    write_json(folder / f"{stem}.json", {"command": command, "targets": TARGETS, "models": results})
    f = lambda x, d=2: "not measured" if x is None else f"{x:.{d}f}"  # noqa: E731
    pct = lambda x: "not measured" if x is None else f"{x:.1%}"  # noqa: E731
    lines = ["# Bundled-model candidates, measured the same way", "", f"Command: `{command}`", "",
             "| model | tokenizer | PSNR (target >= 20) | SSIM | LPIPS | rFID | sampling | class consistency (target >= 60%) | "
             "same classifier on real val | gFID | precision | recall |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in results.items():
        rc = m["recon"]
        ok = lambda v, t: "" if v is None else (" (met)" if v >= t else " (missed)")  # noqa: E731
        lines.append(f"| {name} | {m['tokenizer_arch']} | {f(rc.get('PSNR'))}{ok(rc.get('PSNR'), TARGETS['PSNR'])} | {f(rc.get('SSIM'), 3)} | "
                     f"{f(rc.get('LPIPS'), 3)} | {f(rc.get('rFID'), 1)} | {shown(m.get('sampling'))} | "
                     f"{seeded_cell(m, 'class_consistency', '.1%', 'seeds ')}"
                     f"{ok(m.get('class_consistency_mean', m['class_consistency']), TARGETS['class_consistency'])} | "
                     f"{pct(m.get('real_val_top1'))} | "
                     f"{seeded_cell(m, 'gFID', '.1f')} | {seeded_cell(m, 'precision', '.3f')} | {seeded_cell(m, 'recall', '.3f')} |")
    some = next(iter(results.values()))
    lines += ["", f"Reconstruction: {some.get('recon_images', 'n/a')} Imagenette val images at 64 px. Class consistency: "
              f"{some.get('class_samples', 'n/a')} samples (no CFG), classifier = linear probe on frozen ImageNet VGG16 "
              f"features fit on real train images (`vfmtok class-consistency`). gFID / precision / recall: "
              f"{some.get('gen_samples', 'n/a')} samples (no CFG) per sampling seed vs {some.get('ref_images', 'n/a')} val images."]
    per = [(n, m["class_consistency_per_class"]) for n, m in results.items() if m.get("class_consistency_per_class")]
    if per:
        names = list(per[0][1])
        lines += ["", "Per-class class consistency:", "", "| model | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        lines += [f"| {n} | " + " | ".join(f"{v[c]:.0%}" for c in names) + " |" for n, v in per]
    write_text(folder / f"{stem}.md", "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, metavar="NAME=DIR", help="exported model folder, repeatable")
    ap.add_argument("--data", default="imagenette")
    ap.add_argument("--recon-images", type=int, default=1000)
    ap.add_argument("--per-class", type=int, default=50, help="class-consistency samples per class")
    ap.add_argument("--cc-seeds", type=int, nargs="+", default=[0], help="class-consistency seeds (mean and sd when several)")
    ap.add_argument("--gen-per-class", type=int, default=200, help="gFID samples per class")
    ap.add_argument("--gen-seeds", type=int, nargs="+", default=[0], help="gFID / P / R sampling seeds (mean and sd when several)")
    ap.add_argument("--ref-images", type=int, default=None, help="val images for the gFID reference (default: all)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-run", action="store_true", help="only merge the result files that exist (missing: 'not measured')")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "bundled_model"), help="per-model result files")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--name", default="bundled_model", help="stem of the result files (a variant's own table)")
    ap.add_argument("--record", action="store_true", help="also write each model's numbers into its model.json and model cards")
    args = ap.parse_args()
    models = named_dirs(args.model)
    results = {name: measure(name, Path(d), Path(args.runs) / name, args) for name, d in models.items()}
    command = " ".join([Path(sys.executable).name] + sys.argv)
    write_tables(results, Path(args.results), command, args.name)
    if args.record:
        for name, d in models.items():
            record_measured(d, flat_measured(results[name]), command)
    print(json.dumps({k: {"PSNR": v["recon"].get("PSNR"), "class_consistency": v["class_consistency"], "gFID": v["gFID"]}
                      for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
