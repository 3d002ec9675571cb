"""Class labels -> ids (GPT) -> images (tokenizer), plus the outputs `vfmtok sample` writes (PNGs, ADM .npz)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from vfmtok.generator.generate import generate
from vfmtok.generator.pairing import check_tokenizer
from vfmtok.utils.classnames import normalise_class
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.images import make_grid, save_png, to_uint8
from vfmtok.utils.atomic import fsync_dir
from vfmtok.utils.io import save_npz, write_json


def parse_labels(specs: Sequence[str | int], class_names: Sequence[str] | None, num_classes: int) -> list[int]:
    """Class indices from indices or names ('golf ball'); clear error for anything outside the classes."""
    names = list(class_names or [])
    lookup = {normalise_class(n): i for i, n in enumerate(names)}  # a wnid and its common name both match
    out = []
    for s in specs:
        text = str(s).strip()
        if re.fullmatch(r"\d+", text):
            i = int(text)
        elif normalise_class(text) in lookup:
            i = lookup[normalise_class(text)]
        else:
            known = f"; known names: {', '.join(names)}" if names else " (this model has no class names; use indices)"
            raise VFMTokError(f"unknown class '{text}'{known}")
        if not 0 <= i < num_classes:
            raise VFMTokError(f"class {i} is outside the model's classes 0..{num_classes - 1}")
        out.append(i)
    return out


def seeded_generator(device: torch.device, seed: int) -> torch.Generator:
    """The random stream of one sampling run on `device`."""
    return torch.Generator(device=device).manual_seed(seed)


def check_labels(gpt: Any, labels: Any) -> torch.Tensor:
    """Labels as a CPU int64 tensor (N,), checked on the host (numpy: no device sync) against the model's classes."""
    if isinstance(labels, torch.Tensor) and labels.device.type != "cpu":
        labels = labels.cpu()
    arr = np.asarray(labels, dtype=np.int64).reshape(-1)
    bad = arr[(arr < 0) | (arr > gpt.null_class)]
    if bad.size:
        raise VFMTokError(f"label {int(bad[0])} is outside the model's classes 0..{gpt.null_class - 1} "
                          f"({gpt.null_class} = null class)")
    return torch.from_numpy(arr)


@torch.no_grad()
def image_batches(gpt: Any, tokenizer: Any, labels: Any, cfg_scale: float = 1.0, cfg_interval: int = -1,
                  temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0, batch_size: int = 32,
                  compile: bool | str = False, cfg_power: float | None = None, parallel: str = "none",
                  window: int = 16) -> Iterator[torch.Tensor]:
    """uint8 image batches (b, H, W, 3) (CPU tensors) from a GPT or RAR for class labels (N,), one per batch_size labels.

    compile is passed to `generate` (torch.compile of the whole decode step; the last batch is padded to batch_size),
    and so are parallel and window (speculative Jacobi decoding).
    """
    check_tokenizer(gpt, tokenizer)
    labels = check_labels(gpt, labels)
    gen = seeded_generator(gpt.head.weight.device, seed)
    for start in tqdm(range(0, len(labels), batch_size), desc="sampling", unit="batch", disable=None):
        batch = labels[start: start + batch_size]
        ids = generate(gpt, batch, cfg_scale, cfg_interval, temperature, top_k, top_p, generator=gen,
                       compile=compile, cfg_power=cfg_power, pad_to=batch_size, parallel=parallel,
                       window=window)  # pad_to: one compiled graph for every batch
        yield to_uint8(tokenizer.decode(ids))


def generate_images(gpt: Any, tokenizer: Any, labels: Any, cfg_scale: float = 1.0, cfg_interval: int = -1,
                    temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                    batch_size: int = 32, compile: bool | str = False,
                    cfg_power: float | None = None, parallel: str = "none", window: int = 16) -> np.ndarray:
    """uint8 images (N, H, W, 3) (`image_batches` on the host); the same seed and batch_size give the same images."""
    chunks = [b.cpu().numpy() for b in image_batches(gpt, tokenizer, labels, cfg_scale, cfg_interval, temperature, top_k,
                                                     top_p, seed, batch_size, compile, cfg_power,
                                                     parallel, window)]
    return np.concatenate(chunks) if chunks else np.zeros((0, tokenizer.image_size, tokenizer.image_size, 3), np.uint8)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-") or "class"


def save_samples(out: str | os.PathLike, images: np.ndarray, labels: Sequence[int], class_names: Sequence[str] | None,
                 ncol: int = 8, info: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write grid.png, images/NNNNNN_<class>.png and samples.npz (arr_0 uint8 NHWC, labels), atomically."""
    out = Path(out)
    names = list(class_names or [])
    for i, (img, lab) in enumerate(zip(images, labels)):
        tag = _slug(names[lab]) if lab < len(names) else str(lab)
        save_png(out / "images" / f"{i:06d}_{tag}.png", img, sync_dir=False)  # one folder fsync below, not one each
    if len(images):
        fsync_dir(out / "images")
    grid = save_png(out / "grid.png", make_grid(images, ncol=max(1, min(ncol, len(images)))))
    npz = out / "samples.npz"
    save_npz(npz, arr_0=images, labels=np.asarray(labels, dtype=np.int64))
    paths = {"grid": grid, "npz": npz, "images": out / "images"}
    if info is not None:
        write_json(out / "sample_info.json", info)
        paths["info"] = out / "sample_info.json"
    return paths
