"""Evaluation protocols: vfmtok's own, and the official one (VFMTok / LlamaGen scripts), selectable by name.

official (read from VFMTok2 `VQModel.decode_codes_to_img`, `tokenizer/utils/vqgan_test.py` and LlamaGen's
`sample_c2i_ddp.py`): generated ids are decoded at the tokenizer's 336 px and resized to 256 with
`F.interpolate(mode="bicubic")` on the unclamped decoder output, then x * 127.5 + 128 clamped to uint8; labels are
`torch.randint(0, 1000)`; reconstructions and their ground truth are converted to uint8 and PIL-resized to 256.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vfmtok.utils.errors import VFMTokError, require


@dataclass(frozen=True)
class Protocol:
    """How images are produced for scoring."""

    name: str
    size: int | None      # scored resolution (None: the tokenizer's own)
    labels: str           # default class labels: "balanced" (n / classes each) or "random" (uniform draws)
    description: str


PROTOCOLS = {
    "vfmtok": Protocol("vfmtok", None, "balanced", "images scored at the tokenizer's resolution; balanced labels"),
    "official": Protocol("official", 256, "random", "decode at the tokenizer's resolution (336), bicubic resize to "
                         "256 (F.interpolate on the unclamped output; reconstructions and ground truth: PIL bicubic "
                         "on uint8), random labels as the official scripts"),
}
LABEL_KINDS = ("balanced", "random")


def get_protocol(name: str) -> Protocol:
    """A protocol by name, with a one-line error."""
    if name not in PROTOCOLS:
        raise VFMTokError(f"unknown --protocol '{name}'; choose from {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def make_labels(num_classes: int, n: int, kind: str, seed: int = 0) -> torch.Tensor:
    """n class labels: balanced (n // num_classes of each, in class order; n must divide) or random (seeded draws)."""
    require(kind in LABEL_KINDS, f"--labels must be one of {', '.join(LABEL_KINDS)}, got '{kind}'")
    require(n >= 1, f"need at least one image, got {n}")
    if kind == "balanced":
        require(n % num_classes == 0, f"{n} images do not split evenly over {num_classes} classes (balanced labels)")
        return torch.arange(num_classes).repeat_interleave(n // num_classes)
    return torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(seed))


class ResizedTokenizer:
    """A tokenizer whose decode() returns images bicubic-resized to `size`, from the unclamped decoder output."""

    def __init__(self, tokenizer: Any, size: int):
        self._tok, self.image_size = tokenizer, int(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tok, name)

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, N) ids -> (B, 3, size, size), not clamped (to_uint8 clamps after the resize, as the official code)."""
        model = self._tok.model
        ids = ids.to(self._tok.device)
        if ids.dim() != 2 or ids.shape[1] != model.num_tokens:
            raise VFMTokError(f"expected ids of shape (B, {model.num_tokens}), got {tuple(ids.shape)}")
        img, _ = model.decode_tokens(model.post_quant(model.quantizer.lookup(ids.long())))
        if img.shape[-1] != self.image_size:
            img = F.interpolate(img.float(), size=(self.image_size, self.image_size), mode="bicubic")
        return img


def for_protocol(tokenizer: Any, protocol: Protocol) -> Any:
    """The tokenizer as the protocol decodes with it."""
    if protocol.size is None or protocol.size == tokenizer.image_size:
        return tokenizer
    return ResizedTokenizer(tokenizer, protocol.size)


def pil_resize(u8: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B,H,W,3) -> (B,size,size,3) with PIL's bicubic resize (the official reconstruction protocol)."""
    if u8.shape[1:3] == (size, size):
        return u8
    out = [np.asarray(Image.fromarray(np.ascontiguousarray(a)).resize((size, size), Image.BICUBIC)) for a in u8.numpy()]
    return torch.from_numpy(np.stack(out))


def protocol_record(protocol: Protocol, labels: str | None = None) -> dict:
    """The protocol as stored in a result JSON."""
    return {**asdict(protocol), **({"labels": labels} if labels else {})}


def resized_set(images: Any, size: int) -> Any:
    """An ImageSet whose images are PIL-bicubic resized to `size` (its description says so, for the stats cache)."""
    from vfmtok.eval.imagesets import ImageSet

    def read(i: int) -> np.ndarray:
        return pil_resize(torch.from_numpy(np.array(images.read(i))[None]), size)[0].numpy()

    return ImageSet({**images.description, "resized_to": size, "resize": "PIL bicubic"}, size, images.labels,
                    images.class_names, len(images), read)
