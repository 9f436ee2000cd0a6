"""Check and tune the two Triton depthwise kernels on a CUDA device (one command, one lease).

1. Correctness: both kernels (direct ``triton_dw`` in NCHW and NHWC, banded-GEMM ``triton_dw_gemm``) in
   fp32 / fp16 / bf16 against a float64 ``F.conv2d`` over a grid of shapes, with fresh random inputs and a
   NaN-poisoned output buffer (every element must be written). Relative error = max |y - ref| / max |ref|.
2. Tile sweep at one layer shape (default the paper's (64, 384, 64, 64), k=31): median time of every tile
   config of each kernel with ``triton.testing.do_bench``, beside PyTorch NCHW and channels_last with
   ``cudnn.benchmark``, and the fp32 compute bound ``2 x MACs / peak``.

    python bench/tune_triton_dw.py --out bench/results/triton_tune_cuda.md
"""
from __future__ import annotations

import argparse
import itertools
import platform
import sys
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import triton  # noqa: E402
from triton.testing import do_bench  # noqa: E402

from archdsl.backends import triton_dw as T  # noqa: E402

TOL = {("float32", "tf32"): 5e-3, ("float32", "tf32x3"): 1e-5, ("float32", "direct"): 1e-5,
       ("float16", None): 5e-3, ("bfloat16", None): 3e-2}


def _tol(dtype: str, prec: str | None) -> float:
    return TOL.get((dtype, prec), TOL.get((dtype, None), 1e-5))


