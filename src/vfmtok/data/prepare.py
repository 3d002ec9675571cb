"""`vfmtok prepare-data`: write an ImageFolder / zip (or the official code's LMDB) as shuffled webdataset-style tar shards.

Each shard is written under a temporary name and renamed when complete, so an interrupted run resumes by writing
only the shards that are missing; `index.json` (samples per shard, class names) is written last.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import tarfile
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm import tqdm

from vfmtok.data.imagefolder import ImageFolderDataset, check_image, load_rgb
from vfmtok.data.shards import INDEX_FORMAT, INDEX_NAME, scan_shard
from vfmtok.data.sources import resolve_dataset
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.io import atomic_path, read_json, write_json

PLAN_NAME = "prepare.json"
_KEEP_AS_IS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png"}


class _ImageFolderSource:
    """Items of an ImageFolder/zip (its `split` sub-folder when it has one): bytes as stored, extension, label."""

    def __init__(self, spec: str, split: str):
        self.ds = ImageFolderDataset(resolve_dataset(spec), 8, split=split)
        self.classes = self.ds.classes
        self.parallel_ok = True

    def __len__(self) -> int:
        return len(self.ds)

    def get(self, i: int) -> tuple[bytes, str, int, str]:
        member, cls = self.ds.items[i]
        return self.ds.read_bytes(i), Path(member).suffix.lower(), self.ds.class_to_idx[cls], self.ds.describe(i)


def _source(spec: str, split: str) -> Any:
    """The right reader for SRC: the official code's LMDB layout, or an ImageFolder / zip."""
    p = Path(spec)
    if p.is_dir() and (p / "data.mdb").is_file():
        from vfmtok.data.lmdb_source import LmdbSource

        return LmdbSource(p)
    return _ImageFolderSource(spec, split)


def _encode(data: bytes, ext: str, resize: int | None, quality: int, name: str) -> tuple[bytes, str]:
    """Bytes as stored when possible (once they are known to decode); otherwise (resize, or another format) RGB
    re-encoded as JPEG. `name`: the image's file, for errors."""
    if resize is None and ext in _KEEP_AS_IS:
        check_image(data, name)  # a shard must not carry an image that training cannot read
        return data, _KEEP_AS_IS[ext]
    img = load_rgb(data, name)
    if resize is not None and min(img.size) > resize:
        while min(img.size) >= 2 * resize:
            img = img.resize(tuple(x // 2 for x in img.size), resample=Image.BOX)
        scale = resize / min(img.size)
        img = img.resize(tuple(max(1, round(x * scale)) for x in img.size), resample=Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue(), "jpg"


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed mtime: the same input gives the same bytes
    tf.addfile(info, io.BytesIO(data))


_JOB: dict[str, Any] = {}


def _write_shard(i: int) -> int:
    """Write shard i of the plan in _JOB atomically; returns its sample count."""
    src, order, size, out = _JOB["src"], _JOB["order"], _JOB["shard_size"], _JOB["out"]
    ids = order[i * size:(i + 1) * size]
    with atomic_path(out / f"shard-{i:06d}.tar") as tmp:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tf:
            for j in ids:
                data, ext, label, name = src.get(j)
                data, ext = _encode(data, ext, _JOB["resize"], _JOB["quality"], name)
                key = f"{j:09d}"
                _add(tf, f"{key}.{ext}", data)
                _add(tf, f"{key}.cls", str(label).encode())
    return len(ids)


def prepare_shards(src: str, out: str | Path, shard_size: int = 1000, split: str = "train", resize: int | None = None,
                   quality: int = 95, seed: int = 0, workers: int = 0) -> Path:
    """Shuffle SRC's samples (seeded) into shards of `shard_size`; resumes a partial run of the same plan."""
    if shard_size < 1 or (resize is not None and resize < 8) or not 1 <= quality <= 100 or seed < 0 or workers < 0:
        raise VFMTokError(f"need --shard-size >= 1, --resize >= 8, 1 <= --quality <= 100, --seed >= 0 and --workers >= 0"
                          f" (got {shard_size}, {resize}, {quality}, {seed}, {workers})")
    out = Path(out)
    source = _source(src, split)
    n = len(source)
    plan = {"source": str(Path(src).resolve()) if Path(src).exists() else src, "split": split, "samples": n,
            "classes": source.classes, "shard_size": shard_size, "resize": resize, "quality": quality, "seed": seed}
    fresh = not (out / PLAN_NAME).is_file()
    if not fresh:
        if read_json(out / PLAN_NAME) != plan:
            raise VFMTokError(f"{out} holds shards of another prepare-data plan ({PLAN_NAME} differs); choose another --out")
    else:
        write_json(out / PLAN_NAME, plan)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()  # shards mix all classes
    n_shards = (n + shard_size - 1) // shard_size
    todo = [i for i in range(n_shards) if not (out / f"shard-{i:06d}.tar").is_file()]
    _JOB.update(src=source, order=order, shard_size=shard_size, out=out, resize=resize, quality=quality)
    bar = tqdm(total=n, initial=n - sum(len(order[i * shard_size:(i + 1) * shard_size]) for i in todo),
               desc="prepare-data", unit="img", dynamic_ncols=True, disable=None)
    try:
        if workers > 0 and len(todo) > 1 and source.parallel_ok:
            with mp.get_context("fork").Pool(workers) as pool:
                for k in pool.imap_unordered(_write_shard, todo):
                    bar.update(k)
        else:
            for i in todo:
                bar.update(_write_shard(i))
    except Exception:
        if fresh:  # a bad image (or a full disk) stops a new run: no partial shard set is left to mistake for data
            for name in [PLAN_NAME] + [f"shard-{i:06d}.tar" for i in range(n_shards)]:
                (out / name).unlink(missing_ok=True)
        raise
    finally:
        bar.close()
        _JOB.clear()
    classes = source.classes
    if classes is None:  # label numbers only (LMDB): as many classes as the largest label seen says
        top = max((m.label for i in range(n_shards) for m in scan_shard(out / f"shard-{i:06d}.tar")), default=-1)
        classes = [str(i) for i in range(top + 1)]
    shards = [{"name": f"shard-{i:06d}.tar", "count": len(order[i * shard_size:(i + 1) * shard_size])} for i in range(n_shards)]
    write_json(out / INDEX_NAME, {"format": INDEX_FORMAT, "classes": list(classes), "samples": n, "shards": shards,
                                  "resize": resize, "seed": seed})
    return out
