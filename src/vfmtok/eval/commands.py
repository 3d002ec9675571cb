"""`vfmtok eval-tokenizer` (rFID, PSNR, SSIM, LPIPS, codebook usage) and `vfmtok eval-generator` (gFID, IS, P/R)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vfmtok.eval.fid import EncoderFeatures
from vfmtok.eval.image_metrics import (PSNR_DESCRIPTION, SSIM_DESCRIPTION, SSIM_PAPER_NOTE, CodeUsage, psnr, ssim,
                                       uint8_to_signed, uint8_to_unit)
from vfmtok.eval.imagesets import ImageSet, iter_batches, open_image_set, subset_indices
from vfmtok.eval.inception import InceptionExtractor, get_extractor
from vfmtok.eval.options import add_arguments, options, prepare  # noqa: F401 (the CLI and the demo use them here)
from vfmtok.eval.prdc import precision_recall
from vfmtok.eval.protocol import for_protocol, get_protocol, make_labels, pil_resize, protocol_record, resized_set
from vfmtok.eval.reference import FeatureSink, Reference, fd_or_none, load_reference, reference_stats
from vfmtok.eval.records import checkpoint_record, make_record, markdown_table, print_result
from vfmtok.generator.pairing import gpt_tokenizer_path
from vfmtok.utils.errors import VFMTokError, require
from vfmtok.utils.hub import parse_hub_id
from vfmtok.utils.images import to_uint8
from vfmtok.utils.io import atomic_path, file_sha256
from vfmtok.utils.weights import find_weight

GENERATE_CHUNK_BATCHES = 8  # labels handed to the generator per call (in batches); features are taken per call


def run(args: argparse.Namespace) -> int:
    """Dispatch on args.command."""
    (eval_tokenizer if args.command == "eval-tokenizer" else eval_generator)(args)
    return 0


# ------------------------------------------------------------------------------------------------- loaders
def tokenizer_path(args: argparse.Namespace) -> Path:
    """The tokenizer given positionally or with --tokenizer (exactly one)."""
    given = [p for p in (args.checkpoint, args.tokenizer) if p is not None]
    require(len(given) == 1, "give the tokenizer checkpoint once: positionally or with --tokenizer")
    return Path(given[0])


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
def _reconstruct(tok, images: ImageSet, idx: np.ndarray, res: int, args, rec: FeatureSink, lpips_net):
    """Encode + decode every chosen image, adding the reconstructions' features to `rec`; returns the code usage and
    the per-image PSNR / SSIM / LPIPS batches, all scored at `res` on uint8-quantised images."""
    usage = CodeUsage(tok.codebook_size)
    scores: dict[str, list] = {"PSNR": [], "SSIM": [], "LPIPS": []}
    total = math.ceil(len(idx) / args.batch_size)
    for u8, _ in tqdm(iter_batches(images, idx, args.batch_size), total=total, desc="reconstruct", disable=None):
        x = uint8_to_signed(u8).to(args.device)
        with torch.inference_mode():
            ids = tok.encode(x)
            rec_u8 = to_uint8(tok.decode(ids))
        usage.update(ids)
        if res != tok.image_size:  # official: both uint8 images PIL-resized before scoring
            u8, rec_u8 = pil_resize(u8, res), pil_resize(rec_u8, res)
            x = uint8_to_signed(u8).to(args.device)
        ref01, rec01 = uint8_to_unit(u8), uint8_to_unit(rec_u8)
        scores["PSNR"].append(psnr(ref01, rec01))
        scores["SSIM"].append(ssim(ref01, rec01))
        rec_signed = uint8_to_signed(rec_u8).to(args.device)
        if lpips_net is not None:
            with torch.inference_mode():
                scores["LPIPS"].append(lpips_net(x, rec_signed).float().cpu())
        rec.add(rec_u8, rec_signed)
    return usage, scores


def eval_tokenizer(args: argparse.Namespace) -> dict:
    """Reconstruct a validation set: rFID (vs the same images), rIS, PSNR, SSIM, LPIPS, codebook usage/perplexity."""
    prepare(args)
    tok = load_tokenizer(tokenizer_path(args), args.device)
    protocol = get_protocol(getattr(args, "protocol", "vfmtok"))
    images = open_image_set(args.data, int(tok.image_size), split=args.split)
    res = protocol.size or int(tok.image_size)  # the resolution every metric sees
    scored = images if res == tok.image_size else resized_set(images, res)
    idx = subset_indices(len(images), args.num_images, args.seed)
    require(len(idx) >= 2, f"need at least 2 images for FID statistics, {args.data} gives {len(idx)}")
    ext = get_extractor(args.device)
    second, second_note = make_second(args.second_encoder, args.device)
    lpips_net, lpips_note = (None, "LPIPS skipped (--no-lpips)") if args.no_lpips else make_lpips(args.device)
    torch.manual_seed(args.seed)

    real_inc, real_2nd, cached = reference_stats(scored, idx, ext, second, args.batch_size, not args.no_cache, "real images")
    rec = FeatureSink(ext, second)
    usage, scores = _reconstruct(tok, images, idx, res, args, rec, lpips_net)

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
    if args.second_encoder.lower() != "none":
        metrics[f"FD_{args.second_encoder}"] = fd_or_none(real_2nd, rec.second_stats(meta))
    notes = [PSNR_DESCRIPTION, f"{SSIM_DESCRIPTION} ({SSIM_PAPER_NOTE})",
             "rFID: TF-Inception pool3 of the reconstructions vs the same real images (uint8, TF1 bilinear resize to 299)",
             f"images quantised to uint8 before every metric; evaluated at {res}px"]
    if ext.is_unavailable:
        notes.append(f"IS unavailable: {ext.is_unavailable}")
    notes += [n for n in (second_note, lpips_note) if n]
    if cached:
        notes.append("real-image statistics read from the cache (--no-cache recomputes)")
    record = make_record(
        "eval-tokenizer", metrics=metrics, num_images=len(idx), resolution=res, seed=args.seed,
        checkpoints={"tokenizer": checkpoint_record(tok.checkpoint_path)},
        data={**images.description, "num_available": len(images)},
        feature_networks=[ext.info] + ([second.info] if second else []) + ([_lpips_info()] if lpips_net else []),
        notes=notes, device=str(args.device), args=args, protocol=protocol_record(protocol),
        tokenizer={"codebook_size": int(tok.codebook_size), "num_tokens": int(tok.num_tokens),
                   "image_size": int(tok.image_size)})
    header = ["tokenizer", "codebook", "tokens", "images", "res", "rFID↓", "rIS↑", "PSNR↑", "SSIM↑", "LPIPS↓",
              "usage", "perplexity"]
    row = [Path(tok.checkpoint_path).name, tok.codebook_size, tok.num_tokens, len(idx), res, metrics["rFID"], metrics["rIS"],
           metrics["PSNR"], metrics["SSIM"], metrics["LPIPS"], f"{metrics['codebook_usage']:.1%}", metrics["perplexity"]]
    if f"FD_{args.second_encoder}" in metrics:
        header.append(f"FD-{args.second_encoder}↓")
        row.append(metrics[f"FD_{args.second_encoder}"])
    print_result(markdown_table(header, [row]), notes, args.out, record)
    return record


# ------------------------------------------------------------------------------------------------- eval-generator
def _sample_batches(args, gpt, tok, cfg: float, labels: torch.Tensor):
    """Generated uint8 batches for one CFG scale (seed advances per chunk, identical across scales)."""
    step = args.batch_size * GENERATE_CHUNK_BATCHES
    power = getattr(args, "cfg_power", None)
    schedule = {} if power is None else {"cfg_power": power}  # RAR's CFG schedule only when asked for
    if getattr(args, "compile", False):
        schedule["compile"] = True  # torch.compile of the decode step (compiled once, reused for every chunk)
    if getattr(args, "parallel", "none") != "none":
        schedule.update(parallel=args.parallel, window=args.window)
    for chunk, s in enumerate(range(0, len(labels), step)):
        arr = generate(gpt, tok, labels[s:s + step], cfg_scale=cfg, temperature=args.temperature,
                       top_k=args.top_k, top_p=args.top_p, seed=args.seed + chunk, batch_size=args.batch_size,
                       **schedule)
        yield torch.from_numpy(np.ascontiguousarray(arr))


def _generator_inputs(args, protocol, label_kind: str):
    """What eval-generator scores: (runs, checkpoints, data description, resolution); a run is a dict with its CFG
    scale (None for a samples file), its count, labels and a factory of uint8 batches."""
    runs: list[dict] = []  # each: cfg, iterator factory, count
    checkpoints: dict = {}
    if args.samples is not None:
        samples = open_image_set(args.samples, args.image_size, split=None)
        idx = subset_indices(len(samples), args.num_images, args.seed)
        res = int(samples.resolution)
        runs.append({"cfg": None, "n": len(idx),
                     "batches": lambda: (u8 for u8, _ in iter_batches(samples, idx, args.batch_size))})
        data_desc = {**samples.description, "num_available": len(samples)}
    else:
        gpt = load_generator(args.gpt, args.device)
        args.temperature, args.top_k, args.top_p = gpt.sampling_args(args.temperature, args.top_k, args.top_p)
        tok = for_protocol(load_tokenizer(gpt_tokenizer_path(gpt, args.tokenizer), args.device), protocol)
        num_classes = int(gpt.config.num_classes)
        per_class = args.images_per_class if args.num_images is None else args.num_images // num_classes
        require(per_class >= 1, f"--num-images {args.num_images} is less than one image per class ({num_classes} classes)")
        n = per_class * num_classes if label_kind == "balanced" or args.num_images is None else args.num_images
        labels = make_labels(num_classes, n, label_kind, args.seed)
        res = int(tok.image_size)
        require(args.image_size in (None, res), f"--image-size {args.image_size} differs from the tokenizer's {res}")
        checkpoints = {"generator": checkpoint_record(args.gpt), "tokenizer": checkpoint_record(tok.checkpoint_path)}
        data_desc = {"source": "generated", "images_per_class": per_class, "num_classes": num_classes}
        for cfg in args.cfg_scales:
            runs.append({"cfg": cfg, "n": len(labels), "labels": labels,
                         "batches": (lambda c=cfg: _sample_batches(args, gpt, tok, c, labels))})
    return runs, checkpoints, data_desc, res


def _score_run(args, r: dict, ext: InceptionExtractor, second: EncoderFeatures | None, ref: Reference) -> dict:
    """gFID / IS / P/R (+ FD on a second encoder) of one run's images; keeps them with --save-samples."""
    sink = FeatureSink(ext, second)
    kept = [] if (args.save_samples is not None and r["cfg"] is not None) else None
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
    if args.second_encoder.lower() != "none":
        m[f"FD_{args.second_encoder}"] = fd_or_none(ref.second, sink.second_stats({}))
    if ref.pr_features is not None and len(ref.pr_features) > 3 and stats.num_images > 3:
        m.update(precision_recall(ref.pr_features, stats.features, k=3, device=args.device))
    else:
        m.update(precision=None, recall=None)
    if kept is not None:
        _save_samples(args.save_samples, r["cfg"], len(args.cfg_scales) > 1, np.concatenate(kept), r["labels"])
    return m


