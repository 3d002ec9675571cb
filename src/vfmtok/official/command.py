"""`vfmtok import-official`: official tokenizer/GPT/RAR files (+ the DINOv2 `.pth`) -> vfmtok checkpoint folders.

--tokenizer alone: OUT is a tokenizer folder (model.safetensors, config.json, encoder.safetensors = the DINOv2 in
timm layout, README.md). --gpt (LlamaGen GPT) or --rar (1d-tokenizer / VFMTok-RAR) alone: OUT is a generator folder.
A tokenizer and a generator: OUT/tokenizer and OUT/generator, the generator's config naming "../tokenizer" as
`vfmtok export` does. Everything is built under OUT.tmp and renamed when complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vfmtok.official.gpt_import import infer_gpt_config, is_official_gpt, map_gpt_state
from vfmtok.official.rar_import import import_rar_state, is_official_rar
from vfmtok.official.reading import load_official, pick_state, saved_args, strip_prefixes
from vfmtok.official.tokenizer_import import (dinov2_arch, dinov2_to_timm, infer_tokenizer_config,
                                              is_official_tokenizer, map_tokenizer_state)
from vfmtok.utils.atomic import atomic_path
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.hub import write_model_card
from vfmtok.utils.io import WEIGHTS_NAME, file_sha256, load_state_strict, read_json, save_safetensors, write_json

ENCODER_FILE = "encoder.safetensors"
# what each --option takes, and the keys that identify it (for one-line errors naming the right option)
_KINDS = {"tokenizer": ("an official VFMTok tokenizer", "decode_transformer.* / slot_quantize.*"),
          "gpt": ("an official LlamaGen/VFMTok GPT", "tok_embeddings / cls_embedding"),
          "rar": ("an official RAR (1d-tokenizer / VFMTok-RAR)", "target_aware_pos_embed / timesteps_embeddings")}


def _official_state(path: Path, which: str, want: str) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    ckpt = load_official(path)
    state, source = pick_state(ckpt, which, path)
    kinds = {"tokenizer": is_official_tokenizer(state), "gpt": is_official_gpt(state), "rar": is_official_rar(state)}
    if not kinds[want]:
        other = next((k for k, hit in kinds.items() if hit), None)
        hint = f" (it is {_KINDS[other][0]}: pass it with --{other})" if other else ""
        raise VFMTokError(f"{path} is not {_KINDS[want][0]} checkpoint{hint}: no {_KINDS[want][1]} keys")
    return state, saved_args(ckpt), source


def _dinov2_state(path: Path) -> dict[str, torch.Tensor]:
    ckpt = load_official(path)
    if isinstance(ckpt, dict) and "model" in ckpt and isinstance(ckpt["model"], dict):
        ckpt = ckpt["model"]
    if not isinstance(ckpt, dict) or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise VFMTokError(f"{path} is not a DINOv2 state dict (facebookresearch dinov2_*_pretrain.pth)")
    return strip_prefixes(ckpt)


def timm_target_state(encoder: str) -> dict[str, torch.Tensor]:
    """Names and shapes of the timm model behind a vfmtok encoder (built on the meta device: no memory, no init)."""
    import timm

    from vfmtok.encoders.vit import VIT_MODELS

    with torch.device("meta"):
        model = timm.create_model(VIT_MODELS[encoder].timm_name, pretrained=False, num_classes=0, dynamic_img_size=True)
    return model.state_dict()


def import_tokenizer(path: Path, dinov2: Path, out: Path, which: str = "ema") -> dict[str, Any]:
    """Write an official tokenizer (+ its DINOv2) as a vfmtok tokenizer folder `out`; returns import facts."""
    from vfmtok.tokenizer.api import VFMTokenizer
    from vfmtok.tokenizer.build import build_tokenizer

    state, args, source = _official_state(path, which, "tokenizer")
    fb = _dinov2_state(dinov2)
    encoder, dim = dinov2_arch(fb, dinov2)
    cfg = infer_tokenizer_config(state, args, encoder, dim, int(fb["patch_embed.proj.weight"].shape[-1]), path)
    mapped = map_tokenizer_state(state, cfg)
    out.mkdir(parents=True, exist_ok=True)
    save_safetensors(out / ENCODER_FILE, dinov2_to_timm(fb, timm_target_state(encoder), dinov2))
    del fb
    cfg.encoder_weights = str(out / ENCODER_FILE)
    model = build_tokenizer(cfg)  # loads the converted DINOv2 through timm: a strict check of that file too
    model.load_trainable_state_dict(mapped, source=f"{path} ({source})")
    model.cfg.encoder_weights = ENCODER_FILE  # relative: resolved against the checkpoint folder on load
    facts = {"source": path.name, "source_sha256": file_sha256(path), "weights": source, "dinov2": dinov2.name,
             "dinov2_sha256": file_sha256(dinov2), "encoder": encoder,
             "params": sum(v.numel() for v in model.trainable_state_dict().values())}
    VFMTokenizer(model).save_pretrained(out, extra={"official_import": facts}, card=_card("tokenizer", facts))
    return facts


def _card(kind: str, facts: dict[str, Any]) -> dict[str, Any]:
    """Model card fields of an imported checkpoint (no metric: none was measured by the import)."""
    return {"title": f"VFMTok {kind} (official weights, imported)",
            "what": f"The officially released {kind} `{facts['source']}` ({facts['weights']} weights, sha256 "
                    f"{facts['source_sha256']}), converted by `vfmtok import-official`; {facts['params']:,} parameters.",
            "data": "ImageNet-1k, as trained by the official release (CVMI-Lab/VFMTok; LlamaGen for the GPT code)."}


def _check_counts(num_tokens: int | None, n_head: int | None) -> None:
    for flag, v in (("--num-tokens", num_tokens), ("--n-head", n_head)):
        if v is not None and v < 1:
            raise VFMTokError(f"{flag} must be >= 1, got {v}")


def import_gpt(path: Path, out: Path, which: str = "ema", num_tokens: int | None = None,
               tokenizer_info: dict | None = None, n_head: int | None = None) -> dict[str, Any]:
    """Write an official GPT as a vfmtok GPT folder `out`; returns import facts."""
    _check_counts(num_tokens, n_head)
    from vfmtok.generator.gpt import GPT

    state, args, source = _official_state(path, which, "gpt")
    cfg, preset, appended = infer_gpt_config(state, args, path, num_tokens, n_head)
    model = GPT(cfg)
    load_state_strict(model, map_gpt_state(state, cfg, path), f"{path} ({source})")
    model.tokenizer_info = tokenizer_info
    facts = {"source": path.name, "source_sha256": file_sha256(path), "weights": source, "preset": preset,
             "null_class": "appended (zero row; the official model has no trained null class)" if appended else "trained",
             "params": sum(p.numel() for p in model.parameters())}
    _save_generator(model, out, facts, "GPT")
    return facts


def import_rar(path: Path, out: Path, which: str = "ema", num_tokens: int | None = None,
               tokenizer_info: dict | None = None, n_head: int | None = None) -> dict[str, Any]:
    """Write an official RAR as a vfmtok RAR folder `out`; returns import facts."""
    _check_counts(num_tokens, n_head)
    from vfmtok.generator.rar import RAR

    state, _, source = _official_state(path, which, "rar")
    cfg, mapped = import_rar_state(state, num_tokens, n_head, str(path))
    model = RAR(cfg)
    load_state_strict(model, mapped, f"{path} ({source})")
    model.tokenizer_info = tokenizer_info
    facts = {"source": path.name, "source_sha256": file_sha256(path), "weights": source,
             "shape": f"{cfg.dim} hidden / {cfg.n_layer} layers / {cfg.n_head} heads / MLP {cfg.mlp_dim}",
             "params": sum(p.numel() for p in model.parameters())}
    _save_generator(model, out, facts, "RAR")
    return facts


def _save_generator(model, out: Path, facts: dict[str, Any], kind: str) -> None:
    model.save_pretrained(out)
    meta_path = out / "config.json"
    meta = read_json(meta_path)
    meta["config"]["official_import"] = facts
    write_json(meta_path, meta)
    write_model_card(out, model.model_type, meta["config"], _card(kind, facts))


@dataclass
class ImportConfig:
    """What `import_official` converts: a tokenizer (with its DINOv2) and/or one generator (GPT or RAR) into `out`."""

    out: Path
    tokenizer: Path | None = None  # official VFMTok tokenizer .pt
    dinov2: Path | None = None  # the DINOv2 .pth the tokenizer was trained with
    gpt: Path | None = None  # official LlamaGen GPT .pt / consolidated.pth
    rar: Path | None = None  # official RAR .bin / .safetensors
    which: str = "ema"  # "ema" or "model": the weights inside the .pt
    num_tokens: int | None = None  # generator sequence length when the file records none
    n_head: int | None = None  # attention heads when no preset has this depth/width


def _import_into(config: ImportConfig, tmp: Path) -> dict[str, dict[str, Any]]:
    """Every requested import, written under `tmp` (the tokenizer first: the generator's config names its hash)."""
    gen_path = config.gpt or config.rar
    both = config.tokenizer is not None and gen_path is not None
    facts, info = {}, None
    if config.tokenizer is not None:
        tdir = tmp / "tokenizer" if both else tmp
        facts["tokenizer"] = import_tokenizer(config.tokenizer, config.dinov2, tdir, config.which)
        if both:
            info = {"checkpoint_path": "../tokenizer", "checkpoint_hash": file_sha256(tdir / WEIGHTS_NAME)}
    gdir = tmp / "generator" if both else tmp
    if config.gpt is not None:
        facts["gpt"] = import_gpt(config.gpt, gdir, config.which, config.num_tokens, info, config.n_head)
    if config.rar is not None:
        facts["rar"] = import_rar(config.rar, gdir, config.which, config.num_tokens, info, config.n_head)
    if both:  # the layout of `vfmtok export`
        write_json(tmp / "model.json", {"generator": "generator", "tokenizer": "tokenizer",
                                        "imported_from": {"generator": Path(gen_path).name,
                                                          "tokenizer": Path(config.tokenizer).name}})
    return facts


def import_official(config: ImportConfig) -> dict[str, dict[str, Any]]:
    """Convert the official files of `config` into `config.out` (complete or untouched); the facts of each import."""
    if config.tokenizer is None and config.gpt is None and config.rar is None:
        raise VFMTokError("pass --tokenizer (with --dinov2) and/or a generator (--gpt or --rar)")
    if config.gpt is not None and config.rar is not None:
        raise VFMTokError("pass one generator: --gpt (LlamaGen) or --rar, not both")
    if config.tokenizer is not None and config.dinov2 is None:
        raise VFMTokError("--tokenizer needs --dinov2 (the official trainer does not save the frozen DINOv2)")
    out = Path(config.out)
    if out.exists() and any(out.iterdir()) and not ((out / "config.json").is_file() or (out / "model.json").is_file()):
        raise VFMTokError(f"--out {out} exists and is not a checkpoint folder; refusing to replace it")
    with atomic_path(out, folder=True) as tmp:  # built complete under a temporary name, then swapped in
        return _import_into(config, tmp)
