"""benchmarks/results/official_training.{json,md} from the results of benchmarks/official_training.py."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

ROWS = [("loss", "loss"), ("grad_norm", "grad norm (before clipping)"), ("grads", "gradients (after clipping)"),
        ("weights_after", "weights after the step"), ("update", "the update (weights after - before)"),
        ("update_where_grad_above_100eps", "the update where the official abs(grad) > 100 x AdamW eps"),
        ("ema_after", "EMA weights after the step"), ("ema_update", "EMA update")]
NOTES = {
    "update": "AdamW's first step moves each element by lr * g / (|g| + eps) (+ decay): an element whose gradient is "
              "near 1e-8 turns a gradient difference of rounding size into a visible update difference; the weights "
              "after the step are the quantity that trains on.",
    "ema_update": "In fp32 one step at decay 0.9999 moves the EMA by 1e-4 x the update, below fp32 resolution: "
                  "both sides are rounding there, so the rule is checked in fp64.",
}


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "inf" if math.isinf(x) else f"{x:.2e}"
    return str(x)


def _cell(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "-"
    if "error" in entry:
        return entry["error"]
    rel = entry.get("max_rel", entry.get("rel"))
    where = f" ({entry['worst']})" if "worst" in entry else ""
    return f"{_fmt(rel)}{where}"


def _generator_md(name: str, r: dict[str, Any]) -> list[str]:
    f32, f64 = r.get("float32", {}), r.get("float64", {})
    lines = [f"## {name}", "", "| compared | fp32 rel. error (worst tensor) | fp64 rel. error (worst tensor) |", "|---|---|---|"]
    for key, label in ROWS:
        if key in f32 or key in f64:
            lines.append(f"| {label} | {_cell(f32.get(key))} | {_cell(f64.get(key))} |")
    lines.append("")
    checks = {k: v for k, v in f32.items() if k not in dict(ROWS) and k not in ("shape",)}
    lines.append("Same inputs: " + ", ".join(f"{k} = {_fmt(v) if not isinstance(v, dict) else json.dumps(v)}"
                                            for k, v in checks.items()) + ".")
    for key in ("grads", "update"):
        apart = f32.get(key, {}).get("apart")
        if apart:
            lines.append(f"Reported apart ({key}): " + ", ".join(
                f"{k} rel {_fmt(v['rel'])} at official norm {_fmt(v['official_norm'])}" for k, v in apart.items())
                + " (true gradient zero: see the note in the JSON's source, benchmarks/official_generators.py).")
    t = r.get("time")
    if t:
        lines.append(f"Step time (median, 1 thread, fp32, eager): ours {t['ours_s']:.3f} s, official "
                     f"{t['official_s']:.3f} s, official / ours = **{t['speedup']:.2f}**.")
    lines.append("")
    return lines


def write(res: dict[str, Any], out: Path) -> None:
    """Write out.json (everything) and out.md (tables)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    md = ["# One training step against the official trainers (issue 33)", "",
          f"Command: `{res['command']}` (SCRATCH: a folder outside the repository holding the official checkouts).", "",
          f"torch {res['torch']}, {res['cpu']}, {res['threads']} thread, {res['date']}. Machine: {res['machine']}.", "",
          f"Exact comparison at {json.dumps(res['check_shape'])}; timing at {json.dumps(res['time_shape'])}.", ""]
    if "gpt" in res:
        md += _generator_md("GPT vs LlamaGen autoregressive/train/train_c2i.py", res["gpt"])
    if "rar" in res:
        md += _generator_md("RAR vs 1d-tokenizer scripts/train_rar.py (train_one_epoch_generator)", res["rar"])
    kept = res.get("kept_from_previous_run")
    if kept:
        md += [f"Sections {', '.join(kept['sections'])} are kept from the run of {kept['date']}: `{kept['command']}`.", ""]
    if "tokenizer" in res:
        tok = res["tokenizer"]
        md += ["## Tokenizer vs VFMTok2 tokenizer/utils/vqgan_train.py", ""] + tok.get("md", [])
        if "model_step" in tok:
            md += tok["model_step"]["md"]
        if "model_probe" in tok:
            md += ["Official model probe (`--tokenizer-model`): `" + json.dumps(tok["model_probe"]) + "`.", ""]
    md += ["## Notes", ""] + [f"- {k}: {v}" for k, v in NOTES.items()] + [""]
    out.with_suffix(".md").write_text("\n".join(md))
