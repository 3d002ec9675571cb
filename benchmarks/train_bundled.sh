#!/bin/bash
# The bundled VFMTok pair's recipe (docs/results/bundled-model.md): vfmtok-cpu-64 tokenizer on Imagenette,
# codes of every train image (+ flips), GPT-tiny on them (constant LR to GPT_FLAT_STEPS, then resumed with a cosine
# decay to 0 at GPT_STEPS), exported in fp16 with TOP_K as its recommended sampling (chosen by
# benchmarks/sampling_sweep.py). Every stage resumes; re-running skips what is done.
# TENCROP=1 trains the cosine phase on ten-crop codes instead (5 crops + flips: 5x the sequences; lower held-out loss,
# no better class consistency: docs/results/bundled-model.md).
# Then a decoder-only phase: the tokenizer's decoder side trained DEC_STEPS more steps with a cosine LR decay
# (train.trainable=decoder: the codes, and so the GPT, are unchanged), then a second such phase of DEC2_STEPS from
# the first (a restarted cosine from a lower peak LR), and a third of DEC3_STEPS from the second; the export pairs
# the GPT with the last one (0: skip a phase). DEC_SET, DEC2_SET, DEC3_SET add flags to one phase (after TOK_SET,
# so they override it: e.g. DEC2_SET="--set loss.lpips_weight=0.1"); DEC_LR, DEC2_LR, DEC3_LR are their peak LRs.
# The bundled pair's third phase used LPIPS weight 0.1 (the default DEC3_SET).
# GPT_RESTARTS="STEPS:LR ..." resumes the GPT after GPT_STEPS, once per pair, to STEPS with a cosine at peak LR; the
# cosine spans the whole run, so a restart begins at the schedule's value at the step it resumes from.
# Usage: benchmarks/train_bundled.sh RUN_DIR [EXPORT_DIR]
#   TOK_STEPS (2200), GPT_FLAT_STEPS (3250), GPT_STEPS (8000), TOP_K (5), THREADS (1 per stage), DEC_STEPS (5000), DEC2_STEPS (6000),
#   DEC3_STEPS (2000), DEC_LR (4e-4), DEC2_LR (3e-4), DEC3_LR (3e-4)
#   override the budget; DEVICE (cpu) is passed to every stage (cuda on a GPU machine); PRESET (vfmtok-cpu-64) is the
#   tokenizer preset, DATA (imagenette) its data (or a `vfmtok prepare-data` shard folder), TOK_SET extra tokenizer
#   flags (e.g. "--set loss.lpips_weight=0.25").
set -euo pipefail
R=${1:?usage: benchmarks/train_bundled.sh RUN_DIR [EXPORT_DIR]}
EXPORT=${2:-}
TOK_STEPS=${TOK_STEPS:-2200}
GPT_FLAT_STEPS=${GPT_FLAT_STEPS:-3250}
GPT_STEPS=${GPT_STEPS:-8000}
TOP_K=${TOP_K:-5}
THREADS=${THREADS:-1}
TENCROP=${TENCROP:-0}
DEC_STEPS=${DEC_STEPS:-5000}
DEC2_STEPS=${DEC2_STEPS:-6000}
DEC3_STEPS=${DEC3_STEPS:-2000}
DEC_SET=${DEC_SET:-}
DEC2_SET=${DEC2_SET:-}
DEC3_SET=${DEC3_SET---set loss.lpips_weight=0.1}  # unset: the bundled recipe; set empty for none
GPT_RESTARTS=${GPT_RESTARTS:-}
for pair in $GPT_RESTARTS; do  # checked before any stage runs, not hours in
  [[ "$pair" =~ ^[0-9]+:[0-9.eE+-]+$ ]] || { echo "train_bundled.sh: GPT_RESTARTS entry '$pair' must look like STEPS:LR (e.g. 4300:1e-3)" >&2; exit 2; }
done
DEVICE=${DEVICE:-cpu}
PRESET=${PRESET:-vfmtok-cpu-64}
DATA=${DATA:-imagenette}
TOK_SET=${TOK_SET:-}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$HERE/.venv/bin/python}
V="$PY -m vfmtok.cli"
mkdir -p "$R"
at() { [ -f "$1/latest.txt" ] && [ "$(cat "$1/latest.txt")" = "step_$(printf %07d "$2")" ]; }
resume() { [ -f "$1/latest.txt" ] && echo --resume || true; }

echo "== $(date -u) tokenizer to $TOK_STEPS steps"
at "$R/tokenizer" "$TOK_STEPS" || $V train-tokenizer --threads "$THREADS" --preset "$PRESET" --data "$DATA" \
  --steps "$TOK_STEPS" --batch-size 16 --set train.cache_features=false --set train.save_every=200 $TOK_SET \
  --out "$R/tokenizer" --device "$DEVICE" $(resume "$R/tokenizer")

