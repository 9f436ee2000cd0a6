"""Benchmark: the deploy form's fused linears (``linear_act``, ``linear_add``) against the plain ops, per layer.

    .venv/bin/python bench/bench_fused_linear.py [--threads 2] [--rounds 15] [--out bench/results/fused_linear_cpu.md]

``fuse_linear_pointwise`` (archdsl/passes/deploy.py) turns a linear read only by a GELU/ReLU/SiLU, or by a
residual sum, into one call of the generated helper ``_linear_act`` / ``_linear_add`` (archdsl/ops/fused.py),
which runs oneDNN's inner product with the activation or the sum as its epilogue. This script times that
helper (its own source, as the generated module holds it) against what the train form runs, ``act(F.linear(x,
W, b))`` and ``other + F.linear(x, W, b)``, on the layer shapes of the library networks it fuses (ViT-Ti/S,
Swin-T, ConvNeXt-T, VGG's classifier), in fp32 and, where the CPU has native bf16, bf16: interleaved rounds after
a warm-up until two consecutive medians agree, medians, the ratio plain / fused (>= 1: fused is faster), and
the same-run sgemm bound.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT / "bench", ROOT):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

__all__ = ["SHAPES", "helpers", "main"]

# (network, layer, tokens per sample x batch folded into M, in K, out N, what reads it)
SHAPES: list[tuple[str, str, int, int, int, str]] = [
    ("vit_tiny b8", "fc1 + gelu", 8 * 197, 192, 768, "gelu"),
    ("vit_tiny b8", "fc2 + residual", 8 * 197, 768, 192, "add"),
    ("vit_small b8", "fc1 + gelu", 8 * 197, 384, 1536, "gelu"),
    ("vit_small b8", "fc2 + residual", 8 * 197, 1536, 384, "add"),
    ("vit_small b1", "fc1 + gelu", 197, 384, 1536, "gelu"),
    ("vit_small b1", "proj + residual", 197, 384, 384, "add"),
    ("swin_t b8", "stage 1 fc1 + gelu", 8 * 56 * 56, 96, 384, "gelu"),
    ("swin_t b8", "stage 1 fc2 + residual", 8 * 56 * 56, 384, 96, "add"),
    ("convnext_tiny b1", "stage 1 pwconv1 + gelu", 56 * 56, 96, 384, "gelu"),
    ("vgg16 b8", "classifier fc6 + relu", 8, 25088, 4096, "relu"),
]


def helpers() -> dict[str, Any]:
    """``_linear_act`` and ``_linear_add`` exactly as generated modules define them."""
    import torch
    import torch.nn.functional as F

    from archdsl.ops import HELPERS
    ns: dict[str, Any] = {"torch": torch, "F": F}
    exec(compile(HELPERS["fused_linear"], "<archdsl fused_linear helper>", "exec"), ns)   # trusted library text
    return ns


def _forms(ns: dict[str, Any], kind: str, m: int, k: int, n: int,
           dtype: Any) -> tuple[Any, Callable[..., Any], Callable[..., Any]]:
    """The input, the plain form and the fused form (``ns``: :func:`helpers`) of one row."""
    import torch
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(0)
    x = torch.randn(m, k, generator=g).to(dtype)
    w = (torch.randn(n, k, generator=g) / k ** 0.5).to(dtype)
    b = torch.randn(n, generator=g).to(dtype)
    if kind == "add":
        other = torch.randn(m, n, generator=g).to(dtype)
        return x, (lambda t: other + F.linear(t, w, b)), (lambda t: ns["_linear_add"](t, other, w, b))
    act = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu}[kind]
    return x, (lambda t: act(F.linear(t, w, b))), (lambda t: ns["_linear_act"](t, w, b, kind, "none"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fused_linear_cpu.md")
    args = ap.parse_args(argv)
    import torch
    from rich.progress import track

    from archdsl.codegen.deploy import native_bf16
    from archdsl.sweep.measure import sgemm_gflops
    from benchlib import cpu_flags, cpu_model, round_robin, warm_up_interleaved
    torch.set_num_threads(args.threads)
    dtypes = [torch.float32] + ([torch.bfloat16] if native_bf16("cpu") else [])
    gflops = sgemm_gflops()
    ns = helpers()
    rows = []
    for net, layer, m, k, n, kind, dtype in track([(*s, d) for s in SHAPES for d in dtypes],
                                                   description="fused linears"):
        x, plain, fused = _forms(ns, kind, m, k, n, dtype)
        with torch.inference_mode():
            err = (plain(x).float() - fused(x).float()).abs().max().item()
        runs = [(plain, x), (fused, x)]
        warm_up_interleaved(runs)
        t_plain, t_fused = round_robin(runs, args.rounds, warm=0)
        rows.append((net, layer, f"{m}x{k} @ {k}x{n}", str(dtype).replace("torch.", ""), t_plain * 1e3,
                     t_fused * 1e3, t_plain / t_fused, 2 * m * k * n / (gflops * 1e9) * 1e3, err))
    ratios = sorted(r[6] for r in rows)
    lines = ["# Fused linears (deploy's `linear_act` / `linear_add`) vs the plain ops, per layer (CPU)", "",
             f"`python bench/bench_fused_linear.py --threads {args.threads} --rounds {args.rounds}`", "",
             f"- CPU: {cpu_model()}; flags: {', '.join(cpu_flags()) or '-'}; torch {torch.__version__}; "
             f"{args.threads} threads; {args.rounds} interleaved rounds after warm-up",
             f"- sgemm bound (fp32, 1024^3, this run): {gflops:.1f} GFLOP/s",
             f"- plain / fused: median {ratios[len(ratios) // 2]:.2f}x, lowest {ratios[0]:.2f}x, highest "
             f"{ratios[-1]:.2f}x over {len(rows)} rows", "",
             "Median ms per call. `plain`: `act(F.linear(x, W, b))` / `other + F.linear(x, W, b)` (the train "
             "form); `fused`: the generated helper (oneDNN inner product with the epilogue); `bound`: the "
             "multiply-adds at the sgemm rate; `err`: max |plain - fused|.", "",
             "| network | layer | shape | dtype | plain | fused | plain / fused | bound | err |",
             "|---|---|---|---|---|---|---|---|---|"]
    for net, layer, shape_s, dt, a, b, r, bound, err in rows:
        lines.append(f"| {net} | {layer} | {shape_s} | {dt} | {a:.3f} | {b:.3f} | {r:.2f}x | {bound:.3f} | "
                     f"{err:.1e} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines + [""]))
    print("\n".join(lines[:8]))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
