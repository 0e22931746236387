#!/usr/bin/env bash
# Runs here, on the machine without a GPU: builds what the bench/gpu_*.sh scripts run and packs
# it into the git-ignored .gpu/, xz-compressed as the GPU machine's carry takes it.
#   .gpu/next/sdxl_tests.xz  the SDXL pack's tests, CUDA build (its GPU tests among them)
#   .gpu/next/unet_step.xz   the unet_step bench, CUDA build
#   .gpu/write_models.xz     the write_models bench (same build as unet_step: no second build
#                            of the dependencies for it; 8 MB, where a CPU build is 4 MB and
#                            fits beside swapgraph, when the CPU target is built anyway)
#   .gpu/swapgraph.xz        the swapgraph binary, CUDA build
#   .gpu/diffusers-*.whl, .gpu/transformers-clip-site.tar.xz  the diffusers baselines' packages
# Arguments name which to make (`tests unet_step write_models swapgraph python`), all by
# default. Needs the CUDA toolchain of scripts/setup_cuda.sh in .cuda-toolchain/; the CUDA build
# goes to target/cuda. On two cores a clean build of all of it takes about an hour (each of the
# three cargo invocations builds candle again: their features differ), a rebuild after a change to
# the SDXL pack about fifteen minutes.
#
# A call carries at most about 20 MB beside the repository, so the packages go in three calls on
# one machine, back to back (it keeps what the earlier calls left):
#   1. sdxl_tests, unet_step, transformers-clip-site: `bench/gpu_graphs.sh tests tuning`
#   2. write_models, the diffusers wheel: `source bench/gpu_env.sh && mkdir -p /tmp/image-models
#      && write_models /tmp/image-models`
#   3. swapgraph: `bench/gpu_graphs.sh images && bench/gpu_image.sh compiled-controlnet`
# `bench/gpu_graphs.sh split tight` needs swapgraph alone (built-in models): one call on any machine.
#
# To compare with an earlier build, pack that one first and move its swapgraph.xz and
# next/unet_step.xz into .gpu/before/; then four calls on one machine, back to back:
#   1. next/sdxl_tests, next/unet_step: `bench/gpu_graphs.sh tests`
#   2. before/unet_step: `bench/gpu_graphs.sh controlnet` (the two builds' steps alternating)
#   3. before/swapgraph: nothing to run (it stays on the machine for the next call)
#   4. swapgraph: `bench/gpu_graphs.sh split` (the two builds' main jobs alternating)
set -euo pipefail
cd "$(dirname "$0")/.."
export CUDA_HOME=$PWD/.cuda-toolchain/cuda PATH=$PWD/.cuda-toolchain/cuda/bin:$PATH CUDA_COMPUTE_CAP=90 \
  CARGO_TARGET_DIR=target/cuda
mkdir -p .gpu/next

# Strips the executable `$1` and writes it xz-compressed to `$2`.
pack() {
  local stripped
  stripped=$(mktemp)
  strip -o "$stripped" "$1"
  xz -9e -T2 -c "$stripped" > "$2"
  rm -f "$stripped"
  ls -la "$2"
}

# The executable cargo's JSON messages on stdin name for target `$1`.
executable() {
  python3 -c '
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message.get("executable") \
            and message["target"]["name"] == sys.argv[1]:
        print(message["executable"])' "$1" | tail -1
}

for part in ${@:-tests unet_step write_models swapgraph python}; do
  echo "== $part ($(date -u +%T))"
  case "$part" in
    tests)
      built=$(cargo test --release -p swapgraph-sdxl --lib --features cuda --no-run --message-format=json \
        | executable swapgraph_sdxl)
      pack "$built" .gpu/next/sdxl_tests.xz ;;
    unet_step|write_models)
      built=$(cargo bench --features cuda --bench "$part" --no-run --message-format=json | executable "$part")
      case "$part" in
        unet_step) pack "$built" .gpu/next/unet_step.xz ;;
        write_models) pack "$built" .gpu/write_models.xz ;;
      esac ;;
    swapgraph)
      cargo build --release --features cuda
      pack target/cuda/release/swapgraph .gpu/swapgraph.xz ;;
    python)
      rm -f .gpu/diffusers-*.whl
      pip download -q --no-deps -d .gpu diffusers
      bash bench/pack_clip_site.sh ;;
    *) echo "unknown part: $part" >&2; exit 2 ;;
  esac
done
