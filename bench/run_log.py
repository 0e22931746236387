"""What the GPU scripts read from a `swapgraph run`: run it with its wall time and host peak, the
sampler's and the check's timings from its log, and its image against a reference.

    python3 bench/run_log.py run LOG -- COMMAND...   # writes LOG and LOG.json

The scripts import `timings` and `image_difference` (run from the repository root).
"""

import glob
import json
import re
import resource
import subprocess
import sys
import time


def run(log_path, command):
    """Runs `command` with its output in `log_path`; its exit code, wall time and the host's peak
    resident memory go to `log_path`.json."""
    start = time.time()
    with open(log_path, "w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=400).returncode
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    figures = {"exit": code, "wall_s": round(time.time() - start, 1), "host_peak_gib": round(peak / 2**30, 2)}
    with open(log_path + ".json", "w") as out:
        json.dump(figures, out)


def timings(text):
    """The sampler's times (weights ready, the first step, the later steps), each node's time and
    the check before the run, from a run's log."""
    row = {}
    timed = re.search(r"UNet weights ready in (\d+) ms(?:, ControlNet weights in (\d+) ms)?, first step (\d+) ms"
                      r".*?then ([0-9.]+) ms per step", text)
    if timed:
        row["unet_weights_ready_ms"] = int(timed.group(1))
        row["weights_ready_ms"] = int(timed.group(1)) + int(timed.group(2) or 0)
        row["first_step_ms"] = int(timed.group(3))
        row["per_step_ms"] = float(timed.group(4))
    row["nodes_ms"] = {m.group(1): round(float(m.group(2)))
                       for m in re.finditer(r"(\S+ \(\w+\)) finished in ([0-9.]+) ms", text)}
    checked = re.search(r"checked in (\d+) ms \[(.*?)\](?:: the workflow needs ([0-9.]+) GiB)?", text)
    if checked:
        row["check_ms"], row["check_nodes"] = int(checked.group(1)), checked.group(2)
        if checked.group(3):
            row["least_gib"] = float(checked.group(3))
    errors = [line for line in text.splitlines() if "ERROR" in line or "failed" in line]
    if errors:
        row["error"] = errors[-1][-600:]
    return row


def image_difference(folder, reference, is_reference):
    """The first image saved under `folder` against the one kept in `reference` (a .npy file), in
    levels of 255; the reference run keeps its image there instead."""
    import numpy as np
    from PIL import Image
    images = sorted(glob.glob(f"{folder}/*.png"))
    if not images:
        return {}
    image = np.asarray(Image.open(images[0])).astype(np.int32)
    if is_reference:
        np.save(reference, image)
        return {}
    difference = np.abs(image - np.load(reference))
    return {"mean_abs_diff": round(float(difference.mean()), 3), "max_abs_diff": int(difference.max())}


if __name__ == "__main__" and sys.argv[1:2] == ["run"] and sys.argv[3:4] == ["--"]:
    run(sys.argv[2], sys.argv[4:])
