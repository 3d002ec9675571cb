"""Image datasets: a folder of class sub-folders, or a zip holding one; labels from sorted folder names."""

from __future__ import annotations

import io
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from vfmtok.utils.classnames import display_name
from vfmtok.utils.errors import VFMTokError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

def class_display_name(folder_name: str) -> str:
    """'n03445777' -> 'golf ball' (any ImageNet-1k wnid); other names pass through."""
    return display_name(folder_name)


@dataclass
class _Source:
    """Where images live: a directory or a zip file plus a member prefix."""

    root: Path
    zip_path: Path | None = None
    prefix: str = ""


def _open_source(path: str | Path, split: str | None) -> tuple[_Source, list[tuple[str, str]]]:
    """List (relative member, class folder) pairs under `path` (folder or zip), optionally in `split/`."""
    path = Path(path)
    if not path.exists():
        raise VFMTokError(f"dataset not found: {path}")
    if not (path.is_file() or path.is_dir()):
        raise VFMTokError(f"dataset {path} is a special file (a device or FIFO), not a folder or zip")
    items: list[tuple[str, str]] = []
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise VFMTokError(f"dataset {path} is a file but not a zip archive")
        with zipfile.ZipFile(path) as z:
            infos = [i for i in z.infolist() if i.filename.lower().endswith(IMAGE_EXTS) and not i.is_dir()]
        sizes = {i.filename: i.file_size for i in infos}
        names = list(sizes)
        unsafe = next((n for n in names if n.startswith(("/", "\\")) or ".." in n.replace("\\", "/").split("/")), None)
        if unsafe is not None:  # nothing is extracted, but such a member names a place outside the archive
            raise VFMTokError(f"zip {path} has a member outside the archive's folder ('{unsafe}'); refusing it")
        prefix = _find_zip_prefix(names, split, path)
        for n in names:
            if n.startswith(prefix):
                rel = n[len(prefix):]
                parts = rel.split("/")
                if len(parts) == 2:
                    _refuse_empty(sizes[n], f"{path}:{n}")
                    items.append((n, parts[0]))
        src = _Source(root=path, zip_path=path, prefix=prefix)
    else:
        root = path / split if split and (path / split).is_dir() else path
        if split and root == path and not any(p.is_dir() and p.name == split for p in path.iterdir()):
            # No split folder: accept a plain class-folder tree when split is only a preference.
            pass
        # is_dir / is_file are False for a symlink loop (ELOOP), so a looping link is skipped, not followed.
        for cls_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for f in sorted(cls_dir.iterdir()):
                if f.suffix.lower() in IMAGE_EXTS and f.is_file():
                    _refuse_empty(f.stat().st_size, f)
                    items.append((str(f), cls_dir.name))
        src = _Source(root=root)
    if not items:
        where = f"{path}" + (f" (split '{split}')" if split else "")
        raise VFMTokError(f"no images found in {where}: expected class sub-folders holding {'/'.join(IMAGE_EXTS)} files")
    return src, sorted(items)


def _refuse_empty(size: int, where: str | Path) -> None:
    # An empty file never decodes; said here, at listing, it is not mistaken for a smaller problem later.
    if size == 0:
        raise VFMTokError(f"cannot read image {where}: the file is empty (0 bytes); remove or replace it")


def _find_zip_prefix(names: list[str], split: str | None, path: Path) -> str:
    """Prefix such that members look like prefix + class/file.jpg."""
    prefixes = {}
    for n in names:
        parts = n.split("/")
        if len(parts) >= 2:
            prefixes.setdefault("/".join(parts[:-2]) + ("/" if len(parts) > 2 else ""), 0)
            prefixes["/".join(parts[:-2]) + ("/" if len(parts) > 2 else "")] += 1
    if split:
        cands = [p for p in prefixes if p.rstrip("/").split("/")[-1] == split]
        if cands:
            return max(cands, key=lambda p: prefixes[p])
    if not prefixes:
        raise VFMTokError(f"zip {path} holds no class sub-folders")
    return max(prefixes, key=lambda p: prefixes[p])


def load_rgb(data_or_path: bytes | str | Path, name: str | None = None) -> Image.Image:
    """Open an image as 8-bit RGB, upright: EXIF rotation applied, 16-bit scaled down, transparency over white.
    `name`: the file the bytes came from, for the error message."""
    try:
        img = Image.open(io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path)
        img = ImageOps.exif_transpose(img)  # phone photos store the rotation in EXIF, not in the pixels
        return _to_rgb(img)
    except Exception as e:  # PIL raises many types for broken files
        raise _image_error(e, data_or_path, name) from None


