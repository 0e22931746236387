"""Writes the GPU step table of one `bench/gpu.sh` run into BENCHMARKS.md, between the
`gpu-step-table` markers: every swapgraph configuration and every PyTorch baseline from the same
call, with each BlockSwap row's floor and whether it meets its target.

    python bench/write_table.py OUT_DIR BENCHMARKS.md

OUT_DIR holds card.txt (the card and the date), doctor.json (the measured page-locked
bandwidth) and unet_step.jsonl (the Rust bench's lines and the baselines' lines).

The floor of a full swap is max(resident step, bytes streamed per step / page-locked
host-to-device bandwidth): streaming can hide behind compute but not beat the bus. The floor of a
budget is unet_step's `budget_floor_ms` (swapgraph_blockswap::floor): the fastest any schedule
could run with that many bytes of weights on the device, from the resident step's compute per
unit. "Replayed" is the row's own schedule replayed on that compute (unet_step's
`schedule_replay_ms`, swapgraph_blockswap::simulate), then with each unit slowed by the copies
it overlaps as measured while unrelated copies keep the bus busy (`none/noise/profile`,
`schedule_replay_beside_copies_ms`). Targets: a full swap (every block) within 1.10x of its floor at
no more than 1.0 GiB of device memory; a budget within 1.05x of its floor; both at 1024x1024
(latents 2x4x128x128).
"""

import json
import re
import sys
from pathlib import Path

START, END = "<!-- gpu-step-table:start -->", "<!-- gpu-step-table:end -->"


def pinned_gb_s(doctor):
    for check in doctor["checks"]:
        found = re.search(r"page-locked ([0-9.]+) GB/s", check.get("detail", ""))
        if check["name"] == "host-to-device bandwidth" and found:
            return float(found.group(1))
    raise SystemExit("doctor.json has no page-locked bandwidth")


def target(config, latent, ratio, peak):
    if latent != 128:
        return ""
    if config.startswith("budget:"):
        return "yes" if ratio <= 1.05 else "no"
    if config.startswith("blocks:3/p"):
        return "yes" if ratio <= 1.10 and peak <= 1.0 else "no"
    return ""


def table(out):
    card, date = (Path(out, "card.txt").read_text().strip().splitlines() + ["", ""])[:2]
    bandwidth = pinned_gb_s(json.loads(Path(out, "doctor.json").read_text()))
    rows = [json.loads(line) for line in Path(out, "unet_step.jsonl").read_text().splitlines() if line.startswith("{")]
    runs = [r for r in rows if "config" in r]
    baselines = [r for r in rows if "baseline" in r]
    resident = {r["latent"]: r["median_ms"] for r in runs if r["config"] == "none"}
    lines = [
        f"{date}, {card}. Page-locked host-to-device bandwidth {bandwidth} GB/s (`swapgraph doctor`, same call).",
        "",
        "| configuration | latents | ms / step | streamed / step | floor | vs floor | replayed: plain / beside copies | peak device memory | target met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        base = resident.get(r["latent"])
        streamed = r["streamed_gib_per_step"]
        if r.get("noise_gb_s"):
            floor = None
        elif r["config"].startswith("budget:"):
            floor = r.get("budget_floor_ms")
        else:
            floor = max(base, streamed * 2**30 / (bandwidth * 1e9) * 1e3) if base else None
        plain, beside = r.get("schedule_replay_ms"), r.get("schedule_replay_beside_copies_ms")
        beside = f"{plain:.1f} / {beside:.1f} ms" if plain and beside else ""
        ratio = r["median_ms"] / floor if floor else None
        noise = f", copies beside it at {r['noise_gb_s']} GB/s" if r.get("noise_gb_s") else ""
        lines.append(
            f"| swapgraph `{r['config']}` ({r['transfers']}{noise}) | 2x4x{r['latent']}x{r['latent']} | {r['median_ms']} "
            f"| {streamed} GiB | {floor:.1f} ms | {ratio:.2f}x | {beside} | {r['peak_device_gib']} GiB "
            f"| {target(r['config'], r['latent'], ratio, r['peak_device_gib'])} |"
            if floor else f"| swapgraph `{r['config']}` ({r['transfers']}{noise}) | 2x4x{r['latent']}x{r['latent']} | {r['median_ms']} | | | | | {r['peak_device_gib']} GiB | |"
        )
    for b in baselines:
        lines.append(
            f"| {b['baseline']} | 2x4x{b['latent']}x{b['latent']} | {b['median_ms']} | | | | | {b['peak_allocated_gib']} GiB | |"
        )
    return "\n".join(lines)


def main():
    out, benchmarks = sys.argv[1], Path(sys.argv[2])
    text = benchmarks.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{benchmarks} has no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    benchmarks.write_text(f"{head}{START}\n{table(out)}\n{END}{tail}")


if __name__ == "__main__":
    main()
