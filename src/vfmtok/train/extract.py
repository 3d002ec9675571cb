"""`vfmtok extract-codes`: tokenize a dataset (centre crop + horizontal flip, or ten crops) into a code shard set."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vfmtok.data.codes import CodeWriter
from vfmtok.data.imagefolder import ImageFolderDataset, make_views, to_tensor
from vfmtok.generator.pairing import tokenizer_facts
from vfmtok.train.common import autocast
from vfmtok.utils.errors import VFMTokError


class ViewDataset(torch.utils.data.Dataset):
    """Items (views (V,3,H,W) in [-1,1], label) of an ImageFolderDataset, from index `start` on."""

    def __init__(self, ds: ImageFolderDataset, size: int, ten_crop: bool, crop_range: float, start: int = 0):
        self.ds, self.size, self.ten_crop, self.crop_range, self.start = ds, size, ten_crop, crop_range, start

    def __len__(self) -> int:
        return len(self.ds) - self.start

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = self.start + i
        views = make_views(self.ds.read(j), self.size, self.ten_crop, self.crop_range)
        return torch.stack([to_tensor(v) for v in views]), self.ds.class_to_idx[self.ds.items[j][1]]


@torch.no_grad()
def extract_codes(tokenizer: Any, dataset: ImageFolderDataset, out: str | os.PathLike, ten_crop: bool = False,
                  crop_range: float = 1.0, batch_size: int = 32, num_workers: int = 0, shard_size: int = 100_000,
                  source: dict[str, Any] | None = None, precision: str = "fp32", topk: int = 1) -> Path:
    """Encode every image's views with `tokenizer` into `out` (resumes a partial run); returns `out`.

    topk > 1 also stores the 2nd..k-th nearest-code sequence of every crop as extra views ('center@2', ...).
    """
    if batch_size < 1 or crop_range < 1.0 or topk < 1:
        raise VFMTokError("need batch_size >= 1, crop_range >= 1.0 and topk >= 1")
    crops = 10 if ten_crop else 2
    num_views = crops * topk
    views = (["center", "center-flip"] if not ten_crop else
             [f"{c}{f}" for c in ("center", "top-left", "top-right", "bottom-left", "bottom-right") for f in ("", "-flip")])
    views = [v if j == 0 else f"{v}@{j + 1}" for j in range(topk) for v in views]
    header = {"tokenizer": tokenizer_facts(tokenizer), "class_names": dataset.class_names,
              "num_classes": len(dataset.classes), "views": views,
              "source": {**(source or {}), "ten_crop": ten_crop, "crop_range": crop_range}}
    writer = CodeWriter(out, header, len(dataset), num_views, shard_size)
    if writer.done >= len(dataset):
        return Path(out)
    loader = torch.utils.data.DataLoader(ViewDataset(dataset, tokenizer.image_size, ten_crop, crop_range, writer.done),
                                         batch_size=batch_size, shuffle=False, num_workers=num_workers)
    try:
        _extract(writer, loader, tokenizer, len(dataset), crops, topk, num_views, precision)
    except Exception:
        if writer.fresh:  # a bad image (or a tokenizer error) stops a new extraction: no partial codes folder
            writer.remove()
        raise
    return Path(out)


def _extract(writer: CodeWriter, loader, tokenizer: Any, n: int, crops: int, topk: int, num_views: int,
             precision: str) -> None:
    device = torch.device(getattr(tokenizer, "device", "cpu"))
    dtype = np.uint16 if writer.index["dtype"] == "uint16" else np.int32
    with tqdm(total=n, initial=writer.done, desc="extracting", unit="img", disable=None) as bar:
        for images, labels in loader:
            B = images.shape[0]
            with autocast(device, precision):
                flat = images.flatten(0, 1).to(device)
                ids = tokenizer.encode(flat) if topk == 1 else tokenizer.encode_topk(flat, topk)
            # (B * crops[, k], N) -> (B, k * crops, N), k-major: the nearest-code views first
            ids = ids.reshape(B, crops, topk, -1).transpose(1, 2).reshape(B, num_views, -1).cpu().numpy()
            if ids.shape[-1] != tokenizer.num_tokens or ids.min() < 0 or ids.max() >= tokenizer.codebook_size:
                raise VFMTokError(f"tokenizer returned ids of shape {ids.shape} outside its codebook/num_tokens")
            writer.append(ids.astype(dtype), labels.numpy())
            bar.update(B)


@dataclass
class ExtractConfig:
    """What `extract_dataset` tokenizes: `data`/`split` through `tokenizer`, into the codes folder `out`."""

    tokenizer: str | Path
    out: str | Path
    data: str = "sample"
    split: str = "train"
    ten_crop: bool = False  # 10 views per image (5 crops + flips) instead of 2
    crop_range: float | None = None  # crop from a crop_range*size square (None: 1.1 with ten_crop, else 1.0)
    limit_per_class: int | None = None
    batch_size: int = 32
    num_workers: int = 0
    topk: int = 1  # also store the 2nd..k-th nearest code ids as extra views
    shard_size: int = 100_000
    device: str = "auto"
    precision: str = "fp32"


def extract_dataset(config: ExtractConfig) -> dict[str, Any]:
    """Load the tokenizer and dataset of `config` and run `extract_codes`; the folder, image and view counts."""
    from vfmtok.data.sources import resolve_dataset
    from vfmtok.tokenizer.api import load_tokenizer
    from vfmtok.utils.device import resolve_device

    tok = load_tokenizer(config.tokenizer, device=resolve_device(config.device))
    path = resolve_dataset(config.data)
    ds = ImageFolderDataset(path, tok.image_size, split=config.split, limit_per_class=config.limit_per_class)
    crop_range = config.crop_range if config.crop_range is not None else (1.1 if config.ten_crop else 1.0)
    source = {"data": str(config.data), "path": str(path), "split": config.split,
              "limit_per_class": config.limit_per_class}
    out = extract_codes(tok, ds, config.out, config.ten_crop, crop_range, config.batch_size, config.num_workers,
                        config.shard_size, source, config.precision, config.topk)
    return {"out": out, "num_images": len(ds), "views": (10 if config.ten_crop else 2) * config.topk}
