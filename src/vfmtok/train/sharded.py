"""Sharded (FSDP) training checkpoints through torch.distributed.checkpoint: each rank writes its own shards.

Layout inside a checkpoint folder: `sharded/` (DCP: `.metadata` + one file per rank) holding `model.*`, `optimizer.*`
and `ema.*`; beside it the usual `config.json` and a small `train_state.pt` (step, per-rank RNG, world size). Loading
reshards to the world size of the loading run, so a run resumes on another number of processes. The last
checkpoint of a run also gets `model.safetensors` (consolidated from the shards by rank 0 reading them back, no
collective), so sampling and export read it like any other; `consolidate_checkpoint` does the same for any other.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.io import CONFIG_NAME, WEIGHTS_NAME, read_json, save_safetensors

SHARDED_DIR = "sharded"


def is_sharded(folder: Path) -> bool:
    """Whether a checkpoint folder holds DCP shards."""
    return (Path(folder) / SHARDED_DIR / ".metadata").is_file()


def _state(model: torch.nn.Module, opt: torch.optim.Optimizer, ema: Any) -> dict[str, Any]:
    """The sharded (DTensor) state of model, optimiser and EMA: what each rank holds, nothing gathered."""
    model_sd, opt_sd = get_state_dict(model, opt)
    st: dict[str, Any] = {"model": model_sd, "optimizer": opt_sd}
    if ema is not None:
        st["ema"] = ema.params
    return st


def save_sharded(folder: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, ema: Any) -> None:
    """Write this rank's shards of model, optimiser and EMA under folder/sharded (a collective: every rank calls it)."""
    dcp.save(_state(model, opt, ema), checkpoint_id=str(Path(folder) / SHARDED_DIR))


def load_sharded(folder: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, ema: Any) -> None:
    """Load folder/sharded into model, optimiser and EMA, resharded to this run's world size (a collective)."""
    st = _state(model, opt, ema)
    if ema is None:
        st.pop("ema", None)
    dcp.load(st, checkpoint_id=str(Path(folder) / SHARDED_DIR))
    set_state_dict(model, opt, model_state_dict=st["model"], optim_state_dict=st["optimizer"])


def read_full(folder: Path, part: str) -> dict[str, torch.Tensor]:
    """Full CPU tensors of one part ('model' or 'ema') of a sharded checkpoint, read by this process alone."""
    path = Path(folder) / SHARDED_DIR
    meta = FileSystemReader(str(path)).read_metadata().state_dict_metadata
    prefix = part + "."
    st = {k: torch.empty(m.size, dtype=m.properties.dtype) for k, m in meta.items()
          if k.startswith(prefix) and isinstance(m, TensorStorageMetadata)}
    if not st:
        raise VFMTokError(f"{path} holds no '{part}' tensors")
    with warnings.catch_warnings():  # torch warns that it assumes one process even with no_dist=True: we mean it
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(st, checkpoint_id=str(path), no_dist=True)
    return {k[len(prefix):]: v for k, v in st.items()}


def write_consolidated(folder: str | Path, model_type: str) -> Path:
    """Write folder/model.safetensors (the EMA weights when the run kept an EMA, else the model's) from its shards;
    read by this process alone (no collective)."""
    folder = Path(folder)
    if not is_sharded(folder):
        raise VFMTokError(f"{folder} holds no sharded checkpoint ({SHARDED_DIR}/.metadata)")
    meta = FileSystemReader(str(folder / SHARDED_DIR)).read_metadata().state_dict_metadata
    part = "ema" if any(k.startswith("ema.") for k in meta) else "model"
    save_safetensors(folder / WEIGHTS_NAME, read_full(folder, part), metadata={"model_type": model_type})
    return folder


def consolidate_checkpoint(folder: str | Path) -> Path:
    """model.safetensors for a sharded checkpoint folder that has none (any but a run's last), for sampling/export."""
    return write_consolidated(folder, read_json(Path(folder) / CONFIG_NAME)["model_type"])
