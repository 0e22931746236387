#!/usr/bin/env bash
# Runs on the GPU machine: what host-to-device copies cost the compute beside them, and why.
# The resident SDXL UNet step runs alone and beside unrelated copies (`noise`) of several sizes
# and rates, and from host memory on 2 MiB pages (`noise-huge`), while nvidia-smi samples the card's clocks, power and throttle reasons every 100 ms.
# Results: $OUT/interference.jsonl (one line per run, with its label), $OUT/clocks.csv and
# $OUT/marks.txt (when each run started and ended, to line the samples up with the runs).
# Expects .gpu/ with the unet_step bench binary.
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,power.limit,temperature.gpu,clocks_event_reasons.active \
  --format=csv,noheader -lms 100 > "$OUT/clocks.csv" &
SAMPLER=$!
STEPS=${STEPS:-40}
# label, then the environment for the copies (NOISE_MIB, NOISE_GAP_US), then the configurations.
run() {
  local label=$1 noise=$2 configs=$3
  echo "$(date +%H:%M:%S.%N) start $label" >> "$OUT/marks.txt"
  env $noise timeout 200 .gpu/unet_step --device cuda:0 --latent 128 --steps "$STEPS" --configs "$configs" 2>>"$OUT/stderr.txt" |
    python3 -c 'import json,sys
for line in sys.stdin:
    if line.startswith("{"):
        row = json.loads(line); row["label"] = sys.argv[1]; print(json.dumps(row))' "$label" | tee -a "$OUT/interference.jsonl"
  echo "$(date +%H:%M:%S.%N) end $label" >> "$OUT/marks.txt"
}
RUNS=${RUNS:-"copies-256MiB|NOISE_MIB=256|none,none/noise,none/noise-huge,none
copies-16MiB|NOISE_MIB=16|none/noise,none/noise-huge,none
copies-16MiB-half-rate|NOISE_MIB=16 NOISE_GAP_US=300|none/noise,none"}
echo "transparent huge pages: $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null)" | tee "$OUT/thp.txt"
while IFS='|' read -r label noise configs; do
  run "$label" "$noise" "$configs"
done <<< "$RUNS"
kill $SAMPLER
