"""Webdataset-style tar shards (`KEY.jpg|png` + `KEY.cls` members), streamed with an exact split over ranks and workers.

A small reader on the standard library's `tarfile` rather than the `webdataset` package: the split below has to be
exact (every sample of an epoch once, equal batch counts on every rank, the same batches whatever `num_workers`) and
resumable at a batch, which webdataset's shard-level `split_by_node`/`split_by_worker` do not give; it also keeps the
dependency list short. Shards are read sequentially; only the members a worker decodes are read in full.

Epoch plan (a pure function of seed, epoch, world size and batch size):
  1. the shards are permuted with (seed, epoch); their samples concatenated form the global stream of N samples;
  2. rank r takes the contiguous slice [r*M, r*M + K*B) with M = N // world and K = M // B batches (the rest of the
     epoch, fewer than world*B samples, is dropped, a different tail every epoch);
  3. the rank's slice goes through a shuffle buffer seeded with (seed, epoch, rank), then is cut into K batches;
  4. DataLoader worker w of W decodes batches k0 + w, k0 + w + W, ... (k0: batches skipped on resume), which is the
     order in which the DataLoader hands worker results back, so the rank sees batches k0, k0+1, ... in order.
"""

from __future__ import annotations

import glob
import json
import random
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from PIL import Image

from vfmtok.data.imagefolder import center_crop_resize, class_display_name, load_rgb, random_crop_resize, to_tensor
from vfmtok.utils.errors import VFMTokError

INDEX_NAME = "index.json"
INDEX_FORMAT = "vfmtok-shards/1"
IMAGE_MEMBER_EXTS = ("jpg", "jpeg", "png", "webp")
LABEL_EXT = "cls"


def expand_braces(pattern: str) -> list[str]:
    """'a-{000..002}.tar' -> a-000.tar a-001.tar a-002.tar; '{x,y}' lists; several groups multiply out."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if m is None:
        return [pattern]
    body, head, tail = m.group(1), pattern[: m.start()], pattern[m.end():]
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = rng.group(1), rng.group(2)
        if int(hi) < int(lo):
            raise VFMTokError(f"shard pattern {pattern}: empty range {{{body}}}")
        width = len(lo) if lo.startswith("0") else 0
        parts = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    else:
        parts = body.split(",")
    return [s for p in parts for s in expand_braces(head + p + tail)]


def is_shard_spec(spec: str | Path) -> bool:
    """True for a brace/glob pattern or path of `.tar` files, or a folder holding `.tar` files (or a shard index)."""
    s = str(spec)
    if s.endswith(".tar") or ("{" in s and ".tar" in s):
        return True
    p = Path(s)
    return p.is_dir() and ((p / INDEX_NAME).is_file() or any(p.glob("*.tar")))


def list_shards(spec: str | Path) -> list[Path]:
    """The shard files of a spec (folder -> its sorted *.tar; pattern -> expanded, in order); all must exist."""
    s = str(spec)
    p = Path(s)
    if p.is_dir():
        paths = sorted(p.glob("*.tar"))
    elif "{" in s:
        paths = [Path(x) for x in expand_braces(s)]
    elif any(c in s for c in "*?["):
        paths = [Path(x) for x in sorted(glob.glob(s))]
    else:
        paths = [p]
    if not paths:
        raise VFMTokError(f"no .tar shards found for {s}")
    missing = [x for x in paths if not x.is_file()]
    if missing:
        raise VFMTokError(f"shard not found: {missing[0]} ({len(missing)} of {len(paths)} missing)")
    return paths


@dataclass
class Member:
    """One sample's image member inside a shard: where its bytes lie, and its label."""

    key: str
    offset: int
    size: int
    label: int


def _split_name(name: str) -> tuple[str, str]:
    """'dir/abc.seg.png' -> ('dir/abc', 'seg.png'): webdataset's key / extension rule (first dot of the basename)."""
    slash = name.rfind("/") + 1
    dot = name.find(".", slash)
    return (name, "") if dot < 0 else (name[:dot], name[dot + 1:].lower())


