"""Device names from the command line ('auto', 'cpu', 'cuda', 'cuda:N') -> torch.device, one rule everywhere."""

from __future__ import annotations

import torch

from vfmtok.utils.errors import VFMTokError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """'auto' (or None) -> cuda when available, else cpu; a clear one-line error for unknown or unavailable devices."""
    if isinstance(name, torch.device):
        return name
    name = "auto" if name is None else str(name).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise VFMTokError(f"device '{name}' requested but CUDA is not available")
        if ":" in name and int(name[5:]) >= torch.cuda.device_count():
            raise VFMTokError(f"device '{name}' requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return torch.device(name)
    raise VFMTokError(f"unknown device '{name}' (use {DEVICE_CHOICES})")
