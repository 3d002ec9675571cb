"""Exact cache of a frozen encoder's features: memory-mapped .npy arrays plus a JSON index, built resumably.

Layout of a cache folder:
  index.json      encoder name/spec/weights fingerprint, image size, count, views, shapes, class names
  images.npy      uint8 (N, V, 3, H, W)   the augmented view fed to the encoder
  labels.npy      int64 (N,)
  level{l}.npy    float16 (N, V, C_l, H_l, W_l)
  target.npy      float16 (N, V, C_t, H_t, W_t), only when the target is not the last level
The cache is built in a hidden `.NAME.partial` folder beside it and renamed into place when complete, so
`path` never holds a half-built cache; an interrupted build resumes from its last flushed batch.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vfmtok.data.imagefolder import center_crop_resize, random_view
from vfmtok.encoders.base import FrozenEncoder
from vfmtok.utils.errors import VFMTokError, require
from vfmtok.utils.io import read_json, write_json

CACHE_FORMAT = 1
INDEX_NAME = "index.json"
PROGRESS_NAME = "progress.json"


def view_image(dataset, i: int, view: int, seed: int) -> np.ndarray:
    """uint8 (3, H, W) view `view` of image i: 0 = centre crop, later = seeded random crop + flip."""
    img = dataset.read(i)
    size = int(dataset.image_size)
    if view == 0:
        img = center_crop_resize(img, size)
    else:
        # String seeds are hashed deterministically, so a resumed build reproduces the same views.
        rng = random.Random(f"vfmtok-cache:{seed}:{i}:{view}")
        img = random_view(img, size, rng, getattr(dataset, "min_scale", 0.8))
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def _label(dataset, i: int) -> int:
    if hasattr(dataset, "items") and hasattr(dataset, "class_to_idx"):
        return int(dataset.class_to_idx[dataset.items[i][1]])
    return int(dataset[i][1])


def _dataset_id(dataset) -> str:
    """Hash of the dataset's path and member list: a different dataset never resumes or matches."""
    h = hashlib.sha256(str(getattr(dataset, "path", "")).encode())
    for item in getattr(dataset, "items", []):
        h.update(str(item).encode())
    h.update(str(len(dataset)).encode())
    return h.hexdigest()[:16]


def encoder_record(encoder: FrozenEncoder) -> dict:
    """What identifies an encoder's features: name, spec, pretrained flag, weights fingerprint."""
    rec = {"name": encoder.spec.name, "spec": encoder.spec.to_dict(), "pretrained": bool(encoder.pretrained),
           "fingerprint": encoder.weights_fingerprint()}
    return json.loads(json.dumps(rec))  # tuples -> lists, so it compares equal to what index.json holds


def _shapes(encoder: FrozenEncoder, n: int, views: int, size: int) -> dict[str, list[int]]:
    shapes = {"images": [n, views, 3, size, size], "labels": [n]}
    for li, shp in enumerate(encoder.level_shapes()):
        shapes[f"level{li}"] = [n, views, *shp]
    if not encoder.target_is_last_level:
        shapes["target"] = [n, views, *encoder.target_shape()]
    return shapes


_DTYPES = {"images": np.uint8, "labels": np.int64}


def _open_arrays(folder: Path, shapes: dict[str, list[int]], mode: str) -> dict[str, np.ndarray]:
    return {k: np.lib.format.open_memmap(folder / f"{k}.npy", mode=mode, dtype=_DTYPES.get(k, np.float16),
                                         shape=tuple(s) if mode == "w+" else None)
            for k, s in shapes.items()}


