"""Fréchet distance between feature Gaussians, feature statistics (float64) and their .npz files / cache."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vfmtok.utils.errors import VFMTokError, require
from vfmtok.utils.io import cache_root, file_sha256, save_npz
from vfmtok.utils.weights import find_weight


def _features_factor(features: np.ndarray | None, dim: int) -> np.ndarray | None:
    """Centred features / sqrt(N-1) (so A^T A = sigma) when they exist and N <= D (a cheap low-rank factor)."""
    if features is None or len(features) > dim:
        return None
    f = np.asarray(features, np.float64)
    return (f - f.mean(axis=0)) / np.sqrt(len(f) - 1)


def _full_factor(sigma: np.ndarray) -> np.ndarray:
    """A with A^T A = sigma: Cholesky, or a symmetric square root (round-off negatives clipped) if singular."""
    try:
        return np.linalg.cholesky(sigma).T
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh((sigma + sigma.T) / 2)
        return np.sqrt(np.clip(w, 0, None))[:, None] * v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray, features1: np.ndarray | None = None,
                       features2: np.ndarray | None = None) -> float:
    """tr(sqrtm(sigma1 @ sigma2)) of two covariances, through factors sigma_i = A_i^T A_i.

    The reference implementations (TTUR, pytorch-fid, ADM) call `scipy.linalg.sqrtm(sigma1 @ sigma2)`. That
    product is not symmetric, so with near-singular covariances (fewer images than 2048 dimensions, the usual
    case on small sets) sqrtm returns non-finite values or complex results; they then add 1e-6 * I to both
    covariances and drop imaginary parts below 1e-3 (raising above). We avoid both problems by construction:
    the non-zero eigenvalues of sigma1 sigma2 = A1^T (A1 A2^T A2) equal those of (A1 A2^T A2) A1^T = C C^T with
    C = A1 A2^T, i.e. the squared singular values of C; so tr sqrtm(sigma1 sigma2) = sum of singular values of C
    (the nuclear norm), real and >= 0, with no offset and no imaginary part. With N <= D images the centred
    features are a factor and C is only N1 x N2 (fast small-set FID); with one such factor A and the other
    covariance S given only as a matrix, the same values are sqrt(eig(A S A^T)), an N x N symmetric problem.
    On well-conditioned inputs all routes equal the sqrtm formula to ~1e-9 (see tests).
    """
    a1, a2 = _features_factor(features1, len(sigma1)), _features_factor(features2, len(sigma2))
    if a1 is None and a2 is None:
        a1, a2 = _full_factor(sigma1), _full_factor(sigma2)
    if a1 is not None and a2 is not None:
        return float(np.linalg.svd(a1 @ a2.T, compute_uv=False).sum())
    a, other = (a1, sigma2) if a1 is not None else (a2, sigma1)
    m = a @ other @ a.T
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     features1: np.ndarray | None = None, features2: np.ndarray | None = None) -> float:
    """||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 sigma2)), in float64.

    `features_i` (exactly the (N, D) features behind sigma_i, optional) only make it cheaper when N <= D.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    require(mu1.shape == mu2.shape and sigma1.shape == sigma2.shape == (len(mu1), len(mu1)),
            f"statistics of different dimensions: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    cross = trace_sqrt_product(sigma1, sigma2, features1, features2)
    fd = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * cross
    return float(max(fd, 0.0))  # tiny negative values are round-off of a zero distance


@dataclass
class FeatureStats:
    """Mean and covariance (float64) of a feature set, with the network that made it and optional features."""

    mu: np.ndarray
    sigma: np.ndarray
    num_images: int
    feature_net: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    features: np.ndarray | None = None  # float32 (N, D): exactly the features behind mu/sigma (P/R, fast FD)

    @classmethod
    def from_features(cls, feats: np.ndarray, feature_net: dict | None = None, meta: dict | None = None,
                      keep_features: bool = True) -> "FeatureStats":
        """Statistics of (N, D) features; the covariance is unbiased (N - 1), as in the reference code."""
        feats = np.asarray(feats)
        require(feats.ndim == 2 and len(feats) >= 2, f"need at least 2 feature vectors for statistics, got shape {feats.shape}")
        f64 = feats.astype(np.float64)
        return cls(mu=f64.mean(axis=0), sigma=np.cov(f64, rowvar=False), num_images=len(feats),
                   feature_net=dict(feature_net or {}), meta=dict(meta or {}),
                   features=feats.astype(np.float32) if keep_features else None)

    def distance(self, other: "FeatureStats") -> float:
        """Fréchet distance to `other` (uses the stored features as covariance factors when that is cheaper)."""
        return frechet_distance(self.mu, self.sigma, other.mu, other.sigma, self.features, other.features)

    def save(self, path: str | os.PathLike) -> Path:
        """Write an .npz (mu, sigma, num_images, feature_net, meta [, features]) atomically."""
        path = Path(path)
        arrays = {"mu": self.mu, "sigma": self.sigma, "num_images": np.int64(self.num_images),
                  "feature_net": np.array(json.dumps(self.feature_net)), "meta": np.array(json.dumps(self.meta))}
        if self.features is not None:
            arrays["features"] = self.features
        save_npz(path, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, expect_net: dict | None = None) -> "FeatureStats":
        """Read stats written by `save`, or an ADM reference batch (mu/sigma [+ arr_0]); checks the feature network."""
        path = Path(path)
        require(path.is_file(), f"reference statistics not found: {path}")
        try:
            z = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise VFMTokError(f"cannot read statistics file {path}: {e}") from None
        with z:
            require("mu" in z.files and "sigma" in z.files,
                    f"{path} holds no 'mu'/'sigma' statistics (keys: {', '.join(z.files) or 'none'})")
            mu, sigma = z["mu"].astype(np.float64), z["sigma"].astype(np.float64)
            require(mu.ndim == 1 and sigma.shape == (len(mu), len(mu)), f"{path}: mu {mu.shape} / sigma {sigma.shape} do not fit")
            net = json.loads(str(z["feature_net"])) if "feature_net" in z.files else {}
            meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
            feats = z["features"] if "features" in z.files else None
            n = int(z["num_images"]) if "num_images" in z.files else (len(z["arr_0"]) if "arr_0" in z.files else 0)
            if not net:
                # ADM's VIRTUAL_imagenet*.npz carries no record; its statistics are TF-Inception pool3.
                meta.setdefault("note", "no feature-network record in the file (e.g. an ADM reference batch); assumed TF-Inception pool3")
        if expect_net:
            if net and net.get("sha256") != expect_net.get("sha256"):
                raise VFMTokError(f"{path} was made with feature network {net.get('name')} ({net.get('file')}, sha256 {net.get('sha256')}), "
                                  f"not {expect_net.get('name')} ({expect_net.get('file')}, sha256 {expect_net.get('sha256')})")
            dim = expect_net.get("dim")
            if dim is not None and len(mu) != dim:
                raise VFMTokError(f"{path} holds {len(mu)}-d statistics, but {expect_net.get('name')} gives {dim}-d features")
        return cls(mu=mu, sigma=sigma, num_images=n, feature_net=net, meta=meta, features=feats)


def cache_dir() -> Path:
    """Where statistics of real-image sets are cached ($VFMTOK_CACHE or ~/.cache/vfmtok, then /stats)."""
    return cache_root() / "stats"


def source_fingerprint(path: str | os.PathLike) -> dict:
    """Path + size + mtime of a dataset file/folder: changes when the data does (cheap, no hashing of images)."""
    p = Path(path).resolve()
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime": int(st.st_mtime)}


def keyed_cache_path(key: dict, folder: Path | None = None) -> Path:
    """`folder`/<sha256 of the JSON key>.npz (folder: the statistics cache); one file per distinct key."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return (cache_dir() if folder is None else folder) / f"{digest}.npz"


def load_cached_stats(key: dict) -> FeatureStats | None:
    """Statistics stored under `key` (a JSON-able dict naming data, subset, resolution, network), or None."""
    path = keyed_cache_path(key)
    if not path.is_file():
        return None
    try:
        stats = FeatureStats.load(path)
    except VFMTokError:
        return None  # a broken entry is recomputed and overwritten
    return stats if stats.meta.get("cache_key") == json.loads(json.dumps(key, default=str)) else None


def save_cached_stats(key: dict, stats: FeatureStats) -> Path:
    """Store statistics (and features) under `key`."""
    stats.meta = {**stats.meta, "cache_key": json.loads(json.dumps(key, default=str))}
    return stats.save(keyed_cache_path(key))


class EncoderFeatures:
    """Second-opinion features: a frozen project encoder, global-average-pooled last level, (B, C) float32."""

    def __init__(self, name: str, device: str | torch.device):
        from vfmtok.encoders import create_encoder

        self.encoder = create_encoder(name).to(device).eval()
        self.device = torch.device(device)
        spec = self.encoder.spec
        self.info = {"name": f"{spec.name}/gap-{spec.level_names[-1]}", "input_size": spec.input_size,
                     "weights_fingerprint": self.encoder.weights_fingerprint()}
        weights = _ENCODER_FILES.get(spec.name)
        if weights is not None:
            path = find_weight(weights)
            self.info.update(file=path.name, sha256=file_sha256(path))

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """images (B,3,H,W) in [-1,1] -> (B, C) features (the encoder resizes to its input size)."""
        out = self.encoder(images.to(self.device))
        return out.levels[-1].float().mean(dim=(2, 3)).cpu().numpy()


# The offline weight files behind the project's CNN encoders (recorded by name + hash in results).
_ENCODER_FILES = {"vgg16_imagenet": "vgg16.ckpt", "alexnet_imagenet": "alexnet.ckpt"}
