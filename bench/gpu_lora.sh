#!/usr/bin/env bash
# Runs on the GPU machine after bench/gpu_small_card.sh (which writes the models): the main job at
# SDXL size, 1024x1024 and 30 steps, from the published files, with and without a LoRA of rank
# 128 on every attention projection, feed-forward and convolution of the UNet (kohya's format,
# the original UNet's names, random weights), on the whole card and with 4 GiB free. Reports per
# run the time per step, the time until the weights were ready (the merge is in it) and the wall
# time, to $OUT/lora.jsonl.
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
MODELS=/tmp/small-card-models
[ -e "$MODELS/sd_xl_random.safetensors" ] || { echo "run bench/gpu_small_card.sh first" >&2; exit 1; }

python3 - "$MODELS" <<'PY' || exit 1
# A rank-128 LoRA on every matrix and convolution kernel of the UNet's blocks.
import json, struct, sys
import torch
from safetensors.torch import save_file
folder = sys.argv[1]
with open(f"{folder}/sd_xl_random.safetensors", "rb") as f:
    header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
prefix, rank, tensors = "model.diffusion_model.", 128, {}
generator = torch.Generator().manual_seed(0)
for key, entry in header.items():
    shape = entry.get("shape", [])
    if not key.startswith(prefix) or not key.endswith(".weight") or len(shape) < 2:
        continue
    name = "lora_unet_" + key[len(prefix):-len(".weight")].replace(".", "_")
    r = min(rank, shape[0])
    tensors[f"{name}.lora_down.weight"] = (torch.randn(r, *shape[1:], generator=generator) * 0.01).half()
    tensors[f"{name}.lora_up.weight"] = (torch.randn(shape[0], r, *([1, 1] if len(shape) == 4 else []), generator=generator) * 0.01).half()
    tensors[f"{name}.alpha"] = torch.tensor(float(r)).half()
save_file(tensors, f"{folder}/lora_rank128.safetensors")
print(f"{len(tensors) // 3} layers, {sum(t.numel() * 2 for t in tensors.values()) / 2**30:.2f} GiB")
PY
python3 - <<'PY'
# The main job with a LoraLoader between the checkpoint and the nodes that use it.
text = open("workflows/instantid_blockswap.yaml").read()
text = text.replace("ckpt.model", "lora.model").replace("ckpt.clip", "lora.clip")
text = text.replace("nodes:\n", "nodes:\n  lora:\n    type: LoraLoader\n    inputs: { model: ckpt.model, clip: ckpt.clip }\n"
                    "    params: { lora_name: lora_rank128.safetensors, strength_model: 1.0, strength_clip: 1.0 }\n", 1)
open("/tmp/instantid_lora.yaml", "w").write(text)
PY
FILES="--models-dir $MODELS --set ckpt.ckpt_name=sd_xl_random.safetensors --set instantid.instantid_file=ip-adapter.bin \
  --set controlnet.control_net_name=ControlNetModel"
SIZE="--set latent.width=1024 --set latent.height=1024 --set sample.steps=30"

for free in whole 4; do
  for workflow in workflows/instantid_blockswap.yaml /tmp/instantid_lora.yaml; do
    holder=""
    if [ "$free" != whole ]; then
      hold "$free" /tmp/held-lora; holder=$HOLDER
    fi
    start=$(date +%s%N)
    RUST_LOG=info timeout 300 .gpu/swapgraph run "$workflow" --device cuda:0 --output-dir /tmp/lora-out $FILES $SIZE \
      > /tmp/lora_run.txt 2>&1
    code=$?
    end=$(date +%s%N)
    [ -n "$holder" ] && { kill $holder; wait $holder 2>/dev/null; }
    python3 - "$free" "$workflow" "$code" "$start" "$end" <<'PY' | tee -a "$OUT/lora.jsonl"
import json, re, sys
text = open("/tmp/lora_run.txt").read()
row = {"free_gib": sys.argv[1], "lora": "lora" in sys.argv[2], "exit": int(sys.argv[3]), "wall_s": round((int(sys.argv[5]) - int(sys.argv[4])) / 1e9, 1)}
timed = re.search(r"UNet weights ready in (\d+) ms(?:, ControlNet weights in (\d+) ms)?, first step (\d+) ms.*?then ([0-9.]+) ms per step", text)
if timed:
    row.update(weights_ready_ms=int(timed.group(1)) + int(timed.group(2) or 0), first_step_ms=int(timed.group(3)), per_step_ms=float(timed.group(4)))
found = re.search(r"lora \(LoraLoader\) finished in ([0-9.]+) ms", text)
if found:
    row["lora_node_ms"] = round(float(found.group(1)))
errors = [l for l in text.splitlines() if "ERROR" in l or "WARN" in l]
if errors:
    row["log"] = [e[-300:] for e in errors[-3:]]
print(json.dumps(row))
PY
  done
done
