"""Benchmark: deploy form (archdsl.deploy) vs the reference eager model, same process, same weights.

    .venv/bin/python bench/bench_deploy.py [--threads 1] [--rounds 5] [--out bench/results/deploy_cpu.md]
    python bench/bench_deploy.py --device cuda --rounds 30        # writes bench/results/deploy_cuda.md

Models: ResNet-50 (vs torchvision eager), RepVGG-A2 (vs timm's train form), RepLKNet-31B (vs our own
train form: the official code is not a dependency). Each model is timed at batch 8 and batch 1 on
3x224x224 inputs; the reference and the deploy form run alternately, one forward each per round, so
load changes on a shared machine hit both alike; the figure is the median per forward. The deploy
form is checked against the reference before timing (max abs difference in the table).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import archdsl  # noqa: E402
from benchlib import round_robin as _bench_round_robin, sgemm_gflops  # noqa: E402
from helpers import randomize_bn  # noqa: E402

__all__ = ["main", "MODELS"]


def _resnet50() -> tuple[Any, Any, str]:
    import torchvision
    ref = torchvision.models.resnet50(weights=None)
    ours = archdsl.build(str(ROOT / "specs/resnet.arch:resnet50"))
    ours.load_state_dict(ref.state_dict())
    return ref, ours, "torchvision.resnet50 (eager, eval)"


def _repvgg_a2() -> tuple[Any, Any, str]:
    import timm
    ref = timm.create_model("repvgg_a2", pretrained=False)
    ours = archdsl.build(str(ROOT / "specs/repvgg.arch:repvgg_a2"))
    ours.load_state_dict(ref.state_dict())
    return ref, ours, "timm.repvgg_a2 train form (eval)"


def _replknet_31b() -> tuple[Any, Any, str]:
    ours = archdsl.build(str(ROOT / "specs/replknet.arch:replknet_31b"))
    return ours, ours, "archdsl replknet_31b train form (eval)"


MODELS: dict[str, tuple[Callable[[], tuple[Any, Any, str]], int]] = {
    # name: (builder, rounds divisor: RepLKNet's 31x31 depthwise kernels are slow on CPU, so fewer rounds)
    "ResNet-50": (_resnet50, 1),
    "RepVGG-A2": (_repvgg_a2, 1),
    "RepLKNet-31B": (_replknet_31b, 3),
}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: stable on a "
                    "shared machine)")
    ap.add_argument("--rounds", type=int, default=5, help="timed forwards per model and batch size")
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--batches", default="8,1", help="batch sizes to time (comma-separated)")
    ap.add_argument("--no-compile", action="store_true",
                    help="skip the deploy(compile=True) column (inductor with frozen weights; ~20-60 s per model "
                         "and batch to compile on 2 CPU cores)")
    ap.add_argument("--out", type=Path, default=None, help="default bench/results/deploy_<device>.md")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    batches = [int(b) for b in args.batches.split(",")]
    out = args.out or ROOT / "bench" / "results" / f"deploy_{dev.type}.md"
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True   # the reference gets cuDNN's best algorithms too
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ceiling = sgemm_gflops(dev)
    print(f"fp32 matrix-product ceiling of this device: {ceiling:.1f} GFLOP/s", flush=True)
    load0 = os.getloadavg()
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for name in args.models:
        builder, div = MODELS[name]
        ref, ours, ref_desc = builder()
        randomize_bn(ref)
        if ours is not ref:
            ours.load_state_dict(ref.state_dict())
        ref.eval().to(dev)
        ours.eval().to(dev)
        t = time.perf_counter()
        # the layout is chosen by timing at the largest batch benchmarked (the deployment batch)
        dep = archdsl.deploy(ours, memory_format="auto", repeats=1 if div > 1 and dev.type == "cpu" else 3,
                             batch_size=max(batches))
        deploy_s = time.perf_counter() - t
        x1 = torch.randn(1, 3, 224, 224, device=dev)
        with torch.inference_mode():
            a, b = ref(x1), dep(x1)
        diff = (a - b).abs().max().item()
        scale = a.abs().max().item()
        channels_last = dep.deploy_info["memory_format"] == "channels_last"
        macs = dep.arch_graph.total_macs
        for batch in batches:
            x = torch.randn(batch, 3, 224, 224, device=dev)
            xd = x.contiguous(memory_format=torch.channels_last) if channels_last else x
            big = batch == max(batches)
            rounds = max(1, args.rounds // div) if big else max(3, (2 * args.rounds) // div)
            runs = [(ref, x), (dep, xd)]
            comp_diff = None
            if not args.no_compile:
                comp = archdsl.deploy(ours, memory_format=dep.deploy_info["memory_format"], batch_size=batch,
                                      compile=True)
                with torch.inference_mode():
                    comp_diff = (ref(x) - comp(xd)).abs().max().item()
                runs.append((comp, xd))
            times = _bench_round_robin(runs, rounds)
            tr, td = times[0], times[1]
            tc = times[2] if len(times) > 2 else None
            floor = 2 * macs * batch / (ceiling * 1e9)   # seconds if every MAC ran at the sgemm rate
            row = {"model": name, "reference": ref_desc, "batch": batch, "ref_ms": tr * 1e3, "deploy_ms": td * 1e3,
                   "speedup": tr / td, "rounds": rounds, "memory_format": dep.deploy_info["memory_format"],
                   "max_abs_diff": diff, "output_scale": scale, "deploy_s": deploy_s,
                   "fused": dep.deploy_info["fused_groups"], "folded_bn": dep.deploy_info["folded_bn"],
                   "compiled_ms": None if tc is None else tc * 1e3, "compiled_speedup": None if tc is None else tr / tc,
                   "compiled_diff": comp_diff, "floor_ms": floor * 1e3, "best_possible": tr / floor}
            rows.append(row)
            print(f"{name:13s} batch {batch}: reference {tr * 1e3:8.1f} ms  deploy {td * 1e3:8.1f} ms  "
                  f"x{tr / td:.2f}" + ("" if tc is None else f"  compiled {tc * 1e3:8.1f} ms x{tr / tc:.2f}")
                  + f"  (at sgemm rate x{tr / floor:.2f}; {dep.deploy_info['memory_format']}, {rounds} rounds)",
                  flush=True)
        del ref, ours, dep
    total = time.perf_counter() - t_start
    _write(out, rows, args.threads, load0, os.getloadavg(), total, dev, ceiling)
    return rows


def _write(path: Path, rows: list[dict[str, Any]], threads: int, load0: tuple[float, ...],
           load1: tuple[float, ...], total: float, dev: torch.device, ceiling: float) -> None:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    where = (f"{torch.cuda.get_device_name(dev)}, cudnn.benchmark on for both" if dev.type == "cuda" else
             f"{threads} thread{'s' if threads != 1 else ''}, {cpu}, {os.cpu_count()} logical CPUs")
    lines = [
        f"# Deploy form vs reference eager model ({dev.type.upper()})",
        "",
        f"Generated by `bench/bench_deploy.py --device {dev.type}` "
        f"(torch {torch.__version__}, {where}). Input 3x224x224, random weights with randomized BatchNorm statistics, "
        "eval mode, `torch.inference_mode()`. Reference and deploy form alternate one forward at a time; "
        "times are medians per forward.",
        "",
        f"Load average during the run: {load0[0]:.1f} at the start, {load1[0]:.1f} at the end "
        f"(total {total:.0f} s). On a shared machine absolute times move with the load; the ratios are the "
        "figure to read.",
        "",
        f"Ceiling: one fp32 matrix product (2048^3) runs at **{ceiling:.1f} GFLOP/s** here. 'MAC floor' is the time "
        "the deploy form's multiply-adds take at that rate; reference / floor ('at sgemm rate') is the speed-up "
        "an implementation running every multiply-add as fast as a large matrix product would show. It is a "
        "practical bound, not an absolute one: oneDNN's direct conv kernels can run a little faster than sgemm.",
        "",
        "| model | reference | batch | reference ms | deploy ms | speedup | deploy + compile ms | speedup "
        "(compiled) | MAC floor ms | at sgemm rate | rounds | layout | max abs diff (output scale) | groups fused "
        "| BN folded |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        comp = ("- | -" if r["compiled_ms"] is None else
                f"{r['compiled_ms']:.1f} | **{r['compiled_speedup']:.2f}x**")
        lines.append(f"| {r['model']} | {r['reference']} | {r['batch']} | {r['ref_ms']:.1f} | {r['deploy_ms']:.1f} "
                     f"| **{r['speedup']:.2f}x** | {comp} | {r['floor_ms']:.1f} | {r['best_possible']:.2f}x "
                     f"| {r['rounds']} | {r['memory_format']} | {r['max_abs_diff']:.1e} "
                     f"({r['output_scale']:.2f}) | {r['fused']} | {r['folded_bn']} |")
    lines += ["", "Layout: chosen per model by `archdsl.deploy(memory_format=\"auto\", batch_size=B)`, which times "
              "a forward at the largest benchmarked batch B in both layouts and keeps the faster. 'deploy + compile': "
              "`archdsl.deploy(model, compile=True, batch_size=batch)` (torch.compile, inductor with frozen "
              "weights: oneDNN prepacked convs with fused bias/ReLU/add), compiled before timing.", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
