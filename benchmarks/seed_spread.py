"""gFID / precision / recall and class consistency of every generator checkpoint of a reproduction, over several
sampling seeds and, with several run folders, several training seeds, so that a difference between two points can be
told from noise.

Run: python benchmarks/seed_spread.py --runs runs/reproduce_rar --seeds 0 1 2 --per-class 200
 or: python benchmarks/seed_spread.py --runs 0=runs/repro_seed0 1=runs/repro_seed1 2=runs/repro_seed2 --seeds 0 \
         --name seed_spread_training   (the folders come from `reproduce_imagenette.py --seed K`)
For each tokenizer variant (vfmtok, vqgan) and generator arm (generator/ = GPT, generator_rar/ = RAR) under each run
folder, every checkpoint is sampled --per-class images per class (no CFG) once per sampling seed: `eval-generator`
(gFID, precision, recall against every validation image) saves the samples with their labels, and
`class-consistency --samples` scores the same samples. Each evaluation is kept in RUNS/<variant>/seeds/ and skipped
when present (the run resumes). A point's spread is over every (training seed, sampling seed) pair it has.
Writes benchmarks/results/NAME.{json,md}.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from pathlib import Path

from reproduce_imagenette import cli, probe_top1  # run as a script: benchmarks/ is on sys.path
from vfmtok.utils.io import read_json, write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ARMS = {"generator": "GPT", "generator_rar": "RAR"}
METRICS = ("gFID", "precision", "recall", "class_consistency")


def points(runs: Path, variants: list[str], train_seed: int = 0) -> list[dict]:
    """(variant, arm, step, checkpoint, tokenizer) of every generator checkpoint under one run folder."""
    out = []
    for v in variants:
        tok = read_json(runs / v / "result.json")["tokenizer"] if (runs / v / "result.json").is_file() else None
        for arm_dir, arm in ARMS.items():
            for ck in sorted((runs / v / arm_dir / "checkpoints").glob("step_*")):
                out.append({"variant": v, "arm": arm, "step": int(ck.name.split("_")[-1]), "checkpoint": ck,
                            "tokenizer": tok, "runs": runs, "train_seed": train_seed})
    return out


def evaluate(p: dict, seed: int, args) -> dict:
    """gFID / P / R and class consistency of one checkpoint at one sampling seed (cached in RUNS/<variant>/seeds/)."""
    d = p["runs"] / p["variant"] / "seeds"
    stem = f"{p['arm'].lower()}_step{p['step']}_seed{seed}_n{args.per_class}"
    ge, cc, npz = d / f"{stem}_gen.json", d / f"{stem}_cc.json", d / f"{stem}.npz"
    if args.no_run and not (ge.is_file() and cc.is_file()):
        return None
    if not ge.is_file():
        cli(["eval-generator", "--gpt", str(p["checkpoint"])] + (["--tokenizer", p["tokenizer"]] if p["tokenizer"] else [])
            + ["--ref", args.data, "--ref-split", "val", "--images-per-class", str(args.per_class), "--cfg-scales", "1.0",
               "--seed", str(seed), "--second-encoder", "none", "--save-samples", str(npz), "--out", str(ge)])
    if not cc.is_file():
        cli(["class-consistency", "--samples", str(npz), "--data", args.data, "--out", str(cc)])
    g = read_json(ge)["metrics"]["runs"][0]
    c = read_json(cc)["metrics"]
    return {"train_seed": p["train_seed"], "seed": seed, "gFID": g["gFID"], "precision": g["precision"], "recall": g["recall"],
            "num_images": g["num_images"], "class_consistency": c["class_consistency"], "real_val_top1": c["real_val_top1"]}


def summary(evals: list[dict]) -> dict:
    """Mean, sample standard deviation, min and max over seeds of every metric."""
    out = {}
    for m in METRICS:
        xs = [e[m] for e in evals if e.get(m) is not None]
        if xs:
            out[m] = {"mean": statistics.fmean(xs), "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0,
                      "min": min(xs), "max": max(xs), "n": len(xs)}
    return out


def comparisons(rows: list[dict]) -> list[dict]:
    """Pairs docs/results/imagenette.md compares: tokenizers at one arm and step, steps within a curve, GPT vs RAR. A difference
    'exceeds the seed spread' when the two points' ranges over seeds do not overlap."""
    key = lambda r: (r["variant"], r["arm"], r["step"])
    by = {key(r): r for r in rows}
    pairs = []
    for a, b in itertools.combinations(sorted(by), 2):
        same = [a[i] == b[i] for i in range(3)]
        if sum(same) == 2:  # differ in exactly one of tokenizer, arm, step
            pairs.append((by[a], by[b]))
    out = []
    for ra, rb in pairs:
        for m in METRICS:
            sa, sb = ra["summary"].get(m), rb["summary"].get(m)
            if not sa or not sb:
                continue
            # one seed has no spread to compare against: no verdict
            separate = None if min(sa["n"], sb["n"]) < 2 else (sa["max"] < sb["min"] or sb["max"] < sa["min"])
            out.append({"a": _label(ra), "b": _label(rb), "metric": m, "a_mean": sa["mean"], "b_mean": sb["mean"],
                        "diff": sb["mean"] - sa["mean"], "exceeds_seed_spread": separate})
    return out