def build_feature_cache(encoder: FrozenEncoder, dataset, path: str | Path, views: int = 1, batch_size: int = 32,
                        seed: int = 0, overwrite: bool = False) -> Path:
    """Encode every image of `dataset` in `views` views and store images, labels and features at `path`.

    `dataset` needs `read(i) -> PIL`, `image_size` and labels (an ImageFolderDataset). Returns `path`.
    A complete cache with the same settings is reused; different settings need `overwrite=True`.
    """
    require(views >= 1, f"views must be >= 1, got {views}")
    require(batch_size >= 1, f"batch_size must be >= 1, got {batch_size}")
    require(hasattr(dataset, "read") and hasattr(dataset, "image_size"),
            f"build_feature_cache needs a dataset with read(i) and image_size (e.g. ImageFolderDataset), got {type(dataset).__name__}")
    final = Path(path)
    work = final.parent / f".{final.name}.partial"
    n, size = len(dataset), int(dataset.image_size)
    build = {"format": CACHE_FORMAT, "encoder": encoder_record(encoder), "image_size": size, "count": n,
             "views": views, "seed": seed, "dataset": _dataset_id(dataset)}
    if final.exists():
        old = _read_index(final, strict=False)
        if old is not None and old.get("build") == build:
            return final
        if not overwrite:
            raise VFMTokError(f"{final} already exists and is not a feature cache of these settings; "
                              "pass overwrite=True or choose another path")
    shapes = _shapes(encoder, n, views, size)
    start = _resume_point(work, build, shapes)
    if start == 0:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        arrays = _open_arrays(work, shapes, "w+")
        write_json(work / PROGRESS_NAME, {"build": build, "done": 0})
    else:
        arrays = _open_arrays(work, shapes, "r+")
    with tqdm(total=n, initial=start, desc=f"caching {encoder.spec.name} features", unit="img", disable=None) as bar:
        for lo in range(start, n, batch_size):
            hi = min(lo + batch_size, n)
            _encode_into(encoder, dataset, arrays, lo, hi, views, seed)
            for a in arrays.values():
                a.flush()
            write_json(work / PROGRESS_NAME, {"build": build, "done": hi})  # only after the data is on disk
            bar.update(hi - lo)
    del arrays
    nbytes = sum((work / f"{k}.npy").stat().st_size for k in shapes)
    write_json(work / INDEX_NAME, {"build": build, "complete": True, "shapes": shapes, "bytes": nbytes,
                                   "classes": list(getattr(dataset, "classes", [])),
                                   "target_is_last_level": bool(encoder.target_is_last_level)})
    (work / PROGRESS_NAME).unlink()
    if final.exists():
        shutil.rmtree(final)
    work.rename(final)
    return final


def _encode_into(encoder: FrozenEncoder, dataset, arrays: dict, lo: int, hi: int, views: int, seed: int) -> None:
    """Encode images lo..hi-1 in their `views` views into the open cache arrays (features as float16)."""
    size = int(dataset.image_size)
    device = next(encoder.parameters()).device
    crops = np.stack([np.stack([view_image(dataset, i, v, seed) for v in range(views)]) for i in range(lo, hi)])
    x = torch.from_numpy(crops.reshape(-1, 3, size, size)).to(device).float().div(127.5).sub(1.0)
    out = encoder(x)
    arrays["images"][lo:hi] = crops
    arrays["labels"][lo:hi] = [_label(dataset, i) for i in range(lo, hi)]
    feats = {f"level{li}": out.levels[li] for li in range(len(encoder.spec.level_names))}
    if "target" in arrays:
        feats["target"] = out.target
    elif not torch.equal(out.target, out.levels[-1]):
        raise VFMTokError(f"{encoder.spec.name} declares target_is_last_level but its target differs")
    for k, t in feats.items():
        arr = t.reshape(hi - lo, views, *t.shape[1:]).cpu().numpy().astype(np.float16)
        if not np.isfinite(arr).all():
            raise VFMTokError(f"{encoder.spec.name} {k} features overflow float16 (|x| > 65504); cannot cache them")
        arrays[k][lo:hi] = arr


def _resume_point(work: Path, build: dict, shapes: dict[str, list[int]]) -> int:
    """Images already done in a half-built cache with identical settings, else 0 (restart cleanly)."""
    prog = work / PROGRESS_NAME
    if not prog.is_file() or not all((work / f"{k}.npy").is_file() for k in shapes):
        return 0
    try:
        state = read_json(prog)
    except VFMTokError:
        return 0
    return int(state.get("done", 0)) if state.get("build") == build else 0


def _read_index(folder: Path, strict: bool = True) -> dict | None:
    idx_path = folder / INDEX_NAME
    if not idx_path.is_file():
        if strict:
            partial = folder.parent / f".{folder.name}.partial"
            hint = f" (a half-built cache is at {partial}; rerun the build to finish it)" if partial.exists() else ""
            raise VFMTokError(f"{folder} is not a feature cache: no {INDEX_NAME}{hint}")
        return None
    idx = read_json(idx_path)
    if not (isinstance(idx, dict) and idx.get("complete") and idx.get("build", {}).get("format") == CACHE_FORMAT):
        if strict:
            raise VFMTokError(f"{folder} holds an incomplete or unsupported feature cache (format {CACHE_FORMAT} expected)")
        return None
    return idx


