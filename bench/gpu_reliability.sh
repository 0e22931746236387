#!/usr/bin/env bash
# Runs on the GPU machine: the out-of-memory advice and cancelling during sampling, on the
# SDXL-size built-in model (builtin:random-sdxl) at 1024x1024.
#  1. Another process holds all but 6 GiB of the card; the resident UNet must fail with an
#     error that names the budget that fits, and following each error's advice must end in a
#     run that succeeds.
#  2. A server runs a job to warm its caches, then a 30-step job that is cancelled during
#     sampling: how long the cancel took, and device memory after it against after the warm job.
# Expects .gpu/ with the CUDA build of swapgraph. Results under $OUT.
set -uo pipefail
source "$(dirname "$0")/gpu_env.sh"
SIZE="--set ckpt.ckpt_name=builtin:random-sdxl --set latent.width=1024 --set latent.height=1024 --set sample.steps=3"

echo "== out of memory with 6 GiB free"
python3 - "$OUT/ballast.pid" <<'PY' &
import os, sys, time, torch
free, total = torch.cuda.mem_get_info()
ballast = torch.empty(free - 6 * 2**30, dtype=torch.uint8, device="cuda")
open(sys.argv[1], "w").write(str(os.getpid()))
print(f"ballast {ballast.numel() / 2**30:.1f} GiB of {total / 2**30:.1f} GiB; left free {torch.cuda.mem_get_info()[0] / 2**30:.2f} GiB", flush=True)
time.sleep(600)
PY
for _ in $(seq 60); do [ -s "$OUT/ballast.pid" ] && break; sleep 1; done
# Follow the advice each error gives until the run succeeds: a budget for a new or existing
# BlockSwap node, tiles for the VAE, a smaller tile.
sed 's/type: VAEDecode$/type: VAEDecodeTiled/' workflows/sdxl_blockswap.yaml > /tmp/sdxl_blockswap_tiled.yaml
WORKFLOW=workflows/sdxl_txt2img.yaml
ADVICE=""
for attempt in 1 2 3 4 5 6; do
  timeout 300 .gpu/swapgraph run $WORKFLOW --device cuda:0 --output-dir "$OUT/oom" $SIZE $ADVICE > "$OUT/oom_$attempt.txt" 2>&1
  rc=$?
  echo "attempt $attempt: $(basename $WORKFLOW) $ADVICE -> exit $rc"
  [ $rc = 0 ] && break
  ERROR=$(grep -m1 -oE 'node "[a-z]+" \([A-Za-z]+\) failed: .*' "$OUT/oom_$attempt.txt")
  echo "  $ERROR"
  BUDGET=$(echo "$ERROR" | grep -oE "vram_budget_mb(:| to) [0-9]+" | grep -oE "[0-9]+$")
  TILE=$(echo "$ERROR" | grep -oE "tile_size from [0-9]+ to [0-9]+" | grep -oE "[0-9]+$")
  if [ -n "$BUDGET" ]; then
    case $WORKFLOW in workflows/sdxl_txt2img.yaml) WORKFLOW=workflows/sdxl_blockswap.yaml;; esac
    ADVICE=$(echo "$ADVICE" | sed 's/--set swap.vram_budget_mb=[0-9]*//')" --set swap.vram_budget_mb=$BUDGET"
  elif echo "$ERROR" | grep -q "decode in tiles with VAEDecodeTiled"; then
    WORKFLOW=/tmp/sdxl_blockswap_tiled.yaml
  elif [ -n "$TILE" ]; then
    ADVICE=$(echo "$ADVICE" | sed 's/--set decode.tile_size=[0-9]*//')" --set decode.tile_size=$TILE"
  else
    break
  fi
done
kill "$(cat "$OUT/ballast.pid")"; wait 2>/dev/null

echo "== cancelling during sampling"
.gpu/swapgraph serve --device cuda:0 --port 8199 --output-dir "$OUT/serve" > "$OUT/serve.txt" 2>&1 &
SERVER=$!
python3 - <<'PY' 2>&1 | tee "$OUT/cancel.txt"
import json, time, urllib.request
base = "http://127.0.0.1:8199/api"
def call(method, path, body=None):
    request = urllib.request.Request(base + path, data=body, method=method)
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.load(response)
for _ in range(120):
    try:
        call("GET", "/system"); break
    except Exception:
        time.sleep(0.5)
def workflow(name, steps):
    text = open(f"workflows/{name}.yaml").read()
    text = text.replace("builtin:tiny-sdxl", "builtin:random-sdxl").replace("width: 128, height: 128", "width: 1024, height: 1024")
    text = text.replace("steps: 8", f"steps: {steps}")
    assert "random-sdxl" in text and "1024" in text and f"steps: {steps}" in text, text
    return text.encode()
def wait(job_id, until):
    while True:
        job = call("GET", f"/jobs/{job_id}")
        if until(job):
            return job
        time.sleep(0.02)
ended = lambda job: job["state"] in ("succeeded", "failed", "cancelled")
for name in ("sdxl_txt2img", "sdxl_blockswap"):
    warm = call("POST", "/jobs", workflow(name, 2))
    job = wait(warm["id"], ended)
    assert job["state"] == "succeeded", job
    baseline = call("GET", "/system")["memory"]
    long = call("POST", "/jobs", workflow(name, 30))
    wait(long["id"], lambda j: (j.get("progress") or {}).get("node") == "sample" and j["progress"]["step"] >= 3)
    started = time.time()
    call("DELETE", f"/jobs/{long['id']}")
    job = wait(long["id"], ended)
    took = time.time() - started
    after = call("GET", "/system")["memory"]
    print(json.dumps({"workflow": name, "state": job["state"], "cancelled_at_step": job["progress"]["step"],
                      "cancel_seconds": round(took, 3), "allocated_after_warm_job": baseline["allocated"],
                      "allocated_after_cancel": after["allocated"], "change_bytes": after["allocated"] - baseline["allocated"]}))
    # A change of minus the warm job's cached latent and image (the engine's cache drops outputs a
    # later run does not use) means nothing the cancelled job allocated stayed behind.
    # The step time, to compare the cancel latency with.
    timed = call("POST", "/jobs", workflow(name, 10))
    sampled = lambda n: lambda j: (j.get("progress") or {}).get("node") == "sample" and j["progress"]["step"] >= n
    wait(timed["id"], sampled(1)); first = time.time()
    wait(timed["id"], sampled(9))
    print(json.dumps({"workflow": name, "seconds_per_step": round((time.time() - first) / 8, 3)}))
    wait(timed["id"], ended)
PY
kill $SERVER; wait 2>/dev/null
