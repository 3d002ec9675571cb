"""The demo's single self-contained HTML report."""

from __future__ import annotations

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


def training_charts(out: Path) -> list[str]:
    """SVG charts of the tokenizer's losses and codebook usage and the generator's loss, from the runs' metrics.jsonl."""
    tm = _jsonl(out / "tokenizer" / "metrics.jsonl")
    charts = [R.line_chart({k: [(r["step"], r.get(k)) for r in tm] for k in ("pixel", "lpips", "feature", "total") if any(k in r for r in tm)},
                           "tokenizer losses", log_y=True),
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
