"""`vfmtok import-official`: official tokenizer/GPT `.pt` files (+ the DINOv2 `.pth`) -> vfmtok checkpoint folders.

--tokenizer alone: OUT is a tokenizer folder (model.safetensors, config.json, encoder.safetensors = the DINOv2 in
timm layout, README.md). --gpt alone: OUT is a GPT folder. Both: OUT/tokenizer and OUT/generator, the GPT's config
naming "../tokenizer" as `vfmtok export` does. Everything is built under OUT.tmp and renamed when complete.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import torch

from vfmtok.official.gpt_import import infer_gpt_config, is_official_gpt, map_gpt_state
from vfmtok.official.reading import load_official, pick_state, saved_args, strip_prefixes
from vfmtok.official.tokenizer_import import (dinov2_arch, dinov2_to_timm, infer_tokenizer_config,
                                              is_official_tokenizer, map_tokenizer_state)
from vfmtok.utils.errors import VFMTokError
from vfmtok.utils.hub import write_model_card
from vfmtok.utils.io import WEIGHTS_NAME, file_sha256, load_state_strict, read_json, save_safetensors, write_json

ENCODER_FILE = "encoder.safetensors"


def _official_state(path: Path, which: str, want: str) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    ckpt = load_official(path)
    state, source = pick_state(ckpt, which, path)
    is_tok, is_gpt = is_official_tokenizer(state), is_official_gpt(state)
    if want == "tokenizer" and not is_tok:
        hint = " (it is a LlamaGen GPT: pass it with --gpt)" if is_gpt else ""
        raise VFMTokError(f"{path} is not an official VFMTok tokenizer checkpoint{hint}: no decode_transformer.* / "
                          "slot_quantize.* keys")
    if want == "gpt" and not is_gpt:
        hint = " (it is a VFMTok tokenizer: pass it with --tokenizer)" if is_tok else ""
        raise VFMTokError(f"{path} is not an official LlamaGen/VFMTok GPT checkpoint{hint}: no tok_embeddings / "
                          "cls_embedding keys")
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


def import_gpt(path: Path, out: Path, which: str = "ema", num_tokens: int | None = None,
               tokenizer_info: dict | None = None, n_head: int | None = None) -> dict[str, Any]:
    """Write an official GPT as a vfmtok GPT folder `out`; returns import facts."""
    from vfmtok.generator.gpt import GPT

    state, args, source = _official_state(path, which, "gpt")
    cfg, preset, appended = infer_gpt_config(state, args, path, num_tokens, n_head)
    model = GPT(cfg)
    load_state_strict(model, map_gpt_state(state, cfg, path), f"{path} ({source})")
    model.tokenizer_info = tokenizer_info
    facts = {"source": path.name, "source_sha256": file_sha256(path), "weights": source, "preset": preset,
             "null_class": "appended (zero row; the official model has no trained null class)" if appended else "trained",
             "params": sum(p.numel() for p in model.parameters())}
    model.save_pretrained(out)
    meta_path = out / "config.json"
    meta = read_json(meta_path)
    meta["config"]["official_import"] = facts
    write_json(meta_path, meta)
    write_model_card(out, "gpt", meta["config"], _card("GPT", facts))
    return facts


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `vfmtok import-official`."""
    p.add_argument("--tokenizer", type=Path, default=None, help="official VFMTok tokenizer .pt (vfmtok-tokenizer.pt, or a trainer's vit_vqgan_step_N.pt)")
    p.add_argument("--dinov2", type=Path, default=None, help="DINOv2 weights the tokenizer was trained with "
                   "(facebookresearch dinov2_vitl14_reg4_pretrain.pth)")
    p.add_argument("--gpt", type=Path, default=None, help="official GPT .pt (e.g. GPT-B-300e.pt) or FSDP consolidated.pth")
    p.add_argument("--which", default="ema", choices=["ema", "model"], help="weights inside the .pt to import")
    p.add_argument("--num-tokens", type=int, default=None, help="GPT sequence length when the file records no args "
                   "(default 256: VFMTok's 16 x 16)")
    p.add_argument("--n-head", type=int, default=None, help="GPT attention heads, only for a depth/width no LlamaGen "
                   "preset has")
    p.add_argument("--out", type=Path, required=True, help="output checkpoint folder")


def run(args: argparse.Namespace) -> int:
    """Entry point of `vfmtok import-official`."""
    if args.tokenizer is None and args.gpt is None:
        raise VFMTokError("pass --tokenizer (with --dinov2) and/or --gpt")
    if args.tokenizer is not None and args.dinov2 is None:
        raise VFMTokError("--tokenizer needs --dinov2 (the official trainer does not save the frozen DINOv2)")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not ((out / "config.json").is_file() or (out / "model.json").is_file()):
        raise VFMTokError(f"--out {out} exists and is not a checkpoint folder; refusing to replace it")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    both = args.tokenizer is not None and args.gpt is not None
    try:
        info = None
        if args.tokenizer is not None:
            tdir = tmp / "tokenizer" if both else tmp
            facts = import_tokenizer(args.tokenizer, args.dinov2, tdir, args.which)
            print(f"tokenizer: {facts['params']:,} parameters from {facts['source']} ({facts['weights']}), "
                  f"encoder {facts['encoder']}")
            if both:
                info = {"checkpoint_path": "../tokenizer", "checkpoint_hash": file_sha256(tdir / WEIGHTS_NAME)}
        if args.gpt is not None:
            facts = import_gpt(args.gpt, tmp / "generator" if both else tmp, args.which, args.num_tokens, info, args.n_head)
            print(f"gpt: {facts['preset']}, {facts['params']:,} parameters from {facts['source']} ({facts['weights']}); "
                  f"null class {facts['null_class']}")
        if both:  # the layout of `vfmtok export`
            write_json(tmp / "model.json", {"generator": "generator", "tokenizer": "tokenizer",
                                            "imported_from": {"generator": args.gpt.name, "tokenizer": args.tokenizer.name}})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    print(f"wrote {out}")
    return 0
