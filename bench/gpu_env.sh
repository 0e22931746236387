# Sourced by the bench/gpu_*.sh scripts on the GPU machine: unpacks .gpu/'s binaries (and those
# of its folders, .gpu/before/ and the like), puts CUDA 13's libraries and cuDNN 9 from PyTorch's wheels on the library
# path, and writes the card and the date to $OUT/card.txt; hold() leaves a card only so much
# free memory, as a smaller card would, and write_models() writes the main job's models.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
for f in .gpu/*.xz .gpu/*/*.xz; do [[ -e "$f" && "$f" != *.tar.xz ]] && python3 -c "import lzma,sys,os; d=lzma.open(sys.argv[1]).read(); p=sys.argv[1][:-3]; open(p,'wb').write(d); os.chmod(p,0o755)" "$f"; done
export LD_LIBRARY_PATH=$(python3 -c 'import nvidia,os,glob;p=list(nvidia.__path__)[0];print(":".join([os.path.join(p,"cu13","lib")]+sorted({os.path.dirname(f) for f in glob.glob(p+"/**/libcudnn.so.9",recursive=True)})))'):/usr/local/cuda/lib64
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/card.txt"
date -u +%F | tee -a "$OUT/card.txt"

# The page-locked host-to-device bandwidth `swapgraph doctor` measures, in GB/s: the highest of
# three runs (each the best of five copies), since a floor takes the fastest the bus allows and
# single runs differ by 2-3%. The first run's report is kept in $OUT/doctor.json.
pinned_bandwidth() {
  for run in 1 2 3; do
    timeout 300 .gpu/swapgraph doctor --json 2>/dev/null | tee "$OUT/doctor_$run.json" | python3 -c '
import json, re, sys
for check in json.load(sys.stdin)["checks"]:
    found = re.search(r"page-locked ([0-9.]+) GB/s", check.get("detail", ""))
    if check["name"] == "host-to-device bandwidth" and found:
        print(found.group(1))'
  done | sort -g | tail -1
  mv "$OUT/doctor_1.json" "$OUT/doctor.json"
  rm -f "$OUT"/doctor_[23].json
}

# Holds all but $1 GiB of the card until killed, in the background, and returns once it does
# (it writes $2 then); the holder's pid is in $HOLDER.
hold() {
  rm -f "$2"
  python3 - "$1" "$2" <<'PY' &
import sys, time, torch
free, _ = torch.cuda.mem_get_info()
held = torch.empty(max(free - int(float(sys.argv[1]) * 2**30), 0), dtype=torch.uint8, device="cuda")
open(sys.argv[2], "w").write(str(held.numel()))
time.sleep(3600)
PY
  HOLDER=$!
  for _ in $(seq 600); do [ -s "$2" ] && break; sleep 0.1; done
}

# Writes the main job's models into $1 at real size with random weights, in their published
# formats: a single-file SDXL checkpoint, a diffusers ControlNet folder and InstantID's
# ip-adapter.bin (the built-in random models' weights, written by .gpu/write_models); further
# arguments go to .gpu/write_models (`--unet-gguf q8_0,q4_k` adds the UNet as GGUF files).
write_models() {
  .gpu/write_models "$@" || return 1
  python3 - "$1" <<'PY' || return 1
# InstantID publishes its adapter as a PyTorch file: rewrite the safetensors file as one.
import json, struct, sys
import numpy as np, torch
folder = sys.argv[1]
with open(f"{folder}/ip-adapter.safetensors", "rb") as f:
    header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    data = f.read()
state = {"image_proj": {}, "ip_adapter": {}}
for name, entry in header.items():
    if name == "__metadata__":
        continue
    part, key = name.split(".", 1)
    begin, end = entry["data_offsets"]
    values = np.frombuffer(data[begin:end], dtype=np.float16).reshape(entry["shape"])
    state[part][key] = torch.from_numpy(values.copy())
torch.save(state, f"{folder}/ip-adapter.bin")
PY
  rm "$1/ip-adapter.safetensors"
}
