"""Result records: every comparability field present, comparison, JSON + Markdown written atomically."""

import json

from vfmtok.eval.records import checkpoint_record, compare_records, make_record, markdown_table, write_results


def test_record_fields_compare_and_write(tmp_path):
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "model.safetensors").write_bytes(b"weights")
    net = {"name": "tf-inception", "file": "fid_inception.pt", "sha256": "abc"}
    rec = make_record("eval-tokenizer", metrics={"rFID": 1.5}, num_images=10, resolution=64, seed=3,
                      checkpoints={"tokenizer": checkpoint_record(ck)}, cfg={"cfg_scales": [1.0]},
                      feature_networks=[net], argv=["vfmtok", "eval-tokenizer", str(ck)])
    for k in ("command", "checkpoints", "num_images", "resolution", "seed", "cfg", "feature_networks",
              "timestamp", "vfmtok_version"):
        assert k in rec
    assert rec["command"] == f"vfmtok eval-tokenizer {ck}"
    assert rec["checkpoints"]["tokenizer"]["sha256"] and len(rec["checkpoints"]["tokenizer"]["sha256"]) == 16
    assert compare_records(rec, dict(rec)) == []
    assert compare_records(rec, {**rec, "seed": 4, "resolution": 128}) == ["resolution", "seed"]
    (ck / "model.safetensors").write_bytes(b"other weights")
    other = {**rec, "checkpoints": {"tokenizer": checkpoint_record(ck)}}
    assert compare_records(rec, other) == ["checkpoints"]

    table = markdown_table(["a", "b", "c"], [[1.234567, None, "x"]])
    assert table.splitlines()[2] == "| 1.235 | n/a | x |"
    js, md = write_results(tmp_path / "out" / "res.json", rec, table)
    data = json.loads(js.read_text())
    assert data["metrics"] == {"rFID": 1.5} and data["markdown"] == table
    assert md.name == "res.md" and "| 1.235 | n/a | x |" in md.read_text() and rec["command"] in md.read_text()
    assert sorted(p.name for p in js.parent.iterdir()) == ["res.json", "res.md"]
