#!/usr/bin/env bash
# Runs on the GPU machine: the main job (workflows/instantid_blockswap.yaml) at SDXL size,
# 1024x1024 and 30 steps, with default settings, on a card of which another process holds all
# but N GiB (N = 8, 6, 4, 3, and 2, which must be refused before any work), and once with the
# whole card, first and last (the last reads the kernels and measurements the first kept). The
# models are loaded from files in
# their published formats, written first at real size with random weights (a single-file SDXL
# checkpoint, a diffusers ControlNet folder, InstantID's ip-adapter.bin): the weights of the
# built-in random models, so one more whole-card run on the built-ins must give the same image.
# Reports per run: exit code, wall time, sampling time (and, from the sampler's log, the time
# until its weights were ready, its first step and its later steps' time each), the device's peak beside the holder
# (nvidia-smi, polled every 200 ms), the host's peak resident memory, the decode's plan, and
# whether the image equals the whole-card one. Expects .gpu/ with the CUDA build of swapgraph and
# the write_models bench (a CPU build, `cargo bench --bench write_models --no-run`: it only
# writes files, and fits the carry beside swapgraph).
# SIZES="3 2" measures only those card sizes (and the whole card and the refusal's advice).
# Results under $OUT: small_card.jsonl, and logs.txt with each run's log (backtraces left out).
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
LOGS=/tmp/small-card-logs
MODELS=/tmp/small-card-models
mkdir -p "$LOGS" "$MODELS"

