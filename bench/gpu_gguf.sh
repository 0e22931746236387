#!/usr/bin/env bash
# Runs on the GPU machine: GGUF UNets, their blocks kept quantized and dequantized on the device.
#
# PARTS="step": the SDXL-size UNet step (unet_step, 1024x1024, 10 steps) resident and as a full
# swap (blocks:3, prefetch 4), with f16 weights, then from GGUF files of random weights in Q4_K
# and Q8_0 (written by unet_step, each step also held to the same step on the f16 weights the
# blocks were made from), one process each, in one call: results in $OUT/gguf_step.jsonl.
# STEP_WEIGHTS picks the weights (default "compute q4_k q8_0").
#
# The main job with its UNet from GGUF files, as ComfyUI-GGUF's users run it, against the f16
# single-file checkpoint: PARTS="write" writes the models (as bench/gpu_small_card.sh does) with
# the checkpoint's UNet also as GGUF Q8_0 and Q4_K files in ComfyUI-GGUF's converter's layout
# (bench/gguf_writer.rs: vectors and small tensors in F32, a tensor whose rows do not split into
# blocks reshaped to rows of 256 with its shape kept as comfy.gguf.orig_shape); PARTS="run"
# runs the main job (1024x1024, 30 steps, default settings, the whole card) with the
# checkpoint's UNet, then with each GGUF UNet through UnetLoaderGGUF (text encoders and VAE
# still from the checkpoint). Default: write and run. Reports per run: wall, the time until the
# weights were ready, per step, host peak, and the image's difference from the f16 one. Results
# under $OUT: gguf.jsonl.
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
MODELS=/tmp/small-card-models
PARTS=${PARTS:-write run}

if [[ " $PARTS " == *" step "* ]]; then
echo "== the UNet step, f16 weights and GGUF blocks"
for weights in ${STEP_WEIGHTS:-compute q4_k q8_0}; do
  timeout 300 .gpu/unet_step --device cuda:0 --latent 128 --steps 10 --weights $weights \
    --configs none,blocks:3/p4 > /tmp/gguf_step.txt 2>&1
  grep written /tmp/gguf_step.txt; grep '^{' /tmp/gguf_step.txt | tee -a "$OUT/gguf_step.jsonl"
done
fi

if [[ " $PARTS " == *" write "* ]]; then
echo "== writing the models and the GGUF UNets"
mkdir -p "$MODELS"
SECONDS=0
[ -e "$MODELS/unet_q4_k.gguf" ] || write_models "$MODELS" --unet-gguf q8_0,q4_k || exit 1
echo "written in ${SECONDS} s:"; du -sh "$MODELS"/*.gguf "$MODELS"/sd_xl_random.safetensors
fi
[[ " $PARTS " == *" run "* ]] || exit 0

echo "== the main job, its UNet from the checkpoint and from GGUF"
FILES="--models-dir $MODELS --set ckpt.ckpt_name=sd_xl_random.safetensors --set instantid.instantid_file=ip-adapter.bin \
  --set controlnet.control_net_name=ControlNetModel"
SIZE="--set latent.width=1024 --set latent.height=1024 --set sample.steps=30"
for unet in checkpoint unet_q8_0.gguf unet_q4_k.gguf; do
  workflow=workflows/instantid_blockswap.yaml
  if [ "$unet" != checkpoint ]; then
    workflow=/tmp/gguf_$unet.yaml
    sed -e "s/      model: ckpt.model/      model: unet.model/" \
        -e "s/^nodes:$/nodes:\n  unet:\n    type: UnetLoaderGGUF\n    params: { unet_name: $unet }/" \
        workflows/instantid_blockswap.yaml > "$workflow"
  fi
  RUST_LOG=info python3 bench/run_log.py run "/tmp/gguf_$unet.log" -- .gpu/swapgraph run "$workflow" --device cuda:0 \
    --output-dir "/tmp/gguf-out-$unet" $FILES $SIZE
  python3 - "$unet" <<'PY' | tee -a "$OUT/gguf.jsonl"
import json, re, sys
sys.path.insert(0, "bench")
from run_log import image_difference, timings
unet = sys.argv[1]
text = open(f"/tmp/gguf_{unet}.log").read()
row = {"unet": unet, **json.load(open(f"/tmp/gguf_{unet}.log.json")), **timings(text)}
types = re.search(r"GGUF tensor types ([^\n]*)", text)
if types:
    row["types"] = types.group(1)
row.update(image_difference(f"/tmp/gguf-out-{unet}/instantid", "/tmp/gguf_f16.npy", unet == "checkpoint"))
print(json.dumps(row))
PY
done
