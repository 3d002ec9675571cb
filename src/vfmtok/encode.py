"""Images -> token ids (.npz) and images -> reconstruction grid (.png): `vfmtok encode` / `vfmtok reconstruct`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vfmtok.data.imagefolder import ImageFolderDataset, center_crop_resize, load_rgb, to_tensor
from vfmtok.data.sources import resolve_dataset
from vfmtok.eval.image_metrics import psnr, uint8_to_unit
from vfmtok.tokenizer.api import VFMTokenizer
from vfmtok.utils.device import resolve_device
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.images import save_pairs_grid, to_uint8
from vfmtok.utils.io import save_npz


@dataclass
class EncodeConfig:
    """Which images go through which tokenizer, and where the result goes."""

    tokenizer: str | Path
    out: str | Path
    images: list[str] = field(default_factory=list)  # image files (or `data`)
    data: str | None = None  # dataset name, folder or zip, instead of image files
    split: str = "val"
    limit: int | None = None  # at most this many images of `data`
    no_resize: bool = False  # refuse images of another size instead of centre-cropping
    batch_size: int = 32
    device: str = "auto"


def _load_images(config: EncodeConfig, size: int) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    if config.images:
        tensors = []
        for f in config.images:
            if not Path(f).is_file():
                raise VFMTokError(f"image not found: {f}")
            img = load_rgb(f)
            if config.no_resize and img.size != (size, size):
                raise VFMTokError(f"{f} is {img.size[0]}x{img.size[1]}, this tokenizer takes {size}x{size} images")
            tensors.append(to_tensor(center_crop_resize(img, size)))
        return torch.stack(tensors), np.full(len(tensors), -1), [str(f) for f in config.images]
    if not config.data:
        raise VFMTokError("give image files or --data")
    ds = ImageFolderDataset(resolve_dataset(config.data), size, split=config.split)
    n = len(ds) if config.limit is None else min(config.limit, len(ds))
    items = [ds[i] for i in tqdm(range(n), desc="load", disable=None)]
    return torch.stack([x for x, _ in items]), np.array([y for _, y in items]), [m for m, _ in ds.items[:n]]


def _encoded(config: EncodeConfig) -> tuple[VFMTokenizer, torch.Tensor, torch.Tensor, np.ndarray, list[str]]:
    tok = VFMTokenizer.from_pretrained(config.tokenizer, device=resolve_device(config.device))
    images, labels, names = _load_images(config, tok.image_size)
    b = config.batch_size
    ids = torch.cat([tok.encode(images[i:i + b])
                     for i in tqdm(range(0, len(images), b), desc="encode", disable=None)]).cpu()
    return tok, images, ids, labels, names


def encode_images(config: EncodeConfig) -> dict[str, Any]:
    """Write the images' ids (+ labels, file names, grid, codebook size, tokenizer hash) to `out` (.npz)."""
    tok, _, ids, labels, names = _encoded(config)
    out = Path(config.out)
    path = save_npz(out if out.suffix == ".npz" else out.with_suffix(".npz"), ids=ids.numpy(), labels=labels,
                    files=np.array(names), token_grid=np.array(tok.token_grid), codebook_size=tok.codebook_size,
                    tokenizer_hash=tok.checkpoint_hash)
    return {"path": path, "ids": ids, "num_images": len(names)}


def reconstruct_images(config: EncodeConfig) -> dict[str, Any]:
    """Write an original | reconstruction grid to `out` (.png); the mean PSNR as eval-tokenizer scores it."""
    tok, images, ids, _, _ = _encoded(config)
    b = config.batch_size
    recon = torch.cat([tok.decode(ids[i:i + b]) for i in range(0, len(ids), b)])
    save_pairs_grid(Path(config.out), images, recon)
    # both quantised to uint8, PSNR per image on [0,1], then averaged
    mean_psnr = float(psnr(uint8_to_unit(to_uint8(images)), uint8_to_unit(to_uint8(recon))).mean())
    return {"path": Path(config.out), "num_images": len(images), "mean_psnr": mean_psnr}
