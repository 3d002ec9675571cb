"""The demo's self-contained HTML reports: the quick tour (default) and the full from-scratch run (`--full`)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import torch

from vfmtok.data.imagefolder import ImageFolderDataset
from vfmtok.utils import report as R
from vfmtok.utils.images import make_grid, to_uint8
from vfmtok.utils.io import atomic_path
from vfmtok.figures import sampling_regions


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _metric_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    metrics = json.loads(path.read_text()).get("metrics", {})
    runs = metrics["runs"] if isinstance(metrics.get("runs"), list) else [metrics]  # eval-generator: one per CFG scale
    return [{k: v for k, v in r.items() if isinstance(v, (int, float, str)) or v is None} for r in runs]


def write_report(out: Path, tok_dir: Path, gpt_dir: Path, data: Path, timings: dict[str, float]) -> Path:
    """Assemble reconstructions, per-class samples, sampling locations, loss curves and metrics into out/report.html."""
    from vfmtok.tokenizer.api import VFMTokenizer

    tok = VFMTokenizer.from_pretrained(tok_dir)
    val = ImageFolderDataset(data, tok.image_size, split="val")
    step = max(1, len(val) // 10)
    x = torch.stack([val[i * step][0] for i in range(min(10, len(val)))])
    rec = tok.reconstruct(x)
    x8 = to_uint8(x).numpy()
    pairs = np.stack([x8, to_uint8(rec).numpy()], axis=1).reshape(-1, *x8.shape[1:])
    sections = [("What ran", _what_ran(tok, gpt_dir, data, timings))]
    sections.append(("Reconstructions (original | reconstruction, validation images)",
                     R.img_tag(make_grid(pairs, ncol=10), width=960)))

    # Where the anchor queries look: 6 queries of the last deformable layer, over three validation images.
    pics = [sampling_regions(tok, x[i]) for i in range(min(3, len(x)))]
    if pics and pics[0] is not None:
        figs = [f"<figure>{R.img_tag(pic, width=256)}<figcaption>image {i}</figcaption></figure>" for i, pic in enumerate(pics)]
        sections.append(("Anchor queries: where they sample (last deformable layer; cross = anchor, dots = top points, size ~ weight)",
                         f"<div class='row'>{''.join(figs)}</div>"))

    samples = np.load(out / "samples" / "samples.npz")
    imgs, labels = samples["arr_0"], samples["labels"]
    names = tok.class_names or [str(i) for i in range(int(labels.max()) + 1)]
    figs = []
    for c in sorted(set(labels.tolist())):
        sel = imgs[labels == c]
        figs.append(f"<figure>{R.img_tag(make_grid(sel, ncol=4), width=256)}<figcaption>{names[c]}</figcaption></figure>")
    sections.append(("Samples per class, no classifier-free guidance", f"<div class='row'>{''.join(figs)}</div>"))

    sections.append(("Training curves", f"<div class='row'>{''.join(training_charts(out))}</div>"))
    sections.append(("Reconstruction metrics (validation)", R.table(_metric_rows(out / "eval_tokenizer.json"))))
    sections.append(("Generation metrics (samples vs validation images)", R.table(_metric_rows(out / "eval_generator.json"))
                     + "<p>Small-sample FID is biased upwards; compare numbers only at equal image counts.</p>"))
    cc = _metric_rows(out / "class_consistency.json")
    if cc:
        sections.append(("Class consistency (does each sample look like its class?)", R.table(cc)
                         + "<p>Top-1 of a linear probe on frozen ImageNet VGG16 features, fit on the real training images, "
                         "applied to the samples (class_consistency) and to real validation images (real_val_top1, its ceiling). "
                         f"Chance: {1 / len(names):.0%}.</p>"))
    path = out / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(R.page("vfmtok demo", sections))
    return path


def training_charts(out: Path, log_y: bool = True) -> list[str]:
    """SVG charts of the tokenizer's losses and codebook usage and the generator's loss, from the runs' metrics.jsonl."""
    tm = _jsonl(out / "tokenizer" / "metrics.jsonl")
    charts = [R.line_chart({k: [(r["step"], r.get(k)) for r in tm] for k in ("pixel", "lpips", "feature", "total") if any(k in r for r in tm)},
                           "tokenizer losses", log_y=log_y),
              R.line_chart({"codebook usage": [(r["step"], r.get("usage")) for r in tm]}, "tokenizer codebook usage (window)")]
    gm = _jsonl(out / "generator" / "metrics.jsonl")
    if gm:
        charts.append(R.line_chart({"loss": [(r["step"], r.get("loss")) for r in gm]}, "generator cross-entropy"))
    return charts


def _what_ran(tok, gpt_dir: Path, data: Path, timings: dict[str, float]) -> str:
    cfg = tok.config
    rows = [{"stage": k, "seconds": round(v, 1)} for k, v in timings.items()]
    facts = (f"<p>Data: <code>{data}</code>. Tokenizer: {cfg.arch}, frozen encoder <code>{cfg.encoder}</code> "
             f"({'pretrained' if cfg.encoder_pretrained else 'random'}), {tok.num_tokens} tokens on a {tok.token_grid[0]}x{tok.token_grid[1]} anchor grid, "
             f"codebook {tok.codebook_size} x {cfg.code_dim}, {cfg.image_size}px. Generator: <code>{gpt_dir}</code>.</p>")
    return facts + R.table(rows)


