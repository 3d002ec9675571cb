"""`vfmtok eval-tokenizer` (rFID, PSNR, SSIM, LPIPS, codebook usage) and `vfmtok eval-generator` (gFID, IS, P/R)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from tqdm import tqdm

from vfmtok.eval.config import GeneratorEvalConfig, TokenizerEvalConfig
from vfmtok.eval.fid import EncoderFeatures
from vfmtok.eval.image_metrics import (PSNR_DESCRIPTION, SSIM_DESCRIPTION, SSIM_PAPER_NOTE, CodeUsage, psnr, ssim,
                                       uint8_to_signed, uint8_to_unit)
from vfmtok.eval.imagesets import ImageSet, iter_batches, open_image_set, subset_indices
from vfmtok.eval.inception import InceptionExtractor, get_extractor
from vfmtok.eval.prdc import precision_recall
from vfmtok.eval.protocol import for_protocol, get_protocol, make_labels, pil_resize, protocol_record, resized_set
from vfmtok.eval.reference import FeatureSink, Reference, fd_or_none, load_reference, reference_stats
from vfmtok.eval.records import EvalResult, checkpoint_record, finish_result, make_record, markdown_table
from vfmtok.generator.pairing import gpt_tokenizer_path
from vfmtok.utils.device import resolve_device
from vfmtok.utils.errors import VFMTokError, require
from vfmtok.utils.hub import parse_hub_id
from vfmtok.utils.images import to_uint8
from vfmtok.utils.io import file_sha256, save_npz
from vfmtok.utils.weights import find_weight

GENERATE_CHUNK_BATCHES = 8
EvalConfig = TypeVar("EvalConfig", TokenizerEvalConfig, GeneratorEvalConfig)


def _prepared(config: EvalConfig) -> EvalConfig:
    """Checks every evaluation shares; --device 'auto' resolved to the device that runs."""
    require(config.batch_size > 0, f"--batch-size must be positive, got {config.batch_size}")
    return dataclasses.replace(config, device=str(resolve_device(config.device)))  # labels handed to the generator per call (in batches); features are taken per call


# ------------------------------------------------------------------------------------------------- loaders
def load_tokenizer(path: Path, device: str):
    """The tokenizer loader (`vfmtok.tokenizer.api.load_tokenizer`), with a one-line error for a missing checkpoint."""
    path = Path(path)
    require(path.exists() or parse_hub_id(str(path)) is not None, f"tokenizer checkpoint not found: {path}")
    from vfmtok.tokenizer.api import load_tokenizer as _load

    return _load(path, device=device)


def load_generator(path: Path, device: str):
    """A GPT or RAR (`vfmtok.generator.checkpoint.load_generator`) on `device`; one-line error when missing."""
    path = Path(path)
    require(path.exists() or parse_hub_id(str(path)) is not None, f"generator checkpoint not found: {path}")
    from vfmtok.generator.checkpoint import load_generator as _load

    return _load(path, device=device)


def generate(gpt, tokenizer, labels: torch.Tensor, **kwargs) -> np.ndarray:
    """The generator helper's `generate_images` (uint8 (N,H,W,3))."""
    from vfmtok.generator.sample import generate_images

    return generate_images(gpt, tokenizer, labels, **kwargs)


def make_lpips(device: str):
    """LPIPS(VGG) on device, or (None, reason) when the module is not available."""
    try:
        from vfmtok.encoders.lpips import LPIPS
    except ImportError as e:
        return None, f"LPIPS unavailable: {e}"
    try:
        return LPIPS(net="vgg").to(device).eval(), None
    except VFMTokError as e:
        return None, f"LPIPS unavailable: {e}"


def _lpips_info() -> dict:
    path = find_weight("vgg16.ckpt")  # LPIPS(vgg) reads its convolutions and linear heads from this file
    return {"name": "lpips-v0.1-vgg", "file": path.name, "sha256": file_sha256(path)}


def make_second(name: str, device: str):
    """(EncoderFeatures, None) or (None, reason); an unknown encoder name is an error, missing weights a note."""
    if name.lower() == "none":
        return None, "second-opinion FD skipped (--second-encoder none)"
    from vfmtok.encoders import list_encoders

    require(name in list_encoders(), f"unknown --second-encoder '{name}'; choose one of: {', '.join(list_encoders())}, none")
    try:
        return EncoderFeatures(name, device), None
    except (VFMTokError, ImportError, KeyError) as e:
        return None, f"FD-{name} unavailable: {e}"


