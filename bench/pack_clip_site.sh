#!/usr/bin/env bash
# Packs transformers (CLIP's text models and tokenizer, and the configs diffusers imports when it
# loads) and tokenizers for bench/diffusers_images.py on the GPU machine, which has no network:
# the wheels come from PyPI here, the model folders diffusers does not use are left out so the
# package fits beside the binaries a call carries. Writes .gpu/transformers-clip-site.tar.xz
# (about 4 MB), which bench/gpu_image.sh unpacks onto its PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/.."
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
pip download -q --no-deps -d "$site/wheels" "transformers==${TRANSFORMERS_VERSION:-5.25.0}" tokenizers
pip install -q --no-deps --target "$site/packages" "$site"/wheels/*.whl
KEEP=" auto clip dinov2_with_registers siglip vit_mae "
for model in "$site"/packages/transformers/models/*/; do
  name=$(basename "$model")
  [[ "$KEEP" == *" $name "* ]] || rm -rf "$model"
done
find "$site/packages" -name __pycache__ -prune -exec rm -rf {} +
mkdir -p .gpu
tar -C "$site/packages" -cf - transformers tokenizers | xz -9e -T2 > .gpu/transformers-clip-site.tar.xz
ls -la .gpu/transformers-clip-site.tar.xz
