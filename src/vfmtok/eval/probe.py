"""`vfmtok probe`: linear probing of frozen tokenizer features (decoder CLS token, mean of quantised tokens).

Protocol: extract features once for the train and val splits, standardise with the train mean/std (what the
MAE protocol's affine-free BatchNorm does), then fit one linear layer full-batch with L-BFGS on cross-entropy
+ L2 weight decay, from zero init (deterministic; the problem is convex). Report top-1 on val.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vfmtok.eval.commands import load_tokenizer
from vfmtok.eval.image_metrics import uint8_to_signed
from vfmtok.eval.imagesets import ImageSet, iter_batches, open_image_set, subset_indices
from vfmtok.eval.records import EvalResult, checkpoint_record, finish_result, make_record, markdown_table
from vfmtok.utils.device import resolve_device
from vfmtok.utils.errors import VFMTokError, require


@torch.no_grad()  # not inference_mode: the probe later trains on these tensors
def extract_features(tok, images: ImageSet, idx: np.ndarray, batch_size: int, device: str, desc: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """{feature name: (N, D) float32} from `tok.probe_features`, and labels (N,)."""
    feats: dict[str, list[torch.Tensor]] = {}
    labels: list[torch.Tensor] = []
    total = math.ceil(len(idx) / batch_size)
    for u8, y in tqdm(iter_batches(images, idx, batch_size), total=total, desc=desc, disable=None):
        out = tok.probe_features(uint8_to_signed(u8).to(device))
        for k, v in out.items():
            feats.setdefault(k, []).append(v.detach().float().reshape(len(u8), -1).cpu())
        labels.append(y)
    require(len(feats) > 0, "the tokenizer's probe_features returned no features")
    return {k: torch.cat(v) for k, v in feats.items()}, torch.cat(labels)


@dataclass
class LinearProbe:
    """A fitted linear classifier on standardised features: logits = ((x - mean) / std) @ weight.T + bias."""

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    final_loss: float = float("nan")

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) features -> (N, classes) float64 logits."""
        return ((x.double() - self.mean) / self.std) @ self.weight.T + self.bias

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) features -> (N,) predicted class indices."""
        return self.logits(x).argmax(1)


def fit_linear_probe(x_train: torch.Tensor, y_train: torch.Tensor, num_classes: int, weight_decay: float = 1e-3,
                     max_iter: int = 200) -> LinearProbe:
    """Standardise with train statistics, fit W, b full-batch by L-BFGS from zero init (deterministic; convex)."""
    x_train = x_train.double()
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    x_train = (x_train - mean) / std
    w = torch.zeros(num_classes, x_train.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x_train @ w.T + b, y_train) + 0.5 * weight_decay * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        loss = float(opt.step(closure).detach())
    return LinearProbe(mean, std, w.detach(), b.detach(), loss)


def train_linear_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
                       num_classes: int, weight_decay: float = 1e-3, max_iter: int = 200) -> dict[str, float]:
    """Fit a probe on train (fit_linear_probe), return top-1 on train and val."""
    probe = fit_linear_probe(x_train, y_train, num_classes, weight_decay, max_iter)
    with torch.no_grad():
        acc_tr = float((probe.predict(x_train) == y_train).double().mean())
        acc_va = float((probe.predict(x_val) == y_val).double().mean())
    return {"top1_val": acc_va, "top1_train": acc_tr, "final_loss": probe.final_loss}


@dataclass
class ProbeConfig:
    """Linear probing of `tokenizer`'s frozen features on the train/val splits of `data` (one probe per feature)."""

    tokenizer: str | Path
    data: str = "sample"  # a dataset with class sub-folders and train/val splits
    train_split: str = "train"
    val_split: str = "val"
    weight_decay: float = 1e-3  # L2 penalty (wd/2 * ||W||^2) on the linear weights
    max_iter: int = 200  # L-BFGS iterations
    num_images: int | None = None  # at most this many images per split (a seeded random subset)
    seed: int = 0
    batch_size: int = 32
    device: str = "auto"
    out: str | Path | None = None  # results JSON (+ .md table beside it)


def _open_split(data: str, res: int, split: str) -> ImageSet:
    images = open_image_set(data, res, split=split)
    require(images.labels is not None, f"{data} is not a dataset with class sub-folders; linear probing needs labels")
    return images


def evaluate_probe(config: ProbeConfig) -> EvalResult:
    """Extract features of both splits once, fit one probe per feature kind, score top-1 on val."""
    require(config.batch_size > 0, f"--batch-size must be positive, got {config.batch_size}")
    config = dataclasses.replace(config, device=str(resolve_device(config.device)))
    torch.manual_seed(config.seed)
    tok = load_tokenizer(Path(config.tokenizer), config.device)
    res = int(tok.image_size)
    train, val = _open_split(config.data, res, config.train_split), _open_split(config.data, res, config.val_split)
    require(train.description.get("location") != val.description.get("location"),
            f"{config.data} has no separate '{config.train_split}' and '{config.val_split}' splits "
            f"(both read {train.description.get('location')})")
    require(train.class_names == val.class_names, f"train and val splits of {config.data} have different classes "
            f"({len(train.class_names)} vs {len(val.class_names)})")
    idx_tr = subset_indices(len(train), config.num_images, config.seed)
    idx_va = subset_indices(len(val), config.num_images, config.seed + 1)
    f_tr, y_tr = extract_features(tok, train, idx_tr, config.batch_size, config.device, "features train")
    f_va, y_va = extract_features(tok, val, idx_va, config.batch_size, config.device, "features val")
    num_classes = len(train.class_names)
    results, rows = {}, []
    for key in sorted(f_tr):
        if key not in f_va:
            raise VFMTokError(f"feature '{key}' present for train but not for val")
        r = train_linear_probe(f_tr[key], y_tr, f_va[key], y_va, num_classes, config.weight_decay, config.max_iter)
        results[key] = {**r, "dim": int(f_tr[key].shape[1])}
        rows.append([Path(tok.checkpoint_path).name, key, results[key]["dim"], len(idx_tr), len(idx_va), num_classes,
                     f"{r['top1_val']:.1%}", f"{r['top1_train']:.1%}"])
    notes = ["features standardised with train mean/std; linear layer fit full-batch by L-BFGS (zero init) on "
             f"cross-entropy + {config.weight_decay:g}/2 * ||W||^2, {config.max_iter} iterations",
             f"chance level {1 / num_classes:.1%}"]
    if "cls" not in f_tr:
        notes.append("this tokenizer has no CLS token: only the mean of the quantised token embeddings is probed")
    record = make_record(
        "probe", metrics=results, num_images=len(idx_tr) + len(idx_va), resolution=res, seed=config.seed,
        checkpoints={"tokenizer": checkpoint_record(tok.checkpoint_path)},
        data={"source": str(config.data), "train_split": config.train_split, "val_split": config.val_split,
              "num_train": len(idx_tr), "num_val": len(idx_va), "classes": train.class_names},
        feature_networks=[{"name": "tokenizer.probe_features", "keys": sorted(f_tr)}], notes=notes,
        device=str(config.device), args={"command": "probe", **dataclasses.asdict(config)},
        weight_decay=config.weight_decay, max_iter=config.max_iter)
    table = markdown_table(["tokenizer", "feature", "dim", "train", "val", "classes", "top-1 val↑", "top-1 train"], rows)
    return finish_result(record, table, notes, config.out)