def _label(r: dict) -> str:
    return f"{r['variant']} {r['arm']} step {r['step']}"


TOKENIZER_METRICS = ("rFID", "PSNR", "SSIM", "LPIPS", "codebook_usage")


def tokenizer_seeds(runs: dict[int, Path], recorded_results: dict[int, Path], variants: list[str]) -> list[dict]:
    """Each training seed's tokenizer metrics (validation reconstructions, linear probe), from RUN/<variant>/result.json
    or, for a run whose folder is gone, from its reproduce_imagenette.py results.json (SEED=JSON)."""
    found = {seed: {v: read_json(folder / v / "result.json") for v in variants if (folder / v / "result.json").is_file()}
             for seed, folder in runs.items()}
    for seed, path in recorded_results.items():
        found.setdefault(seed, {}).update({v: r for v, r in read_json(path)["variants"].items() if v in variants})
    out = []
    for seed, by_variant in sorted(found.items()):
        for v, r in by_variant.items():
            if "recon" in r:
                row = {"variant": v, "train_seed": seed, **{m: r["recon"].get(m) for m in TOKENIZER_METRICS}}
                out.append(dict(row, probe=probe_top1(r.get("probe") or {}, "tokens_mean")))
    return sorted(out, key=lambda t: (t["variant"], t["train_seed"]))


