#!/usr/bin/env bash
# A stand-in for nvcc that lets `cargo check --features cuda` run on a machine without a CUDA
# toolkit: candle-kernels' build script compiles CUDA kernels with nvcc, but `cargo check` never
# links or runs them, so empty kernel files serve. It answers the version and architecture
# queries and creates the files asked for; put it on PATH as `nvcc`. Never use it for a build
# that runs.
set -euo pipefail
out="" outdir="" lib=0 sources=()
while [ $# -gt 0 ]; do
  case $1 in
    --version)
      printf '%s\n' "nvcc: NVIDIA (R) Cuda compiler driver (stand-in for cargo check)" "" "" \
        "Cuda compilation tools, release 13.0, V13.0.88"
      exit 0;;
    --list-gpu-code) echo "sm_90"; exit 0;;
    -o) out=$2; shift;;
    --output-directory|-odir) outdir=$2; shift;;
    --lib|-lib) lib=1;;
    *.cu) sources+=("$1");;
  esac
  shift
done
if [ $lib = 1 ]; then
  ar rcs "$out"
elif [ -n "$out" ]; then
  : > "$out"
else
  for source in "${sources[@]}"; do
    name=$(basename "$source" .cu)
    echo "// empty: built for cargo check" > "$outdir/$name.ptx"
  done
fi
