"""Fault suite: kill -9 vfmtok commands at random moments, resume or rerun them, check nothing is lost or corrupt.

For each command: one uninterrupted reference run, then trials that start the same command as a subprocess, SIGKILL
it (at a random time drawn from --seed, or the moment a checkpoint / shard / cache temp file appears), rerun it
(`--resume` where the command has it) until it finishes, and check: every JSON / safetensors / .npy / train state in
the output parses; latest.txt names a complete checkpoint; a resumed run starts at the step of the last checkpoint;
the finished output equals the reference run's (CPU, one thread: deterministic); a finished output survives a later
run that is killed. Writes benchmarks/results/fault_suite.{json,md}.

    python benchmarks/fault_suite.py --kills 20 --seed 0 --commands train-tokenizer train-generator extract-codes sample
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from fault_checks import check_files, compare, fingerprint, latest_step, resumed_steps  # noqa: E402
RESULTS = ROOT / "benchmarks" / "results"
TEMP_PATTERNS = ("**/.*.tmp", "**/*.partial", "**/.*.partial", "**/*.tmp")
ALL_COMMANDS = ("prepare-data", "train-tokenizer", "extract-codes", "train-generator", "sample", "eval-generator")


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", VFMTOK_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    return env


def cli(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "vfmtok.cli", *argv]


def run_to_end(argv: list[str], log: Path) -> tuple[int, float]:
    """Run a command to completion; (exit status, seconds)."""
    t = time.time()
    with open(log, "a") as f:
        rc = subprocess.run(cli(argv), stdout=f, stderr=subprocess.STDOUT, env=_env(), cwd=log.parent).returncode
    return rc, time.time() - t


# --- fixtures: a tiny dataset, a tiny tokenizer, codes and a GPT --------------------------------------------------


def make_fixtures(work: Path, need_gpt: bool = True) -> dict[str, Path]:
    """Synthetic 2-class image folder, an untrained tiny tokenizer, its codes and a short-trained GPT."""
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # helpers shared with the tests
    from helpers import build_tiny_tokenizer

    data = work / "data"
    rng = np.random.default_rng(0)
    for split, n in (("train", 16), ("val", 8)) if not (data / "val").is_dir() else ():
        for c, name in enumerate(("red", "blue")):
            d = data / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
                arr[..., 0 if c == 0 else 2] = 230
                Image.fromarray(arr).save(d / f"{i:03d}.png")
    tok = work / "tokenizer"
    fx = {"data": data, "tokenizer": tok if (tok / "config.json").is_file() else
          build_tiny_tokenizer(tok, class_names=["red", "blue"])}
    log = work / "fixtures.log"
    fx["codes"] = work / "codes"
    if not (fx["codes"] / "index.json").is_file():
        rc, _ = run_to_end(["extract-codes", "--tokenizer", str(fx["tokenizer"]), "--data", str(data), "--out",
                            str(fx["codes"]), "--device", "cpu"], log)
        assert rc == 0, f"extract-codes fixture failed, see {log}"
    gpt = work / "gpt"
    if need_gpt and not (gpt / "latest.txt").is_file():
        rc, _ = run_to_end(GEN_ARGS(fx, gpt), log)
        assert rc == 0, f"train-generator fixture failed, see {log}"
    fx["gpt"] = gpt
    return fx


def GEN_ARGS(fx: dict[str, Path], out: Path) -> list[str]:
    return ["train-generator", "--codes", str(fx["codes"]), "--preset", "GPT-nano", "--steps", "24", "--save-every",
            "4", "--log-every", "2", "--batch-size", "4", "--device", "cpu", "--out", str(out)]


@dataclass
class Scenario:
    """How to run one command into `out`, whether it resumes, and where its finished output lies."""

    name: str
    argv: object  # (fixtures, out, resume: bool) -> list[str]
    resumable: bool
    outputs: tuple[str, ...]  # files (relative to out) that a finished run leaves
    log_in_out: bool = False


def scenarios() -> dict[str, Scenario]:
    def tok(fx, out, resume):
        return (["train-tokenizer", "--preset", "tiny", "--data", str(fx["data"]), "--out", str(out), "--device", "cpu",
                 "--steps", "12", "--batch-size", "4", "--set", "model.encoder_pretrained=false",
                 "--set", "train.cache_features=true", "--set", "train.cache_views=1", "--set", "train.save_every=3"]
                + (["--resume"] if resume else []))

    def ext(fx, out, resume):
        return ["extract-codes", "--tokenizer", str(fx["tokenizer"]), "--data", str(fx["data"]), "--out", str(out),
                "--device", "cpu", "--batch-size", "2", "--shard-size", "10"]

    def gen(fx, out, resume):
        return GEN_ARGS(fx, out) + (["--resume"] if resume else [])

    def sample(fx, out, resume):
        return ["sample", "--gpt", str(fx["gpt"]), "--tokenizer", str(fx["tokenizer"]), "--per-class", "4",
                "--batch-size", "2", "--device", "cpu", "--out", str(out)]

    def evalg(fx, out, resume):
        return ["eval-generator", "--samples", str(fx["codes"].parent / "ref" / "sample" / "samples.npz"),
                "--ref", str(fx["data"]), "--ref-split", "val", "--device", "cpu", "--no-cache",
                "--out", str(out / "eval.json")]

    def prep(fx, out, resume):
        return ["prepare-data", str(fx["data"]), "--out", str(out), "--shard-size", "4"]

    return {
        "prepare-data": Scenario("prepare-data", prep, False, ("index.json",)),
        "train-tokenizer": Scenario("train-tokenizer", tok, True, ("latest.txt", "recon.png")),
        "extract-codes": Scenario("extract-codes", ext, False, ("index.json",)),
        "train-generator": Scenario("train-generator", gen, True, ("latest.txt",)),
        "sample": Scenario("sample", sample, False, ("samples.npz", "grid.png", "sample_info.json")),
        "eval-generator": Scenario("eval-generator", evalg, False, ("eval.json",)),
    }


# --- killing ---------------------------------------------------------------------------------------------------


def start(argv: list[str], log: Path) -> subprocess.Popen:
    f = open(log, "a")
    f.write(f"\n$ vfmtok {' '.join(argv)}\n")
    f.flush()
    return subprocess.Popen(cli(argv), stdout=f, stderr=subprocess.STDOUT, env=_env(), cwd=log.parent)


def _temp_file_seen(out: Path) -> bool:
    parent = out.parent
    if not parent.exists():
        return False
    names = [p for p in parent.glob(f".{out.name}*")]  # a sibling temp (atomic single-file outputs)
    if out.is_dir():
        for pat in TEMP_PATTERNS:
            names += list(out.glob(pat))
    return any(".vfmtok.lock" not in p.name for p in names)


def kill_at(proc: subprocess.Popen, out: Path, mode: str, delay: float, limit: float) -> str:
    """SIGKILL `proc` after `delay` s (mode 'time') or when a temp file appears after `delay` s (mode 'write').

    Returns 'killed', 'killed-in-write' or 'finished' (it ended first)."""
    t0 = time.time()
    while time.time() - t0 < limit:
        if proc.poll() is not None:
            return "finished"
        waited = time.time() - t0
        if mode == "time" and waited >= delay:
            break
        if mode == "write" and waited >= delay and _temp_file_seen(out):
            break
        time.sleep(0.002 if mode == "write" else 0.01)
    if proc.poll() is not None:
        return "finished"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return "killed-in-write" if mode == "write" else "killed"


@dataclass
class Row:
    """One command's line in the results table."""

    command: str
    kills: int = 0
    kills_in_write: int = 0
    trials: int = 0
    resumed_ok: int = 0
    files_checked: int = 0
    problems: list[str] = field(default_factory=list)


