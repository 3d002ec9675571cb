"""`vfmtok demo` on the embedded sample: the default tour of the bundled model plus a short from-scratch training
(issue 31), and the full from-scratch pipeline (`--full`), each as a tiny run; their reports; resuming (both modes
share the training stages, vfmtok.demo_stages)."""

import json
import math
import re

import pytest

from vfmtok.cli import main

CLASSES = ["tench", "English springer", "cassette player", "chain saw", "church", "French horn", "garbage truck",
           "gas pump", "golf ball", "parachute"]


@pytest.mark.slow
def test_default_demo_shows_the_bundled_model_and_both_losses_falling(tmp_path):
    out = tmp_path / "demo"
    argv = ["demo", "--quick", "--out", str(out), "--device", "cpu", "--per-class", "2",
            "--tokenizer-steps", "12", "--generator-steps", "30"]
    assert main(argv) == 0
    summary = json.loads((out / "demo.json").read_text())
    b = summary["bundled"]
    # every class sampled, per_class each
    assert b["num_samples"] == 2 * len(CLASSES) and b["sample_classes"] == list(range(len(CLASSES)))
    assert b["class_names"] == CLASSES
    # held-out reconstructions of the bundled tokenizer: ~17.8 dB on the embedded sample's 100 val images; a wrong
    # decoder, a tokenizer of another pair or unscaled pixels fall far below
    assert b["num_heldout"] == 100 and 16.5 < b["heldout_psnr_db"] < 30
    ids = b["token_ids"]
    assert len(ids) == 3 and all(len(g) == 8 and all(len(r) == 8 for r in g) for g in ids)
    flat = [t for g in ids for r in g for t in r]
    assert all(0 <= t < 1024 for t in flat) and len(set(flat)) > 30  # a collapsed codebook would repeat a few ids
    assert b["num_region_pictures"] == 3
    # the short training from scratch: both losses fall (mean of the first vs the last three logged steps)
    for name in ("tokenizer", "generator"):
        tr = summary["scratch"]["loss_trends"][name]
        assert tr is not None and tr["last"] < tr["first"], (name, tr)
    assert summary["scratch"]["loss_trends"]["generator"]["first"] > 6.0  # starts near ln(1024) = 6.93: from scratch
    html = (out / "report.html").read_text()
    assert all(c in html for c in CLASSES) and "Token ids" in html and "both losses fall" in html
    assert html.count("<img") >= 10 + 1 + 3 + 3 + 1 + 10 and html.count("<svg") == 3
    assert re.search(r"mean PSNR over 100 held-out images: 1\d\.\d\d dB", html)



@pytest.mark.slow
def test_full_demo_writes_report_with_class_consistency(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--full", "--quick", "--out", str(out), "--device", "cpu"]) == 0
    cc = json.loads((out / "class_consistency.json").read_text())["metrics"]
    n_classes = len(cc["per_class"])
    assert n_classes == len(CLASSES)
    # 2 samples per class: the score is a count over those samples, and the probe's ceiling is scored on real images
    assert cc["num_samples"] == 2 * n_classes
    assert 0.0 <= cc["class_consistency"] <= 1.0 and round(cc["class_consistency"] * cc["num_samples"], 6).is_integer()
    assert 0.0 <= cc["real_val_top1"] <= 1.0
    rec = json.loads((out / "eval_tokenizer.json").read_text())["metrics"]
    assert rec["PSNR"] > 5 and 0 < rec["codebook_usage"] <= 1
    gen = json.loads((out / "eval_generator.json").read_text())["metrics"]["runs"][0]
    assert gen["num_images"] == 2 * n_classes and math.isfinite(gen["gFID"]) and 0 <= gen["precision"] <= 1
    html = (out / "report.html").read_text()
    assert "Class consistency" in html and "<img" in html

    # a second run resumes: the finished tokenizer and generator checkpoints are reused, not retrained
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/checkpoints/*/model.safetensors")}
    assert len(stamps) >= 2
    assert main(["demo", "--full", "--quick", "--out", str(out), "--device", "cpu"]) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


@pytest.mark.parametrize("kind", ["empty_file", "zip_without_images"])
def test_bad_demo_data_is_refused_before_any_stage(tmp_path, monkeypatch, capsys, kind):
    import zipfile

    import vfmtok.demo_tour as tour

    def must_not_run(*a, **k):
        raise AssertionError("a demo stage ran on a dataset it cannot use")

    monkeypatch.setattr(tour, "tour_bundled_model", must_not_run)
    data = tmp_path / "data.zip"
    if kind == "empty_file":
        data.write_bytes(b"")
    else:
        with zipfile.ZipFile(data, "w") as z:
            z.writestr("train/readme.txt", "no images here")
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--data", str(data), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(data) in err[0] and not out.exists()