def _class_figures(imgs: np.ndarray, labels: np.ndarray, names: list[str], ncol: int, width: int) -> str:
    figs = []
    for c in sorted(set(labels.tolist())):
        grid = make_grid(imgs[labels == c], ncol=ncol)
        figs.append(f"<figure>{R.img_tag(grid, width=width, alt=names[c])}<figcaption>{html.escape(names[c])}</figcaption></figure>")
    return f"<div class='row'>{''.join(figs)}</div>"


def _ids_table(grid: list[list[int]]) -> str:
    rows = "".join("<tr>" + "".join(f"<td>{t}</td>" for t in row) + "</tr>" for row in grid)
    return f"<table class='ids' style='font:11px monospace'>{rows}</table>"


def _trend_rows(trends: dict) -> list[dict]:
    rows = []
    for name, tr in trends.items():
        if tr:
            rows.append({"model": name, "steps": f"{tr['first_steps'][0]}-{tr['first_steps'][-1]}", "loss at the start": tr["first"],
                         "steps ": f"{tr['last_steps'][0]}-{tr['last_steps'][-1]}", "loss at the end": tr["last"],
                         "fell": "yes" if tr["last"] < tr["first"] else "no"})
    return rows


def _shown(path: Path) -> str:
    """A package file by its place in the package, a path below the working directory relative to it."""
    full = Path(path).resolve()
    for base, prefix in ((Path(__file__).resolve().parent, "vfmtok/"), (Path.cwd().resolve(), "")):
        if full.is_relative_to(base):
            return prefix + str(full.relative_to(base))
    return str(path)


def write_quick_report(out: Path, tour, pair, scratch: dict, trends: dict, timings: dict[str, float], data: str) -> Path:
    """The default demo's report: the bundled model at work, then a short from-scratch training; also demo.json."""
    from vfmtok.utils.io import write_json

    n_cls = len(tour.class_names)
    gh, gw = tour.token_grid
    samp = tour.sampling
    intro = (f"<p>Model: <code>{html.escape(_shown(tour.model))}</code> (a VFMTok tokenizer on a frozen ImageNet VGG16, "
             f"{gh * gw} tokens per 64 px image, and a class-conditional GPT-tiny; trained on Imagenette's train split). "
             f"Held-out images: the validation split of <code>{html.escape(_shown(Path(data)))}</code>, which the model never saw. "
             "The second half trains a tokenizer and a GPT from scratch for a few steps, to show the training loop "
             "working, not to reach the bundled model's quality (that took hours: <code>make small-model</code>; "
             "<code>vfmtok demo --full</code> runs a longer from-scratch pipeline with evaluation).</p>")
    stage_rows = [{"stage": k, "seconds": round(v, 1)} for k, v in timings.items()]
    sections = [("What ran", intro + R.table(stage_rows))]
    sections.append((f"1. Samples of every class ({len(tour.samples) // max(1, n_cls)} per class, no classifier-free "
                     f"guidance, temperature {samp.get('temperature')}, top-k {samp.get('top_k')}; "
                     f"{samp.get('seconds')} s for {len(tour.samples)} images)",
                     _class_figures(tour.samples, tour.sample_labels, tour.class_names, ncol=2, width=192)))
    sections.append((f"2. Held-out reconstructions: originals (top) and reconstructions (bottom); mean PSNR over "
                     f"{tour.num_heldout} held-out images: {tour.heldout_psnr:.2f} dB",
                     R.img_tag(tour.reconstructions, width=1040, alt="originals and reconstructions")))
    toks = "".join(f"<div class='row' style='align-items:center;margin-right:24px'>{R.img_tag(img, width=160)}"
                   f"{_ids_table(grid)}</div>" for img, grid in tour.token_examples)
    sections.append((f"3. Token ids: each image becomes {gh * gw} integers (codebook entries), one per anchor query",
                     f"<div class='row'>{toks}</div>"))
    if tour.regions:
        figs = "".join(f"<figure>{R.img_tag(r, width=256)}</figure>" for r in tour.regions)
        sections.append(("4. Where six of the anchor queries sample the frozen encoder's features (last deformable "
                         "layer; cross = the query's anchor, dots = its highest-weight sampling points, size ~ weight)",
                         f"<div class='row'>{figs}</div>"))
    charts = training_charts(out / "scratch", log_y=False)
    sections.append(("5. Training from scratch: both losses fall",
                     f"<div class='row'>{''.join(charts)}</div>" + R.table(_trend_rows(trends))))
    names = tour.class_names
    sections.append(("6. What the from-scratch pair makes after so few steps: held-out reconstructions, one sample per class",
                     R.img_tag(scratch["reconstructions"], width=1040, alt="from-scratch reconstructions")
                     + _class_figures(scratch["samples"], scratch["labels"], names, ncol=1, width=96)))
    write_json(out / "demo.json", {
        "model": str(tour.model), "data": data, "timings_s": timings,
        "bundled": {"heldout_psnr_db": tour.heldout_psnr, "num_heldout": tour.num_heldout,
                    "num_samples": int(len(tour.samples)), "sample_classes": sorted(set(tour.sample_labels.tolist())),
                    "class_names": names, "token_ids": [grid for _, grid in tour.token_examples],
                    "num_region_pictures": len(tour.regions)},
        "scratch": {"tokenizer": str(pair.tokenizer_dir), "generator": str(pair.generator_dir),
                    "loss_trends": trends}})
    path = out / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(R.page("vfmtok demo: the bundled model at work, and a short training from scratch", sections))
    return path
