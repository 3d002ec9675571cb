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


def test_busy_elsewhere_reads_the_run_queue():
    n = threads.busy_elsewhere(samples=3, interval=0.0)
    assert isinstance(n, int) and n >= 0


def test_threads_option_applies_during_the_command_only(monkeypatch, capsys):
    seen = {}
    import vfmtok.export as ex

    monkeypatch.setattr(ex, "run", lambda args: seen.setdefault("n", torch.get_num_threads()) and 0)
    before = torch.get_num_threads()
    assert main(["export", "--gpt", "g", "--out", "x", "--threads", "1"]) == 0
    assert seen["n"] == 1 and torch.get_num_threads() == before


@pytest.mark.parametrize("bad", ["0", "-2", "two"])
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
