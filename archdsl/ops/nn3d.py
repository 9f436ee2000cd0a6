"""Built-in ops, 3-D layers on videos and volumes ``[C, T, H, W]``: conv3d, conv_transpose3d, max/avg pooling
and adaptive pooling (one OpDef each; ``batchnorm`` on ``[C, T, H, W]`` is the 2-D op's entry, building
``nn.BatchNorm3d``).

Kernel, stride, padding and dilation are an integer or a triple ``[t, h, w]``, as ``nn.Conv3d`` takes them.
MACs follow fvcore's count (convolutions only: weight elements times output positions for a conv, times
input positions for a transposed conv; pools count nothing).
"""
from __future__ import annotations

import math
from typing import Any, Callable

from .core import (ArgSpec, EmitArgs, Expr, In, Kw, Lit, OpDef, Shape, ShapeError, TorchCall, TorchForm, _check_positive,
                   _need_rank, _triple, conv_out, int_or_pair, pool_out, register)
from .nn import _avgpool_tail, _groups_check, _maxpool_tail, _pool_args, _pool_normalizer, _v

__all__ = ["torch_value", "call_args"]

_AXES = "TxHxW"


def _x(v: tuple[int, ...]) -> str:
    return "x".join(str(i) for i in v)


def torch_value(v: Any) -> Any:
    """A kernel/stride/padding value of a torch module as a spec writes it: ``3`` for (3, 3, 3), a list
    ``[1, 3, 3]`` otherwise (strings such as ``"same"`` unchanged)."""
    if isinstance(v, (tuple, list)):
        vals = [int(i) for i in v]
        return vals[0] if len(set(vals)) == 1 else vals
    return v


def call_args(c: TorchCall, names: tuple[str, ...], defaults: dict[str, Any]) -> dict[str, Any]:
    """A function call's arguments after its first tensor, bound to ``names`` (positional, then keywords),
    defaults filled in (``F.max_pool3d(x, 3, 2)``: kernel_size 3, stride 2)."""
    out = dict(defaults)
    out.update(zip(names, c.args[1:]))
    out.update({k: v for k, v in c.kwargs.items() if k in names})
    return out


