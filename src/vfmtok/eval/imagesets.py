"""Image sets for evaluation as uint8 (H,W,3): a dataset ('sample', a class-folder tree, a zip), a flat folder
of samples, or an ADM-style .npz (`arr_0`, uint8 NHWC)."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from vfmtok.data.imagefolder import IMAGE_EXTS, ImageFolderDataset, center_crop_resize, load_rgb
from vfmtok.data.sources import resolve_dataset
from vfmtok.utils.errors import VFMTokError, require


@dataclass
class ImageSet:
    """Random-access images; `read(i)` gives uint8 (H,W,3) at `resolution` (native size when None)."""

    description: dict
    resolution: int | None
    labels: list[int] | None = None
    class_names: list[str] | None = None
    _n: int = 0
    _read: object = field(default=None, repr=False)

    def __len__(self) -> int:
        return self._n

    def read(self, i: int) -> np.ndarray:
        """The i-th image, uint8 (H,W,3)."""
        return self._read(i)


def _fit(img: Image.Image, resolution: int | None) -> np.ndarray:
    if resolution is not None and img.size != (resolution, resolution):
        img = center_crop_resize(img, resolution)
    return np.asarray(img, dtype=np.uint8)


def load_npz_images(path: Path) -> np.ndarray:
    """`arr_0` of an .npz as uint8 (N,H,W,3), with one-line errors for the usual mistakes."""
    if not Path(path).is_file():  # np.load would wait forever on a FIFO
        raise VFMTokError(f"{path} is not a regular file" if Path(path).exists() else f"samples file not found: {path}")
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise VFMTokError(f"cannot read {path} as .npz: {e}") from None
    with z:
        require("arr_0" in z.files, f"{path} has no 'arr_0' array (keys: {', '.join(z.files) or 'none'}); "
                                    "expected samples as arr_0 uint8 (N,H,W,3)")
        arr = z["arr_0"]
    require(arr.dtype == np.uint8, f"{path}: arr_0 must be uint8 images, got dtype {arr.dtype}")
    require(arr.ndim == 4 and arr.shape[-1] == 3 and len(arr) > 0,
            f"{path}: arr_0 must have shape (N,H,W,3) with N > 0, got {arr.shape}")
    return arr


def _npz_set(path: Path, resolution: int | None, parts: list[Path] | None = None) -> ImageSet:
    # parts: the rank_RRR/samples.npz files of a `torchrun ... vfmtok sample` run, read as one set.
    arr = np.concatenate([load_npz_images(x) for x in parts]) if parts else load_npz_images(path)

    def read(i: int) -> np.ndarray:
        a = arr[i]
        if resolution is None or a.shape[:2] == (resolution, resolution):
            return a
        return _fit(Image.fromarray(a), resolution)

    return ImageSet({"source": str(path), "format": "npz"}, resolution or arr.shape[1], _n=len(arr), _read=read)


def _flat_folder(path: Path, resolution: int | None) -> ImageSet:
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    require(len(files) > 0, f"no images found in {path} (looked for {'/'.join(IMAGE_EXTS)} files)")
    if resolution is None:  # samples of one run share a size: take the first image's
        with Image.open(files[0]) as im:
            require(im.size[0] == im.size[1], f"{files[0]} is not square ({im.size}); give --image-size")
            resolution = im.size[0]
    return ImageSet({"source": str(path), "format": "folder"}, resolution, _n=len(files),
                    _read=lambda i: _fit(load_rgb(files[i]), resolution))


def _dataset_set(spec: str, resolution: int, split: str | None) -> ImageSet:
    ds = ImageFolderDataset(resolve_dataset(spec), resolution, split=split, train=False)
    labels = [ds.class_to_idx[c] for _, c in ds.items]
    location = f"{ds.src.root}!{ds.src.prefix}" if ds.src.zip_path is not None else str(ds.src.root)
    return ImageSet({"source": str(spec), "path": str(ds.path), "split": split, "format": "imagefolder", "location": location},
                    resolution, labels=labels, class_names=ds.class_names, _n=len(ds),
                    _read=lambda i: _fit(ds.read(i), resolution))


def open_image_set(spec: str | Path, resolution: int | None, split: str | None = None) -> ImageSet:
    """'sample' | 'imagenette' | 'cifar10' | dataset zip/folder (class sub-folders) | flat folder | .npz.

    A folder written by `vfmtok sample` (holding samples.npz, or rank_*/samples.npz under torchrun) is read through
    its .npz files. With resolution None
    (samples at their own size) a folder is read as a flat list of images, the first one fixing the size.
    """
    s = str(spec)
    p = Path(s)
    if s.lower().endswith(".npz"):
        require(p.is_file(), f"samples file not found: {p}")
        return _npz_set(p, resolution)
    if s not in ("sample", "imagenette", "cifar10"):
        require(p.exists(), f"image folder not found: {p}")
    if p.is_dir() and (p / "samples.npz").is_file():
        return _npz_set(p / "samples.npz", resolution)
    ranks = sorted(p.glob("rank_*/samples.npz")) if p.is_dir() else []
    if ranks:
        return _npz_set(p, resolution, ranks)
    if p.is_dir() and (resolution is None or not any(c.is_dir() for c in p.iterdir())):
        return _flat_folder(p, resolution)  # samples, with or without sub-folders
    require(resolution is not None, f"give --image-size to read the dataset {s}")
    try:
        return _dataset_set(s, resolution, split)
    except VFMTokError as e:
        if p.is_dir() and "no images found" in str(e):
            return _flat_folder(p, resolution)  # nested folders, but not one-level class folders
        raise


def subset_indices(n_total: int, limit: int | None, seed: int) -> np.ndarray:
    """All indices, or a seeded random subset of `limit` of them (sorted, so reading stays sequential)."""
    if limit is None or limit >= n_total:
        return np.arange(n_total)
    require(limit > 0, f"--num-images must be positive, got {limit}")
    return np.sort(np.random.default_rng(seed).choice(n_total, size=limit, replace=False))


def iter_batches(images: ImageSet, indices: np.ndarray, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Yield (uint8 (B,H,W,3), labels (B,) or None) over `indices`."""
    for s in range(0, len(indices), batch_size):
        idx = indices[s:s + batch_size]
        batch = torch.from_numpy(np.stack([images.read(int(i)) for i in idx]))
        labels = torch.tensor([images.labels[int(i)] for i in idx]) if images.labels is not None else None
        yield batch, labels