def correctness(dev: torch.device, log: Callable[[str], None]) -> int:
    shapes = [(2, 16, 9, 37, 5, False), (3, 8, 20, 40, 13, True), (8, 128, 56, 56, 31, True),
              (8, 256, 28, 28, 29, False), (8, 512, 14, 14, 27, True), (8, 1024, 7, 7, 13, False),
              (2, 32, 64, 64, 31, True), (1, 4, 5, 70, 3, False), (4, 64, 33, 17, 7, True)]
    failures = 0
    for (n, c, h, w, k, bias), dtype in itertools.product(shapes, ("float32", "float16", "bfloat16")):
        dt = getattr(torch, dtype)
        x = torch.randn(n, c, h, w, device=dev).to(dt)
        wt = (torch.randn(c, 1, k, k, device=dev) / k).to(dt)
        b = torch.randn(c, device=dev).to(dt) if bias else None
        pad = [k // 2, k // 2]
        ref = F.conv2d(x.double(), wt.double(), None if b is None else b.double(), 1, pad, 1, c)
        scale = ref.abs().max().item()
        runs: list[tuple[str, str | None, Callable[[], torch.Tensor]]] = []
        for nhwc in (False, True):
            xi = x.contiguous(memory_format=torch.channels_last) if nhwc else x

            def direct(xi: torch.Tensor = xi) -> torch.Tensor:
                y = torch.full(ref.shape, float("nan"), device=dev, dtype=dt)
                y = y.contiguous(memory_format=torch.channels_last) if xi is not x else y
                bp, bk, bc, wp = T.tile_config(c, k, xi is not x)
                T.launch_direct(xi, wt, b, y, pad, [1, 1], bp, bk, bc, wp)
                return y
            runs.append(("direct " + ("nhwc" if nhwc else "nchw"), "direct" if dtype == "float32" else None,
                         direct))
        for prec in (("tf32", "tf32x3") if dtype == "float32" else ("ieee",)):
            def banded(prec: str = prec) -> torch.Tensor:
                y = torch.full(ref.shape, float("nan"), device=dev, dtype=dt)
                shift = T.banded_shift(pad[1], x.element_size())
                nb, by, bx, bk, wp = T.banded_config(n, ref.shape[2], ref.shape[3], k, shift=shift)
                T.launch_banded(x, wt, b, y, pad, prec, nb, by, bx, bk, wp)
                return y
            runs.append((f"banded {prec}", prec if dtype == "float32" else None, banded))
        for name, prec, fn in runs:
            y = fn()
            torch.cuda.synchronize()
            nan = bool(torch.isnan(y).any())
            err = ((y.double() - ref).abs().max().item() / scale) if not nan else float("nan")
            ok = not nan and err <= _tol(dtype, prec)
            failures += not ok
            log(f"{'ok  ' if ok else 'FAIL'} {name:14s} {dtype:8s} n={n} c={c} {h}x{w} k={k} bias={bias}: "
                f"rel err {err:.2e}" + (" (unwritten outputs)" if nan else ""))
    return failures


def sweep(dev: torch.device, shape: tuple[int, int, int, int], k: int, log: Callable[[str], None]
          ) -> list[tuple[str, float]]:
    n, c, h, w = shape
    pad = [k // 2, k // 2]
    res: list[tuple[str, float]] = []

    def bench(label: str, fn: Callable[[], Any]) -> None:
        try:
            fn()
            torch.cuda.synchronize()
            ms = do_bench(fn, warmup=25, rep=100, return_mode="median")
        except Exception as e:  # a tile that does not compile (e.g. out of shared memory) is skipped
            log(f"{label:60s} failed: {type(e).__name__}: {str(e).splitlines()[0][:100]}")
            return
        res.append((label, ms))
        log(f"{label:60s} {ms:8.3f} ms")

    macs = n * c * h * w * k * k
    for dtype in ("float32", "bfloat16", "float16"):
        dt = getattr(torch, dtype)
        x = torch.randn(n, c, h, w, device=dev, dtype=dt)
        xl = x.contiguous(memory_format=torch.channels_last)
        wt = (torch.randn(c, 1, k, k, device=dev) / k).to(dt)
        y = torch.empty_like(x)
        yl = torch.empty_like(xl)
        log(f"--- {dtype} {shape} k={k}: fp32 FMA bound {2 * macs / 67e12 * 1e3:.2f} ms at 67 TFLOP/s")
        torch.backends.cudnn.benchmark = False
        bench(f"{dtype} torch NCHW", lambda: F.conv2d(x, wt, None, 1, pad, 1, c))
        torch.backends.cudnn.benchmark = True
        bench(f"{dtype} torch channels_last + cudnn.benchmark", lambda: F.conv2d(xl, wt, None, 1, pad, 1, c))
        torch.backends.cudnn.benchmark = False
        precs = ("tf32", "tf32x3") if dtype == "float32" else ("ieee",)
        shift = T.banded_shift(pad[1], x.element_size())
        tiles = T.banded_candidates(n, h, w, k, shift)
        for prec, (nb, by, bx, bk, warps), stages in itertools.product(precs, tiles, (2, 3)):
            if prec == "tf32x3" and stages == 3:
                continue
            bench(f"{dtype} banded {prec} NB={nb} BY={by} BX={bx} BK={bk} w={warps} s={stages}",
                  lambda: T.launch_banded(x, wt, None, y, pad, prec, nb, by, bx, bk, warps, stages))
        T._TUNED.clear()
        bench(f"{dtype} banded (self-tuned, as the backend runs it)",
              lambda: T.dwconv2d_banded(x, wt, None, pad, True))
        dtiles = [(128, 4, 2), (256, 4, 1)]
        for (bp, bk, bc), warps in itertools.product(dtiles, (4,)):
            bench(f"{dtype} direct nchw P={bp} K={bk} C={bc} w={warps}",
                  lambda: T.launch_direct(x, wt, None, y, pad, [1, 1], bp, bk, bc, warps))
        for (bp, bk, bc), warps in itertools.product([(32, 8, 32), (16, 4, 64), (32, 4, 64)], (4,)):
            bench(f"{dtype} direct nhwc P={bp} K={bk} C={bc} w={warps}",
                  lambda: T.launch_direct(xl, wt, None, yl, pad, [1, 1], bp, bk, bc, warps))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="64,384,64,64")
    ap.add_argument("--k", type=int, default=31)
    ap.add_argument("--skip-correctness", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    dev = torch.device("cuda")
    lines: list[str] = []

    def log(s: str) -> None:
        print(s, flush=True)
        lines.append(s)

    log(f"device {torch.cuda.get_device_name(dev)}; torch {torch.__version__}; triton {triton.__version__}; "
        f"Python {platform.python_version()}")
    fails = 0 if args.skip_correctness else correctness(dev, log)
    log(f"correctness failures: {fails}")
    shape = tuple(int(v) for v in args.shape.split(","))
    res = sweep(dev, shape, args.k, log)  # type: ignore[arg-type]
    best: dict[str, tuple[str, float]] = {}
    for label, ms in res:
        key = " ".join(label.split()[:3]) if "banded" in label else " ".join(label.split()[:2 if "direct" not in
                                                                                         label else 3])
        if key not in best or ms < best[key][1]:
            best[key] = (label, ms)
    log("=== best per variant ===")
    for key, (label, ms) in best.items():
        log(f"{ms:8.3f} ms  {label}")
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
