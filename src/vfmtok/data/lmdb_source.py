"""Read the official VFMTok code's ImageNet LMDB (CVMI-Lab/VFMTok2 `commons/data/imagenet_lmdb.py`), without running pickle.

Layout, as that file reads it: key b"num_samples" -> the sample count as ASCII digits; keys b"0" .. b"<n-1>" -> a
pickled dict {"image": encoded image bytes, "label": int}. The values are unpickled here with every global refused
(a dict of bytes/str/int needs none), so a crafted file cannot run code. Needs the optional `lmdb` package.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

from vfmtok.utils.errors import VFMTokError


class _NoGlobals(pickle.Unpickler):
    """Builds only pickle's primitive types; any class or function reference is an error."""

    def find_class(self, module: str, name: str):
        raise VFMTokError(f"LMDB record references {module}.{name}; only dicts of bytes/ints are accepted")


def safe_record(raw: bytes) -> tuple[bytes, int]:
    """(image bytes, label) of one LMDB value; a one-line error for anything else."""
    try:
        rec = _NoGlobals(io.BytesIO(raw)).load()
    except VFMTokError:
        raise
    except Exception as e:
        raise VFMTokError(f"unreadable LMDB record: {e}") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("image"), bytes) or not isinstance(rec.get("label"), int):
        raise VFMTokError("LMDB record is not {'image': bytes, 'label': int}")
    return rec["image"], rec["label"]


class LmdbSource:
    """Samples of an official-layout LMDB, in key order; classes are label numbers (the layout stores no names)."""

    def __init__(self, path: str | Path):
        try:
            import lmdb
        except ImportError:
            raise VFMTokError("reading LMDB needs the optional package: pip install 'vfmtok[lmdb]'") from None
        self.path = Path(path)
        self.env = lmdb.open(str(self.path), readonly=True, lock=False, readahead=False, meminit=False)
        with self.env.begin() as txn:
            raw = txn.get(b"num_samples")
            if raw is None:
                raise VFMTokError(f"{self.path}: no 'num_samples' key; not the official VFMTok LMDB layout")
            self.n = int(raw.decode())
        self.classes = None  # labels only: prepare-data counts them from the written shards
        self.parallel_ok = False  # an LMDB environment must not be used across fork

    def __len__(self) -> int:
        return self.n

    def get(self, i: int) -> tuple[bytes, str, int, str]:
        """(bytes, extension, label, where) of sample i; the extension is sniffed from the image header."""
        with self.env.begin() as txn:
            raw = txn.get(str(i).encode())
        if raw is None:
            raise VFMTokError(f"{self.path}: key {i} missing (num_samples is {self.n})")
        data, label = safe_record(raw)
        ext = ".png" if data[:8] == b"\x89PNG\r\n\x1a\n" else ".jpg" if data[:2] == b"\xff\xd8" else ".img"
        return data, ext, label, f"{self.path} key {i}"