def scan_shard(path: Path) -> list[Member]:
    """Headers of a shard (data skipped, only the tiny label members read), grouped into samples in file order."""
    out: list[Member] = []
    cur_key, img, label = None, None, None

    def flush() -> None:
        if cur_key is None:
            return
        if img is None or label is None:
            raise VFMTokError(f"{path}: sample '{cur_key}' lacks a {'/'.join(IMAGE_MEMBER_EXTS)} or .{LABEL_EXT} member")
        out.append(Member(cur_key, img[0], img[1], label))

    try:
        with tarfile.open(path, mode="r:") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                key, ext = _split_name(m.name)
                if key != cur_key:
                    flush()
                    cur_key, img, label = key, None, None
                if ext in IMAGE_MEMBER_EXTS:
                    img = (m.offset_data, m.size)
                elif ext == LABEL_EXT:
                    raw = tf.extractfile(m).read().strip()
                    try:
                        label = int(raw)
                    except ValueError:
                        raise VFMTokError(f"{path}: {m.name} holds '{raw[:20]!r}', not an integer class") from None
            flush()
    except tarfile.TarError as e:
        raise VFMTokError(f"{path} is not a readable tar shard: {e}") from None
    return out


@dataclass
class ShardIndex:
    """Shard paths, samples per shard and class names (from index.json, or by scanning the shards once)."""

    paths: list[Path]
    counts: list[int]
    classes: list[str]

    @property
    def num_samples(self) -> int:
        return sum(self.counts)


def load_index(spec: str | Path) -> ShardIndex:
    """Read the shards' index.json (written by prepare-data) when there is one, else scan every shard's headers."""
    paths = list_shards(spec)
    idx_file = Path(spec) / INDEX_NAME if Path(spec).is_dir() else paths[0].parent / INDEX_NAME
    if idx_file.is_file():
        meta = json.loads(idx_file.read_text())
        if meta.get("format") != INDEX_FORMAT:
            raise VFMTokError(f"{idx_file}: unknown shard index format {meta.get('format')!r}")
        counts_by_name = {s["name"]: int(s["count"]) for s in meta["shards"]}
        if all(p.name in counts_by_name for p in paths):
            return ShardIndex(paths, [counts_by_name[p.name] for p in paths], list(meta["classes"]))
    members = [scan_shard(p) for p in paths]
    n_cls = 1 + max((m.label for ms in members for m in ms), default=-1)
    return ShardIndex(paths, [len(ms) for ms in members], [str(i) for i in range(n_cls)])


