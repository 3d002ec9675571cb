"""Process-group setup shared by the trainers and the samplers: torchrun env vars -> rank, device, backend."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from vfmtok.utils.device import resolve_device

_OWN_GROUP = False  # whether setup_distributed started a process group in this process (see exit_code)


@dataclass
class DistInfo:
    """Where this process sits in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str = "auto") -> DistInfo:
    """Initialise DDP from torchrun's env vars (gloo on CPU, nccl on CUDA); single process otherwise."""
    global _OWN_GROUP
    dev = resolve_device(device)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
        if dev.type == "cuda":  # one GPU per process: the local rank picks it
            enable_tf32()
            torch.cuda.set_device(local)
            dev = torch.device("cuda", local)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
            _OWN_GROUP = True
        return DistInfo(rank, world, local, dev)
    if dev.type == "cuda":
        enable_tf32()
    return DistInfo(device=dev)


def cleanup_distributed() -> None:
    """Wait for every rank, then tear down the process group if one was created.

    The barrier makes the last collective finish on all ranks before any rank tears down. The process group's
    threads may still outlive this call: a DistributedDataParallel wrapper keeps the gloo group alive (its worker
    and transport threads stay up after destroy_process_group), so the process must end with `exit_code`."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def exit_code(rc: int) -> int:
    """End a process that started a process group (a torchrun worker): flush, then `os._exit(rc)`; else return rc.

    After a DDP run the gloo process group's worker and transport threads are still alive (see
    cleanup_distributed), so an ordinary exit runs interpreter finalisation and C++ static destructors beside
    them; a rank aborted there about one exit in six on a loaded machine (SIGABRT, "terminate called without an
    active exception": a thread unwound while the interpreter was going away). `os._exit` ends the process with
    no finalisation to race; every file is closed and the ranks have passed the last barrier by then."""
    if not _OWN_GROUP:
        return rc
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(rc)


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (no-op in a single process)."""
    if dist.is_initialized():
        x = x.clone()
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return x


def enable_tf32() -> None:
    """TF32 matmuls/convolutions on CUDA: fp32 regions (losses, norms, the quantiser) then run on tensor cores too."""
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