echo "== writing the models"
SECONDS=0
write_models "$MODELS" || exit 1
echo "written in ${SECONDS} s:"; du -sh "$MODELS"/*
# The host peak's target: the models' bytes as they run (all f16 but the VAE, which runs in f32)
# and 2 GiB for the rest.
du -sb "$MODELS" | awk '{printf "{\"models_gib\": %.2f}\n", $1 / 2^30}' | tee -a "$OUT/small_card.jsonl"
FILES="--models-dir $MODELS --set ckpt.ckpt_name=sd_xl_random.safetensors --set instantid.instantid_file=ip-adapter.bin \
  --set controlnet.control_net_name=ControlNetModel"
BUILTINS="--set ckpt.ckpt_name=builtin:random-sdxl --set instantid.instantid_file=builtin:random-instantid \
  --set controlnet.control_net_name=builtin:random-controlnet"
SIZE="--set latent.width=1024 --set latent.height=1024 --set sample.steps=30"


measure() {
  local label=$1 free_gib=$2 models=$3 holder=""
  if [ "$free_gib" != whole ]; then
    hold "$free_gib" /tmp/held
    holder=$HOLDER
  fi
  local before=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$LOGS/smi_$label.txt" &
  local smi=$!
  RUST_LOG=info,swapgraph_model=debug python3 bench/run_log.py run "$LOGS/small_$label.txt" -- .gpu/swapgraph run \
    workflows/instantid_blockswap.yaml --device cuda:0 --output-dir "/tmp/small-$label" $models $SIZE
  kill $smi; wait $smi 2>/dev/null
  [ -n "$holder" ] && { kill $holder; wait $holder 2>/dev/null; }
  python3 - "$label" "$free_gib" "$LOGS" "$before" <<'PY' | tee -a "$OUT/small_card.jsonl"
import json, re, sys
sys.path.insert(0, "bench")
from run_log import image_difference, timings
label, free_gib, out, before = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
text = open(f"{out}/small_{label}.txt").read()
row = {"run": label, "free_gib": free_gib, **json.load(open(f"{out}/small_{label}.txt.json")), **timings(text)}
peak = max(int(line) for line in open(f"{out}/smi_{label}.txt") if line.strip())
row["device_peak_gib"] = round((peak - before) / 1024, 2)
found = re.search(r"sample \(KSampler\) finished in ([0-9.]+) ms", text)
if found:
    row["sampling_s"] = round(float(found.group(1)) / 1000, 2)
    row["per_step_ms_with_one_off"] = round(float(found.group(1)) / 30, 1)
row["nvrtc_compiled"] = len(re.findall(r"with NVRTC in", text))
tiles = re.search(r"decoding \d+x\d+ in tiles of (\d+) pixels", text)
row["decode"] = f"tiles of {tiles.group(1)}" if tiles else "whole"
row["streaming"] = re.findall(r"leaves (\d+) MiB for the weights of (\S+)", text)
difference = image_difference(f"/tmp/small-{label}/instantid", "/tmp/whole.npy", label == "whole")
row.update({f"{key}_vs_whole": value for key, value in difference.items()})
refusal = text.find("cannot run this workflow")
if refusal >= 0:
    row["refused"] = text[refusal:refusal + 1500]
print(json.dumps(row))
PY
  { echo "== $label"; grep -v "^ *[0-9]*: <unknown>" "$LOGS/small_$label.txt" | cut -c1-400; } >> "$OUT/logs.txt"
}

if [ -x .gpu/parity ]; then
  echo "== the VAE in bf16 against diffusers' f32 decode (the SDXL pack's GPU parity test)"
  # The test binary finds its fixtures where it was built.
  [ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }
  .gpu/parity bf16 --nocapture 2>&1 | grep -E "bf16|test result|panicked" | tee "$OUT/vae_bf16.txt"
fi

echo "== the tiny main job on the GPU"
RUST_LOG=info timeout 120 .gpu/swapgraph run workflows/instantid_blockswap.yaml --device cuda:0 --output-dir /tmp/tiny 2>&1 \
  | grep -E "ERROR|error|finished|left the device|tiles|streaming" | cut -c1-300 | tail -20

echo "== the main job at SDXL size"
# Kernels are compiled and memory measured on the first run, and read from the cache after it:
# the whole card once more at the end is a run as every later one is.
rm -rf "${XDG_CACHE_HOME:-$HOME/.cache}/swapgraph/kernels" "${XDG_CACHE_HOME:-$HOME/.cache}/swapgraph/measurements"
measure whole whole "$FILES"
for gib in ${SIZES:-4 3 2 8 6}; do measure "free${gib}g" "$gib" "$FILES"; done
measure whole_again whole "$FILES"
[ -n "${SIZES:-}" ] || measure builtins whole "$BUILTINS"

echo "== following the refusal's advice: a budget too small, then the budget it names"
RUST_LOG=info timeout 300 .gpu/swapgraph run workflows/instantid_blockswap.yaml --device cuda:0 --output-dir /tmp/advice \
  --vram-budget 1024 $FILES $SIZE > "$LOGS/advice_refused.txt" 2>&1
echo "refused with exit $?:"; grep -A8 "cannot run this workflow" "$LOGS/advice_refused.txt" | cut -c1-400
advised=$(grep -o "Raise --vram-budget to at least [0-9]*" "$LOGS/advice_refused.txt" | grep -o "[0-9]*$")
if [ -n "$advised" ]; then
  measure "advised${advised}mib" whole "$FILES --vram-budget $advised"
fi

echo "== image to image on the random SDXL from its file, with 3 GiB free"
hold 3 /tmp/held-i2i
holder=$HOLDER
RUST_LOG=info timeout 300 .gpu/swapgraph run workflows/sdxl_img2img.yaml --device cuda:0 --output-dir /tmp/i2i \
  --models-dir "$MODELS" --set ckpt.ckpt_name=sd_xl_random.safetensors 2>&1 \
  | grep -E "checked in|encode|ERROR|saved|img2img_" | cut -c1-500 | tee "$OUT/img2img.txt"
kill $holder; wait $holder 2>/dev/null

[ -n "${SIZES:-}" ] && exit 0
echo "== doctor --workflow with 4 GiB free"
hold 4 /tmp/held-doctor
holder=$HOLDER
timeout 300 .gpu/swapgraph doctor --device cuda:0 --workflow workflows/instantid_blockswap.yaml $FILES $SIZE 2>&1 \
  | grep -v "^ *[0-9]*: <unknown>" | tee "$OUT/doctor_workflow.txt" | tail -12
kill $holder; wait $holder 2>/dev/null
grep -hE "left the device|tiles of|streaming to fit|sampling within|sampling peaked|ERROR" "$OUT/logs.txt" | cut -c1-300 | sort | uniq -c | head -40
