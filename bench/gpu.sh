#!/usr/bin/env bash
# Runs on the GPU machine, in one go: `swapgraph doctor`; the tiny workflows on the GPU resident,
# with BlockSwap streaming and with synchronous BlockSwap (images must be identical) and on the
# CPU (f32) for comparison; the SDXL-size UNet step resident (also profiled by unit, for the
# budgets' floors, and beside unrelated copies) and streamed in several configurations; the PyTorch baselines on the same card (diffusers resident, group offloading at
# block and leaf level, the original whole-block swap); and the table of it all written into a
# copy of BENCHMARKS.md under $OUT (bench/write_table.py), to be copied back.
# Expects .gpu/ with the CUDA build of swapgraph, the unet_step bench binary and a diffusers wheel.
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"

echo "== doctor"
timeout 300 .gpu/swapgraph doctor --write-preset "$OUT/preset.json" 2>&1 | tee "$OUT/doctor.txt"
BANDWIDTH=$(pinned_bandwidth)

echo "== workflows"
run() { timeout 150 .gpu/swapgraph run "$@" 2>&1 | grep -E "ERROR|error|run [0-9]|memory:|sample \(" | cut -c1-900; }
run workflows/sdxl_txt2img.yaml --device cuda:0 --output-dir "$OUT/gpu"
run workflows/sdxl_blockswap.yaml --device cuda:0 --output-dir "$OUT/gpu" --repeat 3
run workflows/sdxl_blockswap.yaml --device cuda:0 --output-dir "$OUT/gpu-sync" --set swap.non_blocking=false
run workflows/sdxl_blockswap.yaml --device cuda:0 --output-dir "$OUT/gpu-preset" --input-dir "$OUT" --blockswap-preset "$OUT/preset.json"
run workflows/sdxl_txt2img.yaml --device cpu --output-dir "$OUT/cpu"
run workflows/instantid_blockswap.yaml --device cuda:0 --output-dir "$OUT/gpu"
sed 's/^  swap:$/  swap:\n    enabled: false/' workflows/instantid_blockswap.yaml > /tmp/instantid_resident.yaml
run /tmp/instantid_resident.yaml --device cuda:0 --output-dir "$OUT/gpu-resident"
run workflows/instantid_blockswap.yaml --device cpu --output-dir "$OUT/cpu"
python3 - "$OUT" <<'PY'
import sys, glob
from PIL import Image
import numpy as np
out = sys.argv[1]
load = lambda pattern: np.asarray(Image.open(sorted(glob.glob(out + pattern))[0])).astype(np.int32)
gpu, streamed, sync, cpu = (load(p) for p in ("/gpu/sdxl/txt2img_*.png", "/gpu/sdxl/blockswap_*.png", "/gpu-sync/sdxl/blockswap_*.png", "/cpu/sdxl/txt2img_*.png"))
print("GPU images identical, resident vs BlockSwap streaming:", bool((gpu == streamed).all()))
print("GPU images identical, resident vs BlockSwap synchronous:", bool((gpu == sync).all()))
print("GPU f16 vs CPU f32, mean absolute pixel difference (0-255): %.2f, max %d" % (np.abs(gpu - cpu).mean(), np.abs(gpu - cpu).max()))
iid, iid_resident, iid_cpu = (load(p) for p in ("/gpu/instantid/portrait_*.png", "/gpu-resident/instantid/portrait_*.png", "/cpu/instantid/portrait_*.png"))
print("InstantID GPU images identical, BlockSwap (UNet and IdentityNet) vs resident:", bool((iid == iid_resident).all()))
print("InstantID GPU f16 vs CPU f32, mean absolute pixel difference (0-255): %.2f, max %d" % (np.abs(iid - iid_cpu).mean(), np.abs(iid - iid_cpu).max()))
PY

echo "== unet step"
# The profiles first: the budget rows' floors come from their per-unit compute times.
CONFIGS=${CONFIGS:-none/profile,none/noise/profile,none,none/noise,blocks:3/sync,blocks:3/p1,blocks:3/p2,blocks:3/p4,blocks:3/p2/debug,budget:4096/p2,budget:3072/p2,budget:2048/p2}
timeout 400 .gpu/unet_step --device cuda:0 --latent 128 --steps 10 --bandwidth-gb-s "$BANDWIDTH" --configs "$CONFIGS" 2>&1 | tee "$OUT/unet_step.jsonl"
timeout 200 .gpu/unet_step --device cuda:0 --latent 160 --steps 5 --configs none,blocks:3/p2 2>&1 | tee -a "$OUT/unet_step.jsonl"
pip install -q --no-index --no-deps --target /tmp/site .gpu/*.whl 2>/dev/null
for mode in resident group-block group-leaf block-swap; do
  PYTHONPATH=/tmp/site timeout 200 python3 bench/diffusers_baseline.py --latent 128 --steps 10 --mode $mode 2>&1 | tail -1 | tee -a "$OUT/unet_step.jsonl"
done

echo "== table"
cp BENCHMARKS.md "$OUT/BENCHMARKS.md"
python3 bench/write_table.py "$OUT" "$OUT/BENCHMARKS.md" && sed -n '/gpu-step-table:start/,/gpu-step-table:end/p' "$OUT/BENCHMARKS.md"
