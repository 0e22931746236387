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
# single-file checkpoint: PARTS="write" writes the models (as bench/gpu_small_card.sh does) and
# converts the checkpoint's UNet to GGUF Q8_0 and Q4_0 with the gguf package (its wheel in
# .gpu/), in ComfyUI-GGUF's converter's layout (vectors and small tensors in F32, a tensor whose
# rows do not split into blocks reshaped to rows of 256 with its shape kept as
# comfy.gguf.orig_shape); PARTS="run" runs the main job (1024x1024, 30 steps, default settings,
# the whole card) with the checkpoint's UNet, then with each GGUF UNet through UnetLoaderGGUF
# (text encoders and VAE still from the checkpoint). Default: write and run. Reports per run:
# wall, the time until the weights were ready, per step, host peak, and the image's difference
# from the f16 one. Results under $OUT: gguf.jsonl.
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
mkdir -p "$MODELS" /tmp/gguf-site
SECONDS=0
[ -e "$MODELS/sd_xl_random.safetensors" ] || write_models "$MODELS" || exit 1
python3 -m pip install --quiet --no-index --no-deps --target /tmp/gguf-site .gpu/gguf-*.whl || exit 1
PYTHONPATH=/tmp/gguf-site python3 - "$MODELS" <<'PY' || exit 1
import sys
import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from safetensors import safe_open
folder = sys.argv[1]
prefix = "model.diffusion_model."
with safe_open(f"{folder}/sd_xl_random.safetensors", "np") as checkpoint:
    unet = {key[len(prefix):]: checkpoint.get_tensor(key) for key in checkpoint.keys() if key.startswith(prefix)}
for qtype in (Q.Q8_0, Q.Q4_0):
    writer = gguf.GGUFWriter(f"{folder}/unet_{qtype.name.lower()}.gguf", "sdxl")
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    for name, value in unet.items():
        data = value.astype(np.float32)
        kind = qtype if data.ndim > 1 and data.size > 1024 else Q.F32
        if kind != Q.F32 and data.shape[-1] % block:
            if data.size % 256:
                kind = Q.F16
            else:
                writer.add_array(f"comfy.gguf.orig_shape.{name}", [int(d) for d in data.shape])
                data = data.reshape(-1, 256)
        writer.add_tensor(name, gguf.quants.quantize(data, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
PY
echo "written in ${SECONDS} s:"; du -sh "$MODELS"/*.gguf "$MODELS"/sd_xl_random.safetensors
fi
[[ " $PARTS " == *" run "* ]] || exit 0

echo "== the main job, its UNet from the checkpoint and from GGUF"
FILES="--models-dir $MODELS --set ckpt.ckpt_name=sd_xl_random.safetensors --set instantid.instantid_file=ip-adapter.bin \
  --set controlnet.control_net_name=ControlNetModel"
SIZE="--set latent.width=1024 --set latent.height=1024 --set sample.steps=30"
for unet in checkpoint unet_q8_0.gguf unet_q4_0.gguf; do
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
