"""benchmarks/seed_spread.py and the reproduction's --gpt-marks: the spread statistics, the "exceeds the seed spread"
verdict, SEED=PATH arguments, and evaluations recorded in a result JSON read back under their training seed."""

import argparse
import statistics

import pytest


def _row(variant, step, gfids, train_seed=0):
    evals = [{"train_seed": train_seed, "seed": i, "gFID": g, "precision": 0.1, "recall": 0.0,
              "class_consistency": 0.2} for i, g in enumerate(gfids)]
    return {"variant": variant, "arm": "GPT", "step": step, "evals": evals}


def test_summary_is_mean_sample_sd_min_max(load_benchmark):
    ss = load_benchmark("seed_spread")
    s = ss.summary(_row("v", 1, [10.0, 12.0, 17.0])["evals"])["gFID"]
    assert s["mean"] == pytest.approx(13.0)
    assert s["sd"] == pytest.approx(statistics.stdev([10.0, 12.0, 17.0]))  # n - 1 in the denominator
    assert (s["min"], s["max"], s["n"]) == (10.0, 17.0, 3)


def test_a_difference_exceeds_the_spread_only_when_the_ranges_do_not_overlap(load_benchmark):
    ss = load_benchmark("seed_spread")
    rows = [_row("a", 1, [10.0, 11.0]), _row("b", 1, [11.5, 12.0]), _row("c", 1, [10.5, 12.0]), _row("d", 1, [9.0])]
    for r in rows:
        r["summary"] = ss.summary(r["evals"])
    verdict = {(c["a"].split()[0], c["b"].split()[0]): c["exceeds_seed_spread"]
               for c in ss.comparisons(rows) if c["metric"] == "gFID"}
    assert verdict[("a", "b")] is True  # [10, 11] vs [11.5, 12]
    assert verdict[("a", "c")] is False  # [10, 11] vs [10.5, 12] overlap
    assert verdict[("a", "d")] is None  # one evaluation: no spread to compare with


def test_seed_paths_read_bare_paths_as_seed_zero_and_refuse_a_non_integer_seed(load_benchmark):
    ss = load_benchmark("seed_spread")
    got = ss.seed_paths(["runs/a", "2=runs/b=c"])
    assert {k: str(v) for k, v in got.items()} == {0: "runs/a", 2: "runs/b=c"}  # the first '=' ends the seed
    with pytest.raises(SystemExit, match="integer SEED"):
        ss.seed_paths(["x=runs/a"])


def test_recorded_evaluations_come_back_under_their_training_seed(load_benchmark, tmp_path):
    ss = load_benchmark("seed_spread")
    rows = [_row("vfmtok", 400, [239.0, 240.0, 241.0])]
    rows[0]["summary"] = ss.summary(rows[0]["evals"])
    args = argparse.Namespace(seeds=[0, 1, 2], per_class=200, results=str(tmp_path), name="old")
    ss.write(rows, args, "cmd")
    got = ss.recorded([f"5={tmp_path / 'old.json'}"], seeds=[0, 2])
    evals = got[("vfmtok", "GPT", 400)]
    assert [e["gFID"] for e in evals] == [239.0, 241.0]  # sampling seeds 0 and 2 only
    assert {e["train_seed"] for e in evals} == {5}
    assert "trained once" in (tmp_path / "old.md").read_text()  # one training seed: sampling noise only
    rows.append(_row("vfmtok", 800, [230.0], train_seed=5))
    rows[1]["summary"] = ss.summary(rows[1]["evals"])
    ss.write(rows, args, "cmd")
    assert "Training seeds [0, 5]" in (tmp_path / "old.md").read_text()


def test_gpt_marks_explicit_or_evenly_spaced(load_benchmark):
    marks = load_benchmark("reproduce_imagenette").gpt_marks
    ns = lambda **kw: argparse.Namespace(**{"gpt_marks": None, "gpt_steps": 600, "gpt_evals": 3, **kw})
    assert marks(ns()) == [200, 400, 600]
    assert marks(ns(gpt_marks=[400, 800, 1600])) == [400, 800, 1600]
    with pytest.raises(SystemExit, match="increasing"):
        marks(ns(gpt_marks=[800, 400]))


def test_tokenizer_table_reads_run_folders_and_recorded_results_per_training_seed(load_benchmark, tmp_path):
    import json

    ss = load_benchmark("seed_spread")
    rec = lambda rfid, probe: {"recon": {"rFID": rfid, "PSNR": 16.0}, "probe": {"tokens_mean": {"top1_val": probe}}}
    (tmp_path / "run1" / "vfmtok").mkdir(parents=True)
    (tmp_path / "run1" / "vfmtok" / "result.json").write_text(json.dumps(rec(280.0, 0.70)))
    (tmp_path / "old.json").write_text(json.dumps({"variants": {"vfmtok": rec(286.0, 0.72), "other": rec(1.0, 0.1)}}))
    toks = ss.tokenizer_seeds({1: tmp_path / "run1"}, {0: tmp_path / "old.json"}, ["vfmtok"])
    assert [(t["train_seed"], t["rFID"], t["probe"], t["SSIM"]) for t in toks] == [(0, 286.0, 0.72, None), (1, 280.0, 0.70, None)]
    mean_row = ss.tokenizer_lines(toks)[-1]
    assert f"283.000 ± {statistics.stdev([280.0, 286.0]):.3f}" in mean_row and "0.710 ± 0.014" in mean_row
    assert "| n/a |" in mean_row  # SSIM missing in both: no mean
