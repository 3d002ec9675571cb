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
    assert all(r["steps_per_s"] > 0 for r in rows if r["section"].startswith("train"))
    assert [r["ok"] for r in rows if r["section"] == "DDP"] == [True]
    sampled = [r for r in rows if r["section"] == "sample"]
    assert len(sampled) == 4 and all(r["images_per_s"] > 0 for r in sampled)  # eager and compiled, two batch sizes
    md = (tmp_path / "gpu_check.md").read_text()
    assert md.count("\n| ") == len(rows) + 1  # header + one line per row
