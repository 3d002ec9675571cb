"""benchmarks/gpu_check.sh --dry-run: every section runs on CPU with tiny configs and lands in the JSON/Markdown."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": os.environ.get("PYTHON", __import__("sys").executable)}
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = out["rows"]
    assert out["env"]["dry_run"] is True and not [r for r in rows if "error" in r]
    assert {r["section"] for r in rows} == {"train tokenizer", "train GPT", "sample", "DDP"}
    # Bookkeeping, not speed: each throughput is the same measured step time seen per image / per token.
    for r in rows:
        if r["section"] == "train tokenizer":
            assert r["images_per_s"] == pytest.approx(r["batch"] * r["steps_per_s"], rel=0.02, abs=0.1)
    per_sample = {round(r["tokens_per_s"] / (r["batch"] * r["steps_per_s"])) for r in rows if r["section"] == "train GPT"}
    assert len(per_sample) == 1 and per_sample.pop() > 1  # one sequence length, tokens counted per sample
    assert [r["ok"] for r in rows if r["section"] == "DDP"] == [True]
    sampled = [r for r in rows if r["section"] == "sample"]
    # eager and compiled at each of two batch sizes, each with a throughput and its compile-inclusive first call
    assert sorted((r["batch"], r["what"].split()[-1]) for r in sampled) == sorted(
        (b, m) for b in {r["batch"] for r in sampled} for m in ("compiled", "eager")) and len(sampled) == 4
    assert all(isinstance(r["images_per_s"], float) and "first_call_s" in r for r in sampled)
    md = (tmp_path / "gpu_check.md").read_text()
    assert md.count("\n| ") == len(rows) + 1  # header + one line per row