def rank_slice(counts: list[int], seed: int, epoch: int, rank: int, world: int, batch_size: int) -> list[tuple[int, int, int]]:
    """Segments (shard, first, stop) of the epoch's global stream that rank `rank` owns, in stream order."""
    order = torch.randperm(len(counts), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
    per_rank = sum(counts) // world
    take = (per_rank // batch_size) * batch_size
    lo, hi = rank * per_rank, rank * per_rank + take
    segs, pos = [], 0
    for s in order:
        a, b = max(lo, pos), min(hi, pos + counts[s])
        if a < b:
            segs.append((s, a - pos, b - pos))
        pos += counts[s]
    return segs


def shuffled(items: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Streaming shuffle: keep `size` items, emit a random one for each item read, then the rest in random order."""
    buf: list[Any] = []
    for x in items:
        if len(buf) < size:
            buf.append(x)
            continue
        j = rng.randrange(size)
        buf[j], x = x, buf[j]
        yield x
    rng.shuffle(buf)
    yield from buf


class ShardDataset(torch.utils.data.IterableDataset):
    """Batches (images (B,3,S,S) in [-1,1], labels (B,)) of one rank, from tar shards; use with DataLoader(batch_size=None)."""

    def __init__(self, spec: str | Path, image_size: int, batch_size: int, rank: int = 0, world: int = 1,
                 train: bool = True, seed: int = 0, shuffle_buffer: int = 2000, hflip: bool | None = None,
                 min_scale: float = 0.8, index: ShardIndex | None = None):
        self.spec = str(spec)
        self.index = index or load_index(spec)
        self.image_size, self.batch_size = int(image_size), int(batch_size)
        self.rank, self.world, self.train, self.seed = rank, world, train, seed
        self.shuffle_buffer = shuffle_buffer if train else 0
        self.hflip = train if hflip is None else hflip
        self.min_scale = min_scale
        self.classes = self.index.classes
        self.epoch, self._skip = 0, 0
        if self.batches_per_epoch < 1:
            raise VFMTokError(f"{self.spec}: {self.index.num_samples} samples is less than one global batch "
                              f"({batch_size} x {world})")

    @property
    def class_names(self) -> list[str]:
        """Readable class names, in label order."""
        return [class_display_name(c) for c in self.classes]

    @property
    def num_samples(self) -> int:
        return self.index.num_samples

    @property
    def batches_per_epoch(self) -> int:
        return self.index.num_samples // self.world // self.batch_size

    def __len__(self) -> int:
        return self.batches_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose plan the next iteration follows (a different epoch clears `skip`)."""
        if epoch != self.epoch:
            self._skip = 0
        self.epoch = epoch

    def skip(self, batches: int) -> None:
        """Iterations of the current epoch start at batch `batches` (mid-epoch resume); nothing skipped is decoded.

        State rather than a one-shot flag: DataLoader workers iterate copies, so a reset there would not reach here.
        """
        self._skip = batches

    def members(self) -> Iterator[tuple[int, Member]]:
        """(shard, member) of this rank's slice in shuffled order: headers only, no image bytes read."""
        def stream() -> Iterator[tuple[int, Member]]:
            for s, a, b in rank_slice(self.index.counts, self.seed, self.epoch, self.rank, self.world, self.batch_size):
                ms = scan_shard(self.index.paths[s])
                if len(ms) != self.index.counts[s]:
                    raise VFMTokError(f"{self.index.paths[s]} holds {len(ms)} samples, its index says {self.index.counts[s]}")
                for m in ms[a:b]:
                    yield s, m
        if not self.shuffle_buffer:
            return stream()
        return shuffled(stream(), self.shuffle_buffer, random.Random(f"{self.seed}/{self.epoch}/{self.rank}"))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        n_workers, wid = (info.num_workers, info.id) if info else (1, 0)
        start = self._skip
        batch: list[tuple[int, Member]] = []
        k = 0
        files: dict[int, Any] = {}
        try:
            for item in self.members():
                batch.append(item)
                if len(batch) < self.batch_size:
                    continue
                if k >= start and (k - start) % n_workers == wid:
                    yield self._decode(batch, files)
                batch, k = [], k + 1
        finally:
            for f in files.values():
                f.close()

    def _decode(self, batch: list[tuple[int, Member]], files: dict[int, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        imgs = []
        for s, m in batch:
            if s not in files:
                files[s] = open(self.index.paths[s], "rb")
            f = files[s]
            f.seek(m.offset)
            imgs.append(to_tensor(self.transform(load_rgb(f.read(m.size)), f"{self.index.paths[s].name}/{m.key}")))
        return torch.stack(imgs), torch.tensor([m.label for _, m in batch], dtype=torch.long)

    def transform(self, img: Image.Image, key: str) -> Image.Image:
        """Training: random crop + flip, seeded by (seed, epoch, sample key) so it is the same wherever it runs."""
        if not self.train:
            return center_crop_resize(img, self.image_size)
        rng = random.Random(f"{self.seed}/{self.epoch}/{key}")
        img = random_crop_resize(img, self.image_size, rng, self.min_scale)
        if self.hflip and rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return img

    def first_images(self, n: int) -> torch.Tensor:
        """The first n samples of the first shard, centre-cropped (for preview grids)."""
        ms = scan_shard(self.index.paths[0])[:n]
        with open(self.index.paths[0], "rb") as f:
            out = []
            for m in ms:
                f.seek(m.offset)
                out.append(to_tensor(center_crop_resize(load_rgb(f.read(m.size)), self.image_size)))
        return torch.stack(out)
