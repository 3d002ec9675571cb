"""Improved precision and recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020) on features.

Each set's manifold is the union of balls around its samples, the radius of a ball being the distance to the
k-th nearest neighbour within the same set (k = 3, as in the ADM evaluator). Precision = share of generated
samples inside the real manifold; recall = share of real samples inside the generated manifold. Distances are
computed in row blocks, so memory stays O(block * N).
"""

from __future__ import annotations

import numpy as np
import torch

from vfmtok.utils.errors import require


def _blocks(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(n, start + size)


def _cdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # float64 on the squared-norm expansion keeps ties and tiny distances stable for 2048-d features.
    d2 = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None] - 2.0 * a @ b.T
    return d2.clamp_min_(0).sqrt_()


def knn_radii(feats: torch.Tensor, k: int, block: int) -> torch.Tensor:
    """Distance from each row to its k-th nearest other row (self excluded)."""
    require(len(feats) > k, f"k-NN radii need more than k={k} samples, got {len(feats)}")
    out = torch.empty(len(feats), dtype=feats.dtype, device=feats.device)
    for s, e in _blocks(len(feats), block):
        d = _cdist(feats[s:e], feats)
        # the smallest distance is the point itself (0); the (k+1)-th smallest is the k-th neighbour
        out[s:e] = d.topk(k + 1, dim=1, largest=False).values[:, k]
    return out


def _inside_counts(query: torch.Tensor, ref: torch.Tensor, radii: torch.Tensor, block: int) -> torch.Tensor:
    """For each query row, the number of reference balls that contain it."""
    counts = torch.empty(len(query), dtype=torch.long, device=query.device)
    for s, e in _blocks(len(query), block):
        counts[s:e] = (_cdist(query[s:e], ref) <= radii[None]).sum(1)
    return counts


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, block: int = 1024,
                     device: str | torch.device = "cpu") -> dict[str, float]:
    """Precision, recall (k-NN manifolds), density and coverage of `fake` against `real` features (N, D)."""
    r = torch.as_tensor(np.asarray(real), dtype=torch.float64, device=device)
    f = torch.as_tensor(np.asarray(fake), dtype=torch.float64, device=device)
    require(r.ndim == 2 and f.ndim == 2 and r.shape[1] == f.shape[1],
            f"feature sets must be (N, D) with equal D, got {tuple(r.shape)} and {tuple(f.shape)}")
    r_rad, f_rad = knn_radii(r, k, block), knn_radii(f, k, block)
    in_real = _inside_counts(f, r, r_rad, block)
    in_fake = _inside_counts(r, f, f_rad, block)
    # Coverage: share of real samples whose ball holds at least one generated sample.
    covered = torch.zeros(len(r), dtype=torch.bool, device=r.device)
    for s, e in _blocks(len(r), block):
        covered[s:e] = (_cdist(r[s:e], f).min(1).values <= r_rad[s:e])
    return {
        "precision": float((in_real > 0).double().mean()),
        "recall": float((in_fake > 0).double().mean()),
        "density": float(in_real.double().sum() / (k * len(f))),
        "coverage": float(covered.double().mean()),
        "k": k,
    }