# ------------------------------------------------------------------------------------------------- eval-tokenizer
def _reconstruct(tok, images: ImageSet, idx: np.ndarray, res: int, config: TokenizerEvalConfig, rec: FeatureSink, lpips_net):
    """Encode + decode every chosen image, adding the reconstructions' features to `rec`; returns the code usage and
    the per-image PSNR / SSIM / LPIPS batches, all scored at `res` on uint8-quantised images."""
    usage = CodeUsage(tok.codebook_size)
    scores: dict[str, list] = {"PSNR": [], "SSIM": [], "LPIPS": []}
    total = math.ceil(len(idx) / config.batch_size)
    for u8, _ in tqdm(iter_batches(images, idx, config.batch_size), total=total, desc="reconstruct", disable=None):
        x = uint8_to_signed(u8).to(config.device)
        with torch.inference_mode():
            ids = tok.encode(x)
            rec_u8 = to_uint8(tok.decode(ids))
        usage.update(ids)
        if res != tok.image_size:  # official: both uint8 images PIL-resized before scoring
            u8, rec_u8 = pil_resize(u8, res), pil_resize(rec_u8, res)
            x = uint8_to_signed(u8).to(config.device)
        ref01, rec01 = uint8_to_unit(u8), uint8_to_unit(rec_u8)
        scores["PSNR"].append(psnr(ref01, rec01))
        scores["SSIM"].append(ssim(ref01, rec01))
        rec_signed = uint8_to_signed(rec_u8).to(config.device)
        if lpips_net is not None:
            with torch.inference_mode():
                scores["LPIPS"].append(lpips_net(x, rec_signed).float().cpu())
        rec.add(rec_u8, rec_signed)
    return usage, scores


def eval_tokenizer(config: TokenizerEvalConfig) -> EvalResult:
    """Reconstruct a validation set: rFID (vs the same images), rIS, PSNR, SSIM, LPIPS, codebook usage/perplexity."""
    config = _prepared(config)
    require(config.tokenizer is not None, "give the tokenizer checkpoint")
    tok = load_tokenizer(Path(config.tokenizer), config.device)
    protocol = get_protocol(config.protocol)
    images = open_image_set(config.data, int(tok.image_size), split=config.split)
    res = protocol.size or int(tok.image_size)  # the resolution every metric sees
    scored = images if res == tok.image_size else resized_set(images, res)
    idx = subset_indices(len(images), config.num_images, config.seed)
    require(len(idx) >= 2, f"need at least 2 images for FID statistics, {config.data} gives {len(idx)}")
    ext = get_extractor(config.device)
    second, second_note = make_second(config.second_encoder, config.device)
    lpips_net, lpips_note = (None, "LPIPS skipped (--no-lpips)") if config.no_lpips else make_lpips(config.device)
    torch.manual_seed(config.seed)

    real_inc, real_2nd, cached = reference_stats(scored, idx, ext, second, config.batch_size, not config.no_cache, "real images")
    rec = FeatureSink(ext, second)
    usage, scores = _reconstruct(tok, images, idx, res, config, rec, lpips_net)

    meta = {"kind": "reconstructions", "num_images": len(idx), "resolution": res}
    rec_stats = rec.stats(ext.info, meta)
    is_ = rec.inception_score()
    metrics = {
        "rFID": real_inc.distance(rec_stats),
        "rIS": is_[0] if is_ else None, "rIS_std": is_[1] if is_ else None,
        "PSNR": float(torch.cat(scores["PSNR"]).mean()),
        "SSIM": float(torch.cat(scores["SSIM"]).mean()),
        "LPIPS": float(torch.cat(scores["LPIPS"]).mean()) if scores["LPIPS"] else None,
        **usage.summary(),
    }
    if config.second_encoder.lower() != "none":
        metrics[f"FD_{config.second_encoder}"] = fd_or_none(real_2nd, rec.second_stats(meta))
    notes = [PSNR_DESCRIPTION, f"{SSIM_DESCRIPTION} ({SSIM_PAPER_NOTE})",
             "rFID: TF-Inception pool3 of the reconstructions vs the same real images (uint8, TF1 bilinear resize to 299)",
             f"images quantised to uint8 before every metric; evaluated at {res}px"]
    if ext.is_unavailable:
        notes.append(f"IS unavailable: {ext.is_unavailable}")
    notes += [n for n in (second_note, lpips_note) if n]
    if cached:
        notes.append("real-image statistics read from the cache (--no-cache recomputes)")
    record = make_record(
        "eval-tokenizer", metrics=metrics, num_images=len(idx), resolution=res, seed=config.seed,
        checkpoints={"tokenizer": checkpoint_record(tok.checkpoint_path)},
        data={**images.description, "num_available": len(images)},
        feature_networks=[ext.info] + ([second.info] if second else []) + ([_lpips_info()] if lpips_net else []),
        notes=notes, device=str(config.device), args={"command": "eval-tokenizer", **dataclasses.asdict(config)},
        protocol=protocol_record(protocol),
        tokenizer={"codebook_size": int(tok.codebook_size), "num_tokens": int(tok.num_tokens),
                   "image_size": int(tok.image_size)})
    header = ["tokenizer", "codebook", "tokens", "images", "res", "rFID↓", "rIS↑", "PSNR↑", "SSIM↑", "LPIPS↓",
              "usage", "perplexity"]
    row = [Path(tok.checkpoint_path).name, tok.codebook_size, tok.num_tokens, len(idx), res, metrics["rFID"], metrics["rIS"],
           metrics["PSNR"], metrics["SSIM"], metrics["LPIPS"], f"{metrics['codebook_usage']:.1%}", metrics["perplexity"]]
    if f"FD_{config.second_encoder}" in metrics:
        header.append(f"FD-{config.second_encoder}↓")
        row.append(metrics[f"FD_{config.second_encoder}"])
    return finish_result(record, markdown_table(header, [row]), notes, config.out)


