#!/usr/bin/env bash
# Every test of the workspace, on a fresh machine too: installs what the editor's browser test
# needs when it is missing (Node.js, Debian's Chromium, the editor's npm packages), Debian's
# nats-server and openssl (certificates for its TLS test) for the shared queue's tests, and the
# published ComfyUI client the ComfyUI API test drives (a Python environment in
# target/comfy-client), then runs `cargo test --workspace` with any arguments given.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
command -v node >/dev/null || packages+=(nodejs npm)
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || packages+=(chromium)
command -v "${NATS_SERVER:-nats-server}" >/dev/null || packages+=(nats-server)
command -v openssl >/dev/null || packages+=(openssl)
if ((${#packages[@]})); then
  as_root=()
  [ "$(id -u)" = 0 ] || as_root=(sudo)
  echo "installing ${packages[*]} for the editor's browser test and the shared queue's tests" >&2
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" apt-get install -y -qq "${packages[@]}"
fi

# npm records what it installed in node_modules/.package-lock.json; reinstall when the lock
# file is newer.
installed=web/node_modules/.package-lock.json
if [ ! -f "$installed" ] || [ web/package-lock.json -nt "$installed" ]; then
  npm ci --prefix web --no-audit --no-fund
fi

# The ComfyUI API test drives the server with comfy_api_simplified from PyPI.
client="${CARGO_TARGET_DIR:-target}/comfy-client"
if ! "$client/bin/python" -c "import comfy_api_simplified" 2>/dev/null; then
  echo "installing comfy_api_simplified for the ComfyUI API test" >&2
  rm -rf "$client"
  python3 -m venv "$client"
  "$client/bin/pip" install -q comfy_api_simplified==1.6.0
fi
export COMFY_CLIENT_PYTHON="$PWD/$client/bin/python"
[[ "$client" = /* ]] && COMFY_CLIENT_PYTHON="$client/bin/python"

cargo test --workspace "$@"
