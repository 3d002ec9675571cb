"""End-to-end seconds per generated image, VFMTok vs the 2D-grid VQGAN baseline, side by side in one run.

Run: .venv/bin/python benchmarks/throughput.py [--device cpu] [--batch 8] [--gpt GPT-B]
Writes benchmarks/results/throughput.{json,md}. Random weights (timing does not depend on them); KV-cache
sampling without CFG, then decoding ids to pixels; the frozen encoder is not involved in generation.

Pairs compared (same GPT preset, same codebook, same pixel decoder):
- paper scale at 336 px: VFMTok with 256 region tokens (16x16 anchors) vs a 2D grid of 576 tokens (24x24, the
  paper's Table 1 VQGAN setting);
- the small CPU presets at 64 px used by the Imagenette reproduction: 64 vs 64 tokens (equal by design there).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from vfmtok.utils.io import write_json, write_text

OUT = Path(__file__).resolve().parent / "results"


def build_decoder(preset: str, num_tokens: int | None):
    """A tokenizer of `preset` (random weights), optionally with another token count."""
    from vfmtok.tokenizer.build import build_tokenizer
    from vfmtok.tokenizer.config import get_preset

    cfg = get_preset(preset).model
    cfg.encoder_pretrained = False
    if cfg.arch == "vfmtok" and cfg.encoder.startswith("dinov2"):
        cfg.encoder_input_size = 56  # decoding never runs the encoder; keep its construction cheap
    if num_tokens:
        cfg.num_tokens = num_tokens
    return build_tokenizer(cfg).eval()


def measure(name: str, tok, gpt_preset: str, batch: int, device: str, reps: int) -> dict:
    from vfmtok.generator.generate import generate
    from vfmtok.generator.gpt import create_gpt

    torch.manual_seed(0)
    gh, gw = tok.token_grid
    gpt = create_gpt(gpt_preset, vocab_size=tok.cfg.codebook_size, num_tokens=gh * gw, token_grid=(gh, gw), num_classes=1000).to(device).eval()
    tok = tok.to(device)
    labels = torch.arange(batch, device=device) % 1000
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    ids = generate(gpt, labels)  # warm-up
    tok.decode(ids)
    t_gen, t_dec = [], []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        ids = generate(gpt, labels)
        sync()
        t_gen.append(time.perf_counter() - t)
        t = time.perf_counter()
        tok.decode(ids)
        sync()
        t_dec.append(time.perf_counter() - t)
    g, d = sorted(t_gen)[reps // 2], sorted(t_dec)[reps // 2]
    return {"name": name, "tokens_per_image": gh * gw, "image_size": tok.cfg.image_size, "gpt": gpt_preset, "batch": batch,
            "sample_s_per_image": g / batch, "decode_s_per_image": d / batch, "total_s_per_image": (g + d) / batch}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--gpt", default="GPT-B", help="GPT preset for the paper-scale pair")
    ap.add_argument("--small-gpt", default="GPT-tiny", help="GPT preset for the 64 px pair")
    args = ap.parse_args()
    # (label, preset, token count override). The 576-token row keeps the paper preset's decoder and feeds it a
    # 24x24 grid of ids, Table 1's VQGAN token count.
    pairs = [
        ("paper-336", [("VFMTok (256 region tokens)", "vfmtok-paper", None),
                       ("VQGAN grid (576 tokens)", "vfmtok-paper", 576)], args.gpt),
        ("cpu-64", [("VFMTok (vfmtok-cpu-64)", "vfmtok-cpu-64", None),
                    ("VQGAN (vqgan-cpu-64)", "vqgan-cpu-64", None)], args.small_gpt),
    ]
    rows = []
    for group, members, gpt_preset in pairs:
        for label, preset, n in members:
            tok = build_decoder(preset, n)
            row = {"group": group, **measure(label, tok, gpt_preset, args.batch, args.device, args.reps)}
            rows.append(row)
            print(f"{group:10s} {label:30s} tokens {row['tokens_per_image']:4d}  sample {row['sample_s_per_image']:.3f} s/img  "
                  f"decode {row['decode_s_per_image']:.3f} s/img  total {row['total_s_per_image']:.3f} s/img", flush=True)
    ratios = {}
    for group in {r["group"] for r in rows}:
        a, b = [r for r in rows if r["group"] == group]
        ratios[group] = {"sample_speedup": b["sample_s_per_image"] / a["sample_s_per_image"],
                         "total_speedup": b["total_s_per_image"] / a["total_s_per_image"]}
        print(f"{group}: baseline / VFMTok seconds per image: sampling x{ratios[group]['sample_speedup']:.2f}, end-to-end x{ratios[group]['total_speedup']:.2f}")
    meta = {"command": " ".join([Path(sys.executable).name] + sys.argv), "device": args.device, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "machine": platform.machine(),
            "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None}
    write_json(OUT / "throughput.json", {"meta": meta, "rows": rows, "ratios": ratios})
    md = [f"# End-to-end generation throughput ({args.device}, batch {args.batch}, random weights, no CFG, KV cache)", "",
          f"Command: `{meta['command']}`", "", "| group | tokenizer | tokens/image | GPT | sample s/img | decode s/img | total s/img |",
          "|---|---|---|---|---|---|---|"]
    md += [f"| {r['group']} | {r['name']} | {r['tokens_per_image']} | {r['gpt']} | {r['sample_s_per_image']:.3f} | {r['decode_s_per_image']:.3f} | {r['total_s_per_image']:.3f} |" for r in rows]
    md += [""] + [f"- {g}: baseline / VFMTok = x{v['sample_speedup']:.2f} (sampling), x{v['total_speedup']:.2f} (end to end)" for g, v in ratios.items()]
    write_text(OUT / "throughput.md", "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
