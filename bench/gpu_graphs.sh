#!/usr/bin/env bash
# Runs on the GPU machine: denoising steps recorded as CUDA graphs (`SWAPGRAPH_CUDA_GRAPHS=on`)
# against the same steps queued kernel by kernel. Each argument names one part, run in order:
#   tests   the SDXL pack's GPU tests (the kernels against the CPU's f32, the UNet and ControlNet
#           whole, and recorded steps: a guided UNet with a ControlNet acting over half the
#           schedule, every replay equal to the queued step, bit for bit, and a graph per set of
#           acting adapters), then the resident SDXL UNet step at 1024x1024
#           queued and replayed (`unet_step`'s `graph` modifier, whose output must equal the
#           queued step's), both alternating in one process. Needs .gpu/next/sdxl_tests (the
#           pack's CUDA test binary) and .gpu/next/unet_step (the CUDA bench).
#   tuning  the same step with the linear layers' algorithms timed (`SWAPGRAPH_GEMM_TUNING=on`)
#           and with the heuristics' first (the default), processes alternating, and the first
#           step's time (`warm_up_ms`, which takes the timing). Needs .gpu/next/unet_step.
#   controlnet  the same step with an SDXL-size ControlNet beside the UNet, as IdentityNet runs
#           in the main job (`unet_step`'s `controlnet` modifier): the step and the ControlNet's
#           share of it (`controlnet_ms`), queued and replayed, alternating in one process.
#           Needs .gpu/next/unet_step; with an earlier build in .gpu/before/unet_step, the two
#           alternate, each run twice, queued only (the UNet alone, then with the ControlNet).
#   images  the main job with every weight resident (`bench/gpu_image.sh resident`) with steps
#           replayed, then queued: images per second from queueing to the saved PNG, the
#           sampler's log (how many steps were replays), and whether every PNG of the two runs
#           is the same file. Needs what `bench/gpu_image.sh resident` needs.
#   tight   the text-to-image workflow on the built-in random SDXL at 1024x1024, 30 steps, on a
#           card of which another process holds all but 6 GiB (the least it runs in with every
#           weight resident), steps queued then replayed: whether each saves, its step time and
#           the device's peak beside the holder (nvidia-smi every 200 ms). Needs .gpu/swapgraph.
#   split   the main job at 1024x1024, 30 steps, on the built-in random models (no files to
#           write first), every weight resident then as shipped: the sampler's log line, which
#           splits each step into the ControlNets' and the UNet's device time. Needs .gpu/swapgraph;
#           with an earlier build in .gpu/before/swapgraph, the two alternate, each run twice.
# The parts' binaries do not fit one call's carry: bench/gpu_pack.sh builds them and says which
# call on one machine, back to back, carries what. Results under $OUT: graphs.txt,
# resident_{on,off}.log.
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"

for part in "$@"; do
  echo "== $part ($(date -u +%T))" | tee -a "$OUT/graphs.txt"
  case "$part" in
    tests)
      timeout 240 .gpu/next/sdxl_tests kernels:: cuda_tests 2>&1 | grep -v '^test .* ok$' | tail -30 | tee -a "$OUT/graphs.txt"
      timeout 300 .gpu/next/unet_step --device cuda:0 --latent 128 --steps 10 --configs none,none/graph,none,none/graph \
        2>&1 | grep '^{' | python3 -c '
import json, sys
for line in sys.stdin:
    run = json.loads(line)
    print(json.dumps({k: run[k] for k in ("config", "median_ms", "min_ms", "host_queue_ms", "peak_device_gib",
                                          "identical_to_resident")}))' | tee -a "$OUT/graphs.txt" ;;
    tuning)
      for tuning in off on off on; do
        SWAPGRAPH_GEMM_TUNING=$tuning timeout 200 .gpu/next/unet_step --device cuda:0 --latent 128 --steps 10 \
          --configs none,none/graph 2>&1 | grep '^{' | TUNING=$tuning python3 -c '
