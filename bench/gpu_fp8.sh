#!/usr/bin/env bash
# Runs on the GPU machine after bench/gpu_small_card.sh (which writes the models): the UNet's
# weights kept in 8-bit floats (fp8 e4m3) against f16.
# 1. The SDXL-size UNet step (unet_step, 1024x1024, 10 steps): resident and a full swap
#    (blocks:3, prefetch 4), with f16 weights and with fp8 weights, in one call; with the bus's
#    page-locked rate, so each full swap's floor (bytes a step / rate) can be stated.
# 2. The main job at 1024x1024 and 30 steps from a single-file checkpoint whose UNet was saved in
#    fp8 (the f16 file's UNet weights cast with PyTorch), with default settings, on the whole card
#    and with 4 and 3 GiB free; its image against the f16 file's whole-card image.
# PARTS="step" or PARTS="job" runs one of the two (default both); FP8_RUNS picks the job's runs
# (default "f16:whole fp8:whole fp8:4 fp8:3").
# Results under $OUT: fp8_step.jsonl, fp8_job.jsonl.
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
MODELS=/tmp/small-card-models
[ -e "$MODELS/sd_xl_random.safetensors" ] || { echo "run bench/gpu_small_card.sh first" >&2; exit 1; }

PARTS=${PARTS:-step job}
if [[ " $PARTS " == *" step "* ]]; then
echo "== the UNet step, f16 and fp8 weights"
BANDWIDTH=$(pinned_bandwidth)
echo "{\"pinned_gb_s\": $BANDWIDTH}" | tee "$OUT/fp8_step.jsonl"
for weights in compute fp8; do
  timeout 240 .gpu/unet_step --device cuda:0 --latent 128 --steps 10 --weights $weights --bandwidth-gb-s "$BANDWIDTH" \
    --configs none,blocks:3/p4 2>&1 | grep '^{' | tee -a "$OUT/fp8_step.jsonl"
done
fi
[[ " $PARTS " == *" job "* ]] || exit 0

echo "== the main job from a checkpoint saved in fp8"
python3 - "$MODELS" <<'PY' || exit 1
# The f16 checkpoint with its UNet's weights cast to float8_e4m3fn, as fp8 checkpoints are shared.
import sys
import torch
from safetensors.torch import load_file, save_file
folder = sys.argv[1]
state = load_file(f"{folder}/sd_xl_random.safetensors")
for key, value in state.items():
    if key.startswith("model.diffusion_model."):
        state[key] = value.to(torch.float8_e4m3fn)
save_file(state, f"{folder}/sd_xl_random_fp8.safetensors")
PY
FILES="--models-dir $MODELS --set instantid.instantid_file=ip-adapter.bin --set controlnet.control_net_name=ControlNetModel"
SIZE="--set latent.width=1024 --set latent.height=1024 --set sample.steps=30"
for run in ${FP8_RUNS:-f16:whole fp8:whole fp8:4 fp8:3}; do
  weights=${run%%:*}; free=${run##*:}; ckpt=sd_xl_random.safetensors
  [ "$weights" = fp8 ] && ckpt=sd_xl_random_fp8.safetensors
  holder=""
  if [ "$free" != whole ]; then
    hold "$free" /tmp/held-fp8; holder=$HOLDER
  fi
  rm -rf /tmp/fp8-out
  start=$(date +%s%N)
  RUST_LOG=info timeout 300 .gpu/swapgraph run workflows/instantid_blockswap.yaml --device cuda:0 --output-dir /tmp/fp8-out \
    --set ckpt.ckpt_name=$ckpt $FILES $SIZE > /tmp/fp8_run.txt 2>&1
  code=$?
  end=$(date +%s%N)
  [ -n "$holder" ] && { kill $holder; wait $holder 2>/dev/null; }
  { echo "== $run"; grep -v "^ *[0-9]*: <unknown>" /tmp/fp8_run.txt | cut -c1-400; } >> "$OUT/fp8_logs.txt"
  python3 - "$run" "$code" "$start" "$end" <<'PY' | tee -a "$OUT/fp8_job.jsonl"
import glob, json, re, sys
import numpy as np
from PIL import Image
run, code, start, end = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
text = open("/tmp/fp8_run.txt").read()
row = {"run": run, "exit": code, "wall_s": round((end - start) / 1e9, 1)}
timed = re.search(r"UNet weights ready in (\d+) ms(?:, ControlNet weights in (\d+) ms)?, first step (\d+) ms.*?then ([0-9.]+) ms per step", text)
if timed:
    row.update(weights_ready_ms=int(timed.group(1)) + int(timed.group(2) or 0), first_step_ms=int(timed.group(3)), per_step_ms=float(timed.group(4)))
row["streaming"] = re.findall(r"leaves (\d+) MiB for the weights of (\S+)", text)
images = sorted(glob.glob("/tmp/fp8-out/instantid/*.png"))
if images:
    image = np.asarray(Image.open(images[0])).astype(np.int32)
    if run == "f16:whole":
        np.save("/tmp/fp8_reference.npy", image)
    else:
        reference = np.load("/tmp/fp8_reference.npy")
        row["mean_abs_diff_vs_f16"] = round(float(np.abs(image - reference).mean()), 2)
errors = [l for l in text.splitlines() if "ERROR" in l]
if errors:
    row["error"] = errors[-1][-500:]
print(json.dumps(row))
PY
done