# ------------------------------------------------------------------------------------------------- eval-generator
def _sample_batches(config: GeneratorEvalConfig, gpt, tok, cfg: float, labels: torch.Tensor):
    """Generated uint8 batches for one CFG scale (seed advances per chunk, identical across scales)."""
    step = config.batch_size * GENERATE_CHUNK_BATCHES
    power = config.cfg_power
    schedule = {} if power is None else {"cfg_power": power}  # RAR's CFG schedule only when asked for
    if config.compile:
        schedule["compile"] = True  # torch.compile of the decode step (compiled once, reused for every chunk)
    if config.parallel != "none":
        schedule.update(parallel=config.parallel, window=config.window)
    for chunk, s in enumerate(range(0, len(labels), step)):
        arr = generate(gpt, tok, labels[s:s + step], cfg_scale=cfg, temperature=config.temperature,
                       top_k=config.top_k, top_p=config.top_p, seed=config.seed + chunk, batch_size=config.batch_size,
                       **schedule)
        yield torch.from_numpy(np.ascontiguousarray(arr))


def _generator_inputs(config: GeneratorEvalConfig, protocol, label_kind: str):
    """What eval-generator scores: (config with the model's sampling filled in, runs, checkpoints, data description,
    resolution); a run is a dict with its CFG
    scale (None for a samples file), its count, labels and a factory of uint8 batches."""
    runs: list[dict] = []  # each: cfg, iterator factory, count
    checkpoints: dict = {}
    if config.samples is not None:
        samples = open_image_set(config.samples, config.image_size, split=None)
        idx = subset_indices(len(samples), config.num_images, config.seed)
        res = int(samples.resolution)
        runs.append({"cfg": None, "n": len(idx),
                     "batches": lambda: (u8 for u8, _ in iter_batches(samples, idx, config.batch_size))})
        data_desc = {**samples.description, "num_available": len(samples)}
    else:
        gpt = load_generator(config.gpt, config.device)
        t, k, p = gpt.sampling_args(config.temperature, config.top_k, config.top_p)
        config = dataclasses.replace(config, temperature=t, top_k=k, top_p=p)
        tok = for_protocol(load_tokenizer(gpt_tokenizer_path(gpt, config.tokenizer), config.device), protocol)
        num_classes = int(gpt.config.num_classes)
        per_class = config.images_per_class if config.num_images is None else config.num_images // num_classes
        require(per_class >= 1, f"--num-images {config.num_images} is less than one image per class ({num_classes} classes)")
        n = per_class * num_classes if label_kind == "balanced" or config.num_images is None else config.num_images
        labels = make_labels(num_classes, n, label_kind, config.seed)
        res = int(tok.image_size)
        require(config.image_size in (None, res), f"--image-size {config.image_size} differs from the tokenizer's {res}")
        checkpoints = {"generator": checkpoint_record(config.gpt), "tokenizer": checkpoint_record(tok.checkpoint_path)}
        data_desc = {"source": "generated", "images_per_class": per_class, "num_classes": num_classes}
        for cfg in config.cfg_scales:
            runs.append({"cfg": cfg, "n": len(labels), "labels": labels,
                         "batches": (lambda c=cfg: _sample_batches(config, gpt, tok, c, labels))})
    return config, runs, checkpoints, data_desc, res


