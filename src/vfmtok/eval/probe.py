"""`vfmtok probe`: linear probing of frozen tokenizer features (decoder CLS token, mean of quantised tokens).

Protocol: extract features once for the train and val splits, standardise with the train mean/std (what the
MAE protocol's affine-free BatchNorm does), then fit one linear layer full-batch with L-BFGS on cross-entropy
+ L2 weight decay, from zero init (deterministic; the problem is convex). Report top-1 on val.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vfmtok.eval.image_metrics import uint8_to_signed
from vfmtok.eval.imagesets import ImageSet, iter_batches
from vfmtok.utils.errors import require


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
