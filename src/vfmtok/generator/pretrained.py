"""Checkpoint I/O every generator architecture shares (the GeneratorIO mixin of GPT and RAR).

A generator folder is `model.safetensors` + `config.json`; config.json's `model_type` ("gpt", "rar") names the
architecture and its `config[<model_type>]` section holds the architecture dataclass.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import torch

from vfmtok.utils.config import from_dict, to_dict
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.io import load_state_strict
from vfmtok.utils.pretrained import cast_floats, load_pretrained, resolve_checkpoint, save_pretrained


class GeneratorIO:
    """Mixin for nn.Module generators with `config` (a dataclass), `class_names`, `tokenizer_info` and `source`."""

    model_type: ClassVar[str]  # config.json model_type and the name of its architecture section
    config_class: ClassVar[type]

    def export_config(self) -> dict[str, Any]:
        """config.json payload: the architecture + class names + the tokenizer it was trained on (+ its sampling)."""
        out = {self.model_type: to_dict(self.config), "class_names": self.class_names, "tokenizer": self.tokenizer_info}
        if getattr(self, "sampling", None):
            out["sampling"] = dict(self.sampling)
        return out

    def sampling_args(self, temperature: float | None = None, top_k: int | None = None,
                      top_p: float | None = None) -> tuple[float, int, float]:
        """(temperature, top_k, top_p): each given value, else the model's recommended one, else 1.0 / 0 / 1.0 (off).

        The recommendation lives in config.json's "sampling" (like a Hub generation_config.json), written by
        `vfmtok export --temperature/--top-k` from a measured sweep."""
        rec = getattr(self, "sampling", None) or {}
        pick = lambda given, key, off: type(off)(given if given is not None else rec.get(key, off))  # noqa: E731
        return pick(temperature, "temperature", 1.0), pick(top_k, "top_k", 0), pick(top_p, "top_p", 1.0)

    def save_pretrained(self, folder: str | os.PathLike, dtype: torch.dtype | None = None,
                        card: dict[str, Any] | None = None) -> Path:
        """Write model.safetensors (floats stored as `dtype` when given) + config.json + README.md model card."""
        return save_pretrained(folder, cast_floats(self.state_dict(), dtype), self.export_config(), self.model_type, card)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu"):
        """Load from a checkpoint folder or a run folder (its latest checkpoint), in eval mode."""
        folder = resolve_checkpoint(path)
        state, config, _ = load_pretrained(folder, cls.model_type)
        key = cls.model_type
        if not isinstance(config, dict) or key not in config:
            raise VFMTokError(f"{folder}/config.json has no '{key}' section")
        arch = from_dict(cls.config_class, config[key], where=f"{folder}/config.json {key}")
        with torch.device("meta"):  # no random init to overwrite: the weights come from the file
            model = cls(arch)
        load_state_strict(model, state, str(folder), assign=True)
        model.class_names = config.get("class_names")
        model.tokenizer_info = config.get("tokenizer")
        model.sampling = _checked_sampling(config.get("sampling"), folder)
        model.source = folder
        return model.to(device).eval()

    def push_to_hub(self, repo_id: str, folder: str | os.PathLike | None = None, private: bool = False,
                    token: str | None = None) -> str:
        """Upload this generator's checkpoint folder (saved first when `folder` is given) to the Hub, as
        `VFMTokenizer.push_to_hub` does."""
        from vfmtok.utils.hub import push_to_hub

        if folder is not None:
            self.save_pretrained(folder)
        src = folder or getattr(self, "source", None)
        if src is None:
            raise VFMTokError("an unsaved generator: pass folder= to save it before pushing")
        return push_to_hub(src, repo_id, private=private, token=token)

    def recorded_tokenizer(self) -> Path | None:
        """The tokenizer recorded at training/export time; a relative path counts from this checkpoint's folder."""
        path = (self.tokenizer_info or {}).get("checkpoint_path")
        if not path:
            return None
        path = Path(path)
        if not path.is_absolute() and self.source is not None:
            path = (self.source / path).resolve()
        return path


def _checked_sampling(rec: Any, folder: Path) -> dict[str, Any]:
    """config.json's recommended sampling, checked: only known keys with usable values."""
    if rec is None:
        return {}
    try:
        ok = isinstance(rec, dict) and set(rec) <= {"temperature", "top_k", "top_p"} and \
            float(rec.get("temperature", 1.0)) > 0 and int(rec.get("top_k", 0)) >= 0 and 0 < float(rec.get("top_p", 1.0)) <= 1
    except (TypeError, ValueError):  # e.g. "top_k": "five"
        ok = False
    if not ok:
        raise VFMTokError(f"{folder}/config.json: bad 'sampling' {rec!r} (temperature > 0, top_k >= 0, 0 < top_p <= 1)")
    return dict(rec)
