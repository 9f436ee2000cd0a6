"""The backend registry: which convolution implementations exist and which layers each one can run.

Every backend states, without importing torch, what it supports (kernel, stride, dilation, groups, dtype,
device) and which memory layout it consumes and produces. Its implementation lives in a torch module
named by ``impl`` (``"module:function"``) and is imported only when a model is actually run. Every backend
is exact within dtype tolerance for every layer its ``supports`` accepts; the tests check that on a grid
of shapes against ``F.conv2d``.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from .spec import ConvSpec

__all__ = ["Backend", "BACKENDS", "register", "get", "candidates", "triton_available", "triton_interpreting"]


def triton_available() -> bool:
    """Triton is an optional dependency: is it installed? (Checked without importing it.)"""
    return importlib.util.find_spec("triton") is not None


def triton_interpreting() -> bool:
    """``TRITON_INTERPRET=1``: Triton kernels run on CPU tensors through its numpy interpreter (tests only)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@dataclass(frozen=True)
class Backend:
    """One conv implementation.

    ``layout`` is the memory layout it reads and writes: ``"nchw"``, ``"nhwc"`` (channels_last), or
    ``"any"`` (works on either and keeps the one it gets, so it never forces a layout change).
    ``check`` returns ``None`` when the layer is supported, otherwise the reason why not.
    The tag ``forward-only`` marks an implementation without a backward: when autograd needs one, the
    swapped module falls back to ``F.conv2d`` for that call.
    """

    name: str
    layout: str
    impl: str
    doc: str
    check: Callable[[ConvSpec], str | None]
    autotune_default: bool = True   # included when autotuning (slow reference paths may opt out)
    tags: tuple[str, ...] = field(default_factory=tuple)

    def supports(self, spec: ConvSpec) -> bool:
        return self.check(spec) is None

    def why_not(self, spec: ConvSpec) -> str | None:
        return self.check(spec)

    def function(self) -> Any:
        """The implementation (imports torch and, for Triton, triton)."""
        mod, _, fn = self.impl.partition(":")
        return getattr(importlib.import_module(mod), fn)


BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    """Add a backend (a later registration under the same name replaces the earlier one)."""
    BACKENDS[backend.name] = backend
    return backend


def get(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise KeyError(f"unknown conv backend '{name}'; known: {', '.join(BACKENDS)}") from None


def candidates(spec: ConvSpec) -> list[Backend]:
    """Every registered backend that can run ``spec`` exactly."""
    return [b for b in BACKENDS.values() if b.supports(spec)]


# ---- the built-in backends -----------------------------------------------------------------------------
_TORCH_DTYPES = {"cpu": ("float32", "float64", "bfloat16", "float16"),
                 "cuda": ("float32", "float64", "bfloat16", "float16")}


def _check_torch(spec: ConvSpec) -> str | None:
    if spec.device not in _TORCH_DTYPES:
        return f"device '{spec.device}' is not handled"
    if spec.dtype not in _TORCH_DTYPES[spec.device]:
        return f"dtype {spec.dtype} is not supported on {spec.device}"
    return None


def _check_depthwise_s1(spec: ConvSpec) -> str | None:
    if not spec.depthwise:
        return "only depthwise convs (groups == in_channels == out_channels)"
    if spec.stride != (1, 1):
        return "only stride 1"
    if spec.padding_mode != "zeros":
        return "only zero padding"
    return None


def _check_fft(spec: ConvSpec) -> str | None:
    why = _check_torch(spec) or _check_depthwise_s1(spec)
    if why:
        return why
    if spec.padding[0] > spec._eff(0) - 1 or spec.padding[1] > spec._eff(1) - 1:
        return "padding larger than the kernel extent"
    return None


def _check_triton(spec: ConvSpec) -> str | None:
    why = _check_depthwise_s1(spec)
    if why:
        return why
    if spec.dtype not in ("float32", "float16", "bfloat16"):
        return f"dtype {spec.dtype} (the kernel handles float32, float16 and bfloat16)"
    if not triton_available():
        return "triton is not installed (pip install triton)"
    if spec.device == "cuda":
        return None
    if spec.device == "cpu" and triton_interpreting():
        return None
    return f"needs a CUDA device (or TRITON_INTERPRET=1 for testing), got {spec.device}"


def _check_triton_gemm(spec: ConvSpec) -> str | None:
    why = _check_triton(spec)
    if why:
        return why
    if spec.dilation != (1, 1):
        return "only dilation 1 (the band of the Toeplitz matrix is contiguous)"
    return None


register(Backend(
    "torch_nchw", "nchw", "archdsl.backends.impl:conv_nchw",
    "F.conv2d on contiguous NCHW tensors (PyTorch's default; oneDNN/cuDNN choose the algorithm).",
    _check_torch, tags=("reference",)))
register(Backend(
    "torch_channels_last", "nhwc", "archdsl.backends.impl:conv_channels_last",
    "F.conv2d on channels_last (NHWC) tensors; oneDNN and cuDNN have fast depthwise NHWC kernels.",
    _check_torch))
register(Backend(
    "fft", "nchw", "archdsl.backends.impl:conv_fft",
    "Depthwise conv as a pointwise product of 2-D real FFTs (torch.fft); cost independent of kernel size.",
    _check_fft))
register(Backend(
    "triton_dw", "any", "archdsl.backends.triton_dw:conv_triton",
    "Triton direct multiply-accumulate depthwise kernel (tiles over output pixels x channels x taps), "
    "stride 1, NCHW or NHWC, fp32/fp16/bf16 with fp32 accumulation.",
    _check_triton, tags=("gpu", "forward-only")))
register(Backend(
    "triton_dw_gemm", "nchw", "archdsl.backends.triton_dw:conv_triton_gemm",
    "Triton banded-GEMM depthwise kernel: each kernel row is a product with a Toeplitz matrix of the weights on "
    "tensor cores (TF32 for fp32 when torch.backends.cudnn.allow_tf32, else fp32-accurate tf32x3; fp16/bf16 "
    "natively), stride 1, dilation 1, NCHW.",
    _check_triton_gemm, tags=("gpu", "forward-only")))