import json, os, sys
for line in sys.stdin:
    run = json.loads(line)
    print(json.dumps({"gemm_tuning": os.environ["TUNING"], **{k: run[k] for k in ("config", "median_ms", "min_ms",
                                                            "warm_up_ms", "identical_to_resident")}}))' | tee -a "$OUT/graphs.txt"
      done ;;
    controlnet)
      builds=.gpu/next/unet_step configs=none,none/controlnet,none/controlnet/graph,none/controlnet,none/controlnet/graph
      if [ -x .gpu/before/unet_step ]; then
        builds=".gpu/before/unet_step .gpu/next/unet_step .gpu/before/unet_step .gpu/next/unet_step"
        configs=none,none/controlnet
      fi
      for build in $builds; do
        timeout 300 "$build" --device cuda:0 --latent 128 --steps 10 --configs $configs 2>&1 | grep '^{' \
          | BUILD=$build python3 -c '
import json, os, sys
for line in sys.stdin:
    run = json.loads(line)
    print(json.dumps({"build": os.environ["BUILD"], **{k: run[k] for k in ("config", "median_ms", "controlnet_ms",
                      "min_ms", "warm_up_ms", "peak_device_gib", "identical_to_resident")}}))' | tee -a "$OUT/graphs.txt"
      done ;;
    images)
      for mode in on off; do
        rm -rf /tmp/image-out
        SWAPGRAPH_CUDA_GRAPHS=$mode bash bench/gpu_image.sh resident 2>&1 | tail -1 | tee -a "$OUT/graphs.txt"
        cp "$OUT/serve_main_job_resident.log" "$OUT/resident_$mode.log"
        find /tmp/image-out -name '*.png' -printf '%T@ %p\n' | sort -n | cut -d' ' -f2 | xargs -r md5sum \
          | cut -d' ' -f1 > "/tmp/png_$mode.txt"
      done
      if [ -s /tmp/png_on.txt ] && cmp -s /tmp/png_on.txt /tmp/png_off.txt; then same=true; else same=false; fi
      echo "{\"pngs\": $(wc -l < /tmp/png_on.txt), \"identical_pngs\": $same}" | tee -a "$OUT/graphs.txt"
      grep -h "per step" "$OUT"/resident_*.log | sed 's/^.*INFO[^ ]* //' | tee -a "$OUT/graphs.txt" ;;
    split)
      builds=.gpu/swapgraph
      [ -x .gpu/before/swapgraph ] && builds=".gpu/before/swapgraph .gpu/swapgraph .gpu/before/swapgraph .gpu/swapgraph"
      for sets in "--set swap.blocks_to_swap=0 --set swap.debug=false" ""; do
        for build in $builds; do
          rm -rf /tmp/split-out
          timeout 200 "$build" run workflows/instantid_blockswap.yaml --device cuda:0 --output-dir /tmp/split-out \
            --set ckpt.ckpt_name=builtin:random-sdxl --set instantid.instantid_file=builtin:random-instantid \
            --set controlnet.control_net_name=builtin:random-controlnet --set latent.width=1024 \
            --set latent.height=1024 --set sample.steps=30 $sets > "$OUT/split.log" 2>&1
          echo "{\"build\": \"$build\", \"sets\": \"$sets\", \"exit\": $?}" | tee -a "$OUT/graphs.txt"
          grep -h "per step\|peak" "$OUT/split.log" | sed 's/^.*INFO[^ ]* //' | tee -a "$OUT/graphs.txt"
        done
      done ;;
    tight)
      for mode in off on; do
        hold 6 /tmp/held
        before=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > /tmp/smi_tight.txt &
        smi=$!
        rm -rf /tmp/tight-out
        SWAPGRAPH_CUDA_GRAPHS=$mode timeout 200 .gpu/swapgraph run workflows/sdxl_txt2img.yaml --device cuda:0 \
          --output-dir /tmp/tight-out --set ckpt.ckpt_name=builtin:random-sdxl --set latent.width=1024 \
          --set latent.height=1024 --set sample.steps=30 > "$OUT/tight_$mode.log" 2>&1
        status=$?
        kill $smi "$HOLDER"; wait 2>/dev/null
        peak=$(sort -n /tmp/smi_tight.txt | tail -1)
        echo "{\"cuda_graphs\": \"$mode\", \"exit\": $status, \"pngs\": $(find /tmp/tight-out -name '*.png' | wc -l), \"device_peak_mib\": $((peak - before))}" \
          | tee -a "$OUT/graphs.txt"
        grep -h "per step" "$OUT/tight_$mode.log" | sed 's/^.*INFO[^ ]* //' | tee -a "$OUT/graphs.txt"
      done ;;
    *) echo "unknown part: $part" >&2; exit 2 ;;
  esac
done