def check_image(data: bytes, name: str) -> None:
    """Refuse bytes that do not decode as an image (empty, truncated, a decompression bomb), naming the file; JPEGs
    are decoded at reduced scale (all their data is still read), which keeps the check cheap."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format == "JPEG":
                img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
    except Exception as e:  # PIL raises many types for broken files
        raise _image_error(e, data, name) from None


def _image_error(e: Exception, data_or_path: bytes | str | Path, name: str | None) -> VFMTokError:
    where = name or ("" if isinstance(data_or_path, bytes) else str(data_or_path))
    if isinstance(data_or_path, bytes) and not data_or_path:
        why = "the file is empty (0 bytes)"
    elif isinstance(e, Image.DecompressionBombError):
        why = f"{str(e).splitlines()[0]} (a decompression bomb?)"
    else:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "<_io.BytesIO" in why:  # PIL names its in-memory buffer, not the file
            why = why.split("<_io.BytesIO")[0].rstrip(" :") or "not a readable image"
    return VFMTokError(f"cannot read image {where}: {why}" if where else f"cannot read image: {why}")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        # PIL's convert("RGB") clips these at 255 (a 16-bit PNG turns white); scale the 16-bit range to 8 bits.
        arr = np.asarray(img, dtype=np.float64)
        arr = arr / 257.0 if img.mode != "F" else arr * (255.0 if arr.max() <= 1.0 else 1.0)
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return img.convert("RGB")


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> float tensor (3,H,W) in [-1, 1]."""
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(127.5).sub(1.0)


def center_crop_resize(img: Image.Image, size: int) -> Image.Image:
    """ADM-style: downsample with BOX while large, then bicubic, then centre crop to size x size."""
    while min(img.size) >= 2 * size:
        img = img.resize(tuple(x // 2 for x in img.size), resample=Image.BOX)
    scale = size / min(img.size)
    img = img.resize(tuple(round(x * scale) for x in img.size), resample=Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def random_crop_resize(img: Image.Image, size: int, rng: random.Random, min_scale: float = 0.8) -> Image.Image:
    """ADM-style random crop: shorter side resized to a random value in [size, size/min_scale], random crop."""
    target = rng.randint(size, max(size, int(round(size / min_scale))))
    while min(img.size) >= 2 * target:
        img = img.resize(tuple(x // 2 for x in img.size), resample=Image.BOX)
    scale = target / min(img.size)
    img = img.resize(tuple(max(size, round(x * scale)) for x in img.size), resample=Image.BICUBIC)
    w, h = img.size
    left, top = rng.randint(0, w - size), rng.randint(0, h - size)
    return img.crop((left, top, left + size, top + size))


def random_view(img: Image.Image, size: int, rng: random.Random, min_scale: float = 0.8, hflip: bool = True) -> Image.Image:
    """The training augmentation: random_crop_resize, then (if hflip) a horizontal flip with probability 1/2."""
    img = random_crop_resize(img, size, rng, min_scale)
    if hflip and rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return img


def make_views(img: Image.Image, size: int, ten_crop: bool = False, crop_range: float = 1.0) -> list[Image.Image]:
    """[centre, centre flipped] or, with ten_crop, 5 crops (centre, 4 corners) of a crop_range*size square, each + flip."""
    big = center_crop_resize(img, max(size, round(size * crop_range)))
    S = big.size[0]
    if ten_crop:
        c, e = (S - size) // 2, S - size
        corners = [(c, c), (0, 0), (e, 0), (0, e), (e, e)]
    else:
        corners = [((S - size) // 2,) * 2]
    views = []
    for x, y in corners:
        crop = big.crop((x, y, x + size, y + size))
        views += [crop, crop.transpose(Image.FLIP_LEFT_RIGHT)]
    return views


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images from class sub-folders (a folder, or a zip of one); items are (image in [-1,1], label)."""

    def __init__(self, path: str | Path, image_size: int, split: str | None = None, train: bool = False,
                 hflip: bool | None = None, min_scale: float = 0.8, limit_per_class: int | None = None, seed: int = 0):
        self.path = Path(path)
        self.image_size = int(image_size)
        self.train = train
        self.hflip = train if hflip is None else hflip
        self.min_scale = min_scale
        self.src, items = _open_source(path, split)
        self.classes = sorted({c for _, c in items})
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        if limit_per_class:
            kept, count = [], {}
            for m, c in items:
                if count.get(c, 0) < limit_per_class:
                    kept.append((m, c))
                    count[c] = count.get(c, 0) + 1
            items = kept
        self.items = items
        self.seed = seed
        self._zip: zipfile.ZipFile | None = None
        self._epoch = 0

    @property
    def class_names(self) -> list[str]:
        """Readable class names, in label order."""
        return [class_display_name(c) for c in self.classes]

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation stream (used by the training loop)."""
        self._epoch = epoch

    def read_bytes(self, i: int) -> bytes:
        """The i-th image file's bytes, as stored."""
        member, _ = self.items[i]
        if self.src.zip_path is not None:
            if self._zip is None:  # one handle per worker process
                self._zip = zipfile.ZipFile(self.src.zip_path)
            return self._zip.read(member)
        try:
            return Path(member).read_bytes()
        except OSError as e:
            raise VFMTokError(f"cannot read image: {e}") from None

    def describe(self, i: int) -> str:
        """Where the i-th image lives: its path, or zip:member."""
        member, _ = self.items[i]
        return member if self.src.zip_path is None else f"{self.src.zip_path}:{member}"

    def read(self, i: int) -> Image.Image:
        """The i-th image as PIL RGB, unaugmented."""
        return load_rgb(self.read_bytes(i), self.describe(i))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.read(i)
        label = self.class_to_idx[self.items[i][1]]
        if self.train:
            # (seed, epoch, index) only: the same crop whichever worker, or resumed run, reads the image.
            rng = random.Random(hash((self.seed, self._epoch, i)))
            img = random_view(img, self.image_size, rng, self.min_scale, self.hflip)
        else:
            img = center_crop_resize(img, self.image_size)
        return to_tensor(img), label

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_zip"] = None
        return state
