#!/usr/bin/env bash
# Runs on the GPU machine, in one go: the UNet's CUDA kernels against the CPU f32 reference
# (the sdxl crate's tests of the CUDA build), the SDXL-size UNet step resident and streamed
# beside diffusers resident, and a per-kernel Nsight Compute summary of one UNet forward for
# the current unet_step binary (and .gpu/before/'s with PROFILE_BEFORE=1) for
# bench/ncu_table.py; .gpu/before/'s binary, when present, also runs BEFORE_CONFIGS (default
# `none`) in the same call, and the current one without cuDNN (SWAPGRAPH_CUDNN=off) and without
# cuBLASLt's epilogues (SWAPGRAPH_CUBLASLT=off). Results go under $OUT.
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
# Images stay outside $OUT: only the figures come back.
IMAGES=$(mktemp -d)

echo "== kernel tests"
timeout 300 .gpu/sdxl_tests kernels:: 2>&1 | tail -15 | tee "$OUT/kernel_tests.txt"

echo "== tiny workflows, GPU f16 against CPU f32"
for device in cuda:0 cpu; do
  for workflow in sdxl_txt2img instantid_blockswap; do
    timeout 120 .gpu/swapgraph run workflows/$workflow.yaml --device $device --output-dir "$IMAGES/${device%%:*}" 2>&1 | grep -E "ERROR|error" | cut -c1-600
  done
done
python3 - "$IMAGES" <<'PY'
import sys, glob
from PIL import Image
import numpy as np
out = sys.argv[1]
load = lambda pattern: np.asarray(Image.open(sorted(glob.glob(out + pattern))[0])).astype(np.int32)
for name, pattern in (("txt2img", "/%s/sdxl/txt2img_*.png"), ("InstantID", "/%s/instantid/portrait_*.png")):
    gpu, cpu = load(pattern % "cuda"), load(pattern % "cpu")
    print("%s GPU f16 vs CPU f32, mean absolute pixel difference (0-255): %.2f, max %d" % (name, np.abs(gpu - cpu).mean(), np.abs(gpu - cpu).max()))
PY

echo "== unet step"
timeout 300 .gpu/unet_step --device cuda:0 --latent 128 --steps 10 --configs "${CONFIGS:-none,blocks:3/p1,budget:4096/p2}" 2>&1 | tee "$OUT/unet_step.jsonl"
[ -x .gpu/before/unet_step ] && timeout 300 .gpu/before/unet_step --device cuda:0 --latent 128 --steps 10 --configs "${BEFORE_CONFIGS:-none}" 2>&1 | sed 's/^{/{"build":"before",/' | tee -a "$OUT/unet_step.jsonl"
SWAPGRAPH_CUDNN=off timeout 200 .gpu/unet_step --device cuda:0 --latent 128 --steps 10 --configs none 2>&1 | sed 's/^{/{"build":"im2col",/' | tee -a "$OUT/unet_step.jsonl"
SWAPGRAPH_CUBLASLT=off timeout 200 .gpu/unet_step --device cuda:0 --latent 128 --steps 10 --configs none 2>&1 | sed 's/^{/{"build":"bias after the product",/' | tee -a "$OUT/unet_step.jsonl"
pip install -q --no-index --no-deps --target /tmp/site .gpu/*.whl 2>/dev/null
PYTHONPATH=/tmp/site timeout 200 python3 bench/diffusers_baseline.py --latent 128 --steps 10 --mode resident 2>&1 | tail -1 | tee -a "$OUT/unet_step.jsonl"

if [ "${PROFILE:-1}" = 1 ]; then
  echo "== per-kernel profile (one warm-up and one measured forward each)"
  for bin in .gpu/unet_step ${PROFILE_BEFORE:+.gpu/before/unet_step}; do
    [ -x "$bin" ] || continue
    name=$(basename "$(dirname "$bin")"); [ "$name" = .gpu ] && name=after
    timeout 400 ncu --metrics gpu__time_duration.sum --csv --print-summary per-kernel \
      "$bin" --device cuda:0 --latent 128 --steps 1 --configs none > "$OUT/ncu_$name.csv" 2> "$OUT/ncu_$name.err"
    echo "$name: rc=$? $(wc -l < "$OUT/ncu_$name.csv") lines"
  done
fi
