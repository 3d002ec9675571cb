"""Count the operations that make the host wait for the device (`.item()`, `float(t)`, `bool(t)`, `nonzero`, ...).

On a GPU each of them stalls the CPU until the queued kernels finish, so a training or decoding step free of them
keeps the device busy. A CPU run cannot time that, but it runs the same aten operations, so counting them here
proves the property for the GPU.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# What `.item()`, `float()`, `int()`, `bool()` of a tensor dispatch to, and ops whose output shape (or a Python
# value) depends on tensor data: all read the device.
SYNC_OPS = frozenset({"aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten._unique2",
                      "aten.unique_dim", "aten.unique_consecutive", "aten.equal", "aten.is_nonzero"})


class HostSyncCounter(TorchDispatchMode):
    """`with HostSyncCounter() as c: ...` then `c.count` (total) and `c.ops` (per op name) of host-device syncs.

    `host_scalars`: tensors that live on the host even in a GPU run (the optimisers' step counters, see
    `host_step_counters`); reading them is no sync, so they are not counted. `Tensor.tolist()` does not go through
    the dispatcher and is not seen: keep it out of hot paths."""

    def __init__(self, host_scalars: tuple[torch.Tensor, ...] | list[torch.Tensor] = ()) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        # Hold the tensors: a freed tensor's id is reused by the next one allocated, which would then be exempt.
        self._host_tensors = list(host_scalars)
        self._host = {id(t) for t in self._host_tensors}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = f"aten.{func._schema.name.split('::')[-1]}"
        if name in SYNC_OPS and not (args and id(args[0]) in self._host):
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))

    @property
    def count(self) -> int:
        """Syncs seen so far."""
        return sum(self.ops.values())


def host_step_counters(*optimizers: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The `step` tensors of optimisers that keep them on the host (torch's Adam/AdamW unless fused or capturable:
    they stay CPU tensors beside CUDA parameters, so reading them never waits for the device). Call after a step."""
    return [st["step"] for opt in optimizers for st in opt.state.values()
            if isinstance(st.get("step"), torch.Tensor) and st["step"].device.type == "cpu"
            and not any(g.get("fused") or g.get("capturable") for g in opt.param_groups)]
