"""Feature statistics of image sets for FID-style scores: a sink of Inception / second-opinion features, the cached
statistics of real images, and `eval-generator`'s reference (real images or a statistics .npz)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vfmtok.eval.config import GeneratorEvalConfig
from vfmtok.eval.fid import EncoderFeatures, FeatureStats, load_cached_stats, save_cached_stats, source_fingerprint
from vfmtok.eval.image_metrics import uint8_to_signed
from vfmtok.eval.imagesets import ImageSet, iter_batches, open_image_set, subset_indices
from vfmtok.eval.inception import InceptionExtractor, inception_score
from vfmtok.utils.errors import require


@dataclass
class FeatureSink:
    """Accumulates Inception pool3 / logits and second-opinion features of one image set."""

    inception: InceptionExtractor | None
    second: EncoderFeatures | None
    pool3: list = field(default_factory=list)
    logits: list = field(default_factory=list)
    other: list = field(default_factory=list)

    def add(self, u8: torch.Tensor, signed: torch.Tensor | None = None) -> None:
        """Add a uint8 (B,H,W,3) batch; `signed` is the same batch in [-1,1] (B,3,H,W) if already at hand."""
        if self.inception is not None:
            f, lg = self.inception(u8)
            self.pool3.append(f)
            if lg is not None:
                self.logits.append(lg)
        if self.second is not None:
            self.other.append(self.second(uint8_to_signed(u8) if signed is None else signed))

    def stats(self, net: dict, meta: dict) -> FeatureStats:
        """Inception statistics (with features kept for P/R)."""
        return FeatureStats.from_features(np.concatenate(self.pool3), net, meta)

    def second_stats(self, meta: dict) -> FeatureStats | None:
        """Second-opinion statistics, or None when that network is off."""
        if self.second is None or not self.other:
            return None
        return FeatureStats.from_features(np.concatenate(self.other), self.second.info, meta, keep_features=False)

    def inception_score(self) -> tuple[float, float] | None:
        """(mean, std) over 10 splits, or None without logits or with fewer than 10 images."""
        if not self.logits or sum(len(x) for x in self.logits) < 10:
            return None
        return inception_score(np.concatenate(self.logits))


def _indices_sha(idx: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(idx, dtype=np.int64).tobytes()).hexdigest()[:16]


def reference_stats(images: ImageSet, idx: np.ndarray, ext: InceptionExtractor, second: EncoderFeatures | None,
                    batch_size: int, use_cache: bool, desc: str) -> tuple[FeatureStats, FeatureStats | None, bool]:
    """(Inception stats, second-opinion stats, came_from_cache) of real images, cached per data/subset/network."""
    base = {"data": images.description, "n_total": len(images), "indices": _indices_sha(idx), "resolution": images.resolution}
    src = images.description.get("path") or images.description.get("source")
    if src and Path(src).exists():
        base["fingerprint"] = source_fingerprint(src)
    key_inc = {**base, "net": ext.info["sha256"], "kind": "inception-pool3"}
    key_2nd = {**base, "net": second.info, "kind": "second"} if second is not None else None
    inc = load_cached_stats(key_inc) if use_cache else None
    sec = load_cached_stats(key_2nd) if (use_cache and key_2nd) else None
    if inc is not None and (second is None or sec is not None):
        return inc, sec, True
    sink = FeatureSink(ext if inc is None else None, second if (second is not None and sec is None) else None)
    total = math.ceil(len(idx) / batch_size)
    for u8, _ in tqdm(iter_batches(images, idx, batch_size), total=total, desc=desc, disable=None):
        sink.add(u8)
    meta = {"data": images.description, "num_images": len(idx), "resolution": images.resolution}
    if inc is None:
        inc = sink.stats(ext.info, meta)
        save_cached_stats(key_inc, inc)
    if key_2nd is not None and sec is None:
        sec = sink.second_stats(meta)
        save_cached_stats(key_2nd, sec)
    return inc, sec, False


def fd_or_none(a: FeatureStats | None, b: FeatureStats | None) -> float | None:
    """Frechet distance of two statistics, or None when either is missing (a network that is off)."""
    return None if a is None or b is None else a.distance(b)


@dataclass
class Reference:
    """What the samples are compared with. `pr_features` feed precision/recall; for an ADM reference batch they
    come from its `arr_0` images while mu/sigma are stored statistics of other images, so they are kept apart
    from `stats.features` (which must be the features behind sigma)."""

    stats: FeatureStats
    pr_features: np.ndarray | None
    second: FeatureStats | None
    description: dict
    notes: list[str] = field(default_factory=list)


def _stats_file_reference(config: GeneratorEvalConfig, ref: str, ext: InceptionExtractor, has_images: bool) -> Reference:
    """A reference from a statistics .npz (ours, or an ADM batch whose arr_0 images give precision/recall)."""
    stats = FeatureStats.load(ref, expect_net={**ext.info, "dim": 2048})
    desc = {"source": ref, "format": "stats-npz", "num_images": stats.num_images}
    notes = [stats.meta["note"]] if "note" in stats.meta else []
    if config.second_encoder.lower() != "none":
        notes.append(f"FD-{config.second_encoder} unavailable: the reference is a statistics file")
    pr = stats.features
    if pr is None and has_images:  # ADM reference batch: P/R on its arr_0 images, at their own size (as ADM does)
        arr_set = open_image_set(ref, None)
        arr_stats, _, _ = reference_stats(arr_set, np.arange(len(arr_set)), ext, None, config.batch_size,
                                          not config.no_cache, "reference arr_0")
        pr, desc["pr_images"] = arr_stats.features, len(arr_set)
    if pr is None:
        notes.append("precision/recall unavailable: the reference statistics file holds no features or images")
    return Reference(stats, pr, None, desc, notes)


def load_reference(config: GeneratorEvalConfig, res: int, ext: InceptionExtractor, second: EncoderFeatures | None) -> Reference:
    """The reference of `eval-generator`: a statistics .npz (ours, or an ADM batch) or real images at `res`."""
    ref = str(config.ref)
    if ref.lower().endswith(".npz"):
        require(Path(ref).is_file(), f"reference file not found: {ref}")
        with np.load(ref, allow_pickle=False) as z:
            has_stats, has_images = "mu" in z.files and "sigma" in z.files, "arr_0" in z.files
        require(has_stats or has_images, f"{ref} holds neither mu/sigma statistics nor arr_0 images")
        if has_stats:
            return _stats_file_reference(config, ref, ext, has_images)
    images = open_image_set(ref, res, split=config.ref_split)
    idx = subset_indices(len(images), config.ref_num_images, config.seed)
    require(len(idx) >= 2, f"need at least 2 reference images, {ref} gives {len(idx)}")
    inc, sec, cached = reference_stats(images, idx, ext, second, config.batch_size, not config.no_cache, "reference")
    notes = ["reference statistics read from the cache (--no-cache recomputes)"] if cached else []
    return Reference(inc, inc.features, sec, {**images.description, "num_images": len(idx), "num_available": len(images)}, notes)
