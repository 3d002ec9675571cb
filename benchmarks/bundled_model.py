"""Measure exported tokenizer + GPT pairs the same way, to choose the bundled model (`vfmtok sample`'s default).

Run:  .venv/bin/python benchmarks/bundled_model.py --model vqgan=src/vfmtok/assets/models/imagenette64 \
          [--model vfmtok=runs/my-export] [--runs runs/bundled_model] [--results benchmarks/results]
Per model, with the repo's own commands (each result file is kept; re-running skips what exists):
  (a) `vfmtok eval-tokenizer` on --recon-images Imagenette val images: PSNR / SSIM / LPIPS / rFID / usage;
  (b) `vfmtok class-consistency`, --per-class samples per class without CFG;
  (c) `vfmtok eval-generator`, --gen-per-class samples per class without CFG vs --ref-images val images: gFID / P / R.
Writes <results>/bundled_model.json and bundled_model.md, with the targets (PSNR >= 20 dB, class consistency >= 60%).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vfmtok.utils.io import read_json, write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"PSNR": 20.0, "class_consistency": 0.60}


def cli(argv: list[str]) -> None:
    """Run a vfmtok command in-process; stop on failure."""
    from vfmtok.cli import main

    print("$ vfmtok " + " ".join(argv), flush=True)
    if main(argv):
        raise SystemExit(f"failed: vfmtok {' '.join(argv)}")


def measure(name: str, model: Path, out: Path, args) -> dict:
    """Run (a), (b), (c) for one exported model folder; return its merged metrics."""
    out.mkdir(parents=True, exist_ok=True)
    cc, rec, gen = out / "class_consistency.json", out / "eval_tokenizer.json", out / "eval_generator.json"
    common = ["--device", args.device, "--seed", "0"]
    if not cc.is_file():
        cli(["class-consistency", "--gpt", str(model / "generator"), "--data", args.data, "--per-class", str(args.per_class),
             "--cfg-scale", "1.0", *common, "--out", str(cc)])
    if not rec.is_file():
        cli(["eval-tokenizer", str(model / "tokenizer"), "--data", args.data, "--split", "val", "--num-images",
             str(args.recon_images), "--second-encoder", "none", *common, "--out", str(rec)])
    if not gen.is_file():
        cli(["eval-generator", "--gpt", str(model / "generator"), "--ref", args.data, "--ref-split", "val",
             "--ref-num-images", str(args.ref_images), "--images-per-class", str(args.gen_per_class), "--cfg-scales", "1.0",
             "--second-encoder", "none", *common, "--out", str(gen)])
    c, r, g = (read_json(p) for p in (cc, rec, gen))
    g0 = g["metrics"]["runs"][0]
    info = read_json(model / "model.json") if (model / "model.json").is_file() else {}
    return {"model": str(model), "exported_from": info.get("exported_from"),
            "tokenizer_arch": read_json(model / "tokenizer" / "config.json").get("model", {}).get("arch"),
            "recon": {k: r["metrics"].get(k) for k in ("PSNR", "SSIM", "LPIPS", "rFID", "codebook_usage")},
            "recon_images": r["num_images"],
            "class_consistency": c["metrics"]["class_consistency"], "real_val_top1": c["metrics"]["real_val_top1"],
            "class_consistency_per_class": c["metrics"]["per_class"], "class_samples": c["metrics"]["num_samples"],
            "gFID": g0["gFID"], "precision": g0.get("precision"), "recall": g0.get("recall"),
            "gen_samples": g0["num_images"], "ref_images": g["data"]["reference"].get("num_images"),
            "commands": {k: read_json(p)["command"] for k, p in (("class_consistency", cc), ("eval_tokenizer", rec),
                                                                  ("eval_generator", gen))}}


def write_tables(results: dict, folder: Path, command: str) -> None:
    """bundled_model.json and a Markdown table with the targets marked."""
    write_json(folder / "bundled_model.json", {"command": command, "targets": TARGETS, "models": results})
    f = lambda x, d=2: "n/a" if x is None else f"{x:.{d}f}"  # noqa: E731
    lines = ["# Bundled-model candidates, measured the same way", "", f"Command: `{command}`", "",
             "| model | tokenizer | PSNR (target >= 20) | SSIM | LPIPS | rFID | class consistency (target >= 60%) | "
             "same classifier on real val | gFID | precision | recall |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in results.items():
        rc = m["recon"]
        ok = lambda v, t: "" if v is None else (" (met)" if v >= t else " (missed)")  # noqa: E731
        lines.append(f"| {name} | {m['tokenizer_arch']} | {f(rc['PSNR'])}{ok(rc['PSNR'], TARGETS['PSNR'])} | {f(rc['SSIM'], 3)} | "
                     f"{f(rc['LPIPS'], 3)} | {f(rc['rFID'], 1)} | {m['class_consistency']:.1%}"
                     f"{ok(m['class_consistency'], TARGETS['class_consistency'])} | {m['real_val_top1']:.1%} | "
                     f"{f(m['gFID'], 1)} | {f(m['precision'], 3)} | {f(m['recall'], 3)} |")
    some = next(iter(results.values()))
    lines += ["", f"Reconstruction: {some['recon_images']} Imagenette val images at 64 px. Class consistency: "
              f"{some['class_samples']} samples (no CFG), classifier = linear probe on frozen ImageNet VGG16 features fit on "
              f"real train images (`vfmtok class-consistency`). gFID / precision / recall: {some['gen_samples']} samples "
              f"(no CFG) vs {some['ref_images']} val images.", "", "Per-class class consistency:", "",
              "| model | " + " | ".join(some["class_consistency_per_class"]) + " |",
              "|---|" + "---|" * len(some["class_consistency_per_class"])]
    for name, m in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.0%}" for v in m["class_consistency_per_class"].values()) + " |")
    write_text(folder / "bundled_model.md", "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, metavar="NAME=DIR", help="exported model folder, repeatable")
    ap.add_argument("--data", default="imagenette")
    ap.add_argument("--recon-images", type=int, default=1000)
    ap.add_argument("--per-class", type=int, default=50, help="class-consistency samples per class")
    ap.add_argument("--gen-per-class", type=int, default=200, help="gFID samples per class")
    ap.add_argument("--ref-images", type=int, default=2000, help="val images for the gFID reference")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "bundled_model"), help="per-model result files")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    models = dict(m.split("=", 1) for m in args.model)
    results = {name: measure(name, Path(d), Path(args.runs) / name, args) for name, d in models.items()}
    write_tables(results, Path(args.results), " ".join([Path(sys.executable).name] + sys.argv))
    print(json.dumps({k: {"PSNR": v["recon"]["PSNR"], "class_consistency": v["class_consistency"], "gFID": v["gFID"]}
                      for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
