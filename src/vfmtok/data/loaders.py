"""One rank's training batches from any dataset kind, epoch after epoch, restartable at any step.

Map-style sets (image folders, feature caches, codes) go through `ResumableSampler`; tar shards split themselves
(`ShardDataset`). Either way the batches a rank sees are a function of (seed, epoch, rank, world, batch size) only,
not of `num_workers` or of where a run was interrupted, which is what makes a resumed run bit-identical.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch

from vfmtok.data.shards import ShardDataset, is_shard_spec
from vfmtok.utils.errors import VFMTokError


class ResumableSampler(torch.utils.data.Sampler):
    """Seeded per-epoch permutation split across ranks (drop_last); can start an epoch at a sample offset."""

    def __init__(self, n: int, rank: int, world: int, seed: int):
        self.n, self.rank, self.world, self.seed = n, rank, world, seed
        self.epoch, self._skip = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip(self, k: int) -> None:
        """Drop the first k indices of the next epoch iterated."""
        self._skip = k

    def __len__(self) -> int:
        return self.n // self.world

    def __iter__(self) -> Iterator[int]:
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100003 + self.epoch))
        mine = perm[self.rank:: self.world][: len(self)].tolist()
        start, self._skip = self._skip, 0
        return iter(mine[start:])


def shard_folder(spec: str, split: str | None) -> str | None:
    """The shard spec to read for `spec` (its `split/` sub-folder when it has one), or None if it is not shards."""
    p = Path(spec)
    if split and p.is_dir() and is_shard_spec(p / split):
        return str(p / split)
    return spec if is_shard_spec(spec) else None


class EpochStream:
    """Batches of one rank: `from_step(s)` yields (epoch, batch) from global step s on, forever."""

    def __init__(self, dataset: Any, batch_size: int, rank: int = 0, world: int = 1, seed: int = 0, num_workers: int = 0):
        self.dataset = dataset
        gen = torch.Generator().manual_seed(seed)  # the loader draws its worker seeds here, not from the global RNG
        if isinstance(dataset, ShardDataset):
            if (dataset.batch_size, dataset.rank, dataset.world) != (batch_size, rank, world):
                raise VFMTokError("ShardDataset batch size / rank / world differ from the training loop's")
            self.sampler = None
            self.loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=num_workers, generator=gen)
            self.batches_per_epoch = dataset.batches_per_epoch
        else:
            self.sampler = ResumableSampler(len(dataset), rank, world, seed)
            self.loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=self.sampler, drop_last=True,
                                                      num_workers=num_workers, generator=gen)
            self.batches_per_epoch = len(dataset) // world // batch_size
        if self.batches_per_epoch < 1:
            n = getattr(dataset, "num_samples", None) or len(dataset)
            raise VFMTokError(f"{n} training samples is less than one global batch ({batch_size} x {world})")
        self.batch_size = batch_size

    def from_step(self, step: int) -> Iterator[tuple[int, Any]]:
        """(epoch, batch) from the batch global step `step` would read; one new DataLoader iterator per epoch."""
        epoch, k = divmod(step, self.batches_per_epoch)
        while True:
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            if self.sampler is not None:
                self.sampler.set_epoch(epoch)
                self.sampler.skip(k * self.batch_size)
            else:
                self.dataset.skip(k)
            for batch in self.loader:
                yield epoch, batch
            epoch, k = epoch + 1, 0
