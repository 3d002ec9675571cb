"""CPU thread counts that behave when several processes share the cores (`--threads N|auto`; default:
$VFMTOK_THREADS or $OMP_NUM_THREADS when set, else torch's own count; `auto` counts the free cores).

A torch process with one OpenMP thread per core, next to other busy processes, spends most of its time waiting at
barriers for threads the scheduler has parked; OpenMP waiting that sleeps instead of spinning, and no more threads
than cores are free (counting busy threads of equal or higher priority: niced background jobs hardly compete),
keep it near its share of the machine (benchmarks/under_load.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
import contextlib
import os
import time

ENV_THREADS = "VFMTOK_THREADS"  # same meaning as --threads, for scripts and subprocesses


AUTO = "auto"


def add_argument(p: argparse.ArgumentParser) -> None:
    """The shared --threads option (every command gets it from cli.build_parser)."""
    p.add_argument("--threads", type=thread_count, default=None, metavar="N|auto",
                   help=f"CPU threads for torch; 'auto': the cores not busy with other processes (default: "
                   f"${ENV_THREADS}, else $OMP_NUM_THREADS, else torch's count)")


def thread_count(text: str) -> int | str:
    """An argparse type: 'auto' or a whole number >= 1 (the shared `positive_int`)."""
    from vfmtok.cli.args import positive_int

    return AUTO if text.strip().lower() == AUTO else positive_int(text)


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _runnable_rivals(me: int, my_nice: int, proc: str = "/proc") -> int | None:
    """Runnable threads of other processes at this process's priority or higher (None without /proc)."""
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit() and int(p) != me]
    except OSError:
        return None
    n = 0
    for pid in pids:
        try:
            tids = os.listdir(f"{proc}/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"{proc}/{pid}/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # A nicer (lower-priority) thread takes almost no CPU from this one under CFS: only peers count.
            if fields[0] == "R" and int(fields[16]) <= my_nice:
                n += 1
    return n


def busy_elsewhere(samples: int = 3, interval: float = 0.02) -> int:
    """Threads other processes run right now at this process's priority or higher (median of a few looks)."""
    me, my_nice = os.getpid(), os.getpriority(os.PRIO_PROCESS, 0)
    counts = []
    for i in range(samples):
        c = _runnable_rivals(me, my_nice)
        if c is None:
            return 0
        counts.append(c)
        if i + 1 < samples:
            time.sleep(interval)
    counts.sort()
    return counts[len(counts) // 2]


def _env_count(name: str) -> int | None:
    text = os.environ.get(name, "").strip()
    return int(text) if text.isdigit() and int(text) >= 1 else None


def default_threads() -> int:
    """$VFMTOK_THREADS, else $OMP_NUM_THREADS, else this rank's share of the free cores (at least one).

    An explicit count wins over the load heuristic because float reductions depend on the thread count: a resumed
    run (or a second rank) that picked another count from a momentary load would drift from the original by
    rounding. torchrun sets OMP_NUM_THREADS for its workers, and ranks on one host split the free cores.
    """
    for name in (ENV_THREADS, "OMP_NUM_THREADS"):
        if (n := _env_count(name)) is not None:
            return n
    local_ranks = _env_count("LOCAL_WORLD_SIZE") or 1
    return max(1, (usable_cores() - busy_elsewhere()) // local_ranks)


def prepare_environment() -> None:
    """Before torch loads: OpenMP threads that sleep when idle, unless the user chose a wait policy."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def configure(threads: int | str | None = None) -> int:
    """Set torch's intra-op thread count: a number; 'auto' (or $VFMTOK_THREADS=auto): default_threads(), the only
    path that scans /proc; None: $VFMTOK_THREADS / $OMP_NUM_THREADS when set, else torch's count unchanged."""
    import torch

    if threads is None and os.environ.get(ENV_THREADS, "").strip().lower() == AUTO:
        threads = AUTO
    if threads == AUTO:
        n = default_threads()
    elif threads is not None:
        n = int(threads)
    else:
        n = next((c for c in map(_env_count, (ENV_THREADS, "OMP_NUM_THREADS")) if c is not None), torch.get_num_threads())
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


@contextlib.contextmanager
def using(threads: int | str | None = None) -> Iterator[int]:
    """configure() for the block, then the previous count again (in-process callers keep their setting)."""
    import torch

    before = torch.get_num_threads()
    n = configure(threads)
    try:
        yield n
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
