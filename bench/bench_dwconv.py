"""Depthwise-conv backends on the RepLKNet paper's Table 1 grid.

Table 1 of "Scaling Up Your Kernels to 31x31" times a stack of 24 depthwise convs on (64, 384, R, R) inputs,
R in {16, 32, 64}, kernel sizes 3..31. This script times the same stacks for every backend available on
the device and reports median latency and effective GFLOP/s (2 x MACs / time). On a CPU the defaults are
smaller (batch 2, 2 layers) so the whole grid runs in a few minutes; the per-layer times are what the cost
model is calibrated from (``--calibrate`` writes ``archdsl/backends/calibration/cpu.json``).

On a CUDA device it also times channels_last with ``cudnn.benchmark``, ``torch.compile(mode="max-autotune")``
of the NCHW stack, the Triton kernel in both layouts, and prints each result as a percentage of the
roofline (``max(FLOPs / peak, bytes / bandwidth)``; peaks from ``--peak-tflops`` / ``--peak-gbs`` or a
table of known devices).

    .venv/bin/python bench/bench_dwconv.py                       # CPU, writes bench/results/dwconv_cpu.md
    .venv/bin/python bench/bench_dwconv.py --calibrate           # ... and refits the CPU cost model
    python bench/bench_dwconv.py --device cuda --batch 64 --layers 24 --out bench/results/dwconv_cuda.md
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from archdsl.backends import registry  # noqa: E402
from archdsl.backends.cache import cpu_device_key  # noqa: E402
from archdsl.backends.cost import CALIBRATION_DIR, fit  # noqa: E402
from archdsl.backends.impl import synchronize  # noqa: E402
from archdsl.backends.spec import ConvSpec  # noqa: E402

# (peak fp32 TFLOP/s on CUDA cores, memory GB/s) of devices the roofline column knows by name
_KNOWN_GPUS = {"H100": (67.0, 3350.0), "H200": (67.0, 4800.0), "A100": (19.5, 1555.0), "L4": (30.3, 300.0),
               "2080 Ti": (13.4, 616.0), "4090": (82.6, 1008.0)}


def time_stack(run: Callable[[], Any], dev: torch.device, budget_s: float, max_reps: int = 7,
               warmup: Callable[[], Any] | None = None) -> float:
    """Median ms of ``run`` after a warm-up (``warmup``, default one call of ``run``: it creates the oneDNN
    primitives / compiles the kernels); at least one timed call, more while within ``budget_s``."""
    (warmup or run)()
    synchronize(dev)
    times: list[float] = []
    start = time.perf_counter()
    while not times or (len(times) < max_reps and time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        run()
        synchronize(dev)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def make_stack(fn: Callable[..., torch.Tensor], weights: list[torch.Tensor], pad: int) -> Callable[[torch.Tensor],
                                                                                                    torch.Tensor]:
    c = weights[0].shape[0]

    def stack(x: torch.Tensor) -> torch.Tensor:
        for w in weights:
            x = fn(x, w, None, (1, 1), (pad, pad), (1, 1), c)
        return x
    return stack


def variants(dev: torch.device) -> list[tuple[str, str, str]]:
    """(label, backend, input layout) for every runnable variant on ``dev``."""
    out = [("torch_nchw", "torch_nchw", "nchw"), ("torch_channels_last", "torch_channels_last", "nhwc"),
           ("fft", "fft", "nchw")]
    if dev.type == "cuda":
        out += [("channels_last+cudnn.benchmark", "torch_channels_last", "nhwc"),
                ("torch.compile max-autotune", "torch_nchw", "nchw")]
        if registry.triton_available():
            out += [("triton_dw nchw", "triton_dw", "nchw"), ("triton_dw nhwc", "triton_dw", "nhwc"),
                    ("triton_dw_gemm nchw", "triton_dw_gemm", "nchw")]
    return out


_LOG_LINE = re.compile(r"R=\s*(?P<R>\d+) k=\s*(?P<k>\d+) (?P<label>.+?)\s+(?P<ms>[\d.]+) ms")


def roofline_ms(spec: ConvSpec, layers: int, peak_tflops: float, peak_gbs: float) -> float:
    return layers * max(2 * spec.macs / (peak_tflops * 1e12), spec.min_bytes / (peak_gbs * 1e9)) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--batch", type=int, default=None, help="default: 64 on CUDA (as the paper), 2 on CPU")
    ap.add_argument("--channels", type=int, default=384)
    ap.add_argument("--layers", type=int, default=None, help="default: 24 on CUDA (as the paper), 2 on CPU")
    ap.add_argument("--sizes", default="16,32,64")
    ap.add_argument("--kernels", default="3,7,13,17,21,27,31")
    ap.add_argument("--budget-s", type=float, default=2.0, help="timing budget per (size, kernel, backend)")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--peak-gbs", type=float, default=None)
    ap.add_argument("--out", default=None, help="markdown table (default bench/results/dwconv_<device>.md)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's). On a shared, loaded machine 1 thread is far "
                         "more stable: OpenMP barriers under contention dominate small layers")
    ap.add_argument("--compile-kernels", default="",
                    help="kernel sizes for the torch.compile max-autotune row, e.g. 7,31 (default: none; each "
                         "one compiles and autotunes a 24-layer stack, which took minutes on an H100)")
    ap.add_argument("--from-log", default=None,
                    help="do not measure: rebuild the tables (and --calibrate) from the lines a run printed, e.g. "
                         "of a run cut short on a lent GPU (give the same --batch/--layers/--device/--dtype)")
    ap.add_argument("--device-name", default=None, help="with --from-log: the device the log was taken on")
    ap.add_argument("--env", default=None, help="with --from-log: the software it ran (replaces this machine's)")
    ap.add_argument("--calibrate", action="store_true", help="refit the cost model from these measurements")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    gpu = dev.type == "cuda"
    batch = args.batch or (64 if gpu else 2)
    layers = args.layers or (24 if gpu else 2)
    dt = getattr(torch, args.dtype)
    sizes = [int(v) for v in args.sizes.split(",")]
    kernels = [int(v) for v in args.kernels.split(",")]
    C = args.channels
    peak = (args.peak_tflops, args.peak_gbs)
    if gpu and None in peak:
        name = args.device_name or torch.cuda.get_device_name(dev)
        known = next((v for k, v in _KNOWN_GPUS.items() if k in name), None)
        peak = (args.peak_tflops or (known[0] if known else 0.0), args.peak_gbs or (known[1] if known else 0.0))
    g = torch.Generator().manual_seed(0)
    results: dict[tuple[int, str], dict[int, tuple[float, float]]] = {}
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for R in ([] if args.from_log else sizes):
        x0 = torch.randn(batch, C, R, R, generator=g).to(dev, dt)
        for k in kernels:
            weights = [(torch.randn(C, 1, k, k, generator=g) / k).to(dev, dt) for _ in range(layers)]
            spec = ConvSpec(batch, C, C, R, R, (k, k), (1, 1), (k // 2, k // 2), (1, 1), C, False, "zeros",
                            args.dtype, dev.type)
            for label, backend, layout in variants(dev):
                if not registry.get(backend).supports(spec):
                    continue
                if "torch.compile" in label and str(k) not in args.compile_kernels.split(","):
                    continue
                torch.backends.cudnn.benchmark = "cudnn.benchmark" in label
                fn = registry.get(backend).function()
                stack = make_stack(fn, weights, k // 2)
                if "torch.compile" in label:
                    stack = torch.compile(stack, mode="max-autotune")
                x = x0.contiguous(memory_format=torch.channels_last) if layout == "nhwc" else x0.contiguous()
                # warm up with a single layer (all layers share one shape) unless compiling the stack
                one = None if "torch.compile" in label else make_stack(fn, weights[:1], k // 2)
                with torch.no_grad():
                    ms = time_stack(lambda: stack(x), dev, args.budget_s,
                                    warmup=(lambda: one(x)) if one is not None else None)
                gflops = 2 * spec.macs * layers / (ms * 1e-3) / 1e9
                results.setdefault((R, label), {})[k] = (ms, gflops)
                if label in ("torch_nchw", "torch_channels_last", "fft") or label.startswith("triton_dw"):
                    rows.append({"backend": backend, "layout": layout, "spec": spec.to_dict(), "ms": ms / layers})
                print(f"R={R:3d} k={k:2d} {label:32s} {ms:10.2f} ms  {gflops:8.2f} GFLOP/s", flush=True)
        # dense convs and a layout change at this resolution, for the rest of the cost model
        for cin, cout, k in ((C, C, 1), (C // 4, C // 4, 3)):
            dspec = ConvSpec(batch, cin, cout, R, R, (k, k), (1, 1), (k // 2, k // 2), (1, 1), 1, False, "zeros",
                             args.dtype, dev.type)
            w = torch.randn(cout, cin, k, k, generator=g).to(dev, dt)
            xin = x0[:, :cin]
            for backend, layout in (("torch_nchw", "nchw"), ("torch_channels_last", "nhwc")):
                fn = registry.get(backend).function()
                xi = xin.contiguous(memory_format=torch.channels_last) if layout == "nhwc" else xin.contiguous()
                with torch.no_grad():
                    ms = time_stack(lambda: fn(xi, w, None, (1, 1), (k // 2, k // 2), (1, 1), 1), dev, 0.5)
                rows.append({"backend": backend, "layout": layout, "spec": dspec.to_dict(), "ms": ms})
        cspec = ConvSpec(batch, C, C, R, R, (1, 1), dtype=args.dtype, device=dev.type)
        ms = time_stack(lambda: x0.contiguous(memory_format=torch.channels_last), dev, 0.3)
        rows.append({"backend": "convert", "spec": cspec.to_dict(), "ms": ms})
    elapsed = time.perf_counter() - t_start
    if args.from_log:
        labels_of = {lab: (b, lay) for lab, b, lay in variants(dev) + [("triton_dw_gemm nchw", "triton_dw_gemm",
                                                                            "nchw")]}
        for line in Path(args.from_log).read_text().splitlines():
            m = _LOG_LINE.match(line)
            if not m or m["label"] not in labels_of:
                continue
            R, k, ms = int(m["R"]), int(m["k"]), float(m["ms"])
            spec = ConvSpec(batch, C, C, R, R, (k, k), (1, 1), (k // 2, k // 2), (1, 1), C, False, "zeros",
                            args.dtype, dev.type)
            results.setdefault((R, m["label"]), {})[k] = (ms, 2 * spec.macs * layers / (ms * 1e-3) / 1e9)
            backend, layout = labels_of[m["label"]]
            if m["label"] in ("torch_nchw", "torch_channels_last", "fft") or m["label"].startswith("triton_dw"):
                rows.append({"backend": backend, "layout": layout, "spec": spec.to_dict(), "ms": ms / layers})
        sizes = sorted({R for R, _ in results})
        kernels = sorted({k for v in results.values() for k in v})

    devname = args.device_name or (torch.cuda.get_device_name(dev) if gpu else cpu_device_key(torch.get_num_threads()))
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"dwconv_{dev.type}.md"
    lines = [f"# Depthwise conv backends, RepLKNet Table-1 grid ({dev.type})", "",
             f"Device: {devname}; "
             + (args.env or f"torch {torch.__version__}; Python {platform.python_version()}; "
                            f"{torch.get_num_threads()} threads") + ".", "",
             f"Stack of {layers} depthwise convs (stride 1, padding k//2, no bias) on ({batch}, {C}, R, R) "
             f"{args.dtype}; median latency of the whole stack in ms (warm-up excluded), then effective GFLOP/s "
             f"= 2 x MACs / time. "
             + (f"Rebuilt from the lines printed by a run that was cut short (`--from-log {args.from_log}`); "
                "cells it did not reach are '-'." if args.from_log else f"Whole run: {elapsed:.0f} s."), "",
             f"Reproduce: `.venv/bin/python bench/bench_dwconv.py --batch {batch} --layers {layers} "
             f"--device {dev.type} --dtype {args.dtype}" + (f" --threads {args.threads}" if args.threads else "")
             + (f" --compile-kernels {args.compile_kernels}" if args.compile_kernels else "")
             + (f" --from-log {args.from_log}" if args.from_log else "") + "`", ""]
    labels = [lab for lab, _, _ in variants(dev)]

    def grid(cell: Callable[[int, int, tuple[float, float]], str]) -> list[str]:
        """One row per (R, backend) measured, one column per k: ``cell(R, k, (ms, GFLOP/s))``."""
        rows_ = ["| R | backend | " + " | ".join(f"k={k}" for k in kernels) + " |", "|---|---|" + "---|" * len(kernels)]
        for R in sizes:
            for lab in labels:
                if (R, lab) in results:
                    cells = [cell(R, k, v) if (v := results[(R, lab)].get(k)) is not None else "-" for k in kernels]
                    rows_.append(f"| {R} | {lab} | " + " | ".join(cells) + " |")
        return rows_ + [""]

    lines += ["## Latency (ms)", ""] + grid(lambda R, k, v: f"{v[0]:.1f}")
    lines += ["## Effective GFLOP/s", ""] + grid(lambda R, k, v: f"{v[1]:.2f}")
    lines += ["## Best backend and speed-up over torch_nchw", "",
              "| R | " + " | ".join(f"k={k}" for k in kernels) + " |", "|---|" + "---|" * len(kernels)]
    for R in sizes:
        cells = []
        for k in kernels:
            opts = {lab: results[(R, lab)][k][0] for lab in labels if k in results.get((R, lab), {})}
            if not opts:
                cells.append("-")
                continue
            best = min(opts, key=opts.get)  # type: ignore[arg-type]
            base = opts.get("torch_nchw")
            cells.append(f"{best} ({base / opts[best]:.1f}x)" if base else best)
        lines.append(f"| {R} | " + " | ".join(cells) + " |")
    lines.append("")
    if gpu and peak[0] and peak[1]:
        def roofline_pct(R: int, k: int, v: tuple[float, float]) -> str:
            spec = ConvSpec(batch, C, C, R, R, (k, k), padding=(k // 2, k // 2), groups=C, dtype=args.dtype,
                            device="cuda")
            return f"{100 * roofline_ms(spec, layers, *peak) / v[0]:.0f}%"
        lines += ["## % of roofline", "", f"Peak {peak[0]} TFLOP/s, {peak[1]} GB/s.", ""] + grid(roofline_pct)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps({"device": devname, "batch": batch, "layers": layers,
                                                    "channels": C, "rows": rows}, indent=1))
    print(f"wrote {out} and {out.with_suffix('.json')} ({elapsed:.0f} s)")
    if args.calibrate:
        cal = fit(rows, device_key=devname,
                  source=f"bench/bench_dwconv.py --batch {batch} --layers {layers} --device {dev.type}"
                  + (f" --from-log {args.from_log}" if args.from_log else ""))
        p = CALIBRATION_DIR / f"{dev.type}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(cal, indent=1) + "\n")
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
