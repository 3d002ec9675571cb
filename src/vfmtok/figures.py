"""Pictures of a tokenizer + GPT pair (the README's figures, the demo report, `vfmtok serve`), and `vfmtok figures`.

`vfmtok figures --out docs/` draws from the bundled model: originals | reconstructions of validation images,
samples per class (no CFG), and the anchor queries' sampling regions over validation images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from vfmtok.utils.errors import require
from vfmtok.utils.images import make_grid, save_png, to_uint8
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


@dataclass
class FiguresConfig:
    """What `write_figures` draws from: an exported model folder (None: the bundled one) and validation images."""

    model: str | Path | None = None
    data: str = "imagenette"  # where validation images come from ('sample' works offline)
    split: str = "val"
    per_class: int = 4  # samples per class in samples.png
    anchor_tokenizer: str | Path | None = None  # for anchor_regions.png when the model's tokenizer has no anchors
    seed: int = 0
    out: str | Path = "docs"


def write_figures(config: FiguresConfig) -> list[Path]:
    """Write reconstructions.png, samples.png and (when a tokenizer has anchor queries) anchor_regions.png."""
    from vfmtok.generator.bundled import bundled_model_dir
    from vfmtok.generator.gpt import GPT
    from vfmtok.generator.sample import generate_images
    from vfmtok.tokenizer.api import load_tokenizer

    require(config.per_class >= 1, "--per-class must be >= 1")
    model = Path(config.model) if config.model else bundled_model_dir()
    require((model / "generator").is_dir() and (model / "tokenizer").is_dir(),
            f"{model} is not an exported model folder (generator/ and tokenizer/); see `vfmtok export`")
    torch.manual_seed(config.seed)
    tok = load_tokenizer(model / "tokenizer")
    gpt = GPT.from_pretrained(model / "generator")
    anchors = load_tokenizer(config.anchor_tokenizer) if config.anchor_tokenizer else tok  # before any file is written
    require(anchors.image_size == tok.image_size, "--anchor-tokenizer must work at the model's image size")
    out = Path(config.out)
    x, _ = one_per_class(config.data, tok.image_size, config.split)
    written = [save_png(out / "reconstructions.png", reconstruction_rows(tok, x, scale=2))]
    n_cls = gpt.config.num_classes
    labels = torch.arange(n_cls).repeat_interleave(config.per_class)
    temperature, top_k, top_p = gpt.sampling_args()  # what `vfmtok sample` draws with by default
    imgs = generate_images(gpt, tok, labels, cfg_scale=1.0, temperature=temperature, top_k=top_k, top_p=top_p,
                           seed=config.seed)
    rows = [upscale(make_grid(imgs[labels.numpy() == c], ncol=config.per_class), 2) for c in range(n_cls)]
    names = gpt.class_names or [str(c) for c in range(n_cls)]
    written.append(save_png(out / "samples.png", labelled_rows(rows, names)))
    pics = [sampling_regions(anchors, x[i]) for i in (0, 4, 8) if i < len(x)]
    if pics[0] is not None:
        written.append(save_png(out / "anchor_regions.png", make_grid(np.stack(pics), ncol=len(pics), pad=4)))
    return [Path(p) for p in written]
