"""Benchmark: the bf16 deploy form (``archdsl.deploy(model, dtype=torch.bfloat16)``) beside fp32, same process.

    .venv/bin/python bench/bench_bf16.py [--threads 2] [--rounds 5] [--out bench/results/deploy_bf16_cpu.md]

For each model (ResNet-50 vs torchvision, RepVGG-A2 vs timm's train form, RepLKNet-31B vs our own train form)
four forms run round-robin, one forward each per round, on the same randomized weights: the reference in fp32,
the reference converted to bf16 (``ref.to(torch.bfloat16)``, bf16 input), our deploy form in fp32 and our deploy
form in bf16. Each is warmed up until two consecutive forwards agree within 10% (the first forwards of a
process are several times slower here). The machine's bounds are measured in the same run: one large fp32
and one large bf16 matrix product (GFLOP/s), and the table gives each form's time against the time its
multiply-adds take at that rate. bf16 outputs are compared with the fp32 reference at bf16 tolerance
(relative to the output's scale). Without native bf16 (``avx512_bf16``/AMX on CPU) PyTorch emulates it and
the bf16 rows are slower, not faster: the script says so and still measures.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import archdsl  # noqa: E402
from archdsl.codegen.deploy import native_bf16  # noqa: E402
from bench_deploy import MODELS  # noqa: E402
from benchlib import gemm_gflops, round_robin, warm_up as _warm  # noqa: E402
from helpers import randomize_bn  # noqa: E402

__all__ = ["main"]

BATCHES = {"ResNet-50": (8, 1), "RepVGG-A2": (8, 1), "RepLKNet-31B": (1,)}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--models", nargs="*", default=list(BATCHES), choices=list(BATCHES))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "deploy_bf16_cpu.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    native = native_bf16("cpu")
    f32, b16 = gemm_gflops(torch.float32), gemm_gflops(torch.bfloat16)
    print(f"matrix-product bounds: fp32 {f32:.1f} GFLOP/s, bf16 {b16:.1f} GFLOP/s (native bf16: {native})", flush=True)
    load0 = os.getloadavg()
    rows: list[dict[str, Any]] = []
    for name in args.models:
        builder, div = MODELS[name]
        ref, ours, ref_desc = builder()
        randomize_bn(ref)
        if ours is not ref:
            ours.load_state_dict(ref.state_dict())
        ref.eval()
        ours.eval()
        ref16 = builder()[0]
        ref16.load_state_dict(ref.state_dict())
        ref16.eval().to(torch.bfloat16)
        for batch in BATCHES[name]:
            dep32 = archdsl.deploy(ours, memory_format="auto", batch_size=batch, repeats=1 if div > 1 else 3)
            dep16 = archdsl.deploy(ours, memory_format="auto", batch_size=batch, repeats=1 if div > 1 else 3,
                                   dtype=torch.bfloat16)
            x = torch.randn(batch, 3, 224, 224)
            x16 = x.to(torch.bfloat16)
            with torch.inference_mode():
                want = ref(x)
                scale = max(1.0, want.abs().max().item())
                err = {"deploy fp32": (dep32(x) - want).abs().max().item() / scale,
                       "reference bf16": (ref16(x16).float() - want).abs().max().item() / scale,
                       "deploy bf16": (dep16(x).float() - want).abs().max().item() / scale}
            runs = [(ref, x), (ref16, x16), (dep32, x), (dep16, x)]
            for m, xi in runs:
                _warm(m, xi)
            t_ref, t_ref16, t32, t16 = round_robin(runs, max(1, args.rounds // div), warm=0)
            macs = dep32.arch_graph.total_macs * batch
            row = {"model": name, "reference": ref_desc, "batch": batch, "ref": t_ref, "ref16": t_ref16,
                   "dep32": t32, "dep16": t16, "floor32": 2 * macs / (f32 * 1e9), "floor16": 2 * macs / (b16 * 1e9),
                   "err": err, "layouts": (dep32.deploy_info["memory_format"], dep16.deploy_info["memory_format"])}
            rows.append(row)
            print(f"{name:13s} batch {batch}: ref fp32 {t_ref * 1e3:7.1f} ms, ref bf16 {t_ref16 * 1e3:7.1f} ms, "
                  f"deploy fp32 {t32 * 1e3:7.1f} ms, deploy bf16 {t16 * 1e3:7.1f} ms "
                  f"(bf16 vs ref bf16 x{t_ref16 / t16:.2f}, vs deploy fp32 x{t32 / t16:.2f})", flush=True)
        del ref, ours, ref16
    _write(args.out, rows, args, f32, b16, native, load0, os.getloadavg())
    return rows


def _write(path: Path, rows: list[dict[str, Any]], args: Any, f32: float, b16: float, native: bool,
           load0: tuple[float, ...], load1: tuple[float, ...]) -> None:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "unknown CPU")
    lines = [
        "# bf16 deploy form beside fp32 (CPU)", "",
        f"`bench/bench_bf16.py --threads {args.threads} --rounds {args.rounds}` (torch {torch.__version__}, {cpu}, "
        f"{os.cpu_count()} logical CPUs, native bf16: {'yes (avx512_bf16/AMX)' if native else 'no: emulated'}); "
        f"load average {load0[0]:.1f} before, {load1[0]:.1f} after.", "",
        f"Bounds measured in the same run: one 2048^3 matrix product at **{f32:.1f} GFLOP/s in fp32** and "
        f"**{b16:.1f} GFLOP/s in bf16**. 'x bound' is a form's time over the time its multiply-adds take at its "
        "dtype's rate (1.00x would be every MAC as fast as a large matrix product).", "",
        "Median ms per forward, 3x224x224, the four forms round-robin after warm-up. 'bf16 err': max abs "
        "difference to the fp32 reference over max(1, max |reference|).", "",
        "| model | batch | ref fp32 | ref bf16 | deploy fp32 | deploy bf16 | deploy bf16 vs ref bf16 | deploy bf16 "
        "vs deploy fp32 | deploy fp32 x bound | deploy bf16 x bound | bf16 err (ref / deploy) | layouts (fp32, bf16) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        e = r["err"]
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['ref'] * 1e3:.1f} | {r['ref16'] * 1e3:.1f} | {r['dep32'] * 1e3:.1f} "
            f"| {r['dep16'] * 1e3:.1f} | **{r['ref16'] / r['dep16']:.2f}x** | **{r['dep32'] / r['dep16']:.2f}x** "
            f"| {r['dep32'] / r['floor32']:.2f}x | {r['dep16'] / r['floor16']:.2f}x "
            f"| {e['reference bf16']:.1e} / {e['deploy bf16']:.1e} | {r['layouts'][0]}, {r['layouts'][1]} |")
    lines += ["", "References: ResNet-50 is torchvision's, RepVGG-A2 timm's train form, RepLKNet-31B our own train "
              "form (the official code is not a dependency). 'ref bf16' is the reference converted with "
              "`.to(torch.bfloat16)`; 'deploy bf16' is `archdsl.deploy(model, dtype=torch.bfloat16)`: fused in "
              "fp32, converted last, float32 inputs converted inside `forward`.", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
