"""Latency of a variant's eager and deploy forms on the CPU (or CUDA), warmed up until stable, and the
machine's sgemm bound measured in the same run (imports torch)."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

__all__ = ["median_ms", "sgemm_gflops", "measure_graph"]


def median_ms(fn: Callable[[], Any], *, sync: Callable[[], None] = lambda: None, rounds: int = 5,
              min_time_s: float = 0.05, max_warmup: int = 8, tolerance: float = 0.05) -> float:
    """The median time of one call of ``fn`` in milliseconds.

    Warm-up runs until two consecutive medians agree within ``tolerance`` (the first forwards of a process
    are several times slower on these machines), at most ``max_warmup`` tries; each median is of ``rounds``
    timings of a batch of calls lasting at least ``min_time_s``."""
    fn()
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    one = max(time.perf_counter() - t0, 1e-6)
    calls = max(1, int(min_time_s / one))

    def med() -> float:
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            for _ in range(calls):
                fn()
            sync()
            times.append((time.perf_counter() - t) / calls)
        return statistics.median(times) * 1e3

    prev = med()
    for _ in range(max_warmup):
        cur = med()
        if abs(cur - prev) <= tolerance * min(cur, prev):
            return min(cur, prev)
        prev = cur
    return prev


def sgemm_gflops(device: str = "cpu", n: int = 1024, tries: int = 3) -> float:
    """The float32 matrix-multiply rate of this machine now (GFLOP/s): the bound every latency is read against.
    The best of ``tries`` warmed-up medians (a bound: a busy moment must not lower it)."""
    import torch
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    ms = min(median_ms(lambda: torch.mm(a, b), sync=sync) for _ in range(tries))
    return 2 * n ** 3 / (ms * 1e-3) / 1e9


def measure_graph(g: Any, *, batch: int = 1, device: str = "cpu", deploy: bool = True) -> dict[str, Any]:
    """Median latency (ms) of the built model and, with ``deploy``, of its deploy form, for one batch."""
    import torch

    from ..codegen.build import instantiate
    torch.manual_seed(0)
    model = instantiate(g).eval().to(device)
    x = torch.randn(batch, *g.input_shape, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    out: dict[str, Any] = {}
    with torch.inference_mode():
        out["eager_ms"] = median_ms(lambda: model(x), sync=sync)
    if deploy:
        from ..codegen.deploy import deploy as deploy_model
        fast = deploy_model(model, batch_size=batch)
        with torch.inference_mode():
            out["deploy_ms"] = median_ms(lambda: fast(x), sync=sync)
    return out
