"""Pictures of a tokenizer + GPT pair (the README's figures, the demo report, `vfmtok serve`), and `vfmtok figures`.

`vfmtok figures --out docs/` draws from the bundled model: originals | reconstructions of validation images,
samples per class (no CFG), and the anchor queries' sampling regions over validation images.
"""

from __future__ import annotations


import numpy as np
import torch
from PIL import Image, ImageDraw

from vfmtok.utils.images import make_grid, to_uint8
from vfmtok.utils.visualize import draw_sampling_locations


def anchor_picks(gh: int, gw: int) -> list[int]:
    """Six spread-out anchor queries (corners, centre, one quarter in) of a gh x gw grid."""
    return sorted({0, gw - 1, (gh // 2) * gw + gw // 2, gh * gw - gw, gh * gw - 1, (gh // 4) * gw + gw // 4})


@torch.no_grad()
def sampling_regions(tok, image: torch.Tensor, scale: int = 4) -> np.ndarray | None:
    """Where six anchor queries of the last deformable layer sample, drawn over one (3,H,W) image; None for a VQGAN."""
    from vfmtok.tokenizer.layers import grid_centres

    model = tok.model
    if not hasattr(model, "sampling_locations"):
        return None
    gh, gw = tok.token_grid
    loc, w = model.sampling_locations(image[None])
    return draw_sampling_locations(to_uint8(image[None]).numpy()[0], loc[0], w[0], anchor_picks(gh, gw), grid_centres(gh, gw),
                                   scale=scale)


@torch.no_grad()
def reconstruction_rows(tok, images: torch.Tensor, scale: int = 1) -> np.ndarray:
    """One grid: originals on the top row, their reconstructions below."""
    rec = tok.reconstruct(images)
    both = np.concatenate([to_uint8(images).numpy(), to_uint8(rec).numpy()])
    return upscale(make_grid(both, ncol=len(images)), scale)


def upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement (keeps 64 px pixels visible)."""
    if scale == 1:
        return image
    h, w = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((w * scale, h * scale), Image.NEAREST))


def labelled_rows(rows: list[np.ndarray], names: list[str], label_width: int = 120) -> np.ndarray:
    """Stack equal-width image rows with a text label to the left of each."""
    out = []
    for row, name in zip(rows, names):
        lab = Image.new("RGB", (label_width, row.shape[0]), "white")
        ImageDraw.Draw(lab).text((4, row.shape[0] // 2 - 6), name[:18], fill="black")
        out.append(np.concatenate([np.asarray(lab), row], axis=1))
    return np.concatenate(out, axis=0)


def one_per_class(data: str, size: int, split: str = "val", per_class: int = 1, offset: int = 0) -> tuple[torch.Tensor, list[int]]:
    """The first `per_class` images of each class (after `offset`) as (N,3,H,W) in [-1,1], with labels."""
    from vfmtok.data.imagefolder import ImageFolderDataset
    from vfmtok.data.sources import resolve_dataset

    ds = ImageFolderDataset(resolve_dataset(data), size, split=split)
    seen: dict[int, int] = {}
    picks = []
    for i, (_, c) in enumerate(ds.items):
        k = ds.class_to_idx[c]
        seen[k] = seen.get(k, 0) + 1
        if offset < seen[k] <= offset + per_class:
            picks.append(i)
    xs = [ds[i] for i in picks]
    return torch.stack([x for x, _ in xs]), [y for _, y in xs]
