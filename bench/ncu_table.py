#!/usr/bin/env python3
"""Per-kernel time of one UNet forward from Nsight Compute summaries (bench/gpu_kernels.sh).

usage: ncu_table.py FORWARDS LABEL=ncu.csv[@FORWARDS] [LABEL=ncu.csv[@FORWARDS] ...]

Each CSV is `ncu --metrics gpu__time_duration.sum --csv --print-summary per-kernel` of a
unet_step run with FORWARDS UNet forwards (warm-up included); totals are divided by FORWARDS,
or by a file's own count after `@`. PyTorch's kernels come in the same form from
`bench/diffusers_baseline.py --kernels` (`@3`: three forwards). Kernels are grouped into families by name; prints a markdown table with one column per label.
"""
import csv
import re
import sys

FAMILIES = [
    ("fused attention (swapgraph)", r"flash_attention"),
    ("fused attention (cuDNN SDPA, or flash)", r"sdpa|flash_fwd|fmha|efficient_attention"),
    ("fused reductions: norms (Triton, inductor)", r"^triton_(red|per)"),
    ("fused pointwise (Triton, inductor)", r"^triton_poi"),
    ("convolution bias + residual (swapgraph)", r"channel_bias_add|pixel_bias_add"),
    ("bias + residual add (swapgraph)", r"bias_add_f16"),
    ("GEGLU with bias (swapgraph)", r"geglu_f16"),
    ("GroupNorm + SiLU (swapgraph)", r"group_norm_f16|group_norm_pixels"),
    ("channels-last copies (swapgraph)", r"planes_to_pixels"),
    ("LayerNorm (swapgraph)", r"layer_norm_f16"),
    ("layout transforms (cuDNN, NCHW <-> NHWC)", r"nchwToNhwc|nhwcToNchw"),
    ("convolution (cuDNN)", r"fprop|implicit_gemm|cudnn|conv"),
    ("f16 GEMM, tensor cores (cuBLAS)", r"gemm|xmma|cutlass|s16816|h16816|sm90|sm80"),
    ("im2col (convolution as GEMM)", r"im2col"),
    ("softmax", r"softmax"),
    ("broadcast add", r"^badd"),
    ("broadcast multiply", r"^bmul"),
    ("broadcast subtract / divide", r"^b(sub|div)"),
    ("copies and layout changes", r"copy"),
    ("dtype casts", r"^cast"),
    ("affine (scale and shift)", r"^affine"),
    ("GELU", r"gelu"),
    ("SiLU", r"silu"),
    ("reductions (norm statistics)", r"reduce|sum|max|min|fast_"),
    ("LayerNorm / GroupNorm (candle)", r"norm"),
]


def family(kernel):
    for label, pattern in FAMILIES:
        if re.search(pattern, kernel, re.IGNORECASE):
            return label
    return "other"


def per_family(path, forwards):
    lines = [line for line in open(path) if line.startswith('"')]
    totals = {}
    for row in csv.DictReader(lines):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        calls = int(row["Invocations"].replace(",", ""))
        ns = float(row["Average"].replace(",", "")) * calls
        name = family(row["Kernel Name"])
        ms, count = totals.get(name, (0.0, 0))
        totals[name] = (ms + ns / 1e6 / forwards, count + calls / forwards)
    return totals


def main():
    forwards = float(sys.argv[1])
    runs = [arg.split("=", 1) for arg in sys.argv[2:]]
    tables = {}
    for label, spec in runs:
        path, _, own = spec.partition("@")
        tables[label] = per_family(path, float(own) if own else forwards)
    families = sorted({f for t in tables.values() for f in t}, key=lambda f: -max(t.get(f, (0, 0))[0] for t in tables.values()))
    print("| kernel family | " + " | ".join(f"{label}: ms (share, launches)" for label, _ in runs) + " |")
    print("|---|" + "---|" * len(runs))
    for f in families:
        cells = []
        for label, _ in runs:
            total = sum(ms for ms, _ in tables[label].values())
            ms, count = tables[label].get(f, (0.0, 0))
            cells.append(f"{ms:.1f} ({100 * ms / total:.0f}%, {count:.0f})" if ms else "-")
        print(f"| {f} | " + " | ".join(cells) + " |")
    totals = [sum(ms for ms, _ in tables[label].values()) for label, _ in runs]
    launches = [sum(c for _, c in tables[label].values()) for label, _ in runs]
    print("| **all kernels** | " + " | ".join(f"**{t:.1f}** ({n:.0f} launches)" for t, n in zip(totals, launches)) + " |")


if __name__ == "__main__":
    main()