def tokenizer_lines(toks: list[dict]) -> list[str]:
    """Markdown: one row per tokenizer and training seed, then mean ± sd per tokenizer."""
    cols = (*TOKENIZER_METRICS, "probe")
    lines = ["", "## Tokenizers per training seed (validation reconstructions; linear probe on the mean of the tokens)", "",
             "| tokenizer | training seed | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for t in toks:
        lines.append(f"| {t['variant']} | {t['train_seed']} | " + " | ".join("n/a" if t[c] is None else f"{t[c]:.3f}" for c in cols) + " |")
    for v in dict.fromkeys(t["variant"] for t in toks):
        xs = {c: [t[c] for t in toks if t["variant"] == v and t[c] is not None] for c in cols}
        lines.append(f"| {v} | mean ± sd | " + " | ".join(f"{statistics.fmean(x):.3f} ± {statistics.stdev(x):.3f}" if len(x) > 1
                                                         else "n/a" for x in xs.values()) + " |")
    return lines


def write(rows: list[dict], args, command: str, toks: list[dict] = ()) -> None:
    """NAME.json (every evaluation) and NAME.md (mean ± sd per point, the comparisons, the tokenizers per seed)."""
    comp = comparisons(rows)
    train_seeds = sorted({e["train_seed"] for r in rows for e in r["evals"]})
    rec = {"command": command, "train_seeds": train_seeds, "seeds": args.seeds, "per_class": args.per_class,
           "points": [{k: v for k, v in r.items() if k != "members"} for r in rows], "comparisons": comp,
           "tokenizers": list(toks)}
    write_json(Path(args.results) / f"{args.name}.json", rec)
    def f(s: dict | None, d: int) -> str:
        if not s:
            return "n/a"
        if s["n"] < 2:
            return f"{s['mean']:.{d}f} (one seed)"
        return f"{s['mean']:.{d}f} ± {s['sd']:.{d}f} [{s['min']:.{d}f}, {s['max']:.{d}f}]"

    spread = ("Each generator was trained once: the spread is the sampling noise only." if len(train_seeds) < 2 else
              f"Training seeds {train_seeds}: each a separate training of the tokenizer and the generator "
              "(`reproduce_imagenette.py --seed K`), so the spread holds training and sampling noise together.")
    lines = ["# Seed spread of the reproduction's generator points", "", f"`{command}`", "",
             f"Each point: {args.per_class} samples per class (no CFG) per sampling seed, sampling seeds {args.seeds}, "
             "per training run; mean ± sample standard deviation [min, max] over every evaluation of the point. "
             "gFID / precision / recall against every Imagenette validation image (64 px); class consistency = top-1 "
             f"of the real-image classifier (`vfmtok class-consistency`) on the same samples. {spread}", "",
             "| tokenizer | generator | steps | evaluations | gFID | precision | recall | class consistency |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["summary"]
        n = s.get("gFID", {}).get("n", 0)
        lines.append(f"| {r['variant']} | {r['arm']} | {r['step']} | {n} | {f(s.get('gFID'), 2)} | {f(s.get('precision'), 3)} | "
                     f"{f(s.get('recall'), 3)} | {f(s.get('class_consistency'), 3)} |")
    lines += ["", "## Differences, and whether they exceed the seed spread (the seeds' ranges do not overlap)", "",
              "| a | b | metric | a | b | b - a | exceeds seed spread |", "|---|---|---|---|---|---|---|"]
    for c in comp:
        lines.append(f"| {c['a']} | {c['b']} | {c['metric']} | {c['a_mean']:.3f} | {c['b_mean']:.3f} | {c['diff']:+.3f} | "
                     f"{ {True: 'yes', False: 'no', None: 'n/a (one seed)'}[c['exceeds_seed_spread']]} |")
    if toks:
        lines += tokenizer_lines(toks)
    write_text(Path(args.results) / f"{args.name}.md", "\n".join(lines) + "\n")


def seed_paths(specs: list[str]) -> dict[int, Path]:
    """{training seed: path} from PATH (seed 0) or SEED=PATH arguments (the first '=' ends the seed)."""
    out = {}
    for spec in specs:
        seed, sep, path = spec.partition("=")
        if not sep:
            seed, path = "0", spec
        if not seed.isdigit():
            raise SystemExit(f"want PATH or SEED=PATH with an integer SEED, got {spec!r}")
        out[int(seed)] = Path(path)
    return out


def recorded(specs: list[str], seeds: list[int]) -> dict[tuple, list[dict]]:
    """{(variant, arm, step): evaluations} of the sampling seeds asked for, read back from an earlier NAME.json
    (SEED=JSON: a training run whose folder is gone but whose evaluations the repo keeps)."""
    out: dict[tuple, list[dict]] = {}
    for train_seed, path in seed_paths(specs).items():
        for r in read_json(path)["points"]:
            out.setdefault((r["variant"], r["arm"], r["step"]), []).extend(
                dict(e, train_seed=train_seed, recorded_in=str(path)) for e in r["evals"] if e["seed"] in seeds)
    return out


def collect_rows(args, runs: dict[int, Path]) -> dict[tuple, dict]:
    """{(variant, arm, step): point}: the checkpoints of every run folder to evaluate ("members"), and the
    evaluations recorded in earlier result JSONs; sorted."""
    todo = [p for seed, folder in runs.items() for p in points(folder, args.variants, seed)
            if p["arm"] in args.arms and (args.steps is None or p["step"] in args.steps)]
    old = {k: e for k, e in recorded(args.recorded, args.seeds).items()
           if k[0] in args.variants and k[1] in args.arms and (args.steps is None or k[2] in args.steps)}
    if not todo and not old:
        raise SystemExit(f"no generator checkpoints under {args.runs} <{'|'.join(args.variants)}>/generator*/checkpoints")
    rows: dict[tuple, dict] = {}
    row = lambda k: rows.setdefault(k, {"variant": k[0], "arm": k[1], "step": k[2], "members": [], "evals": []})
    for p in todo:
        row((p["variant"], p["arm"], p["step"]))["members"].append(p)
    for k, evals in old.items():
        row(k)["evals"] += evals
        rows[k]["summary"] = summary(rows[k]["evals"])
    return dict(sorted(rows.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", default=[str(ROOT / "runs" / "reproduce_rar")],
                    help="reproduce_imagenette.py --runs folders: DIR, or SEED=DIR for the run of training seed SEED")
    ap.add_argument("--recorded", nargs="+", default=[], metavar="SEED=JSON",
                    help="also take training seed SEED's evaluations from an earlier result JSON of this script")
    ap.add_argument("--recorded-tokenizers", nargs="+", default=[], metavar="SEED=JSON",
                    help="training seed SEED's tokenizer metrics from a reproduce_imagenette.py results.json")
    ap.add_argument("--variants", nargs="+", default=["vfmtok", "vqgan"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampling seeds")
    ap.add_argument("--per-class", type=int, default=200, help="samples per class and seed (10 classes: 2,000)")
    ap.add_argument("--arms", nargs="+", default=list(ARMS.values()), choices=list(ARMS.values()))
    ap.add_argument("--steps", type=int, nargs="+", default=None, help="only these checkpoints (default: all)")
    ap.add_argument("--data", default="imagenette")
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--name", default="seed_spread", help="result file stem under --results")
    ap.add_argument("--no-run", action="store_true", help="only summarise the evaluations already in RUNS/*/seeds/")
    args = ap.parse_args()
    command = " ".join(["python benchmarks/seed_spread.py", *sys.argv[1:]])
    runs = seed_paths(args.runs)
    rows = collect_rows(args, runs)
    toks = tokenizer_seeds(runs, seed_paths(args.recorded_tokenizers), args.variants)
    for seed in args.seeds:  # seed-major: a stopped run has every point at the first seeds
        for r in rows.values():
            for p in r["members"]:
                e = evaluate(p, seed, args)
                if e is None:
                    continue
                r["evals"].append(e)
                r["summary"] = summary(r["evals"])
                write([x for x in rows.values() if x["evals"]], args, command, toks)
    write([x for x in rows.values() if x["evals"]], args, command, toks)
    print(f"wrote {Path(args.results) / (args.name + '.md')}")


if __name__ == "__main__":
    main()
