"""User-facing tokenizer API: `VFMTokenizer.from_pretrained(dir)`, `encode`, `decode`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from vfmtok.tokenizer.base import TokenizerBase
from vfmtok.tokenizer.build import build_tokenizer
from vfmtok.tokenizer.config import TokenizerConfig
from vfmtok.utils.config import from_dict, to_dict
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.io import WEIGHTS_NAME, atomic_path, file_sha256
from vfmtok.utils.pretrained import cast_floats, load_pretrained, resolve_checkpoint, save_pretrained

MODEL_TYPES = ("vfmtok", "vqgan")


class VFMTokenizer:
    """A trained tokenizer (VFMTok or baseline VQGAN) in eval mode: images <-> token ids."""

    def __init__(self, model: TokenizerBase, checkpoint_path: Path | None = None, class_names: list[str] | None = None):
        self.model = model.eval()
        self.checkpoint_path = checkpoint_path
        self.class_names = class_names
        self._hash: str | None = None
        self.encoder_file: Path | None = None  # encoder weights stored inside the checkpoint folder (official import)
        # hashes of the checkpoints whose code ids this one reproduces exactly (decoder-only fine-tuning keeps them)
        self.same_codes_as: list[str] = []

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
                        encoder_weights: str | None = None) -> "VFMTokenizer":
        """Load from a checkpoint folder (model.safetensors + config.json) or a run folder (its latest checkpoint)."""
        folder = resolve_checkpoint(path)
        state, config, mtype = load_pretrained(folder, MODEL_TYPES, required=("model",))
        cfg = from_dict(TokenizerConfig, config["model"], where=f"{folder}/config.json model")
        if encoder_weights:
            cfg.encoder_weights = encoder_weights
        local = None
        if not encoder_weights and cfg.encoder_weights and not Path(cfg.encoder_weights).is_absolute() \
                and (folder / cfg.encoder_weights).exists():
            # a relative file inside the checkpoint folder (an imported official DINOv2) travels with it
            local = folder / cfg.encoder_weights
            cfg.encoder_weights = str(local)
        model = build_tokenizer(cfg, meta=True)  # no random init drawn and thrown away: the file has the weights
        model.load_trainable_state_dict(state, source=str(folder), assign=True)
        tok = cls(model.to(device), folder, config.get("class_names"))
        tok.encoder_file = local
        tok.same_codes_as = [str(h) for h in config.get("same_codes_as", [])]
        return tok

    def save_pretrained(self, folder: str | os.PathLike, extra: dict[str, Any] | None = None,
                        dtype: torch.dtype | None = None, card: dict[str, Any] | None = None) -> Path:
        """Write model.safetensors (floats stored as `dtype` when given) + config.json + README.md model card; the
        frozen encoder is not saved."""
        config = {"model": to_dict(self.model.cfg), "class_names": self.class_names,
                  **({"same_codes_as": self.same_codes_as} if self.same_codes_as else {}), **(extra or {})}
        if self.encoder_file is not None and self.encoder_file.is_file():
            # keep the folder self-contained: the encoder file goes along (hard link when possible)
            dst = Path(folder) / self.encoder_file.name
            if dst.resolve() != self.encoder_file.resolve():
                with atomic_path(dst) as tmp:
                    tmp.unlink()
                    try:
                        os.link(self.encoder_file, tmp)
                    except OSError:
                        shutil.copyfile(self.encoder_file, tmp)
            config["model"]["encoder_weights"] = self.encoder_file.name
        return save_pretrained(folder, cast_floats(self.model.trainable_state_dict(), dtype), config,
                               self.model.cfg.arch, card)

    def push_to_hub(self, repo_id: str, folder: str | os.PathLike | None = None, private: bool = False,
                    token: str | None = None) -> str:
        """Upload this tokenizer's checkpoint folder (saved first when `folder` is given) to the Hub."""
        from vfmtok.utils.hub import push_to_hub

        if folder is not None:
            self.save_pretrained(folder)
        src = folder or self.checkpoint_path
        if src is None:
            raise VFMTokError("an unsaved tokenizer: pass folder= to save it before pushing")
        return push_to_hub(src, repo_id, private=private, token=token)

    # --- facts ---
    @property
    def config(self) -> TokenizerConfig:
        return self.model.cfg

    @property
    def image_size(self) -> int:
        return self.model.cfg.image_size

    @property
    def num_tokens(self) -> int:
        return self.model.num_tokens

    @property
    def token_grid(self) -> tuple[int, int]:
        return tuple(self.model.token_grid)

    @property
    def codebook_size(self) -> int:
        return self.model.cfg.codebook_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def checkpoint_hash(self) -> str:
        """Short SHA-256 of model.safetensors ('unsaved' for an in-memory model)."""
        if self._hash is None:
            p = self.checkpoint_path
            self._hash = file_sha256(p / WEIGHTS_NAME) if p and (p / WEIGHTS_NAME).is_file() else "unsaved"
        return self._hash

    # --- use ---
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [-1,1] -> (B, N) int64 ids."""
        return self.model.encode(images.to(self.device, torch.float32))

    def encode_topk(self, images: torch.Tensor, k: int) -> torch.Tensor:
        """(B,3,H,W) in [-1,1] -> (B, k, N) int64: the k nearest code ids per token (VFMTok-RAR's top-2 augmentation)."""
        return self.model.encode_topk(images.to(self.device, torch.float32), k)

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, N) ids -> (B,3,H,W) images in [-1,1]."""
        return self.model.decode(ids.to(self.device))

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """decode(encode(images))."""
        return self.decode(self.encode(images))

    def probe_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """{'tokens_mean': (B, width), 'cls': (B, width) when the tokenizer has a decoder CLS}."""
        return self.model.probe_features(images.to(self.device, torch.float32))


def load_tokenizer(path: str | os.PathLike, device: str | torch.device = "cpu") -> VFMTokenizer:
    """Shorthand for VFMTokenizer.from_pretrained."""
    return VFMTokenizer.from_pretrained(path, device)
