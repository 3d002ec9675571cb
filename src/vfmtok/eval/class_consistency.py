"""Class consistency: does a generated image look like the class it was sampled for?

A linear probe on frozen ImageNet VGG16 features (global-average-pooled relu3_3 / relu4_3 / relu5_3, concatenated)
is fit on real training images of the dataset at the samples' resolution, then classifies the samples; the score
is its top-1 against the labels the samples were drawn for, reported beside the same probe's top-1 on real
validation images (the ceiling a perfect generator could reach). The fitted probe is cached on disk.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vfmtok.eval.commands import generate, load_generator, load_tokenizer
from vfmtok.eval.fid import keyed_cache_path, source_fingerprint
from vfmtok.eval.image_metrics import uint8_to_signed
from vfmtok.eval.imagesets import ImageSet, iter_batches, load_npz_images, open_image_set
from vfmtok.eval.probe import LinearProbe, fit_linear_probe
from vfmtok.eval.records import EvalResult, checkpoint_record, finish_result, make_record, markdown_table
from vfmtok.utils.device import resolve_device
from vfmtok.utils.errors import VFMTokError, require
from vfmtok.utils.io import cache_root, save_npz

DEFAULT_ENCODER = "vgg16_imagenet"
DEFAULT_INPUT_SIZE = 112  # 64 px images upsampled: VGG16's relu5_3 is 4x4 at 64 px, 7x7 here


@dataclass
class ClassProbe:
    """A frozen encoder + a linear probe fit on real images; `predict` classifies uint8 images."""

    probe: LinearProbe | None  # None until fit
    class_names: list[str]
    resolution: int
    encoder_name: str = DEFAULT_ENCODER
    input_size: int = DEFAULT_INPUT_SIZE
    pretrained: bool = True
    meta: dict = field(default_factory=dict)
    device: str = "cpu"
    path: Path | None = None  # the cache file it was read from / written to (real-val results are added to it)
    _encoder: object = field(default=None, repr=False)

    @property
    def encoder(self):
        """The frozen encoder, built on first use."""
        if self._encoder is None:
            from vfmtok.encoders import create_encoder

            self._encoder = create_encoder(self.encoder_name, pretrained=self.pretrained,
                                           image_size=self.input_size).to(self.device).eval()
        return self._encoder

    @torch.inference_mode()
    def features(self, u8: torch.Tensor) -> torch.Tensor:
        """uint8 (B,H,W,3) at `resolution` -> (B, D) float32 pooled features."""
        return pooled_features(self.encoder, uint8_to_signed(u8).to(self.device)).cpu()

    def predict(self, images: np.ndarray | torch.Tensor, batch_size: int = 64, desc: str | None = None) -> np.ndarray:
        """Predicted class indices (N,) of uint8 images (N,H,W,3)."""
        x = torch.as_tensor(np.asarray(images))
        require(x.dtype == torch.uint8 and x.ndim == 4 and x.shape[-1] == 3,
                f"images must be uint8 (N,H,W,3), got {x.dtype} {tuple(x.shape)}")
        require(tuple(x.shape[1:3]) == (self.resolution, self.resolution),
                f"images are {x.shape[1]}x{x.shape[2]} px, the class probe was fit at {self.resolution} px")
        out = []
        for s in tqdm(range(0, len(x), batch_size), desc=desc or "classify", disable=None if desc else True):
            out.append(self.probe.predict(self.features(x[s:s + batch_size])))
        return torch.cat(out).numpy() if out else np.zeros(0, np.int64)

    def save(self, path: Path) -> Path:
        """Write the probe as a plain .npz (no pickle: meta is a JSON string)."""
        p = self.probe
        meta = {**self.meta, "class_names": self.class_names, "resolution": self.resolution,
                "encoder": self.encoder_name, "input_size": self.input_size, "pretrained": self.pretrained,
                "final_loss": p.final_loss}
        save_npz(path, mean=p.mean.numpy(), std=p.std.numpy(), weight=p.weight.numpy(), bias=p.bias.numpy(),
                 meta=np.array(json.dumps(meta)))
        return Path(path)

    @classmethod
    def load(cls, path: Path, device: str = "cpu") -> "ClassProbe":
        """Read a probe written by `save`."""
        try:
            with np.load(path, allow_pickle=False) as z:
                t = {k: torch.from_numpy(z[k]) for k in ("mean", "std", "weight", "bias")}
                meta = json.loads(str(z["meta"]))
        except (OSError, ValueError, KeyError) as e:
            raise VFMTokError(f"cannot read class probe {path}: {e}") from None
        probe = LinearProbe(t["mean"], t["std"], t["weight"], t["bias"], meta.pop("final_loss", float("nan")))
        return cls(probe, meta.pop("class_names"), meta.pop("resolution"), meta.pop("encoder"), meta.pop("input_size"),
                   meta.pop("pretrained"), meta, device, Path(path))


def pooled_features(encoder, x: torch.Tensor) -> torch.Tensor:
    """Global-average-pooled levels of a frozen encoder, concatenated: (B,3,H,W) in [-1,1] -> (B, sum C)."""
    levels = encoder(x).levels
    return torch.cat([lv.float().mean(dim=(2, 3)) for lv in levels], dim=1)


def _set_features(cp: ClassProbe, images: ImageSet, idx: np.ndarray, batch_size: int, desc: str):
    feats, labels = [], []
    total = math.ceil(len(idx) / batch_size)
    for u8, y in tqdm(iter_batches(images, idx, batch_size), total=total, desc=desc, disable=None):
        feats.append(cp.features(u8))
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def balanced_indices(labels: list[int], per_class: int | None, seed: int) -> np.ndarray:
    """At most `per_class` seeded-random indices of each class (all with None), sorted."""
    lab = np.asarray(labels)
    if per_class is None:
        return np.arange(len(lab))
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(lab == c))[:per_class] for c in np.unique(lab)]
    return np.sort(np.concatenate(picks))


def fit_class_probe(data: str, resolution: int, split: str = "train", per_class: int | None = 300, seed: int = 0,
                    encoder_name: str = DEFAULT_ENCODER, input_size: int = DEFAULT_INPUT_SIZE, pretrained: bool = True,
                    weight_decay: float = 1e-3, max_iter: int = 200, batch_size: int = 64, device: str = "cpu",
                    use_cache: bool = True) -> ClassProbe:
    """The class probe for `data` (real `split` images at `resolution`), from the cache when it holds one."""
    images = open_image_set(data, resolution, split=split)
    require(images.labels is not None and images.class_names,
            f"{data} ({split}) has no class sub-folders; a class probe needs labelled images")
    key = {"data": images.description, "n": len(images), "resolution": resolution, "per_class": per_class,
           "seed": seed, "encoder": encoder_name, "input_size": input_size, "pretrained": pretrained,
           "weight_decay": weight_decay, "max_iter": max_iter, "kind": "class-probe-v1"}
    src = images.description.get("path")
    if src and Path(src).exists():
        key["fingerprint"] = source_fingerprint(src)
    path = keyed_cache_path(key, cache_root() / "class_probes")
    if use_cache and path.is_file():
        try:
            return ClassProbe.load(path, device)
        except VFMTokError:
            pass  # a broken entry is refit and overwritten
    idx = balanced_indices(images.labels, per_class, seed)
    cp = ClassProbe(None, list(images.class_names), resolution, encoder_name,
                    input_size, pretrained, {"data": images.description, "split": split, "num_train": len(idx)}, device)
    x, y = _set_features(cp, images, idx, batch_size, "class probe: real train images")
    cp.probe = fit_linear_probe(x, y, len(images.class_names), weight_decay, max_iter)
    cp.meta["top1_train"] = float((cp.probe.predict(x) == y).double().mean())
    cp.path = cp.save(path)
    return cp


def top1(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """Overall top-1 and per-class top-1 ({class index: accuracy}, classes present only)."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    require(len(pred) == len(labels) and len(labels) > 0, f"need as many predictions as labels (> 0), got {len(pred)} / {len(labels)}")
    per = {int(c): float((pred[labels == c] == c).mean()) for c in range(num_classes) if (labels == c).any()}
    return {"top1": float((pred == labels).mean()), "per_class": per, "num_images": int(len(labels))}


