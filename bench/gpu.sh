#!/usr/bin/env bash
# Runs on the GPU machine: the tiny workflows on the GPU (with and without BlockSwap), then the
# SDXL-size UNet step resident and streamed, and the diffusers baseline, in one go.
# Expects .gpu/ with the CUDA build of swapgraph, the unet_step bench binary and a diffusers wheel.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
for f in .gpu/*.xz; do [ -e "$f" ] && python3 -c "import lzma,sys,os; d=lzma.open(sys.argv[1]).read(); p=sys.argv[1][:-3]; open(p,'wb').write(d); os.chmod(p,0o755)" "$f"; done
export LD_LIBRARY_PATH=$(python3 -c 'import nvidia,os;print(os.path.join(list(nvidia.__path__)[0],"cu13","lib"))'):/usr/local/cuda/lib64
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/card.txt"
for w in sdxl_txt2img sdxl_blockswap; do
  timeout 120 .gpu/swapgraph run "workflows/$w.yaml" --device cuda:0 --output-dir "$OUT/images" 2>&1 | tail -4
done
python3 - "$OUT/images" <<'PY'
import sys, glob
from PIL import Image
import numpy as np
a = np.asarray(Image.open(glob.glob(sys.argv[1] + "/sdxl/txt2img_*.png")[0]))
b = np.asarray(Image.open(glob.glob(sys.argv[1] + "/sdxl/blockswap_*.png")[0]))
print("GPU images identical with and without BlockSwap:", bool((a == b).all()))
PY
pip install -q --no-index --no-deps --target /tmp/site .gpu/*.whl 2>/dev/null
for swap in none blocks:3 budget:4096 budget:2048; do
  timeout 200 .gpu/unet_step --device cuda:0 --latent 128 --steps 6 --swap "$swap" 2>&1 | tail -1 | tee -a "$OUT/unet_step.jsonl"
done
PYTHONPATH=/tmp/site timeout 200 python3 bench/diffusers_baseline.py --latent 128 --steps 10 2>&1 | tail -1 | tee -a "$OUT/unet_step.jsonl"
