"""Issue 15 item 4: --threads, and the default: the cores other processes leave free."""

import pytest
import torch

from vfmtok.cli import main
from vfmtok.cli import threads


def test_default_is_the_free_cores(monkeypatch):
    for name in (threads.ENV_THREADS, "OMP_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: 3)
    assert threads.default_threads() == 5
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: 30)
    assert threads.default_threads() == 1  # never zero
    monkeypatch.setenv(threads.ENV_THREADS, "3")
    assert threads.default_threads() == 3


def _fake_proc(root, threads_of: dict[int, list[tuple[str, int]]]):
    """/proc/<pid>/task/<tid>/stat files: (state, nice) per thread; the comm holds a ') ' to test the parsing."""
    for pid, tasks in threads_of.items():
        for tid, (state, nice) in enumerate(tasks, start=pid):
            d = root / str(pid) / "task" / str(tid)
            d.mkdir(parents=True)
            rest = ["1"] * 15 + [str(nice)] + ["0"] * 30  # fields after the state: ppid ... nice is the 17th
            (d / "stat").write_text(f"{tid} (odd) name) {state} " + " ".join(rest) + "\n")
    (root / "self").mkdir()  # not a pid: skipped


def test_rivals_count_running_threads_of_other_processes_at_equal_or_higher_priority(tmp_path):
    _fake_proc(tmp_path, {100: [("R", 0), ("R", 0), ("S", 0)],  # two running peers, one sleeper
                          200: [("R", 10)],  # niced: hardly competes
                          300: [("R", -5)],  # higher priority: counts
                          999: [("R", 0)]})  # this process itself: never counted
    assert threads._runnable_rivals(999, 0, proc=str(tmp_path)) == 3
    assert threads._runnable_rivals(999, 10, proc=str(tmp_path)) == 4  # a niced process competes with niced rivals
    assert threads._runnable_rivals(999, 0, proc=str(tmp_path / "absent")) is None


def test_the_proc_scan_runs_only_for_automatic_threads(monkeypatch):
    calls = []
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: calls.append(1) or 0)
    for name in (threads.ENV_THREADS, "OMP_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    try:
        assert threads.configure(None) == before and threads.configure(1) == 1 and calls == []
        threads.configure("auto")
        assert calls == [1]
        monkeypatch.setenv(threads.ENV_THREADS, "auto")
        threads.configure(None)
        assert calls == [1, 1]
    finally:
        torch.set_num_threads(before)


def test_threads_option_applies_during_the_command_only(monkeypatch, capsys):
    seen = {}
    import vfmtok.cli.export as ex

    monkeypatch.setattr(ex, "run", lambda args: seen.setdefault("n", torch.get_num_threads()) and 0)
    before = torch.get_num_threads()
    assert main(["export", "--gpt", "g", "--out", "x", "--threads", "1"]) == 0
    assert seen["n"] == 1 and torch.get_num_threads() == before


@pytest.mark.parametrize("bad", ["0", "-2", "two", "autox"])
def test_bad_thread_counts_are_refused(bad, capsys):
    assert main(["export", "--gpt", "g", "--threads", bad]) == 2  # the CLI turns argparse errors into one line
    err = capsys.readouterr().err
    assert "--threads" in err and len(err.strip().splitlines()) == 1, err


def test_explicit_counts_beat_the_load_heuristic_and_ranks_split_the_cores(monkeypatch):
    for name in (threads.ENV_THREADS, "OMP_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert threads.default_threads() == 3  # (8 - 2) free cores shared by two ranks
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what torchrun sets: the count must not follow the momentary load
    assert threads.default_threads() == 1
    monkeypatch.setenv(threads.ENV_THREADS, "4")
    assert threads.default_threads() == 4