def real_val_top1(cp: ClassProbe, data: str, split: str = "val", per_class: int | None = 100, seed: int = 1,
                  batch_size: int = 64) -> dict:
    """The probe's top-1 on real images of `split` (at most `per_class` per class): the score's ceiling."""
    images = open_image_set(data, cp.resolution, split=split)
    require(images.labels is not None, f"{data} ({split}) has no labels")
    require(list(images.class_names) == cp.class_names, f"{data} ({split}) classes differ from the probe's")
    key = json.dumps({"data": images.description, "n": len(images), "per_class": per_class, "seed": seed}, sort_keys=True)
    done = cp.meta.setdefault("real_val", {})
    if key in done:  # computed before with this probe: the answer cannot change
        return {**done[key], "per_class": {int(c): a for c, a in done[key]["per_class"].items()}}
    idx = balanced_indices(images.labels, per_class, seed)
    x, y = _set_features(cp, images, idx, batch_size, "class probe: real val images")
    result = top1(cp.probe.predict(x).numpy(), y.numpy(), len(cp.class_names))
    done[key] = result
    if cp.path is not None:
        cp.save(cp.path)
    return result


def class_consistency(cp: ClassProbe, samples: np.ndarray, labels: np.ndarray, batch_size: int = 64) -> dict:
    """Top-1 of the probe on generated uint8 samples (N,H,W,3) against the classes they were sampled for."""
    labels = np.asarray(labels, dtype=np.int64)
    require(labels.min(initial=0) >= 0 and labels.max(initial=0) < len(cp.class_names),
            f"sample labels must lie in 0..{len(cp.class_names) - 1}")
    return top1(cp.predict(samples, batch_size, desc="class probe: samples"), labels, len(cp.class_names))


