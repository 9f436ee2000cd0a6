"""The cost model: a time estimate (milliseconds) for running one layer with one backend.

The model is deliberately simple and fitted, not guessed: ``bench/bench_dwconv.py --calibrate`` measures
every CPU backend over the RepLKNet Table-1 grid plus a few dense convs and layout conversions, and
:func:`fit` turns those measurements into the calibration file ``calibration/cpu.json`` shipped here.

* ``torch_nchw`` / ``torch_channels_last`` (PyTorch's own kernels)::

      t = overhead + MACs * ns_per_mac(kind, k)

  ``kind`` is ``depthwise`` or ``dense``. For depthwise layers ``ns_per_mac`` depends strongly on the kernel
  size (oneDNN has fast paths for small kernels only), so it is a table over the calibrated kernel sizes,
  interpolated linearly in ``k = sqrt(kh * kw)`` and clamped at both ends. Dense/grouped convs use one rate.
* ``fft``: the work is three batched 2-D real FFTs of size ``N1 x N2`` (input, kernel, inverse) and a
  pointwise product, independent of the kernel size::

      t = overhead + ns_per_unit * (2B + 1) * C * N1 * N2 * log2(N1 * N2)

* layout conversion (NCHW <-> NHWC) between consecutive layers: ``t = ns_per_byte * bytes`` of the tensor.
* ``triton_dw`` and every CUDA backend without a calibration: a roofline estimate
  ``max(2 * MACs / peak_flops, bytes / bandwidth) / efficiency`` with the efficiencies documented in
  ``docs/backends.md``; on CUDA, ``method="autotune"`` (measuring the real shapes) is the recommended mode.

Measured times in the decision cache always win over the model.
"""
from __future__ import annotations

import json
import math
import statistics
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from .spec import ConvSpec, log2

__all__ = ["CostModel", "fit", "load_calibration", "CALIBRATION_DIR", "fft_units"]

CALIBRATION_DIR = Path(__file__).resolve().parent / "calibration"
_INF = float("inf")

# Roofline defaults for a CUDA device when no calibration exists (an H100 SXM: fp32 CUDA-core peak,
# fp16/bf16 CUDA-core peak (depthwise convs cannot use tensor cores), HBM3 bandwidth).
_GPU_PEAK_FLOPS = {"float32": 67e12, "float16": 134e12, "bfloat16": 134e12, "float64": 34e12}
_GPU_BW = 3.35e12
# Fraction of the roofline each backend reaches on large-kernel depthwise layers. torch's value comes from
# the RepLKNet paper's Table 1 (cuDNN, large kernels: about a tenth of the device's peak); Triton's is a
# target for a direct kernel; FFT is bandwidth-bound on its transforms.
_GPU_EFFICIENCY = {"torch_nchw": 0.10, "torch_channels_last": 0.15, "fft": 0.30, "triton_dw": 0.12,
                   "triton_dw_gemm": 0.30}
_GPU_DENSE_EFFICIENCY = {"torch_nchw": 0.6, "torch_channels_last": 0.7}


def fft_units(spec: ConvSpec) -> float:
    n1, n2 = spec.fft_size()
    return (2 * spec.batch + 1) * spec.cin * n1 * n2 * log2(n1 * n2)


def _k(spec: ConvSpec) -> float:
    return math.sqrt(spec.kernel[0] * spec.kernel[1])


def _interp(table: dict[str, float], k: float) -> float:
    pts = sorted((float(kk), v) for kk, v in table.items())
    if not pts:
        return _INF
    if k <= pts[0][0]:
        return pts[0][1]
    if k >= pts[-1][0]:
        return pts[-1][1]
    for (k0, v0), (k1, v1) in zip(pts, pts[1:]):
        if k0 <= k <= k1:
            return v0 + (v1 - v0) * (k - k0) / (k1 - k0)
    return pts[-1][1]


@lru_cache(maxsize=8)
def _read(path: str) -> str:
    return Path(path).read_text()


def load_calibration(device: str) -> dict[str, Any] | None:
    """The shipped calibration for a device type (``cpu``), or ``None``."""
    p = CALIBRATION_DIR / f"{device}.json"
    if not p.exists():
        return None
    return json.loads(_read(str(p)))


