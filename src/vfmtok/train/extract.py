"""`vfmtok extract-codes`: tokenize a dataset (centre crop + horizontal flip, or ten crops) into a code shard set."""

from __future__ import annotations

import os
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
