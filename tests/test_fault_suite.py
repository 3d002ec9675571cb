"""Issue 15 item 2: the fault suite's checks catch corruption, and a short run (a few kills) finds no problem."""

import json

import pytest


@pytest.fixture(scope="module")
def suite(load_benchmark):
    return load_benchmark("fault_suite")


def test_checker_flags_torn_files_and_incomplete_checkpoints(suite, tmp_path):
    import torch
    from safetensors.torch import save_file

    from vfmtok.train.common import save_checkpoint

    run = tmp_path / "run"
    save_checkpoint(run, 2, {"w": torch.ones(3)}, {"a": 1}, "gpt", {"step": 2})
    n, problems = suite.check_files(run)
    assert problems == [] and n >= 3  # model.safetensors, config.json, train_state.pt
    ck = run / "checkpoints" / "step_0000002"
    assert not list((run / "checkpoints").glob(".*"))  # the hidden build folder was renamed into place
    save_file({"w": torch.ones(1000)}, str(tmp_path / "x.safetensors"))
    (run / "torn.safetensors").write_bytes((tmp_path / "x.safetensors").read_bytes()[:-100])
    (run / "torn.json").write_text('{"a": ')
    (run / "checkpoints" / "step_0000004").mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1}\n{"st')
    (ck / "train_state.pt").unlink()
    _, problems = suite.check_files(run)
    text = "\n".join(problems)
    for needle in ("torn.safetensors", "torn.json", "metrics.jsonl", "step_0000004 is incomplete",
                   "latest.txt names step_0000002, which lacks train_state.pt"):
        assert needle in text, text


def test_finished_run_keeps_its_last_checkpoint_and_trims_metrics(tmp_path):
    import torch

    from vfmtok.train.common import open_metrics, save_checkpoint

    run = tmp_path / "run"
    first = save_checkpoint(run, 4, {"w": torch.ones(2)}, {}, "gpt", {"step": 4})
    before = (first / "model.safetensors").stat().st_mtime_ns
    save_checkpoint(run, 4, {"w": torch.zeros(2)}, {}, "gpt", {"step": 4})  # a resumed, finished run re-saving
    assert (first / "model.safetensors").stat().st_mtime_ns == before
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 7)) + '{"step": 7, "lo')
    open_metrics(run, 4).close()
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


@pytest.mark.slow
def test_short_fault_suite_finds_no_problem(suite, tmp_path):
    rc = suite.main(["--kills", "3", "--seed", "3", "--commands", "extract-codes", "--work", str(tmp_path / "w"),
                     "--results", str(tmp_path / "fault_suite")])
    rec = json.loads((tmp_path / "fault_suite.json").read_text())
    row = rec["rows"][0]
    assert row["command"] == "extract-codes" and row["kills"] == 3 and row["files_checked"] > 0
    assert rc == 0 and row["problems"] == [], row["problems"]
    assert "| extract-codes | 3 |" in (tmp_path / "fault_suite.md").read_text()