# ---- conv3d ------------------------------------------------------------------------------------------------
def _conv3d_norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    a = dict(a)
    for n in ("kernel_size", "stride", "dilation"):
        a[n] = _triple(a[n])
    p = a["padding"]
    if p == "valid":
        a["padding"] = (0, 0, 0)
    elif p == "same":
        if a["stride"] != (1, 1, 1):
            raise ShapeError("padding='same' needs stride 1", arg="padding",
                             hint="give the padding as a number, e.g. padding=k // 2")
        tot = [d * (k - 1) for d, k in zip(a["dilation"], a["kernel_size"])]
        if any(t % 2 for t in tot):
            raise ShapeError("padding='same' with an even effective kernel pads unevenly", arg="padding",
                             hint="use an odd kernel size")
        a["padding"] = tuple(t // 2 for t in tot)
    else:
        a["padding"] = _triple(p)
    a["in_channels"] = shapes[0][0] if shapes and len(shapes[0]) == 4 else None
    return a


def _conv3d_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    c, *sizes = _need_rank(shapes, 4, "conv3d")
    _check_positive(a, ["out_channels", "kernel_size", "stride", "dilation", "groups"])
    _check_positive(a, ["padding"], allow_zero=["padding"])
    _groups_check(c, a)
    out = [conv_out(n, k, s, p, d) for n, k, s, p, d in
           zip(sizes, a["kernel_size"], a["stride"], a["padding"], a["dilation"])]
    if min(out) <= 0:
        padded = tuple(n + 2 * p for n, p in zip(sizes, a["padding"]))
        raise ShapeError(f"kernel {_x(a['kernel_size'])} (dilation {_x(a['dilation'])}) is larger than the padded "
                         f"input {_x(padded)} ({_AXES})", arg="kernel_size",
                         hint=f"the input here is {list(shapes[0])}; use a smaller kernel, more padding, or less "
                              "downsampling before")
    return (a["out_channels"], *out)


def _conv3d_params(shapes: list[Shape], a: dict[str, Any]) -> int:
    return (a["out_channels"] * (shapes[0][0] // a["groups"]) * math.prod(a["kernel_size"])
            + (a["out_channels"] if a["bias"] else 0))


def _conv3d_macs(shapes: list[Shape], out: Shape, a: dict[str, Any]) -> int:
    # fvcore: weight elements times output positions (bias not counted)
    return math.prod(out) * (shapes[0][0] // a["groups"]) * math.prod(a["kernel_size"])


def _conv3d_ctor(e: EmitArgs) -> Expr:
    a = e.args
    return ("nn.Conv3d(", Lit(e.in_shapes[0][0], "in_channels"), ", ", Lit(a["out_channels"], "out_channels"), ", ",
            int_or_pair(a["kernel_size"], "kernel_size"), Kw("stride", _v(a["stride"]), 1),
            Kw("padding", _v(a["padding"]), 0), Kw("dilation", _v(a["dilation"]), 1), Kw("groups", a["groups"], 1),
            Kw("bias", a["bias"], True), Kw("padding_mode", a["padding_mode"], "zeros"), ")")


def _conv3d_form(c: TorchCall) -> dict[str, Any] | None:
    m = c.module
    return {"out_channels": int(m.out_channels), "kernel_size": torch_value(m.kernel_size),
            "stride": torch_value(m.stride), "padding": torch_value(m.padding), "dilation": torch_value(m.dilation),
            "groups": int(m.groups), "bias": m.bias is not None, "padding_mode": str(m.padding_mode)}


# ---- conv_transpose3d -------------------------------------------------------------------------------------
def _convt3d_norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    a = dict(a)
    for n in ("kernel_size", "stride", "padding", "output_padding", "dilation"):
        a[n] = _triple(a[n])
    return a


def _convt3d_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    c, *sizes = _need_rank(shapes, 4, "conv_transpose3d")
    _check_positive(a, ["out_channels", "kernel_size", "stride", "dilation", "groups"])
    _check_positive(a, ["padding", "output_padding"], allow_zero=["padding", "output_padding"])
    _groups_check(c, a)
    for op, s, d in zip(a["output_padding"], a["stride"], a["dilation"]):
        if op >= max(s, d):
            raise ShapeError(f"output_padding {op} must be smaller than the stride ({s}) or the dilation ({d})",
                             arg="output_padding", hint="output_padding picks one of the stride's possible sizes")
    out = [(n - 1) * s - 2 * p + d * (k - 1) + op + 1 for n, k, s, p, op, d in
           zip(sizes, a["kernel_size"], a["stride"], a["padding"], a["output_padding"], a["dilation"])]
    if min(out) <= 0:
        raise ShapeError(f"padding {_x(a['padding'])} leaves nothing of the {_x(tuple(sizes))} input ({_x(tuple(out))})",
                         arg="padding", hint=f"the input here is {list(shapes[0])}")
    return (a["out_channels"], *out)


def _convt3d_params(shapes: list[Shape], a: dict[str, Any]) -> int:
    return (shapes[0][0] * (a["out_channels"] // a["groups"]) * math.prod(a["kernel_size"])
            + (a["out_channels"] if a["bias"] else 0))


def _convt3d_macs(shapes: list[Shape], out: Shape, a: dict[str, Any]) -> int:
    # fvcore: weight elements times input positions (every input voxel scatters a full kernel)
    c, *sizes = shapes[0]
    return c * (a["out_channels"] // a["groups"]) * math.prod(a["kernel_size"]) * math.prod(sizes)


def _convt3d_ctor(e: EmitArgs) -> Expr:
    a = e.args
    return ("nn.ConvTranspose3d(", Lit(e.in_shapes[0][0], "in_channels"), ", ",
            Lit(a["out_channels"], "out_channels"), ", ", int_or_pair(a["kernel_size"], "kernel_size"),
            Kw("stride", _v(a["stride"]), 1), Kw("padding", _v(a["padding"]), 0),
            Kw("output_padding", _v(a["output_padding"]), 0), Kw("groups", a["groups"], 1),
            Kw("bias", a["bias"], True), Kw("dilation", _v(a["dilation"]), 1), ")")


def _convt3d_form(c: TorchCall) -> dict[str, Any] | None:
    m = c.module
    if str(m.padding_mode) != "zeros":
        return None
    return {"out_channels": int(m.out_channels), "kernel_size": torch_value(m.kernel_size),
            "stride": torch_value(m.stride), "padding": torch_value(m.padding),
            "output_padding": torch_value(m.output_padding), "groups": int(m.groups), "bias": m.bias is not None,
            "dilation": torch_value(m.dilation)}


# ---- pooling -----------------------------------------------------------------------------------------------
_pool3d_norm = _pool_normalizer(_triple)


def _pool3d_shape(op: str) -> Callable[[list[Shape], dict[str, Any]], Shape]:
    def rule(shapes: list[Shape], a: dict[str, Any]) -> Shape:
        c, *sizes = _need_rank(shapes, 4, op)
        _check_positive(a, ["kernel_size", "stride"])
        _check_positive(a, ["padding"], allow_zero=["padding"])
        ks, ss, ps = a["kernel_size"], a["stride"], a["padding"]
        ds = a.get("dilation", (1, 1, 1))
        if any(p > k // 2 for p, k in zip(ps, ks)):
            raise ShapeError(f"padding {_x(ps)} is more than half the kernel {_x(ks)}", arg="padding",
                             hint="PyTorch requires pad <= kernel_size // 2 for pooling")
        out = [pool_out(n, k, s, p, d, a["ceil_mode"]) for n, k, s, p, d in zip(sizes, ks, ss, ps, ds)]
        if min(out) <= 0:
            padded = tuple(n + 2 * p for n, p in zip(sizes, ps))
            raise ShapeError(f"pooling window {_x(ks)} is larger than the padded input {_x(padded)} ({_AXES})",
                             arg="kernel_size", hint=f"the input here is {list(shapes[0])}")
        return (c, *out)
    return rule


_MAXPOOL_NAMES = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_MAXPOOL_DEFAULTS: dict[str, Any] = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False,
                                     "return_indices": False}
_AVGPOOL_NAMES = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
_AVGPOOL_DEFAULTS: dict[str, Any] = {"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True,
                                     "divisor_override": None}


def _stride(v: Any) -> Any:
    # torch stores stride=None as the kernel size; an empty list/tuple also means "the kernel size"
    return None if v is None or (isinstance(v, (list, tuple)) and not v) else torch_value(v)


def _maxpool_spec(a: dict[str, Any]) -> dict[str, Any] | None:
    if a["return_indices"]:
        return None
    return {"kernel_size": torch_value(a["kernel_size"]), "stride": _stride(a["stride"]),
            "padding": torch_value(a["padding"]), "dilation": torch_value(a["dilation"]),
            "ceil_mode": bool(a["ceil_mode"])}


def _avgpool_spec(a: dict[str, Any]) -> dict[str, Any] | None:
    if a["divisor_override"] is not None:
        return None
    return {"kernel_size": torch_value(a["kernel_size"]), "stride": _stride(a["stride"]),
            "padding": torch_value(a["padding"]), "ceil_mode": bool(a["ceil_mode"]),
            "count_include_pad": bool(a["count_include_pad"])}


def _module_attrs(c: TorchCall, names: tuple[str, ...]) -> dict[str, Any]:
    return {n: getattr(c.module, n) for n in names}


def _adaptive3d_norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    a = dict(a)
    a["output_size"] = _triple(a["output_size"])
    return a


def _adaptive3d_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    c, *_ = _need_rank(shapes, 4, "3-D adaptive pooling")
    _check_positive(a, ["output_size"])
    return (c, *a["output_size"])


def _adaptive_form(c: TorchCall) -> dict[str, Any] | None:
    size = c.module.output_size if c.module is not None else call_args(c, ("output_size",), {})["output_size"]
    vals = size if isinstance(size, (list, tuple)) else (size,)
    if any(v is None for v in vals):   # None keeps that input size: not a fixed output size
        return None
    return {"output_size": torch_value(size)}


def _adaptive_max_form(c: TorchCall) -> dict[str, Any] | None:
    if c.module is not None and c.module.return_indices:
        return None
    if c.module is None and call_args(c, ("output_size", "return_indices"), {"return_indices": False})["return_indices"]:
        return None
    return _adaptive_form(c)


_A = ArgSpec
_KEYS3 = ("kernel_size", "stride", "groups")
register(
    OpDef("conv3d", "conv", [
        _A("out_channels", "int"), _A("kernel_size", "int3"), _A("stride", "int3", 1),
        _A("padding", "padding3", 0), _A("dilation", "int3", 1), _A("groups", "int", 1),
        _A("bias", "bool", True), _A("padding_mode", "str", "zeros", ("zeros", "reflect", "replicate", "circular")),
    ], _conv3d_shape, "3-D convolution on [C, T, H, W] (nn.Conv3d); kernel, stride, padding and dilation are an "
                      "integer or [t, h, w]; input channels are inferred.",
        params=_conv3d_params, macs=_conv3d_macs, stateful=True, normalize=_conv3d_norm, key_args=_KEYS3,
        ctor=_conv3d_ctor, traits={"stateful-module", "inplace-safe-producer"},
        torch_forms=(TorchForm("module", "torch.nn.Conv3d", _conv3d_form),)),
    OpDef("conv_transpose3d", "conv", [
        _A("out_channels", "int"), _A("kernel_size", "int3"), _A("stride", "int3", 1), _A("padding", "int3", 0),
        _A("output_padding", "int3", 0), _A("groups", "int", 1), _A("bias", "bool", True), _A("dilation", "int3", 1),
    ], _convt3d_shape, "3-D transposed convolution on [C, T, H, W] (nn.ConvTranspose3d); input channels are "
                       "inferred. T' = (T - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1.",
        params=_convt3d_params, macs=_convt3d_macs, stateful=True, normalize=_convt3d_norm,
        key_args=("kernel_size", "stride"), ctor=_convt3d_ctor, traits={"stateful-module", "inplace-safe-producer"},
        torch_forms=(TorchForm("module", "torch.nn.ConvTranspose3d", _convt3d_form),)),
    OpDef("maxpool3d", "pool", [_A("kernel_size", "int3"), _A("stride", "int3?", None), _A("padding", "int3", 0),
                                _A("dilation", "int3", 1), _A("ceil_mode", "bool", False)], _pool3d_shape("maxpool3d"),
          "3-D max pooling on [C, T, H, W] (stride defaults to the kernel size).", normalize=_pool3d_norm,
          key_args=("kernel_size", "stride"),
          emit=lambda e: ("F.max_pool3d(", In(0), ", ", *_pool_args(e), *_maxpool_tail(e)),
          module_form=lambda e: ("nn.MaxPool3d(", *_pool_args(e), *_maxpool_tail(e)), traits={"channel-wise"},
          torch_forms=(
              TorchForm("module", "torch.nn.MaxPool3d", lambda c: _maxpool_spec(_module_attrs(c, _MAXPOOL_NAMES))),
              TorchForm("function", "torch.nn.functional.max_pool3d",
                        lambda c: _maxpool_spec(call_args(c, _MAXPOOL_NAMES, _MAXPOOL_DEFAULTS))))),
    OpDef("avgpool3d", "pool", [_A("kernel_size", "int3"), _A("stride", "int3?", None), _A("padding", "int3", 0),
                                _A("ceil_mode", "bool", False), _A("count_include_pad", "bool", True)],
          _pool3d_shape("avgpool3d"), "3-D average pooling on [C, T, H, W] (stride defaults to the kernel size).",
          normalize=_pool3d_norm, key_args=("kernel_size", "stride"),
          emit=lambda e: ("F.avg_pool3d(", In(0), ", ", *_pool_args(e), *_avgpool_tail(e)),
          module_form=lambda e: ("nn.AvgPool3d(", *_pool_args(e), *_avgpool_tail(e)), traits={"channel-wise"},
          torch_forms=(
              TorchForm("module", "torch.nn.AvgPool3d", lambda c: _avgpool_spec(_module_attrs(c, _AVGPOOL_NAMES))),
              TorchForm("function", "torch.nn.functional.avg_pool3d",
                        lambda c: _avgpool_spec(call_args(c, _AVGPOOL_NAMES, _AVGPOOL_DEFAULTS))))),
    OpDef("adaptive_avgpool3d", "pool", [_A("output_size", "int3")], _adaptive3d_shape,
          "3-D adaptive average pooling of [C, T, H, W] to a fixed output size [t, h, w] (1: global pooling).",
          normalize=_adaptive3d_norm, key_args=("output_size",),
          emit=lambda e: ("F.adaptive_avg_pool3d(", In(0), ", ", int_or_pair(e.args["output_size"], "output_size"), ")"),
          module_form=lambda e: ("nn.AdaptiveAvgPool3d(", int_or_pair(e.args["output_size"], "output_size"), ")"),
          traits={"channel-wise"},
          torch_forms=(TorchForm("module", "torch.nn.AdaptiveAvgPool3d", _adaptive_form),
                       TorchForm("function", "torch.nn.functional.adaptive_avg_pool3d", _adaptive_form))),
    OpDef("adaptive_maxpool3d", "pool", [_A("output_size", "int3")], _adaptive3d_shape,
          "3-D adaptive max pooling of [C, T, H, W] to a fixed output size [t, h, w].",
          normalize=_adaptive3d_norm, key_args=("output_size",),
          emit=lambda e: ("F.adaptive_max_pool3d(", In(0), ", ", int_or_pair(e.args["output_size"], "output_size"), ")"),
          module_form=lambda e: ("nn.AdaptiveMaxPool3d(", int_or_pair(e.args["output_size"], "output_size"), ")"),
          traits={"channel-wise"},
          torch_forms=(TorchForm("module", "torch.nn.AdaptiveMaxPool3d", _adaptive_max_form),
                       TorchForm("function", "torch.nn.functional.adaptive_max_pool3d", _adaptive_max_form))),
)
