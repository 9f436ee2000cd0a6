"""Layer descriptions the backend registry, the cost model and the planner work on (no torch here).

A :class:`ConvSpec` is everything that decides which convolution implementation can run a layer and how
fast: the full input shape (batch included), the conv hyper-parameters, the dtype and the device type.
It is built either from the graph IR (``from_node``, for ``archc summary --backends``) or from a live
``nn.Conv2d`` and an example input (``archdsl.backends.apply``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ConvSpec", "LAYOUTS", "DTYPES", "dtype_name", "from_node", "fast_fft_len", "log2"]

LAYOUTS = ("nchw", "nhwc")
DTYPES = ("float32", "float16", "bfloat16", "float64")
_ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


def dtype_name(dtype: Any) -> str:
    """``torch.float32`` or ``"fp32"`` or ``"float32"`` -> ``"float32"``."""
    text = str(dtype).replace("torch.", "")
    return {"fp32": "float32", "float": "float32", "fp16": "float16", "half": "float16",
            "bf16": "bfloat16", "fp64": "float64", "double": "float64"}.get(text, text)


@dataclass(frozen=True)
class ConvSpec:
    """One 2-D convolution applied to a ``(batch, cin, h, w)`` input."""

    batch: int
    cin: int
    cout: int
    h: int
    w: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    bias: bool = False
    padding_mode: str = "zeros"
    dtype: str = "float32"
    device: str = "cpu"

    # ---- derived quantities -------------------------------------------------------------------------
    @property
    def out_hw(self) -> tuple[int, int]:
        """Output height and width (PyTorch's formula)."""
        res = []
        for size, k, s, p, d in zip((self.h, self.w), self.kernel, self.stride, self.padding, self.dilation):
            res.append((size + 2 * p - d * (k - 1) - 1) // s + 1)
        return res[0], res[1]

    @property
    def depthwise(self) -> bool:
        """One filter per channel: ``groups == cin == cout`` (the large-kernel case)."""
        return self.groups == self.cin == self.cout and self.cin > 1

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one call (whole batch)."""
        oh, ow = self.out_hw
        return self.batch * self.cout * oh * ow * (self.cin // self.groups) * self.kernel[0] * self.kernel[1]

    @property
    def itemsize(self) -> int:
        return _ITEMSIZE.get(self.dtype, 4)

    @property
    def in_bytes(self) -> int:
        return self.batch * self.cin * self.h * self.w * self.itemsize

    @property
    def out_bytes(self) -> int:
        oh, ow = self.out_hw
        return self.batch * self.cout * oh * ow * self.itemsize

    @property
    def weight_bytes(self) -> int:
        return self.cout * (self.cin // self.groups) * self.kernel[0] * self.kernel[1] * self.itemsize

    @property
    def min_bytes(self) -> int:
        """Compulsory memory traffic: read input and weights once, write the output once."""
        return self.in_bytes + self.out_bytes + self.weight_bytes

    def fft_size(self) -> tuple[int, int]:
        """The transform size the FFT backend uses (see ``fft_conv`` for why ``size + pad`` suffices)."""
        return (fast_fft_len(max(self.h + self.padding[0], self._eff(0), self.out_hw[0])),
                fast_fft_len(max(self.w + self.padding[1], self._eff(1), self.out_hw[1])))

    def _eff(self, i: int) -> int:
        return self.dilation[i] * (self.kernel[i] - 1) + 1

    def key(self) -> str:
        """Stable text key for the decision cache (dtype and device are separate parts of the key)."""
        k = self.kernel
        parts = [f"b{self.batch}", f"c{self.cin}->{self.cout}", f"{self.h}x{self.w}", f"k{k[0]}x{k[1]}",
                 f"s{self.stride[0]}x{self.stride[1]}", f"p{self.padding[0]}x{self.padding[1]}",
                 f"d{self.dilation[0]}x{self.dilation[1]}", f"g{self.groups}", "bias" if self.bias else "nobias"]
        if self.padding_mode != "zeros":
            parts.append(self.padding_mode)
        return ",".join(parts)

    def describe(self) -> str:
        """Short human text: ``dw 31x31 s1 [8,128,56,56]``."""
        kind = "dw" if self.depthwise else ("g%d" % self.groups if self.groups > 1 else "conv")
        return (f"{kind} {self.kernel[0]}x{self.kernel[1]} s{self.stride[0]} "
                f"[{self.batch},{self.cin},{self.h},{self.w}]->{self.cout}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fast_fft_len(n: int) -> int:
    """Smallest length >= n whose prime factors are 2, 3, 5 or 7 (fast for pocketfft, MKL and cuFFT)."""
    m = max(1, n)
    while True:
        r = m
        for p in (2, 3, 5, 7):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def from_node(node: Any, batch: int = 1, dtype: str = "float32", device: str = "cpu") -> ConvSpec:
    """The spec of a ``conv2d`` node of the graph IR (shapes there are per sample)."""
    a = node.args
    c, h, w = node.in_shapes[0]
    return ConvSpec(batch=batch, cin=int(c), cout=int(a["out_channels"]), h=int(h), w=int(w),
                    kernel=_pair(a["kernel_size"]), stride=_pair(a["stride"]), padding=_pair(a["padding"]),
                    dilation=_pair(a["dilation"]), groups=int(a["groups"]), bias=bool(a["bias"]),
                    padding_mode=str(a.get("padding_mode", "zeros")), dtype=dtype_name(dtype), device=device)


def log2(x: float) -> float:
    """log2 clamped below at 1 (a transform of length 1 or 2 still costs one pass)."""
    return math.log2(max(2.0, x))
