"""Human-readable names for ImageNet wnid class folders ('n02088364' -> 'beagle'), from timm's ImageNet-1k table."""

from __future__ import annotations

import functools
import re

WNID = re.compile(r"n\d{8}")


@functools.lru_cache(maxsize=1)
def _wnid_table() -> dict[str, str]:
    try:
        from timm.data import ImageNetInfo
    except ImportError:  # older timm: folders keep their wnids
        return {}
    info = ImageNetInfo()
    # The first synonym of WordNet's lemma list ("tench, Tinca tinca" -> "tench") is the common name.
    return {w: info.label_name_to_description(w).split(",")[0].strip() for w in info.label_names()}


def display_name(folder: str) -> str:
    """An ImageNet wnid's common name; any other folder name unchanged."""
    if WNID.fullmatch(folder):
        return _wnid_table().get(folder, folder)
    return folder


def normalise_class(text: str) -> str:
    """What a --class value means as a name: a wnid becomes its common name, other text is kept (lower-cased)."""
    return display_name(text.strip()).lower()
