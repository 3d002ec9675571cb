"""Where the package keeps its bundled small model (tokenizer + GPT pair written by `vfmtok export`)."""

from __future__ import annotations

from pathlib import Path

from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.io import WEIGHTS_NAME

DEFAULT_MODEL_NAME = "imagenette64"


def bundled_model_dir() -> Path:
    """Where the package keeps its bundled small model."""
    return Path(__file__).resolve().parents[1] / "assets" / "models" / DEFAULT_MODEL_NAME


def default_generator() -> Path:
    """The bundled GPT checkpoint, or a one-line error saying how to make it."""
    gen = bundled_model_dir() / "generator"
    if not (gen / WEIGHTS_NAME).is_file():
        raise VFMTokError(f"no --gpt given and the bundled model is missing ({gen}); "
                          "build it with `make small-model` or pass --gpt")
    return gen
