#!/usr/bin/env bash
# Runs on the GPU machine: BlockSwap's budgets against the fastest any schedule could run in
# them. The resident step is profiled by unit (`none/profile`), which gives each budget's floor
# at the bandwidth `swapgraph doctor` measures (unet_step's `budget_floor_ms`); each budget then
# runs plain, profiled by block and with the compute stream's waits (`debug`). The resident step
# also runs beside unrelated full-rate host-to-device copies (`none/noise`): what copies alone
# cost the compute beside them. Budgets after `none/profile` and `none/noise/profile` report
# their schedule replayed on the profiled compute, plain and slowed by the copies it overlaps,
# and the best replay at any prefetch depth. Results in $OUT/budget.jsonl.
# Expects .gpu/ with the CUDA build of swapgraph and the unet_step bench binary.
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
BANDWIDTH=$(pinned_bandwidth)
echo "page-locked host-to-device: $BANDWIDTH GB/s"
CONFIGS=${CONFIGS:-none/profile,none,none/noise,none/noise/profile,budget:4096/p2,budget:3072/p2,budget:3072/p2/profile,budget:3072/p2/debug,budget:3072/p4,budget:2048/p2,budget:2048/p2/profile}
timeout 500 .gpu/unet_step --device cuda:0 --latent 128 --steps 10 --bandwidth-gb-s "$BANDWIDTH" --configs "$CONFIGS" 2>&1 | tee "$OUT/budget.jsonl"