def run_command(sc: Scenario, fx: dict[str, Path], work: Path, kills: int, rng: random.Random,
                report=lambda row: None) -> Row:
    """The reference run, then trials of kill / rerun until `kills` kills happened; `report(row)` after each trial."""
    row = Row(sc.name)
    ref = work / "ref" / sc.name
    log = work / f"{sc.name}.log"
    if not all((ref / f).is_file() for f in sc.outputs):
        shutil.rmtree(ref, ignore_errors=True)
        ref.mkdir(parents=True, exist_ok=True)
        rc, _ = run_to_end(sc.argv(fx, ref, False), log)
        if rc != 0:
            row.problems.append(f"reference run failed (exit {rc}), see {log}")
            return row
    t0 = time.time()
    probe = work / "probe" / sc.name
    shutil.rmtree(probe, ignore_errors=True)
    rc, duration = run_to_end(sc.argv(fx, probe, False), log)
    shutil.rmtree(probe, ignore_errors=True)
    while row.kills < kills:
        row.trials += 1
        out = work / "trials" / sc.name / f"t{row.trials:03d}"
        shutil.rmtree(out, ignore_errors=True)
        n_kill = min(rng.randint(2, 5), kills - row.kills)
        expect_step = []
        for _ in range(n_kill):
            resume = sc.resumable and latest_step(out) is not None
            if resume:
                expect_step.append(latest_step(out))
            mode = rng.choice(("time", "write"))
            delay = rng.uniform(0.0, 1.1 * duration) if mode == "time" else rng.uniform(0.0, 0.9 * duration)
            how = kill_at(start(sc.argv(fx, out, resume), log), out, mode, delay, 3 * duration + 30)
            if how == "finished":
                break
            row.kills += 1
            row.kills_in_write += how == "killed-in-write"
            n, probs = check_files(out)
            row.files_checked += n
            row.problems += [f"trial {row.trials} after kill: {p}" for p in probs]
        finish(sc, fx, out, ref, log, row, expect_step, rng, duration)
        report(row)
        print(f"{sc.name}: {row.kills}/{kills} kills, {len(row.problems)} problems, {time.time() - t0:.0f} s", flush=True)
    return row