def eval_generator(args: argparse.Namespace) -> dict:
    """gFID / IS / precision / recall (+ FD on a second encoder) of samples against a reference, per CFG scale."""
    prepare(args)
    require((args.samples is None) != (args.gpt is None), "give either --samples or --gpt (with --tokenizer), not both")
    protocol = get_protocol(getattr(args, "protocol", "vfmtok"))
    label_kind = getattr(args, "labels", None) or protocol.labels
    runs, checkpoints, data_desc, res = _generator_inputs(args, protocol, label_kind)
    ext = get_extractor(args.device)  # built after the inputs are checked: a bad path fails fast
    second, second_note = make_second(args.second_encoder, args.device)
    ref = load_reference(args, res, ext, second)
    notes = list(ref.notes)
    if args.save_ref_stats is not None:
        ref.stats.save(args.save_ref_stats)
        notes.append(f"reference statistics written to {args.save_ref_stats}")

    results, rows = [], []
    second_col = args.second_encoder.lower() != "none"
    for r in runs:
        m = _score_run(args, r, ext, second, ref)
        results.append(m)
        rows.append([r["cfg"] if r["cfg"] is not None else "n/a", m["num_images"], m["gFID"], m["IS"],
                     m["precision"], m["recall"]] + ([m[f"FD_{args.second_encoder}"]] if second_col else []))

    notes.append("gFID: TF-Inception pool3 (uint8, TF1 bilinear resize to 299) vs the reference; P/R: k=3 on the same features")
    if ext.is_unavailable:
        notes.append(f"IS unavailable: {ext.is_unavailable}")
    if second_note:
        notes.append(second_note)
    sampling = None if args.samples is not None else {
        "cfg_scales": list(args.cfg_scales), "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
        "labels": label_kind, "images_per_class": data_desc["images_per_class"] if label_kind == "balanced" else None}
    record = make_record(
        "eval-generator", metrics={"runs": results}, num_images=results[0]["num_images"], resolution=res, seed=args.seed,
        checkpoints=checkpoints, data={"samples": data_desc, "reference": ref.description}, cfg=sampling,
        feature_networks=[ext.info] + ([second.info] if second else []), notes=notes, device=str(args.device), args=args,
        protocol=protocol_record(protocol, None if args.samples is not None else label_kind))
    header = ["cfg", "images", "gFID↓", "IS↑", "precision↑", "recall↑"] + ([f"FD-{args.second_encoder}↓"] if second_col else [])
    print_result(markdown_table(header, rows), notes, args.out, record)
    return record


def _save_samples(path: Path, cfg: float, several: bool, arr: np.ndarray, labels: torch.Tensor) -> None:
    """Write samples as an ADM-style .npz (arr_0) with their class ids (labels, what `class-consistency --samples`
    reads); with several CFG scales the scale goes into the name."""
    path = Path(path)
    if several:
        path = path.with_name(f"{path.stem}-cfg{cfg:g}{path.suffix or '.npz'}")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, arr_0=arr, labels=labels.numpy().astype(np.int64))