class CostModel:
    """Estimates from a calibration dict (see :func:`fit`); a roofline where there is none."""

    def __init__(self, device: str = "cpu", calibration: dict[str, Any] | None = None) -> None:
        self.device = device
        self.cal = calibration if calibration is not None else (load_calibration(device) or {})

    def estimate(self, backend: str, spec: ConvSpec, layout: str = "nchw") -> float:
        """Milliseconds for one call of ``backend`` on ``spec`` with its input already in ``layout``."""
        c = self.cal.get(backend)
        if backend.startswith("triton") and spec.device == "cpu":
            return _INF  # the interpreter is a correctness tool, never a performance choice
        if c is None:
            return self._roofline(backend, spec)
        if backend == "fft":
            return c["overhead_ms"] + c["ns_per_unit"] * fft_units(spec) * 1e-6
        if backend.startswith("triton"):
            # per-layout tables over kernel size (a layout the backend was not measured in: the other one)
            table = c.get("dw_ns_per_mac_" + layout) or c.get("dw_ns_per_mac_nchw") or c.get("dw_ns_per_mac_nhwc")
            return c["overhead_ms"] + _interp(table or {}, _k(spec)) * spec.macs * 1e-6
        if spec.depthwise:
            rate = _interp(c["dw_ns_per_mac"], _k(spec))
        elif "dense_ns_per_mac" in c:
            rate = c["dense_ns_per_mac"]
        else:
            return self._roofline(backend, spec)
        return c["overhead_ms"] + rate * spec.macs * 1e-6

    def convert(self, spec: ConvSpec) -> float:
        """Milliseconds to change the layout of this layer's input (NCHW <-> NHWC)."""
        c = self.cal.get("convert")
        if c is None:
            return 2 * spec.in_bytes / _GPU_BW * 1e3 if spec.device == "cuda" else spec.in_bytes * 1e-6
        return c["ns_per_byte"] * spec.in_bytes * 1e-6

    def _roofline(self, backend: str, spec: ConvSpec) -> float:
        flops = 2 * spec.macs
        peak = _GPU_PEAK_FLOPS.get(spec.dtype, 67e12)
        eff = (_GPU_EFFICIENCY if spec.depthwise else _GPU_DENSE_EFFICIENCY).get(backend)
        if eff is None:
            eff = 0.5
        if backend == "fft":
            n1, n2 = spec.fft_size()
            traffic = 6 * spec.batch * spec.cin * n1 * n2 * 4  # complex spectra written and read
            return max(fft_units(spec) * 2.5 / peak, traffic / _GPU_BW) / eff * 1e3 + 0.02
        return max(flops / peak, spec.min_bytes / _GPU_BW) / eff * 1e3 + 0.01


# ---- fitting ---------------------------------------------------------------------------------------------
def _line_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares y = a + b x with a, b >= 0 (closed form; falls back to a ray through 0)."""
    n = len(xs)
    if n == 1:
        return 0.0, ys[0] / xs[0] if xs[0] else 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    a = my - b * mx
    if a < 0 or b <= 0:
        # a negative intercept means the overhead is lost in noise: fit a ray through the origin instead
        b = sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs)
        a = 0.0
    return a, b


def fit(rows: Iterable[dict[str, Any]], device_key: str = "cpu", source: str = "") -> dict[str, Any]:
    """A calibration dict from measurements.

    Each row: ``{"backend": name, "layout": "nchw"|"nhwc", "spec": ConvSpec fields, "ms": median time}``,
    or ``{"backend": "convert", "spec": ..., "ms": ...}`` for a layout conversion of the spec's input.
    """
    rows = list(rows)
    cal: dict[str, Any] = {"device": device_key, "source": source}
    by_backend: dict[str, list[tuple[ConvSpec, dict[str, Any]]]] = {}
    for r in rows:
        fields: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in r["spec"].items()}
        spec = ConvSpec(**fields)
        by_backend.setdefault(r["backend"], []).append((spec, r))
    for name in ("torch_nchw", "torch_channels_last"):
        pts = by_backend.get(name, [])
        if not pts:
            continue
        dw: dict[str, list[tuple[float, float]]] = {}
        dense: list[tuple[float, float]] = []
        for spec, r in pts:
            (dw.setdefault(str(round(_k(spec))), []) if spec.depthwise else dense).append((spec.macs, r["ms"]))
        # overhead: the per-call cost left when the work goes to zero. Each kernel size (and the dense
        # group) gets its own line fit over the sizes measured; the median intercept is robust to a noisy one.
        groups = [v for v in dw.values() if len(v) > 1] + ([dense] if len(dense) > 1 else [])
        intercepts = [_line_fit([m for m, _ in v], [t for _, t in v])[0] for v in groups]
        overhead = statistics.median(intercepts) if intercepts else 0.0
        overhead = min(overhead, min(t for _, r in pts for t in (r["ms"],)))
        entry: dict[str, Any] = {"overhead_ms": overhead, "dw_ns_per_mac": {}}
        for k, v in sorted(dw.items(), key=lambda kv: int(kv[0])):
            entry["dw_ns_per_mac"][k] = statistics.median(max(t - overhead, 0.0) * 1e6 / m for m, t in v)
        if dense:   # no dense measurements: dense convs keep the roofline estimate (see CostModel.estimate)
            entry["dense_ns_per_mac"] = statistics.median(max(t - overhead, 0.0) * 1e6 / m for m, t in dense)
        cal[name] = entry
    if by_backend.get("fft"):
        pts = by_backend["fft"]
        a, b = _line_fit([fft_units(s) for s, _ in pts], [r["ms"] for _, r in pts])
        cal["fft"] = {"overhead_ms": a, "ns_per_unit": b * 1e6}
    if by_backend.get("convert"):
        pts = by_backend["convert"]
        cal["convert"] = {"ns_per_byte": statistics.median(r["ms"] * 1e6 / s.in_bytes for s, r in pts)}
    for name in sorted(b for b in by_backend if b.startswith("triton")):
        pts = by_backend[name]
        tri: dict[str, Any] = {"overhead_ms": 0.0}
        for lay in ("nchw", "nhwc"):
            per_k: dict[str, list[float]] = {}
            for sp, r in pts:
                if r.get("layout") == lay:
                    per_k.setdefault(str(round(_k(sp))), []).append(r["ms"] * 1e6 / sp.macs)
            if per_k:
                tri["dw_ns_per_mac_" + lay] = {k: statistics.median(v) for k, v in
                                                 sorted(per_k.items(), key=lambda kv: int(kv[0]))}
        cal[name] = tri
    return cal
