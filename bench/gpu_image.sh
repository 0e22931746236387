#!/usr/bin/env bash
# Runs on the GPU machine: whole images with the models already loaded, swapgraph against
# diffusers in one call. swapgraph serves the example workflows at 1024x1024 and 30 steps with
# their models loaded from files written at real size with random weights (bench/image_times.py:
# text encoding, sampling, decode and save per image); diffusers makes the same images with its
# UNet, ControlNet and VAE under torch.compile (bench/diffusers_images.py). Each argument names
# one part, run in the order given:
#   swapgraph   the text-to-image workflow and the main job (InstantID with BlockSwap)
#   resident    the main job with BlockSwap streaming nothing and its monitoring off
#               (`swap.blocks_to_swap=0`, `swap.debug=false`): its compute alone, as diffusers'
#               ControlNet pipeline runs with every weight on the card
#   eager       diffusers' SDXL and SDXL ControlNet pipelines, eager, channels last
#   compiled    the same under torch.compile's default mode
#   compiled-controlnet  only the ControlNet pipeline under torch.compile (the main job's
#               counterpart; its compile and five images fit one call beside `resident`)
# e.g. `bench/gpu_image.sh swapgraph compiled`. The swapgraph part needs .gpu/ with the CUDA build
# of swapgraph and the write_models bench (a CPU build, `cargo bench --bench write_models
# --no-run`: it only writes files, and fits the carry beside swapgraph); the diffusers parts diffusers' wheel, and
# .gpu/transformers-clip-site.tar.xz (bench/pack_clip_site.sh) where the machine has no
# transformers, the rest of their needs being installed there. The two halves do not fit one call's carry beside the repository: send them in
# two calls on the same machine, back to back (it keeps the first's files). IMAGES (default 5)
# images are timed after a warm-up each. Results under $OUT/images.jsonl.
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
pip install -q --no-index --no-deps --target /tmp/site .gpu/*.whl 2>/dev/null
# The machine's own transformers when it has one (a packed newer one may need a newer
# huggingface-hub than the machine's).
python3 -c "import transformers" 2>/dev/null \
  || { [ -e .gpu/transformers-clip-site.tar.xz ] && tar -C /tmp/site -xJf .gpu/transformers-clip-site.tar.xz; }
MODELS=/tmp/image-models
RESULTS="$OUT/images.jsonl"
IMAGES=${IMAGES:-5}
SIZE="--set latent.width=1024 --set latent.height=1024 --set sample.steps=30"

diffusers() {
  PYTHONPATH=/tmp/site timeout "$1" python3 bench/diffusers_images.py --size 1024 --steps 30 --images "$IMAGES" \
    --channels-last "${@:2}" 2> "$OUT/diffusers_images_$(date +%s).err" | tail -1 | tee -a "$RESULTS"
}

# The main job through `swapgraph serve`, its log in $1, further `--set`s after it.
main_job() {
  timeout 300 python3 bench/image_times.py .gpu/swapgraph workflows/instantid_blockswap.yaml --images "$IMAGES" --log "$1" \
    --set ckpt.ckpt_name=sd_xl_random.safetensors --set instantid.instantid_file=ip-adapter.bin \
    --set controlnet.control_net_name=ControlNetModel $SIZE "${@:2}" -- --device cuda:0 --models-dir "$MODELS" \
    --output-dir /tmp/image-out | tee -a "$RESULTS"
}

for part in "$@"; do
  echo "== $part ($(date -u +%T))"
  case "$part" in
    swapgraph|resident)
      [ -e "$MODELS/sd_xl_random.safetensors" ] || { mkdir -p "$MODELS" && write_models "$MODELS"; } || exit 1 ;;&
    swapgraph)
      timeout 300 python3 bench/image_times.py .gpu/swapgraph workflows/sdxl_txt2img.yaml --images "$IMAGES" --log "$OUT/serve_txt2img.log" \
        --set ckpt.ckpt_name=sd_xl_random.safetensors $SIZE -- --device cuda:0 --models-dir "$MODELS" \
        --output-dir /tmp/image-out | tee -a "$RESULTS"
      main_job "$OUT/serve_main_job.log" ;;
    resident) main_job "$OUT/serve_main_job_resident.log" --set swap.blocks_to_swap=0 --set swap.debug=false ;;
    eager) diffusers 300; diffusers 300 --controlnet ;;
    compiled) diffusers 560 --compile default; diffusers 560 --compile default --controlnet ;;
    compiled-controlnet) diffusers 560 --compile default --controlnet ;;
    *) echo "unknown part: $part" >&2; exit 2 ;;
  esac
done