echo "== $(date -u) codes of every train image and its flip"
[ -f "$R/codes.done" ] || { rm -rf "$R/codes"; $V extract-codes --threads "$THREADS" --tokenizer "$R/tokenizer" \
  --data "$DATA" --split train --out "$R/codes" --device "$DEVICE" && touch "$R/codes.done"; }

CODES2=$R/codes  # the cosine phase's codes
if [ "$TENCROP" = 1 ]; then
  CODES2=$R/codes_tencrop
  echo "== $(date -u) ten-crop codes of every train image"
  [ -f "$R/codes_tencrop.done" ] || { rm -rf "$CODES2"; $V extract-codes --threads "$THREADS" --tokenizer "$R/tokenizer" \
    --data "$DATA" --split train --ten-crop --out "$CODES2" --device "$DEVICE" && touch "$R/codes_tencrop.done"; }
fi

gpt() {  # $1 = steps, $2 = codes folder, then extra flags; the same run folder throughout
  local steps=$1 codes=$2; shift 2
  $V train-generator --threads "$THREADS" --codes "$codes" --preset GPT-tiny --steps "$steps" --batch-size 32 \
    --lr 1e-3 --warmup-steps 100 --ema-decay 0.999 --save-every 250 --out "$R/generator" --device "$DEVICE" "$@" $(resume "$R/generator")
}
echo "== $(date -u) GPT-tiny to $GPT_FLAT_STEPS steps at a constant LR"
[ -f "$R/gpt_flat.done" ] || { gpt "$GPT_FLAT_STEPS" "$R/codes" && touch "$R/gpt_flat.done"; }
echo "== $(date -u) GPT-tiny on to $GPT_STEPS steps on $(basename "$CODES2"), cosine LR decay"
at "$R/generator" "$GPT_STEPS" || gpt "$GPT_STEPS" "$CODES2" --set lr_schedule=cosine
for pair in $GPT_RESTARTS; do
  steps=${pair%%:*} lr=${pair#*:}
  echo "== $(date -u) GPT-tiny resumed to $steps steps, cosine restart at peak LR $lr"
  at "$R/generator" "$steps" || gpt "$steps" "$CODES2" --set lr_schedule=cosine --lr "$lr"
done

decoder_phase() {  # $1 = run folder, $2 = the tokenizer it starts from, $3 = steps, $4 = peak LR, $5 = its extra flags
  echo "== $(date -u) decoder-only phase $(basename "$1"), $3 steps from $(basename "$2"), cosine LR decay from $4 (codes unchanged)"
  at "$1" "$3" || $V train-tokenizer --threads "$THREADS" --preset "$PRESET" --data "$DATA" \
    --steps "$3" --batch-size 16 --set train.cache_features=false --set train.save_every=200 $TOK_SET $5 \
    --set train.init_from="$2" --set train.trainable=decoder --set train.lr_schedule=cosine --set train.lr="$4" \
    --out "$1" --device "$DEVICE" $(resume "$1")
}
TOK=$R/tokenizer  # the tokenizer the export pairs with the GPT
PHASE_STEPS=("$DEC_STEPS" "$DEC2_STEPS" "$DEC3_STEPS")
PHASE_LR=("${DEC_LR:-4e-4}" "${DEC2_LR:-3e-4}" "${DEC3_LR:-3e-4}")
PHASE_SET=("$DEC_SET" "$DEC2_SET" "$DEC3_SET")
for i in 0 1 2; do  # each phase starts from the one before it; a 0 ends the chain
  [ "${PHASE_STEPS[i]}" != 0 ] || break
  out=$R/tokenizer_decoder$([ "$i" = 0 ] || echo $((i + 1)))
  decoder_phase "$out" "$TOK" "${PHASE_STEPS[i]}" "${PHASE_LR[i]}" "${PHASE_SET[i]}"
  TOK=$out
done

if [ -n "$EXPORT" ]; then
  echo "== $(date -u) export to $EXPORT"
  $V export --gpt "$R/generator" --tokenizer "$TOK" --out "$EXPORT" --top-k "$TOP_K" \
    --recipe "PRESET=$PRESET DATA=$DATA TOK_SET='$TOK_SET' TOK_STEPS=$TOK_STEPS GPT_FLAT_STEPS=$GPT_FLAT_STEPS GPT_STEPS=$GPT_STEPS TOP_K=$TOP_K TENCROP=$TENCROP DEC_STEPS=$DEC_STEPS DEC2_STEPS=$DEC2_STEPS DEC3_STEPS=$DEC3_STEPS DEC_LR=${PHASE_LR[0]} DEC2_LR=${PHASE_LR[1]} DEC3_LR=${PHASE_LR[2]} DEC_SET='$DEC_SET' DEC2_SET='$DEC2_SET' DEC3_SET='$DEC3_SET' GPT_RESTARTS='$GPT_RESTARTS' benchmarks/train_bundled.sh"
fi
echo "== $(date -u) done"
