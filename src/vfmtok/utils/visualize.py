"""Draw where VFMTok's anchor queries sample the encoder's feature levels."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from vfmtok.utils.report import PALETTE


def draw_sampling_locations(image: np.ndarray, locations: torch.Tensor, weights: torch.Tensor, queries: list[int],
                            anchors: torch.Tensor, scale: int = 4, top: int = 24) -> np.ndarray:
    """Overlay, for each chosen query, its anchor (cross) and its `top` highest-weight sampling points (dots, area ~ weight).

    image: uint8 (H,W,3); locations: (N,H,L,P,2) in [0,1] as (x,y); weights: (N,H,L,P); anchors: (N,2) in [0,1].
    """
    H, W, _ = image.shape
    img = Image.fromarray(image).resize((W * scale, H * scale), Image.NEAREST)
    # Dim the photo so the marks stand out.
    img = Image.blend(img, Image.new("RGB", img.size, (255, 255, 255)), 0.35)
    d = ImageDraw.Draw(img)
    S = W * scale
    for k, q in enumerate(queries):
        col = PALETTE[k % len(PALETTE)]
        loc, w = locations[q].reshape(-1, 2), weights[q].reshape(-1)
        order = w.argsort(descending=True)[:top]
        wmax = float(w[order[0]])
        for i in order.tolist():
            x, y = float(loc[i, 0]) * S, float(loc[i, 1]) * S
            r = 1.5 + 5.0 * (float(w[i]) / wmax) ** 0.5
            d.ellipse([x - r, y - r, x + r, y + r], fill=col, outline="black")
        ax, ay = float(anchors[q, 0]) * S, float(anchors[q, 1]) * S
        d.line([ax - 7, ay, ax + 7, ay], fill="black", width=3)
        d.line([ax, ay - 7, ax, ay + 7], fill="black", width=3)
        d.line([ax - 6, ay, ax + 6, ay], fill=col, width=1)
        d.line([ax, ay - 6, ax, ay + 6], fill=col, width=1)
    return np.asarray(img)
