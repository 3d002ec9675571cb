"""Pre-extracted token ids: a set of memory-mapped .npy shards plus a small JSON index (not one file per image).

Layout of a codes folder:
  index.json               format, tokenizer facts (hash, codebook size, num_tokens, grid), classes, progress
  codes_00000.npy ...      (n, views, num_tokens) uint16/int32 ids, views = [center, flip, ...]
  labels_00000.npy ...     (n,) int64 class labels
Extraction writes images in order and records `done` after each flushed chunk, so it can resume.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vfmtok.utils.atomic import atomic_path, preallocate
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.io import read_json, write_json

INDEX_NAME = "index.json"
FORMAT = "vfmtok-codes"
VERSION = 1


def read_index(folder: str | os.PathLike, require_complete: bool = True) -> dict[str, Any]:
    """Load and sanity-check index.json of a codes folder."""
    folder = Path(folder)
    if not (folder / INDEX_NAME).is_file():
        raise VFMTokError(f"{folder} is not a codes folder (no {INDEX_NAME}); create one with `vfmtok extract-codes`")
    index = read_json(folder / INDEX_NAME)
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise VFMTokError(f"{folder / INDEX_NAME} is not a vfmtok codes index")
    if index.get("version") != VERSION:
        raise VFMTokError(f"{folder / INDEX_NAME} has version {index.get('version')}, this vfmtok reads {VERSION}")
    if require_complete and index["done"] < index["num_images"]:
        raise VFMTokError(f"{folder}: extraction incomplete ({index['done']}/{index['num_images']} images); "
                          "rerun `vfmtok extract-codes` with the same arguments to resume")
    return index


def check_shards(folder: Path, index: dict[str, Any]) -> None:
    """One-line error unless every shard file the index lists is a readable .npy of the recorded length."""
    for s in index["shards"]:
        for key in ("codes", "labels"):
            path = folder / s[key]
            if not path.is_file():
                raise VFMTokError(f"{path} is missing (listed in {folder / INDEX_NAME})")
            try:
                n = len(np.load(path, mmap_mode="r"))
            except (OSError, ValueError, EOFError) as e:
                raise VFMTokError(f"{path} is not a readable .npy file ({str(e).splitlines()[0]})") from None
            if n != s["count"]:
                raise VFMTokError(f"{path} holds {n} rows, its index says {s['count']}; extract the codes again")


class CodeWriter:
    """Creates (or resumes) a shard set and appends (codes, labels) chunks in image order."""

    def __init__(self, folder: str | os.PathLike, header: dict[str, Any], num_images: int, num_views: int,
                 shard_size: int = 100_000):
        self.folder = Path(folder)
        tok = header["tokenizer"]
        dtype = "uint16" if tok["codebook_size"] <= 65536 else "int32"
        fresh = {"format": FORMAT, "version": VERSION, **header, "num_images": num_images, "num_views": num_views,
                 "dtype": dtype, "shard_size": shard_size, "done": 0,
                 "shards": [{"codes": f"codes_{i:05d}.npy", "labels": f"labels_{i:05d}.npy",
                             "count": min(shard_size, num_images - i * shard_size)}
                            for i in range(max(1, -(-num_images // shard_size)))]}
        old = read_index(self.folder, require_complete=False) if (self.folder / INDEX_NAME).is_file() else None
        if old is not None:
            want = {k: v for k, v in fresh.items() if k != "done"}
            same = {k: old.get(k) for k in want}
            if _jsonable(same) != _jsonable(want):
                diff = sorted(k for k in want if _jsonable(same[k]) != _jsonable(want[k]))
                raise VFMTokError(f"{self.folder} holds codes from a different extraction (differs in: {', '.join(diff)}); "
                                  "use another --out or delete it")
            self.index = old
        else:
            self.index = fresh
            try:  # preallocated; the index is written only once the files exist
                for s in fresh["shards"]:
                    _new_array(self.folder / s["codes"], dtype, (s["count"], num_views, tok["num_tokens"]))
                    _new_array(self.folder / s["labels"], np.int64, (s["count"],))
                write_json(self.folder / INDEX_NAME, self.index)
            except BaseException:
                self.remove()
                raise
        self.fresh = old is None

    def remove(self) -> None:
        """Delete the index and shard files (of an extraction that failed before it could be resumed)."""
        for name in [INDEX_NAME] + [s[k] for s in self.index["shards"] for k in ("codes", "labels")]:
            (self.folder / name).unlink(missing_ok=True)

    @property
    def done(self) -> int:
        return int(self.index["done"])

    def append(self, codes: np.ndarray, labels: np.ndarray) -> None:
        """Write codes (n, views, N) and labels (n,) after the last done image, flush, then advance `done`."""
        n, size = len(codes), self.index["shard_size"]
        if self.done + n > self.index["num_images"]:
            raise VFMTokError("more codes than images announced in the index")
        pos = 0
        while pos < n:
            i = self.done + pos
            shard, off = divmod(i, size)
            take = min(n - pos, size - off)
            s = self.index["shards"][shard]
            c = np.load(self.folder / s["codes"], mmap_mode="r+")
            lab = np.load(self.folder / s["labels"], mmap_mode="r+")
            c[off: off + take] = codes[pos: pos + take]
            lab[off: off + take] = labels[pos: pos + take]
            c.flush()
            lab.flush()
            del c, lab
            pos += take
        self.index["done"] = self.done + n
        write_json(self.folder / INDEX_NAME, self.index)


def _new_array(path: Path, dtype: Any, shape: tuple[int, ...]) -> None:
    """A zero-filled .npy file of `shape`, its blocks reserved, so writes through a memory map cannot fail later."""
    with atomic_path(path, needed=int(np.prod(shape)) * np.dtype(dtype).itemsize) as tmp:
        np.lib.format.open_memmap(tmp, "w+", dtype, shape).flush()  # header written, file sized (sparse)
        preallocate(tmp, tmp.stat().st_size)


def _jsonable(x: Any) -> Any:
    """Normalise tuples to lists so stored and fresh values compare equal."""
    return json.loads(json.dumps(x, default=str))


class CodeDataset(torch.utils.data.Dataset):
    """Items (ids LongTensor (num_tokens,), label) from a codes folder; a random view per item and epoch."""

    def __init__(self, folder: str | os.PathLike, seed: int = 0, random_view: bool = True):
        self.folder = Path(folder)
        self.index = read_index(self.folder)
        check_shards(self.folder, self.index)
        self.seed, self.random_view, self._epoch = seed, random_view, 0
        self._maps: list[tuple[np.ndarray, np.ndarray]] | None = None

    @property
    def tokenizer(self) -> dict[str, Any]:
        return self.index["tokenizer"]

    @property
    def class_names(self) -> list[str] | None:
        return self.index.get("class_names")

    @property
    def num_classes(self) -> int:
        return int(self.index["num_classes"])

    def set_epoch(self, epoch: int) -> None:
        """Change which view each item shows."""
        self._epoch = epoch

    def __len__(self) -> int:
        return int(self.index["num_images"])

    def _open(self) -> list[tuple[np.ndarray, np.ndarray]]:
        if self._maps is None:  # opened lazily so each DataLoader worker maps the files itself
            self._maps = [(np.load(self.folder / s["codes"], mmap_mode="r"), np.load(self.folder / s["labels"], mmap_mode="r"))
                          for s in self.index["shards"]]
        return self._maps

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        shard, off = divmod(int(i), self.index["shard_size"])
        codes, labels = self._open()[shard]
        v = random.Random(hash((self.seed, self._epoch, int(i)))).randrange(codes.shape[1]) if self.random_view else 0
        return torch.from_numpy(codes[off, v].astype(np.int64)), int(labels[off])

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_maps"] = None
        return state
