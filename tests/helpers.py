"""Helpers the tests and benchmarks share, kept out of the package: a tiny saved tokenizer, the reference
Fréchet-distance formula for cross-checks, and recording measured numbers into an exported model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

from vfmtok.generator.pretrained import GeneratorIO
from vfmtok.tokenizer.api import VFMTokenizer
from vfmtok.tokenizer.build import build_tokenizer
from vfmtok.tokenizer.config import get_preset
from vfmtok.utils.errors import VFMTokError, require
from vfmtok.utils.hub import CARD_NAME, metrics_table
from vfmtok.utils.io import read_json, write_json, write_text


def build_tiny_tokenizer(folder: str | os.PathLike, arch: str = "vfmtok", seed: int = 0,
                         class_names: list[str] | None = None) -> Path:
    """Save an untrained tiny tokenizer (random weights, random-init VGG16 encoder) for tests; returns the folder."""
    cfg = get_preset("tiny").model
    cfg.arch = arch
    cfg.encoder_pretrained = False
    torch.manual_seed(seed)
    model = build_tokenizer(cfg)
    if class_names is None:
        class_names = [f"class{i}" for i in range(10)]
    return VFMTokenizer(model, class_names=class_names).save_pretrained(folder)


def frechet_distance_reference(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                               eps: float = 1e-6) -> float:
    """The pytorch-fid / ADM formula (scipy sqrtm, eps*I offset if non-finite, imag parts < 1e-3 dropped); for cross-checks."""
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise VFMTokError(f"sqrtm has an imaginary component of {np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def record_measured(model: str | Path, measured: dict[str, float], by: str) -> None:
    """Store numbers measured on an exported pair in its model.json and in both model cards' Metrics sections."""
    model = Path(model)
    require((model / "model.json").is_file(), f"{model} is not an exported model (no model.json)")
    info = read_json(model / "model.json")
    info.update(measured=dict(measured), measured_by=by)
    write_json(model / "model.json", info)
    table = metrics_table(measured)
    for sub in (info.get("tokenizer", "tokenizer"), info.get("generator", "generator")):
        card = model / sub / CARD_NAME
        head = card.read_text().split("## Metrics")[0] if card.is_file() else "# " + sub + "\n\n"
        write_text(card, head + "## Metrics\n\n" + "\n".join(table) + f"\n\nMeasured by: `{by}`\n")


class FakeGPT:
    """A stand-in generator for commands whose sampling is monkeypatched: 4 classes, no recommended sampling."""

    class config:
        num_classes = 4

    sampling_args = GeneratorIO.sampling_args  # no recommended sampling: the flags' values, else off

    def recorded_tokenizer(self):
        return None
