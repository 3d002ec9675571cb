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
                         capture_output=True, text=True, env=env, timeout=420)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = out["rows"]
    assert out["env"]["dry_run"] is True and not [r for r in rows if "error" in r]
    assert {r["section"] for r in rows} == {"train tokenizer", "train GPT", "sample", "load", "DDP", "jacobi"}
    tok = [r["what"] for r in rows if r["section"] == "train tokenizer"]
    assert {w.split()[-1] for w in tok} == {"eager", "compiled"} and len(tok) % 2 == 0  # each phase both ways
    tok_compiled = [r for r in rows if r["section"] == "train tokenizer" and r["what"].endswith("compiled")]
    assert [r["recompiles"] for r in tok_compiled] == [0] * len(tok_compiled)  # timed steps reuse the graphs
    assert all(isinstance(r["steps_per_s"], float) for r in rows if r["section"].startswith("train"))
    assert [r["ok"] for r in rows if r["section"] in ("DDP", "load")] == [True, True]
    sampled = [r for r in rows if r["section"] == "sample"]
    assert sorted((r["batch"], r["what"].split()[-1]) for r in sampled) == \
        sorted((b, m) for b in (1, 2, 4) for m in ("eager", "compiled"))  # batch 1/32/256 on a GPU
    compiled = [r for r in sampled if r["what"].endswith("compiled")]
    assert all(r["recompiles"] == 0 and r["ids_equal_eager"] is True for r in compiled)  # the whole step, one graph
    md = (tmp_path / "gpu_check.md").read_text()
    assert md.count("\n| ") == len(rows) + 1  # header + one line per row
    jacobi = [r for r in rows if r["section"] == "jacobi"]
    assert sorted((r["batch"], r["what"].split(", ")[1]) for r in jacobi) == \
        sorted((b, a) for b in (1, 2, 4) for a in ("standard", "jacobi K=8", "jacobi K=16"))
    config = ROOT / "src/vfmtok/assets/models/imagenette64/generator/config.json"
    n_tokens = json.loads(config.read_text())["config"]["gpt"]["num_tokens"]
    for r in jacobi:  # standard decoding takes one pass per token; a Jacobi window fixes >= 1 id per pass
        passes = r["sequential_passes"]
        assert passes == n_tokens if "standard" in r["what"] else 1 <= passes <= n_tokens
        assert r["recompiles"] == 0 and r["images_per_s"] > 0