@dataclass
class ClassConsistencyConfig:
    """Score `samples` (.npz with labels) or `per_class` samples of each class drawn from `gpt` with a linear probe fit
    on real `data`; the one home of the class-consistency defaults."""

    gpt: str | Path | None = None
    tokenizer: str | Path | None = None  # default: the one recorded in the GPT's config
    samples: str | Path | None = None
    data: str = "imagenette"
    train_split: str = "train"
    val_split: str = "val"
    train_per_class: int = 300
    val_per_class: int = 100
    per_class: int = 50
    cfg_scale: float = 1.0
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    input_size: int = DEFAULT_INPUT_SIZE
    encoder_weights: str = "imagenet"  # "random": smoke tests only
    seed: int = 0
    batch_size: int = 32
    device: str = "auto"
    no_cache: bool = False
    out: str | Path | None = None


def _samples(config: ClassConsistencyConfig) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """(images, labels, data description, checkpoints) from --samples or by sampling --gpt."""
    if config.samples is not None:
        images = load_npz_images(config.samples)
        with np.load(config.samples, allow_pickle=False) as z:
            require("labels" in z.files, f"{config.samples} has no 'labels' array (which class each sample was drawn for)")
            labels = z["labels"].astype(np.int64)
        require(len(labels) == len(images), f"{config.samples}: {len(labels)} labels for {len(images)} images")
        return images, labels, {"source": str(config.samples)}, {}
    gpt = load_generator(config.gpt, config.device)
    recorded = gpt.recorded_tokenizer()
    require(config.tokenizer is not None or recorded, "--gpt needs --tokenizer (none is recorded in the GPT's config)")
    tok = load_tokenizer(config.tokenizer or recorded, config.device)
    t, k, p = gpt.sampling_args(config.temperature, config.top_k, config.top_p)
    config = dataclasses.replace(config, temperature=t, top_k=k, top_p=p)
    n_cls = int(gpt.config.num_classes)
    labels = torch.arange(n_cls).repeat_interleave(config.per_class)
    images = generate(gpt, tok, labels, cfg_scale=config.cfg_scale, temperature=config.temperature, top_k=config.top_k,
                      top_p=config.top_p, seed=config.seed, batch_size=config.batch_size)
    ckpt = {"generator": checkpoint_record(config.gpt), "tokenizer": checkpoint_record(tok.checkpoint_path)}
    desc = {"source": "generated", "images_per_class": config.per_class, "cfg_scale": config.cfg_scale,
            "temperature": config.temperature, "top_k": config.top_k, "top_p": config.top_p}
    return images, labels.numpy(), desc, ckpt


def evaluate_class_consistency(config: ClassConsistencyConfig) -> EvalResult:
    """Fit (or read) the classifier, score the samples and real validation images; print the table, write the record
    (with `out`) and return it."""
    require((config.gpt is None) != (config.samples is None), "give either --gpt or --samples")
    for name in ("per_class", "train_per_class", "val_per_class", "batch_size", "input_size"):
        require(getattr(config, name) > 0, f"--{name.replace('_', '-')} must be positive")
    config = dataclasses.replace(config, device=str(resolve_device(config.device)))
    images, labels, sample_desc, ckpt = _samples(config)
    res = int(images.shape[1])
    cp = fit_class_probe(config.data, res, config.train_split, config.train_per_class, config.seed, input_size=config.input_size,
                         pretrained=config.encoder_weights == "imagenet",
                         batch_size=config.batch_size, device=config.device, use_cache=not config.no_cache)
    gen = class_consistency(cp, images, labels, config.batch_size)
    real = real_val_top1(cp, config.data, config.val_split, config.val_per_class, config.seed + 1, config.batch_size)
    metrics = {"class_consistency": gen["top1"], "real_val_top1": real["top1"],
               "per_class": {cp.class_names[c]: a for c, a in gen["per_class"].items()},
               "real_val_per_class": {cp.class_names[c]: a for c, a in real["per_class"].items()},
               "num_samples": gen["num_images"], "num_real_val": real["num_images"],
               "probe_train_top1": cp.meta.get("top1_train"), "probe_num_train": cp.meta.get("num_train")}
    notes = [f"classifier: linear probe (L-BFGS, standardised features) on frozen {cp.encoder_name} "
             f"({'ImageNet' if cp.pretrained else 'random'} weights), pooled relu3_3/relu4_3/relu5_3, input {cp.input_size}px, "
             f"fit on {cp.meta.get('num_train')} real {config.train_split} images at {res}px",
             f"chance level {1 / len(cp.class_names):.1%}"]
    record = make_record("class-consistency", metrics=metrics, num_images=gen["num_images"], resolution=res,
                         seed=config.seed, checkpoints=ckpt, data={"samples": sample_desc, "classifier": cp.meta},
                         notes=notes, device=str(config.device),
                         args={"command": "class-consistency", **dataclasses.asdict(config)})
    rows = [["generated samples", gen["num_images"], f"{gen['top1']:.1%}"],
            [f"real {config.val_split} images", real["num_images"], f"{real['top1']:.1%}"]]
    table = markdown_table(["images", "count", "classifier top-1"], rows)
    return finish_result(record, table, notes, config.out)
