#!/usr/bin/env python3
"""The shared queue against the in-process executors, on this machine's CPU with the tiny models.

Throughput: 30 jobs of workflows/sdxl_txt2img.yaml (different seeds) submitted at once, timed
from the first submission to the last job's end, as jobs per minute, for
- `serve` with 1 executor and with 3 (`--device cpu,cpu,cpu`), jobs run in the server's process;
- `serve --nats` with 1, 2 and 3 `worker` processes, on a local `nats-server -js`.
Each setup first runs one job per runner, so loading the models is not in the figure.

Overhead: with one idle runner, 20 jobs one after another; each job's wait from submission to
start (`started_at - submitted_at` of its record), median and 90th percentile.

Usage: bench/shared_queue.py [path to a release swapgraph] > results.json
"""

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/release/swapgraph")
WORKFLOW = open(os.path.join(ROOT, "workflows/sdxl_txt2img.yaml")).read()
JOBS = 30
SEQUENTIAL = 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def call(port, method, path, body=None):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read() or b"null")


def submit(port, seed):
    workflow = WORKFLOW.replace("seed: 42", f"seed: {seed}").encode()
    return call(port, "POST", "/api/jobs", workflow)["id"]


def wait_all(port, ids, seconds=600):
    deadline = time.time() + seconds
    pending = set(ids)
    while pending:
        if time.time() > deadline:
            raise RuntimeError(f"jobs {sorted(pending)} did not end")
        jobs = {job["id"]: job for job in call(port, "GET", "/api/jobs")["jobs"]}
        for id in list(pending):
            state = jobs.get(id, {}).get("state")
            if state in ("failed", "cancelled"):
                raise RuntimeError(f"job {id} {state}: {jobs[id].get('error')}")
            if state == "succeeded":
                pending.discard(id)
        time.sleep(0.02)
    return {job["id"]: job for job in call(port, "GET", "/api/jobs")["jobs"]}


class Setup:
    """A server (and, with workers, a nats-server and worker processes) in a scratch folder."""

    def __init__(self, devices="cpu", workers=0):
        self.folder = tempfile.mkdtemp(prefix="swapgraph-bench-")
        self.processes = []
        self.port = free_port()
        serve = [BINARY, "-q", "serve", "--port", str(self.port), "--output-dir", f"{self.folder}/out"]
        if workers:
            nats_port = free_port()
            self.start(["nats-server", "-js", "-a", "127.0.0.1", "-p", str(nats_port), "-sd", f"{self.folder}/js"])
            wait_for_port(nats_port)
            url = f"nats://127.0.0.1:{nats_port}"
            serve += ["--nats", url]
            for n in range(workers):
                self.start([BINARY, "-q", "worker", "--nats", url, "--name", f"bench{n}",
                            "--scratch-dir", f"{self.folder}/scratch{n}"])
        else:
            serve += ["--device", devices]
        self.start(serve)
        wait_for_port(self.port)
        self.runners = workers or len(devices.split(","))
        # One job per runner first: models loaded, caches warm.
        wait_all(self.port, [submit(self.port, 1000 + n) for n in range(self.runners)])

    def start(self, command):
        self.processes.append(subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def throughput(self):
        started = time.perf_counter()
        ids = [submit(self.port, seed) for seed in range(JOBS)]
        wait_all(self.port, ids)
        elapsed = time.perf_counter() - started
        return {"jobs": JOBS, "seconds": round(elapsed, 2), "jobs_per_minute": round(JOBS * 60 / elapsed, 1)}

    def overhead(self):
        waits = []
        for seed in range(SEQUENTIAL):
            id = submit(self.port, 2000 + seed)
            job = wait_all(self.port, [id])[id]
            waits.append((job["started_at"] - job["submitted_at"]) * 1e3)
        waits.sort()
        return {"jobs": SEQUENTIAL, "median_ms": round(statistics.median(waits), 1),
                "p90_ms": round(waits[int(0.9 * (len(waits) - 1))], 1)}

    def stop(self):
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def measure(name, **setup):
    bench = Setup(**setup)
    try:
        row = {"setup": name, "throughput": bench.throughput()}
        if bench.runners == 1:
            row["submit_to_start"] = bench.overhead()
        print(json.dumps(row), flush=True)
    finally:
        bench.stop()


if __name__ == "__main__":
    print(json.dumps({"cpu_cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "binary": BINARY}), flush=True)
    measure("serve, 1 executor", devices="cpu")
    measure("serve, 3 executors", devices="cpu,cpu,cpu")
    for workers in (1, 2, 3):
        measure(f"serve --nats, {workers} worker(s)", workers=workers)
