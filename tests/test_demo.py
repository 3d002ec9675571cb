"""`vfmtok demo --quick` end to end on the embedded sample: every stage's output, the report, and resuming."""

import json

import pytest

from vfmtok.cli import main


@pytest.mark.slow
def test_demo_quick_writes_report_with_class_consistency_and_resumes(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--device", "cpu"]) == 0
    cc = json.loads((out / "class_consistency.json").read_text())["metrics"]
    n_classes = len(cc["per_class"])
    # 2 samples per class: the score is a count over those samples, and the probe's ceiling is scored on real images
    assert cc["num_samples"] == 2 * n_classes
    assert 0.0 <= cc["class_consistency"] <= 1.0 and round(cc["class_consistency"] * cc["num_samples"], 6).is_integer()
    assert 0.0 <= cc["real_val_top1"] <= 1.0
    rec = json.loads((out / "eval_tokenizer.json").read_text())["metrics"]
    assert rec["PSNR"] > 5 and 0 < rec["codebook_usage"] <= 1
    gen = json.loads((out / "eval_generator.json").read_text())["metrics"]["runs"][0]
    assert gen["num_images"] == 2 * n_classes and gen["gFID"] > 0
    html = (out / "report.html").read_text()
    assert "Class consistency" in html and "<img" in html

    # a second run resumes: the finished tokenizer and generator checkpoints are reused, not retrained
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/checkpoints/*/model.safetensors")}
    assert len(stamps) >= 2
    assert main(["demo", "--quick", "--out", str(out), "--device", "cpu"]) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
