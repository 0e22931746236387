#!/usr/bin/env bash
# Runs on the GPU machine: the UNet's weights kept in 8-bit floats (fp8 e4m3) against f16 (the
# job writes the models as bench/gpu_small_card.sh does, unless they are there).
# 1. The SDXL-size UNet step (unet_step, 1024x1024, 10 steps): resident and a full swap
#    (blocks:3, prefetch 4), with f16 weights, fp8 weights widened, and fp8 weights multiplied as
#    kept by the linear layers (fp8-fast), in one call; with the bus's
#    page-locked rate, so each full swap's floor (bytes a step / rate) can be stated; the fp8
#    rows again with .gpu/before's unet_step when it is there.
# 2. The main job at 1024x1024 and 30 steps from a single-file checkpoint whose UNet was saved in
#    fp8 (the f16 file's UNet weights cast with PyTorch), with default settings, on the whole card
#    and with 4 and 3 GiB free; and with its UNet loaded by UNETLoader from the f16 file with
#    fp8_e4m3fn_fast (8-bit products) on the whole card and with 4 GiB free; each image against
#    the f16 file's whole-card image.
# PARTS="step" or PARTS="job" runs one of the two (default both); FP8_CONFIGS picks the step's
# unet_step configurations (default "none,blocks:3/p4"); FP8_RUNS picks the job's runs
# (default "f16:whole fp8:whole fp8:4 fp8:3 fast:whole fast:4"; the fp8 checkpoint is written only
# for fp8 runs).
# Results under $OUT: fp8_step.jsonl, fp8_job.jsonl.
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
MODELS=/tmp/small-card-models

PARTS=${PARTS:-step job}
if [[ " $PARTS " == *" step "* ]]; then
echo "== the UNet step, f16 and fp8 weights"
# Without swapgraph's binary here (BANDWIDTH= set empty), the floors are left to the job's call.
BANDWIDTH=${BANDWIDTH-$(pinned_bandwidth)}
echo "{\"pinned_gb_s\": \"$BANDWIDTH\"}" | tee "$OUT/fp8_step.jsonl"
for weights in compute fp8 fp8-fast; do
  timeout 240 .gpu/unet_step --device cuda:0 --latent 128 --steps 10 --weights $weights ${BANDWIDTH:+--bandwidth-gb-s $BANDWIDTH} \
    --configs ${FP8_CONFIGS:-none,blocks:3/p4} 2>&1 | grep '^{' | tee -a "$OUT/fp8_step.jsonl"
done
# .gpu/before's binary, when present, runs the fp8 rows again in the same call.
for weights in fp8 fp8-fast; do
  [ -x .gpu/before/unet_step ] || break
  timeout 240 .gpu/before/unet_step --device cuda:0 --latent 128 --steps 10 --weights $weights ${BANDWIDTH:+--bandwidth-gb-s $BANDWIDTH} \
    --configs ${FP8_CONFIGS:-none,blocks:3/p4} 2>&1 | grep '^{' | sed 's/^{/{"build":"before",/' | tee -a "$OUT/fp8_step.jsonl"
done
fi
[[ " $PARTS " == *" job "* ]] || exit 0

echo "== the main job from a checkpoint saved in fp8"
mkdir -p "$MODELS"
[ -e "$MODELS/sd_xl_random.safetensors" ] || write_models "$MODELS" || exit 1
RUNS=${FP8_RUNS:-f16:whole fp8:whole fp8:4 fp8:3 fast:whole fast:4}
[[ " $RUNS" != *" fp8:"* ]] || python3 - "$MODELS" <<'PY' || exit 1
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
# fp8_e4m3fn_fast is UNETLoader's: the job with its UNet from the f16 file through UNETLoader.
FAST=/tmp/fp8_fast.yaml
sed -e "s/      model: ckpt.model/      model: unet.model/" \
    -e "s/^nodes:$/nodes:\n  unet:\n    type: UNETLoader\n    params: { unet_name: sd_xl_random.safetensors, weight_dtype: fp8_e4m3fn_fast }/" \
    workflows/instantid_blockswap.yaml > "$FAST"
for run in $RUNS; do
  weights=${run%%:*}; free=${run##*:}; ckpt=sd_xl_random.safetensors; workflow=workflows/instantid_blockswap.yaml
  [ "$weights" = fp8 ] && ckpt=sd_xl_random_fp8.safetensors
  [ "$weights" = fast ] && workflow=$FAST
  holder=""
  if [ "$free" != whole ]; then
    hold "$free" /tmp/held-fp8; holder=$HOLDER
  fi
  rm -rf /tmp/fp8-out
  RUST_LOG=info python3 bench/run_log.py run /tmp/fp8_run.txt -- .gpu/swapgraph run "$workflow" --device cuda:0 \
    --output-dir /tmp/fp8-out --set ckpt.ckpt_name=$ckpt $FILES $SIZE
  [ -n "$holder" ] && { kill $holder; wait $holder 2>/dev/null; }
  { echo "== $run"; grep -v "^ *[0-9]*: <unknown>" /tmp/fp8_run.txt | cut -c1-400; } >> "$OUT/fp8_logs.txt"
  python3 - "$run" <<'PY' | tee -a "$OUT/fp8_job.jsonl"
import json, re, sys
sys.path.insert(0, "bench")
from run_log import image_difference, timings
run = sys.argv[1]
text = open("/tmp/fp8_run.txt").read()
row = {"run": run, **json.load(open("/tmp/fp8_run.txt.json")), **timings(text)}
row["streaming"] = re.findall(r"leaves (\d+) MiB for the weights of (\S+)", text)
row.update(image_difference("/tmp/fp8-out/instantid", "/tmp/fp8_reference.npy", run == "f16:whole"))
print(json.dumps(row))
PY
done
