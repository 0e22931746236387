#!/usr/bin/env bash
# Builds a CUDA 13.0 "CUDA_HOME" (nvcc + headers + link-time libs) from PyPI wheels, no GPU needed.
# Usage: bash setup_cuda.sh [DEST]   (DEST defaults to ./ ; creates DEST/cudavenv and DEST/cuda)
# Run `cargo fetch --features cuda` in this workspace first (the
# libcuda link stub is generated from cudarc's list of driver functions).
# Then build with: CUDA_HOME=DEST/cuda PATH=DEST/cuda/bin:$PATH CUDA_COMPUTE_CAP=90 cargo build --release --features cuda
# CUDA 13.0 exactly: PTX from a newer nvcc is refused by the GPU machine's driver (580).
set -euo pipefail
mkdir -p "${1:-.}"
DEST="$(cd "${1:-.}" && pwd)"
cd "$DEST"
python3 -m venv cudavenv
./cudavenv/bin/pip install -q --no-deps \
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 \
  nvidia-cublas==13.1.0.3 nvidia-curand==10.4.0.35
CU="$(./cudavenv/bin/python -c 'import nvidia,os;print(os.path.join(list(nvidia.__path__)[0],"cu13"))')"
mkdir -p cuda/lib64/stubs cuda/targets/x86_64-linux
ln -sfn "$CU/bin" cuda/bin; ln -sfn "$CU/nvvm" cuda/nvvm; ln -sfn "$CU/include" cuda/include
for f in "$CU"/lib/*; do ln -sfn "$f" cuda/lib64/; done
( cd cuda/lib64 && ln -sfn libcublas.so.13 libcublas.so && ln -sfn libcublasLt.so.13 libcublasLt.so \
  && ln -sfn libcurand.so.10 libcurand.so && ln -sfn libnvrtc.so.13 libnvrtc.so )
# candle-kernels asks for `-lcudart` (dylib); this GNU-ld linker script makes it resolve to the static
# cudart instead, so the binary does not need libcudart.so.13 at run time.
printf 'INPUT(%s/libcudart_static.a -lrt -lpthread -ldl)\n' "$CU/lib" > cuda/lib64/libcudart.so
ln -sfn ../../include cuda/targets/x86_64-linux/include
ln -sfn ../../lib64 cuda/targets/x86_64-linux/lib
# libcuda.so link stub (SONAME libcuda.so.1): every driver entry point cudarc 0.19 declares,
# each returning CUDA_ERROR_NO_DEVICE. Only used at link time; the real one comes from the driver.
SYS="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* 2>/dev/null | sort -V | tail -1)/src/driver/sys/mod.rs"
[ -f "$SYS" ] || { echo "run 'cargo fetch' in this workspace first ($SYS missing)"; exit 1; }
grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$SYS" | awk '{print $4}' | sort -u \
  | awk '{print "int " $1 "(void){return 100;}"}' > cuda/lib64/stubs/libcuda_stub.c
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o cuda/lib64/stubs/libcuda.so cuda/lib64/stubs/libcuda_stub.c
cuda/bin/nvcc --version | tail -2