def finish(sc: Scenario, fx, out: Path, ref: Path, log: Path, row: Row, expect_step: list[int],
           rng: random.Random, duration: float) -> None:
    """Rerun to the end, check steps / files / equality, then kill a later rerun and check the output survived."""
    for _ in range(3):  # a rerun is itself never killed here
        resume = sc.resumable and latest_step(out) is not None
        if resume:
            expect_step.append(latest_step(out))
        rc, _ = run_to_end(sc.argv(fx, out, resume), log)
        if rc == 0 and all((out / f).is_file() for f in sc.outputs):
            break
    else:
        row.problems.append(f"trial {row.trials}: the rerun did not finish (exit {rc}), see {log}")
        return
    got = resumed_steps(out)
    # Every logged resume started at a checkpoint that was the newest then (a run killed before logging is absent).
    it = iter(expect_step)
    step_ok = all(g in it for g in got) and (not resume or (got and got[-1] == expect_step[-1]))
    if not step_ok:
        row.problems.append(f"trial {row.trials}: resumed at steps {got}, last checkpoints were {expect_step}")
    n, probs = check_files(out)
    row.files_checked += n
    row.problems += [f"trial {row.trials} finished: {p}" for p in probs]
    diff = compare(sc.name, ref, out)
    row.problems += [f"trial {row.trials}: {d}" for d in diff]
    before = fingerprint(out, sc.outputs)
    argv = sc.argv(fx, out, sc.resumable)
    how = kill_at(start(argv, log), out, "time", rng.uniform(0.0, duration), 3 * duration + 30)
    after = fingerprint(out, sc.outputs)
    # A rerun that was not killed in time finished: it replaced the outputs by design (sample_info.json records its
    # own timing), so only a killed rerun must leave them as they were.
    lost = [k for k in before if after.get(k) != before[k]] if how != "finished" else []
    if lost:
        row.problems.append(f"trial {row.trials}: a killed rerun changed finished outputs {lost}")
    row.resumed_ok += int(step_ok and not probs and not diff and not lost)


# --- report ----------------------------------------------------------------------------------------------------


def write_results(rows: list[Row], args: argparse.Namespace, seconds: float, prefix: Path,
                  commands: list[str] | None = None) -> None:
    """JSON record and a Markdown table."""
    from vfmtok.utils.io import write_json, write_text

    command = "; ".join(commands) if commands else " ".join(["python benchmarks/fault_suite.py", *sys.argv[1:]])
    record = {"command": command, "seed": args.seed,
              "kills_per_command": args.kills, "seconds": round(seconds), "threads": 1,
              "rows": [vars(r) for r in rows]}
    write_json(prefix.with_suffix(".json"), record)
    lines = ["# Fault suite (kill -9, then resume / rerun)", "", f"`{record['command']}`", "",
             "| command | kills | of them during a temp-file write | trials | trials resumed ok | files checked | problems |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.command} | {r.kills} | {r.kills_in_write} | {r.trials} | {r.resumed_ok}/{r.trials} | "
                     f"{r.files_checked} | {len(r.problems)} |")
    for r in rows:
        for p in r.problems[:20]:
            lines.append(f"\n- {r.command}: {p}")
    write_text(prefix.with_suffix(".md"), "\n".join(lines) + "\n")


def merge(paths: list[Path], prefix: Path) -> int:
    """One table from several records (one per command, run as parallel processes)."""
    recs = [json.loads(p.read_text()) for p in paths]
    rows = [Row(**r) for rec in recs for r in rec["rows"]]
    args = argparse.Namespace(seed=[r["seed"] for r in recs], kills=recs[0]["kills_per_command"])
    write_results(rows, args, max(r["seconds"] for r in recs), prefix,
                  commands=[r["command"] for r in recs])
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20, help="SIGKILLs per command")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--commands", nargs="+", default=list(ALL_COMMANDS), choices=list(ALL_COMMANDS))
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one, removed)")
    ap.add_argument("--results", type=Path, default=RESULTS / "fault_suite", help="path prefix of the .json/.md")
    ap.add_argument("--merge", type=Path, nargs="+", default=None,
                    help="instead of running: combine the JSON records of runs made in parallel into one table")
    args = ap.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.results)
    work = args.work or Path(tempfile.mkdtemp(prefix="vfmtok-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    t0, rows = time.time(), []
    try:
        fx = make_fixtures(work, need_gpt=bool({"sample", "eval-generator"} & set(args.commands)))
        rng = random.Random(args.seed)
        all_sc = scenarios()
        from vfmtok.cli import COMMANDS

        for name in ALL_COMMANDS:
            if name in args.commands and name not in COMMANDS:
                print(f"skipping {name}: this vfmtok has no such command", flush=True)
            elif name in args.commands:
                if name == "eval-generator" and not (work / "ref" / "sample" / "samples.npz").is_file():
                    run_command(all_sc["sample"], fx, work, 0, rng)  # its input: the reference samples
                # Results so far are written after every trial: a suite stopped early still leaves its table.
                rows.append(run_command(all_sc[name], fx, work, args.kills, rng,
                                        lambda r: write_results([*rows, r], args, time.time() - t0, args.results)))
        write_results(rows, args, time.time() - t0, args.results)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    bad = sum(len(r.problems) for r in rows)
    print(f"{sum(r.kills for r in rows)} kills, {bad} problems -> {args.results.with_suffix('.md')}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