def _score_run(config: GeneratorEvalConfig, r: dict, ext: InceptionExtractor, second: EncoderFeatures | None, ref: Reference) -> dict:
    """gFID / IS / P/R (+ FD on a second encoder) of one run's images; keeps them with --save-samples."""
    sink = FeatureSink(ext, second)
    kept = [] if (config.save_samples is not None and r["cfg"] is not None) else None
    bar = tqdm(total=r["n"], desc="samples" if r["cfg"] is None else f"cfg {r['cfg']}", disable=None)
    for u8 in r["batches"]():
        sink.add(u8)
        if kept is not None:
            kept.append(u8.numpy())
        bar.update(len(u8))
    bar.close()
    require(sum(len(f) for f in sink.pool3) >= 2, "need at least 2 samples for FID statistics")
    stats = sink.stats(ext.info, {"cfg": r["cfg"]})
    is_ = sink.inception_score()
    m = {"cfg_scale": r["cfg"], "num_images": stats.num_images, "gFID": ref.stats.distance(stats),
         "IS": is_[0] if is_ else None, "IS_std": is_[1] if is_ else None}
    if config.second_encoder.lower() != "none":
        m[f"FD_{config.second_encoder}"] = fd_or_none(ref.second, sink.second_stats({}))
    if ref.pr_features is not None and len(ref.pr_features) > 3 and stats.num_images > 3:
        m.update(precision_recall(ref.pr_features, stats.features, k=3, device=config.device))
    else:
        m.update(precision=None, recall=None)
    if kept is not None:
        _save_samples(config.save_samples, r["cfg"], len(config.cfg_scales) > 1, np.concatenate(kept), r["labels"])
    return m


def eval_generator(config: GeneratorEvalConfig) -> EvalResult:
    """gFID / IS / precision / recall (+ FD on a second encoder) of samples against a reference, per CFG scale."""
    config = _prepared(config)
    require((config.samples is None) != (config.gpt is None), "give either --samples or --gpt (with --tokenizer), not both")
    protocol = get_protocol(config.protocol)
    label_kind = config.labels or protocol.labels
    config, runs, checkpoints, data_desc, res = _generator_inputs(config, protocol, label_kind)
    ext = get_extractor(config.device)  # built after the inputs are checked: a bad path fails fast
    second, second_note = make_second(config.second_encoder, config.device)
    ref = load_reference(config, res, ext, second)
    notes = list(ref.notes)
    if config.save_ref_stats is not None:
        ref.stats.save(config.save_ref_stats)
        notes.append(f"reference statistics written to {config.save_ref_stats}")

    results, rows = [], []
    second_col = config.second_encoder.lower() != "none"
    for r in runs:
        m = _score_run(config, r, ext, second, ref)
        results.append(m)
        rows.append([r["cfg"] if r["cfg"] is not None else "n/a", m["num_images"], m["gFID"], m["IS"],
                     m["precision"], m["recall"]] + ([m[f"FD_{config.second_encoder}"]] if second_col else []))

    notes.append("gFID: TF-Inception pool3 (uint8, TF1 bilinear resize to 299) vs the reference; P/R: k=3 on the same features")
    if ext.is_unavailable:
        notes.append(f"IS unavailable: {ext.is_unavailable}")
    if second_note:
        notes.append(second_note)
    sampling = None if config.samples is not None else {
        "cfg_scales": list(config.cfg_scales), "temperature": config.temperature, "top_k": config.top_k, "top_p": config.top_p,
        "labels": label_kind, "images_per_class": data_desc["images_per_class"] if label_kind == "balanced" else None}
    record = make_record(
        "eval-generator", metrics={"runs": results}, num_images=results[0]["num_images"], resolution=res, seed=config.seed,
        checkpoints=checkpoints, data={"samples": data_desc, "reference": ref.description}, cfg=sampling,
        feature_networks=[ext.info] + ([second.info] if second else []), notes=notes, device=str(config.device),
        args={"command": "eval-generator", **dataclasses.asdict(config)},
        protocol=protocol_record(protocol, None if config.samples is not None else label_kind))
    header = ["cfg", "images", "gFID↓", "IS↑", "precision↑", "recall↑"] + ([f"FD-{config.second_encoder}↓"] if second_col else [])
    return finish_result(record, markdown_table(header, rows), notes, config.out)


def _save_samples(path: Path, cfg: float, several: bool, arr: np.ndarray, labels: torch.Tensor) -> None:
    """Write samples as an ADM-style .npz (arr_0) with their class ids (labels, what `class-consistency --samples`
    reads); with several CFG scales the scale goes into the name."""
    path = Path(path)
    if several:
        path = path.with_name(f"{path.stem}-cfg{cfg:g}{path.suffix or '.npz'}")
    save_npz(path, arr_0=arr, labels=labels.numpy().astype(np.int64))
