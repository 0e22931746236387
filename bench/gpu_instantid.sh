#!/usr/bin/env bash
# Runs on the GPU machine: the InstantID workflow end to end at SDXL size (builtin:random-sdxl,
# builtin:random-instantid, builtin:random-controlnet), 1024x1024, 30 steps, with every weight
# resident and with BlockSwap streaming the UNet and IdentityNet within a 4 GiB budget each.
# Reports wall time, sampling time and the process's peak device memory (nvidia-smi, polled);
# each configuration also runs 10 steps, and the difference of the two sampling times over 20
# steps is the time per step without the sampler's one-off work (weights to the device, kernel
# compilation, cuDNN's algorithm choice).
# Expects .gpu/ with the CUDA build of swapgraph. Results under $OUT.
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
SIZE="--set ckpt.ckpt_name=builtin:random-sdxl --set instantid.instantid_file=builtin:random-instantid \
  --set controlnet.control_net_name=builtin:random-controlnet --set latent.width=1024 --set latent.height=1024"
sed 's/^  swap:$/  swap:\n    enabled: false/' workflows/instantid_blockswap.yaml > /tmp/instantid_resident.yaml
measure() {
  local label=$1 steps=$2; shift 2
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$OUT/smi_$label.txt" &
  local smi=$!
  local before=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
  local start=$(date +%s.%N)
  timeout 500 .gpu/swapgraph run "$@" --device cuda:0 --output-dir "/tmp/instantid-$label" $SIZE --set sample.steps=$steps > "$OUT/instantid_$label.txt" 2>&1
  local rc=$? end=$(date +%s.%N)
  kill $smi; wait $smi 2>/dev/null
  local peak=$(sort -n "$OUT/smi_$label.txt" | tail -1)
  python3 -c "import json,sys; print(json.dumps({'run': sys.argv[1], 'exit': int(sys.argv[2]), 'wall_s': round(float(sys.argv[4]) - float(sys.argv[3]), 1), 'peak_device_mib_above_idle': int(sys.argv[5]) - int(sys.argv[6])}))" \
    "$label" "$rc" "$start" "$end" "$peak" "$before" | tee -a "$OUT/instantid.jsonl"
  grep -E "ERROR|error|sample \(|memory:|run [0-9]" "$OUT/instantid_$label.txt" | cut -c1-700
}
measure resident 30 /tmp/instantid_resident.yaml
measure resident-10 10 /tmp/instantid_resident.yaml
measure budget4g 30 workflows/instantid_blockswap.yaml --set swap.vram_budget_mb=4096
measure budget4g-10 10 workflows/instantid_blockswap.yaml --set swap.vram_budget_mb=4096
python3 - "$OUT" <<'PY' | tee -a "$OUT/instantid.jsonl"
import json, re, sys
def sampling_ms(label):
    text = open(f"{sys.argv[1]}/instantid_{label}.txt").read()
    return float(re.search(r"sample \(KSampler\) finished in ([0-9.]+) ms", text).group(1))
for label in ("resident", "budget4g"):
    long, short = sampling_ms(label), sampling_ms(label + "-10")
    per_step = (long - short) / 20
    print(json.dumps({"run": label, "sampling_30_steps_ms": long, "ms_per_step": round(per_step, 1), "one_off_ms": round(long - 30 * per_step)}))
PY
