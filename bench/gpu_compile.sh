#!/usr/bin/env bash
# Runs on the GPU machine: swapgraph's resident UNet step against diffusers' under torch.compile,
# in one call. Each argument names one part, run in the order given:
#   tests          the UNet's CUDA kernels against the CPU f32 reference (.gpu/sdxl_tests)
#   step           swapgraph's resident step (.gpu/unet_step)
#   step:NAME      the same with an earlier build, .gpu/NAME/unet_step (its lines carry "build")
#   ncu, ncu:NAME  the per-kernel Nsight Compute summary of one forward of either, in
#                  $OUT/ncu_after.csv or $OUT/ncu_NAME.csv (for bench/ncu_table.py)
#   eager          diffusers eager, channels last
#   default        diffusers under torch.compile's default mode, channels last (its kernels'
#                  times in $OUT/torch_default.csv, for bench/ncu_table.py with @3)
#   max-autotune   diffusers under torch.compile's max-autotune-no-cudagraphs mode, channels last
#                  (kernels in $OUT/torch_max_autotune.csv)
# e.g. `bench/gpu_compile.sh step step:before eager default max-autotune step`. Needs the diffusers wheel in
# .gpu/. Inductor's caches stay in /tmp, so a mode whose compile ran out of time compiles faster
# in a later call on the same machine. Results go under $OUT/compile.jsonl.
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
pip install -q --no-index --no-deps --target /tmp/site .gpu/*.whl 2>/dev/null
RESULTS="$OUT/compile.jsonl"

diffusers() {
  PYTHONPATH=/tmp/site timeout "$1" python3 bench/diffusers_baseline.py --latent 128 --steps 10 --channels-last "${@:2}" \
    2> "$OUT/diffusers_$(date +%s).err" | tail -1 | tee -a "$RESULTS"
}

for part in "$@"; do
  echo "== $part ($(date -u +%T))"
  name=${part#*:}
  [ "$name" = "$part" ] && name=after
  bin=.gpu/unet_step
  [ "$name" = after ] || bin=.gpu/$name/unet_step
  case "$part" in
    step|step:*) timeout 150 "$bin" --device cuda:0 --latent 128 --steps 10 --configs none 2>&1 | grep '^{' \
                   | sed "s/^{/{\"build\":\"$name\",/" | tee -a "$RESULTS" ;;
    ncu|ncu:*)
      timeout 200 ncu --metrics gpu__time_duration.sum --csv --print-summary per-kernel \
        "$bin" --device cuda:0 --latent 128 --steps 1 --configs none > "$OUT/ncu_$name.csv" 2> "$OUT/ncu_$name.err"
      echo "ncu $name: rc=$? $(wc -l < "$OUT/ncu_$name.csv") lines" ;;
    tests) timeout 200 .gpu/sdxl_tests kernels:: 2>&1 | grep -v "^test .* ok$" | tail -30 | tee "$OUT/kernel_tests.txt" ;;
    eager) diffusers 200 ;;
    default) diffusers 400 --compile default --kernels "$OUT/torch_default.csv" ;;
    max-autotune) diffusers 480 --compile max-autotune-no-cudagraphs --kernels "$OUT/torch_max_autotune.csv" ;;
    *) echo "unknown part: $part" >&2; exit 2 ;;
  esac
done
