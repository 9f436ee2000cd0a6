"""Timing helpers shared by the benchmark scripts (one copy of each; the scripts import them from here).

- :func:`warm_up`: forwards until two consecutive ones agree within 10% (oneDNN primitive caches, allocator);
- :func:`warm_up_interleaved`: the forms of one comparison warmed together, round by round, until two
  consecutive warm-up medians of every form agree within ``tolerance``;
- :func:`round_robin`: the timed rounds, one forward of each form per round (A B C, A B C, ...), so load
  changes on a shared machine hit all forms alike; the figure is the median per form;
- :func:`sgemm_gflops` / :func:`gemm_gflops`: the machine's matrix-product rate, the bound every latency is
  read against (``archdsl.sweep.measure.sgemm_gflops`` is the 1024^3 warmed-median variant);
- :func:`cpu_model`, :func:`cpu_flags`: what the result files name the machine by.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from archdsl.backends.impl import synchronize

__all__ = ["warm_up", "warm_up_interleaved", "round_robin", "sgemm_gflops", "gemm_gflops", "cpu_model",
           "cpu_flags", "SIMD_FLAGS"]

SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def warm_up(model: Any, x: torch.Tensor, tries: int = 12) -> None:
    """Run forwards until two consecutive ones agree within 10% (oneDNN primitive caches, allocator)."""
    last = float("inf")
    with torch.inference_mode():
        for _ in range(tries):
            t = time.perf_counter()
            model(x)
            dt = time.perf_counter() - t
            if abs(dt - last) <= 0.1 * min(dt, last):
                return
            last = dt


def _one_round(runs: Sequence[tuple[Any, Any]], times: list[list[float]]) -> None:
    for (m, x), ts in zip(runs, times):
        t = time.perf_counter()
        m(x)
        synchronize(x.device)
        ts.append(time.perf_counter() - t)


def warm_up_interleaved(runs: Sequence[tuple[Any, Any]], *, per: int = 3, tolerance: float = 0.05,
                        max_tries: int = 8) -> int:
    """Warm the forms of one comparison together: blocks of ``per`` interleaved rounds, until the medians of
    two consecutive blocks agree within ``tolerance`` for every form (at most ``max_tries`` blocks).
    Returns the number of blocks run."""
    prev: list[float] | None = None
    with torch.inference_mode():
        for block in range(1, max_tries + 1):
            times: list[list[float]] = [[] for _ in runs]
            for _ in range(per):
                _one_round(runs, times)
            med = [statistics.median(ts) for ts in times]
            if prev is not None and all(abs(a - b) <= tolerance * min(a, b) for a, b in zip(med, prev)):
                return block
            prev = med
    return max_tries


def round_robin(runs: Sequence[tuple[Any, Any]], rounds: int, *, warm: int = 1) -> list[float]:
    """Median seconds per forward of each ``model(input)``, the models run one after another in every round
    (so load changes on a shared machine hit all alike); ``warm`` untimed rounds first (CUDA: 2)."""
    times: list[list[float]] = [[] for _ in runs]
    with torch.inference_mode():
        dev = runs[0][1].device
        for _ in range(max(warm, 2 if dev.type == "cuda" else 0)):   # allocator, primitives
            for m, x in runs:
                m(x)
        synchronize(dev)
        for _ in range(rounds):
            _one_round(runs, times)
    return [statistics.median(ts) for ts in times]


def sgemm_gflops(dev: torch.device, n: int = 2048) -> float:
    """The device's practical fp32 ceiling: GFLOP/s of one large matrix product (best of 5)."""
    return gemm_gflops(torch.float32, n, dev)


def gemm_gflops(dtype: torch.dtype, n: int = 2048, dev: torch.device | None = None) -> float:
    """GFLOP/s of one n x n x n matrix product in ``dtype`` on ``dev`` (default CPU; best of 5)."""
    dev = dev or torch.device("cpu")
    a, b = torch.randn(n, n, device=dev).to(dtype), torch.randn(n, n, device=dev).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(5):
        synchronize(a.device)
        t = time.perf_counter()
        torch.mm(a, b)
        synchronize(a.device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string."""
    import platform
    return next((ln.split(":", 1)[1].strip() for ln in _cpuinfo().splitlines() if ln.startswith("model name")),
                platform.processor() or platform.machine() or "unknown CPU")


def cpu_flags(wanted: Sequence[str] = SIMD_FLAGS) -> list[str]:
    """The SIMD flags of :data:`SIMD_FLAGS` this CPU lists (in that order)."""
    flags = next((ln.split(":", 1)[1].split() for ln in _cpuinfo().splitlines() if ln.startswith("flags")), [])
    return [f for f in wanted if f in flags]