def check_compatible(cache: "str | Path | dict | CachedFeatureDataset", encoder: FrozenEncoder,
                     image_size: int | None = None) -> None:
    """Raise VFMTokError unless the cache was built with this encoder (same weights) and image size."""
    if isinstance(cache, CachedFeatureDataset):
        idx, where = cache.index, cache.path
    elif isinstance(cache, dict):
        idx, where = cache, "feature cache"
    else:
        idx, where = _read_index(Path(cache)), Path(cache)
    built = idx["build"]["encoder"]
    mine = encoder_record(encoder)
    b_in, m_in = built["spec"]["input_size"], mine["spec"]["input_size"]
    if built["name"] != mine["name"] or b_in != m_in:
        raise VFMTokError(f"{where} was built with encoder '{built['name']}' at {b_in} px, "
                          f"not '{mine['name']}' at {m_in} px; rebuild the cache for this encoder")
    strip = lambda spec: {k: v for k, v in spec.items() if k != "extra"}  # noqa: E731 (weights: fingerprint below)
    if strip(built["spec"]) != strip(mine["spec"]):
        raise VFMTokError(f"{where}: encoder '{mine['name']}' levels/normalisation differ from the ones cached")
    if built["fingerprint"] != mine["fingerprint"]:
        kind = lambda p: "pretrained" if p else "random-init"  # noqa: E731
        raise VFMTokError(f"{where} was built with other weights for '{mine['name']}' "
                          f"({kind(built['pretrained'])}, fingerprint {built['fingerprint']}) than this encoder "
                          f"({kind(mine['pretrained'])}, fingerprint {mine['fingerprint']})")
    if image_size is not None and int(image_size) != idx["build"]["image_size"]:
        raise VFMTokError(f"{where} holds {idx['build']['image_size']} px images, expected {image_size} px")


class CachedFeatureDataset(torch.utils.data.Dataset):
    """Items (image in [-1,1], label, levels: list of float32 maps, target) from a feature cache.

    `view=None` picks one stored view per image at random, changing with `set_epoch`; an int fixes it.
    """

    def __init__(self, path: str | Path, view: int | None = None, seed: int = 0):
        self.path = Path(path)
        self.index = _read_index(self.path)
        build = self.index["build"]
        self.views = int(build["views"])
        require(view is None or 0 <= view < self.views, f"view {view} out of range: cache has {self.views} views")
        self.view = view
        self.seed = seed
        self.image_size = int(build["image_size"])
        self.classes = list(self.index.get("classes", []))
        self.n_levels = len(build["encoder"]["spec"]["level_names"])
        self._keys = ["images", "labels"] + [f"level{i}" for i in range(self.n_levels)]
        if "target" in self.index["shapes"]:
            self._keys.append("target")
        for k in self._keys:
            f = self.path / f"{k}.npy"
            require(f.is_file(), f"feature cache {self.path} is missing {f.name}")
            shape = list(np.load(f, mmap_mode="r").shape)
            require(shape == self.index["shapes"][k], f"{f} has shape {shape}, index says {self.index['shapes'][k]}")
        self._arrays: dict[str, np.ndarray] | None = None
        self._epoch = 0

    @property
    def encoder_name(self) -> str:
        """Name of the encoder the features come from."""
        return self.index["build"]["encoder"]["name"]

    def check_compatible(self, encoder: FrozenEncoder, image_size: int | None = None) -> None:
        """Raise VFMTokError unless `encoder` (and image_size) match what was cached."""
        check_compatible(self, encoder, image_size)

    def set_epoch(self, epoch: int) -> None:
        """Change which random view each image yields (view=None)."""
        self._epoch = epoch

    def __len__(self) -> int:
        return int(self.index["build"]["count"])

    def _arr(self) -> dict[str, np.ndarray]:
        if self._arrays is None:  # opened lazily: one set of memmaps per worker process
            self._arrays = {k: np.load(self.path / f"{k}.npy", mmap_mode="r") for k in self._keys}
        return self._arrays

    def __getitem__(self, i: int):
        a = self._arr()
        v = self.view
        if v is None:
            v = random.Random(f"{self.seed}:{self._epoch}:{i}").randrange(self.views)
        image = torch.from_numpy(np.asarray(a["images"][i, v], dtype=np.float32)).div(127.5).sub(1.0)
        levels = [torch.from_numpy(np.asarray(a[f"level{li}"][i, v], dtype=np.float32)) for li in range(self.n_levels)]
        target = torch.from_numpy(np.asarray(a["target"][i, v], dtype=np.float32)) if "target" in a else levels[-1]
        return image, int(a["labels"][i]), levels, target

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_arrays"] = None
        return state
