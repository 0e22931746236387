"""Whole images through `swapgraph serve` with the models already loaded: what a user of the
server waits for each image of a workflow, from queueing it to its saved PNG.

    python3 bench/image_times.py BINARY WORKFLOW --images 5 --set latent.width=1024 ... \
        -- --device cuda:0 --models-dir /models

Starts `BINARY serve` with the arguments after `--`, queues the workflow twice to warm up (the
models load, kernels compile, memory is measured; as bench/diffusers_images.py warms up), then
queues it `--images` times more, each with a new seed and prompts that differ by a word, so that the text encoders, the sampler, the
decode and the save run again while the loaders' results stay cached. Each image is timed from
its POST to its job's success, polled every 5 ms. Prints one JSON line: the warm-up's and each
image's seconds, and their median.
"""

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

import yaml

PROMPT_PARAMS = {"CLIPTextEncode": ("text",), "CLIPTextEncodeSDXL": ("text_g", "text_l")}
SEEDED_TYPES = ("KSampler", "KSamplerAdvanced")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url, body=None):
    data = None if body is None else body.encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST" if data else "GET")) as reply:
        return json.loads(reply.read())


def apply_sets(workflow, sets):
    """`node.param=value` overrides, the value read as YAML."""
    for item in sets:
        target, _, value = item.partition("=")
        node, _, param = target.partition(".")
        if node not in workflow["nodes"] or not param:
            sys.exit(f"--set {item}: no node {node!r} in the workflow, or no parameter named")
        workflow["nodes"][node].setdefault("params", {})[param] = yaml.safe_load(value)


def variant(workflow, index):
    """The workflow with seed `index` and each prompt ending in word `index`."""
    changed = yaml.safe_load(yaml.safe_dump(workflow))
    for node in changed["nodes"].values():
        params = node.setdefault("params", {})
        for name in PROMPT_PARAMS.get(node["type"], ()):
            params[name] = f"{params.get(name, '')}, variant {index}"
        if node["type"] in SEEDED_TYPES:
            params["seed"] = index
    return yaml.safe_dump(changed)


def time_job(base, body):
    started = time.perf_counter()
    job = request(f"{base}/api/jobs", body)
    while True:
        state = request(f"{base}/api/jobs/{job['id']}")
        if state["state"] == "succeeded":
            return time.perf_counter() - started
        if state["state"] in ("failed", "cancelled"):
            sys.exit(f"job {job['id']} {state['state']}: {state.get('error')}")
        time.sleep(0.005)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("workflow")
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE")
    parser.add_argument("--log", help="file for the server's log (its stage times among it)")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args, serve_args = parser.parse_args(argv[:split]), argv[split + 1:]
    with open(args.workflow) as f:
        workflow = yaml.safe_load(f)
    apply_sets(workflow, args.set)
    port = free_port()
    log = open(args.log, "w") if args.log else subprocess.DEVNULL
    server = subprocess.Popen([args.binary, "serve", "--port", str(port), *serve_args],
                              stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                request(f"{base}/api/system")
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    sys.exit(f"the server did not start (exit status {server.poll()})")
                time.sleep(0.1)
        warm_up = [time_job(base, variant(workflow, index)) for index in (1001, 1002)]
        images = [time_job(base, variant(workflow, index)) for index in range(1, args.images + 1)]
    finally:
        server.terminate()
        server.wait()
        if args.log:
            log.close()
    print(json.dumps({"workflow": workflow.get("name", args.workflow), "sets": args.set,
                      "warm_up_s": [round(s, 3) for s in warm_up], "image_s": [round(s, 3) for s in images],
                      "median_image_s": round(statistics.median(images), 3)}))


if __name__ == "__main__":
    main()
