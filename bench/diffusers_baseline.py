"""PyTorch + diffusers baselines for bench/unet_step.rs: the same SDXL UNet config and input
shape (random weights, fp16, latents 2x4xNxN with CFG), with the weights placed as users of
diffusers and of the original BlockSwap place them:

- `resident`: all on the GPU;
- `group-block`, `group-leaf`: diffusers' group offloading (`enable_group_offload`, block and
  leaf level, with CUDA streams: weights in page-locked host memory, prefetched);
- `block-swap`: the original BlockSwap: every down, mid and up block moved to the GPU before it
  runs and back after (`Module.to`), the stem and head resident.

    python bench/diffusers_baseline.py --latent 128 --steps 10 --mode group-leaf
    python bench/diffusers_baseline.py --channels-last --compile max-autotune-no-cudagraphs

`--compile` runs the resident UNet through torch.compile in the given mode (the compile happens
in the warm-up step, whose time is reported as `compile_s`); `--channels-last` keeps the UNet's
weights and input in channels-last layout, as compiled pipelines are usually run. The resident
mode also reports the FLOPs of one forward (`torch.utils.flop_counter`), the count the
tensor-core peak is measured against. `--kernels FILE` then records three more forwards with
PyTorch's profiler and writes each kernel's device time in the CSV form of an Nsight Compute
summary, for bench/ncu_table.py (3 forwards), so both engines' kernels land in one table.

As in the Rust bench, the timed steps are queued back to back after a warm-up step and each is
timed on the device between events (`--synchronize-steps` waits for each before queueing the
next). Prints one JSON line per mode like the Rust bench.
"""

import argparse
import csv
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode
from diffusers import UNet2DConditionModel

SDXL = dict(
    sample_size=128, in_channels=4, out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(320, 640, 1280), layers_per_block=2, transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20), cross_attention_dim=2048, use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
    norm_num_groups=32,
)


LABELS = {
    "resident": "diffusers eager (SDPA), all on GPU",
    "group-block": "diffusers group offload, block level, streams",
    "group-leaf": "diffusers group offload, leaf level, streams",
    "block-swap": "original BlockSwap (whole blocks moved with Module.to)",
}


def swap_blocks(unet, device):
    """The original BlockSwap's placement: each block on the CPU until it runs."""

    def onload(module, args):
        module.to(device)

    def offload(module, args, output):
        module.to("cpu")

    for block in [*unet.down_blocks, unet.mid_block, *unet.up_blocks]:
        block.to("cpu")
        block.register_forward_pre_hook(onload)
        block.register_forward_hook(offload)


def write_kernel_summary(forward, inputs, path, forwards=3):
    """Each kernel's calls and mean device time over `forwards` forwards, as ncu's summary CSV."""
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        for _ in range(forwards):
            forward(*inputs[0], **inputs[1])
        torch.cuda.synchronize()
    kernels = {}
    for event in profile.events():
        if event.device_type == torch.autograd.DeviceType.CUDA and not event.name.startswith(("Memcpy", "Memset")):
            calls, ns = kernels.get(event.name, (0, 0.0))
            kernels[event.name] = (calls + 1, ns + event.device_time_total * 1e3)
    with open(path, "w", newline="") as f:
        out = csv.writer(f, quoting=csv.QUOTE_ALL)
        out.writerow(["Kernel Name", "Invocations", "Metric Name", "Average"])
        for name, (calls, ns) in sorted(kernels.items(), key=lambda item: -item[1][1]):
            out.writerow([name, calls, "gpu__time_duration.sum", f"{ns / calls:.1f}"])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--latent", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--mode", choices=sorted(LABELS), default="resident")
    parser.add_argument("--synchronize-steps", action="store_true",
                        help="wait for each step to finish before queueing the next")
    parser.add_argument("--compile", choices=("default", "max-autotune-no-cudagraphs", "max-autotune"),
                        help="torch.compile the resident UNet in this mode")
    parser.add_argument("--channels-last", action="store_true",
                        help="weights and input in channels-last layout")
    parser.add_argument("--kernels", metavar="FILE",
                        help="write the kernels' device times of three forwards here (ncu summary CSV)")
    args = parser.parse_args()
    if args.compile and args.mode != "resident":
        parser.error("--compile applies to the resident mode only")
    device = torch.device("cuda")
    with torch.device("meta"):
        unet = UNet2DConditionModel(**SDXL)
    unet = unet.to_empty(device=device).half().eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0, 1.0 / max(p[0].numel(), 1) ** 0.5 if p.dim() > 1 else 0.02)
    if args.mode.startswith("group-"):
        unet.to("cpu")
        unet.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"),
                                  offload_type=args.mode.removeprefix("group-") + "_level",
                                  num_blocks_per_group=1, use_stream=True)
    elif args.mode == "block-swap":
        swap_blocks(unet, device)
    torch.cuda.empty_cache()
    n = args.latent
    sample = torch.randn(2, 4, n, n, device=device, dtype=torch.half)
    t = torch.tensor([500.0, 500.0], device=device)
    context = torch.randn(2, 77, 2048, device=device, dtype=torch.half)
    added = {"text_embeds": torch.randn(2, 1280, device=device, dtype=torch.half),
             "time_ids": torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]] * 2, device=device, dtype=torch.half)}
    flops = None
    if args.mode == "resident":
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            unet(sample, t, context, added_cond_kwargs=added)
        flops = counter.get_total_flops()
    forward = torch.compile(unet, mode=args.compile) if args.compile else unet
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        began = time.perf_counter()
        forward(sample, t, context, added_cond_kwargs=added)  # warm-up (and compile)
        torch.cuda.synchronize()
        warm_up_s = time.perf_counter() - began
        marks = []
        for _ in range(args.steps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            forward(sample, t, context, added_cond_kwargs=added)
            end.record()
            if args.synchronize_steps:
                torch.cuda.synchronize()
            marks.append((start, end))
        torch.cuda.synchronize()
    if args.kernels:
        write_kernel_summary(forward, ((sample, t, context), {"added_cond_kwargs": added}), args.kernels)
    times = [start.elapsed_time(end) for start, end in marks]
    times.sort()
    label = LABELS[args.mode] + (", channels last" if args.channels_last else "")
    if args.compile:
        label = "diffusers torch.compile (%s)%s" % (args.compile, ", channels last" if args.channels_last else "")
    print(json.dumps({"baseline": label, "mode": args.mode, "compile": args.compile, "channels_last": args.channels_last,
                      "latent": n, "median_ms": round(times[len(times) // 2], 1), "min_ms": round(times[0], 1),
                      "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3),
                      "compile_s" if args.compile else "warm_up_s": round(warm_up_s, 1), "flops_per_forward": flops}))


if __name__ == "__main__":
    main()
