"""The demo's tour of a trained model (the bundled one by default): samples of every class, held-out
reconstructions with their PSNR, token ids and the anchor queries' sampling regions."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vfmtok.utils.errors import require
from vfmtok.utils.images import to_uint8


@dataclass
class Tour:
    """What the report shows of the model; arrays are uint8 HWC pictures."""

    model: Path
    class_names: list[str]
    samples: np.ndarray                  # (N, H, W, 3)
    sample_labels: np.ndarray            # (N,)
    sampling: dict                       # temperature / top_k / top_p / seconds
    reconstructions: np.ndarray          # originals (top) over reconstructions, one held-out image per class
    heldout_psnr: float                  # mean PSNR (dB) over every held-out image
    num_heldout: int
    token_examples: list[tuple[np.ndarray, list[list[int]]]] = field(default_factory=list)  # (image, id grid)
    regions: list[np.ndarray] = field(default_factory=list)
    token_grid: tuple[int, int] = (0, 0)


@torch.no_grad()
def heldout_psnr(tok, data: str, split: str = "val", batch_size: int = 50, device: str = "cpu") -> tuple[float, int]:
    """Mean PSNR (dB, images in [0, 1] after uint8 rounding) of the tokenizer's reconstructions of every `split` image."""
    from vfmtok.data.imagefolder import ImageFolderDataset
    from vfmtok.data.sources import resolve_dataset
    from vfmtok.eval.image_metrics import psnr

    ds = ImageFolderDataset(resolve_dataset(data), tok.image_size, split=split)
    require(len(ds) > 0, f"{data} has no {split} images to reconstruct")
    scores = []
    for i in range(0, len(ds), batch_size):
        x = torch.stack([ds[j][0] for j in range(i, min(i + batch_size, len(ds)))])
        rec = tok.reconstruct(x.to(device))
        a, b = (to_uint8(v).permute(0, 3, 1, 2).float() / 255 for v in (x, rec))
        scores.append(psnr(a, b))
    s = torch.cat([v.reshape(-1) for v in scores])
    return float(s.mean()), len(ds)


@torch.no_grad()
def tour_bundled_model(model: Path | None, data: Path | str, out: Path, per_class: int = 4,
                       device: str = "cpu", seed: int = 0) -> Tour:
    """Sample every class (into out/samples), reconstruct held-out `data` val images, tokenize three of them."""
    from vfmtok.generator.bundled import bundled_model_dir
    from vfmtok.figures import one_per_class, reconstruction_rows, sampling_regions, upscale
    from vfmtok.generator.sampling import SamplingConfig, sample_to_folder
    from vfmtok.tokenizer.api import load_tokenizer

    model = Path(model) if model else bundled_model_dir()
    require((model / "generator").is_dir() and (model / "tokenizer").is_dir(),
            f"{model} is not an exported model folder (generator/ and tokenizer/); see `vfmtok export`")
    t = time.time()
    written = sample_to_folder(out / "samples", model / "generator", model / "tokenizer", per_class=per_class,
                               config=SamplingConfig(seed=seed), device=device)
    seconds = time.time() - t
    with np.load(written["npz"], allow_pickle=False) as z:
        imgs, labels = z["arr_0"], z["labels"].astype(np.int64)
    info = json.loads(Path(written["info"]).read_text()) if "info" in written else {}

    tok = load_tokenizer(model / "tokenizer", device)
    x, _ = one_per_class(str(data), tok.image_size, "val")
    x = x.to(device)
    psnr_db, n = heldout_psnr(tok, str(data), device=device)
    ids = tok.encode(x[:3])
    gh, gw = tok.token_grid
    examples = [(upscale(to_uint8(x[i:i + 1]).cpu().numpy()[0], 3), ids[i].reshape(gh, gw).tolist())
                for i in range(len(ids))]
    regions = [r for r in (sampling_regions(tok, x[i]) for i in (0, 4, 8) if i < len(x)) if r is not None]
    return Tour(model=model, class_names=list(tok.class_names or [str(c) for c in range(int(labels.max()) + 1)]),
                samples=imgs, sample_labels=labels,
                sampling={k: info.get(k) for k in ("temperature", "top_k", "top_p")} | {"seconds": round(seconds, 1)},
                reconstructions=reconstruction_rows(tok, x, scale=2), heldout_psnr=psnr_db, num_heldout=n,
                token_examples=examples, regions=regions, token_grid=(gh, gw))
