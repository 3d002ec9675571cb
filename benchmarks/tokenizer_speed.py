"""Tokenizer throughput: encode / decode images per second and peak memory, CPU preset and paper preset.

Run: .venv/bin/python benchmarks/tokenizer_speed.py [--device cpu|cuda] [--batch 8] [--presets vfmtok-cpu-64 vfmtok-paper]
Writes benchmarks/results/tokenizer_speed.{json,md}. Random weights (timing does not depend on them).
Each measurement runs in its own subprocess so that peak RSS is per measurement.
The paper preset's frozen DINOv2-L/14 runs at 336 px: its forward is timed separately from the trainable
part (region encoder + quantiser) and from the decoder, to check the target "trainable part < frozen encoder".
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from vfmtok.utils.io import write_json, write_text

OUT = Path(__file__).resolve().parent / "results"


def measure(preset: str, part: str, batch: int, device: str, reps: int) -> dict:
    """Seconds per batch for one part: 'encoder' | 'tokens' (trainable encode path) | 'encode' | 'decode'."""
    from vfmtok.tokenizer.build import build_tokenizer
    from vfmtok.tokenizer.config import get_preset

    cfg = get_preset(preset).model
    cfg.encoder_pretrained = False
    torch.manual_seed(0)
    m = build_tokenizer(cfg).to(device).eval()
    x = torch.rand(batch, 3, cfg.image_size, cfg.image_size, device=device) * 2 - 1
    ac = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    with torch.no_grad(), ac:
        enc = m.encoder_features(x) if hasattr(m, "encoder") else None
        ids = m.encode(x)
        fns = {
            "encoder": lambda: m.encoder_features(x),
            "tokens": lambda: m.quantizer.nearest(m.pre_quant(m.token_features(None, enc)[0]).float()),
            "encode": lambda: m.encode(x),
            "decode": lambda: m.decode(ids),
        }
        f = fns[part]
        f()  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            f()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    sec = sorted(times)[len(times) // 2]
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"preset": preset, "part": part, "batch": batch, "device": device, "sec_per_batch": sec,
            "images_per_s": batch / sec, "peak_mem_mib": round(peak, 1), "peak_mem_kind": "cuda_allocated" if device == "cuda" else "process_max_rss",
            "trainable_params_m": round(sum(v.numel() for v in m.trainable_state_dict().values()) / 1e6, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--presets", nargs="+", default=["vfmtok-cpu-64", "vqgan-cpu-64", "vfmtok-paper"])
    ap.add_argument("--_child", nargs=2, metavar=("PRESET", "PART"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        print(json.dumps(measure(args._child[0], args._child[1], args.batch, args.device, args.reps)))
        return
    rows = []
    for preset in args.presets:
        parts = ["encode", "decode"] + (["encoder", "tokens"] if not preset.startswith("vqgan") else [])
        for part in parts:
            cmd = [sys.executable, __file__, "--device", args.device, "--batch", str(args.batch), "--reps", str(args.reps), "--_child", preset, part]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"{preset}/{part} failed:\n{r.stderr[-2000:]}")
            row = json.loads(r.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{preset:16s} {part:8s} {row['images_per_s']:9.2f} img/s  {row['sec_per_batch'] * 1000:9.1f} ms/batch  peak {row['peak_mem_mib']:8.0f} MiB", flush=True)
    ratios = {}
    for preset in args.presets:
        by = {r["part"]: r for r in rows if r["preset"] == preset}
        if "encoder" in by:
            trainable = by["tokens"]["sec_per_batch"] + by["decode"]["sec_per_batch"]
            ratios[preset] = {"trainable_encode_plus_decode_over_frozen_encoder": trainable / by["encoder"]["sec_per_batch"],
                              "tokens_over_frozen_encoder": by["tokens"]["sec_per_batch"] / by["encoder"]["sec_per_batch"],
                              "decode_over_frozen_encoder": by["decode"]["sec_per_batch"] / by["encoder"]["sec_per_batch"]}
            print(f"{preset}: (region encoder + VQ + decoder) / frozen encoder = {ratios[preset]['trainable_encode_plus_decode_over_frozen_encoder']:.2f}; "
                  f"region encoder + VQ alone = {ratios[preset]['tokens_over_frozen_encoder']:.3f}")
    meta = {"command": " ".join(sys.argv), "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "device": args.device,
            "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None}
    write_json(OUT / "tokenizer_speed.json", {"meta": meta, "rows": rows, "ratios": ratios})
    lines = [f"# Tokenizer speed ({args.device}, batch {args.batch}, random weights)", "", f"Command: `{meta['command']}`", "",
             "| preset | part | images/s | ms/batch | peak MiB |", "|---|---|---|---|---|"]
    lines += [f"| {r['preset']} | {r['part']} | {r['images_per_s']:.2f} | {r['sec_per_batch'] * 1000:.1f} | {r['peak_mem_mib']:.0f} |" for r in rows]
    lines += ["", "Parts: `encoder` = frozen encoder forward; `tokens` = region encoder + VQ given encoder features;",
              "`encode` = both; `decode` = ids -> image (ViT decoder + conv pixel decoder). Peak memory: process max RSS on CPU.", ""]
    lines += [f"- {p}: (tokens + decode) / encoder = {v['trainable_encode_plus_decode_over_frozen_encoder']:.2f}, tokens / encoder = {v['tokens_over_frozen_encoder']:.3f}" for p, v in ratios.items()]
    write_text(OUT / "tokenizer_speed.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
