"""CPU thread counts that behave when several processes share the cores (`--threads`, default: the free cores).

A torch process with one OpenMP thread per core, next to other busy processes, spends most of its time waiting at
barriers for threads the scheduler has parked; with as many threads as cores are free, and OpenMP waiting that
sleeps instead of spinning, it degrades in proportion to its share of the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Iterator

ENV_THREADS = "VFMTOK_THREADS"  # same meaning as --threads, for scripts and subprocesses


def add_argument(p: argparse.ArgumentParser) -> None:
    """The shared --threads option (every command gets it from cli.build_parser)."""
    p.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help=f"CPU threads for torch (default: ${ENV_THREADS}, else the cores not busy with other processes)")


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got '{text}'") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def busy_elsewhere(samples: int = 5, interval: float = 0.02) -> int:
    """Threads other processes are running right now (median of /proc/stat procs_running, minus this one)."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/stat") as f:
                line = next((ln for ln in f if ln.startswith("procs_running")), None)
        except OSError:
            return 0
        if line is None:
            return 0
        counts.append(int(line.split()[1]))
        if i + 1 < samples:
            time.sleep(interval)
    counts.sort()
    return max(0, counts[len(counts) // 2] - 1)


def default_threads() -> int:
    """$VFMTOK_THREADS, else the free cores (at least one)."""
    env = os.environ.get(ENV_THREADS, "").strip()
    if env.isdigit() and int(env) >= 1:
        return int(env)
    return max(1, usable_cores() - busy_elsewhere())


def prepare_environment() -> None:
    """Before torch loads: OpenMP threads that sleep when idle, unless the user chose a wait policy."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def configure(threads: int | None = None) -> int:
    """Set torch's intra-op thread count (given, else default_threads()); returns it."""
    import torch

    n = threads or default_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


@contextlib.contextmanager
def using(threads: int | None = None) -> Iterator[int]:
    """configure() for the block, then the previous count again (in-process callers keep their setting)."""
    import torch

    before = torch.get_num_threads()
    n = configure(threads)
    try:
        yield n
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
