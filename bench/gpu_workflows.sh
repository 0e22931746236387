#!/usr/bin/env bash
# Runs on the GPU machine: the tiny example workflows on the GPU with and without BlockSwap (the
# images must be identical) and on the CPU (f32) for comparison with the GPU's f16.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
for f in .gpu/swapgraph.xz; do [ -e "$f" ] && python3 -c "import lzma,sys,os; d=lzma.open(sys.argv[1]).read(); p=sys.argv[1][:-3]; open(p,'wb').write(d); os.chmod(p,0o755)" "$f"; done
export LD_LIBRARY_PATH=$(python3 -c 'import nvidia,os;print(os.path.join(list(nvidia.__path__)[0],"cu13","lib"))'):/usr/local/cuda/lib64
for w in sdxl_txt2img sdxl_blockswap; do
  timeout 120 .gpu/swapgraph run "workflows/$w.yaml" --device cuda:0 --output-dir "$OUT/gpu" --repeat 2 2>&1 | grep -E "ERROR|run [0-9]|BlockSwap memory|sample \(" | cut -c1-300
done
timeout 120 .gpu/swapgraph run workflows/sdxl_txt2img.yaml --device cpu --output-dir "$OUT/cpu" 2>&1 | grep -E "ERROR|run [0-9]"
python3 - "$OUT" <<'PY'
import sys, glob
from PIL import Image
import numpy as np
out = sys.argv[1]
load = lambda pattern: np.asarray(Image.open(sorted(glob.glob(out + pattern))[0])).astype(np.int32)
gpu, swapped, cpu = load("/gpu/sdxl/txt2img_*.png"), load("/gpu/sdxl/blockswap_*.png"), load("/cpu/sdxl/txt2img_*.png")
print("GPU images identical with and without BlockSwap:", bool((gpu == swapped).all()))
print("GPU f16 vs CPU f32, mean absolute pixel difference (0-255): %.2f, max %d" % (np.abs(gpu - cpu).mean(), np.abs(gpu - cpu).max()))
PY
