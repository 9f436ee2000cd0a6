"""Built-in ops on sequences ``[C, L]`` (channels, length): ``conv1d`` and the 1-D pools.

The 1-D counterparts of ``conv2d``/``maxpool``/``avgpool``/``adaptive_*pool``: the same arguments with single
integers, the same output-length formula (``conv_out``), ``padding="same"``/``"valid"`` like conv2d. MACs follow
fvcore: a conv counts ``out_channels * L_out * C/groups * k``, pools count nothing (batchnorm on [C, L] is
``batchnorm``, nn.BatchNorm1d).
"""
from __future__ import annotations

import math
from typing import Any, Callable

from .core import (ArgSpec, EmitArgs, Expr, In, Kw, Lit, OpDef, Shape, ShapeError, TorchCall, TorchForm,
                   _check_positive, conv_out, pool_out, register)
from .forms import call_arg, need_batch_first, plain_value, single
from .nn import _groups_check

__all__: list[str] = []

_SEQ = "a sequence [C, L]"


def _need_seq(shapes: list[Shape], what: str) -> tuple[int, int]:
    s = shapes[0]
    if len(s) != 2:
        hint = "use the 2-D op for [C, H, W] (conv2d, maxpool, avgpool)" if len(s) == 3 else \
            "reshape to [C, L] first, e.g. reshape([1, -1])"
        raise ShapeError(f"{what} expects {_SEQ}, got {list(s)}", hint=hint)
    return s[0], s[1]


def _int(v: Any, name: str) -> int:
    if isinstance(v, (list, tuple)):
        raise ShapeError(f"{name} of a 1-D op is one integer, got {list(v)}", arg=name)
    return int(v)


# ---- conv1d ------------------------------------------------------------------------------------------------
def _conv1d_norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    a = dict(a)
    for n in ("kernel_size", "stride", "dilation"):
        a[n] = _int(a[n], n)
    p = a["padding"]
    if p == "valid":
        a["padding"] = 0
    elif p == "same":
        if a["stride"] != 1:
            raise ShapeError("padding='same' needs stride 1", arg="padding",
                             hint="give the padding as a number, e.g. padding=k // 2")
        tot = a["dilation"] * (a["kernel_size"] - 1)
        if tot % 2:
            raise ShapeError("padding='same' with an even effective kernel pads unevenly", arg="padding",
                             hint="use an odd kernel size")
        a["padding"] = tot // 2
    elif isinstance(p, str):
        raise ShapeError(f"padding must be a number, 'same' or 'valid', got '{p}'", arg="padding")
    else:
        a["padding"] = _int(p, "padding")
    return a


def _conv1d_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    c, length = _need_seq(shapes, "conv1d")
    _check_positive(a, ["out_channels", "kernel_size", "stride", "dilation", "groups"])
    _check_positive(a, ["padding"], allow_zero=["padding"])
    _groups_check(c, a)
    k, p, d = a["kernel_size"], a["padding"], a["dilation"]
    out = conv_out(length, k, a["stride"], p, d)
    if out <= 0:
        raise ShapeError(f"kernel {k} (dilation {d}) is longer than the padded input {length + 2 * p}",
                         arg="kernel_size", hint=f"the input here is {list(shapes[0])}; use a smaller kernel or "
                                                 "more padding")
    return (a["out_channels"], out)


def _conv1d_params(shapes: list[Shape], a: dict[str, Any]) -> int:
    o = a["out_channels"]
    return o * (shapes[0][0] // a["groups"]) * a["kernel_size"] + (o if a["bias"] else 0)


def _conv1d_macs(shapes: list[Shape], out: Shape, a: dict[str, Any]) -> int:
    return math.prod(out) * (shapes[0][0] // a["groups"]) * a["kernel_size"]


def _conv1d_ctor(e: EmitArgs) -> Expr:
    a = e.args
    return ("nn.Conv1d(", Lit(e.in_shapes[0][0], "in_channels"), ", ", Lit(a["out_channels"], "out_channels"), ", ",
            Lit(a["kernel_size"], "kernel_size"), Kw("stride", a["stride"], 1), Kw("padding", a["padding"], 0),
            Kw("dilation", a["dilation"], 1), Kw("groups", a["groups"], 1), Kw("bias", a["bias"], True),
            Kw("padding_mode", a["padding_mode"], "zeros"), ")")


def _conv1d_form(c: TorchCall) -> dict[str, Any]:
    need_batch_first(c, "Conv1d")
    m = c.module
    pad = m.padding if isinstance(m.padding, str) else single(m.padding, "padding")
    return {"out_channels": int(m.out_channels), "kernel_size": single(m.kernel_size, "kernel_size"),
            "stride": single(m.stride, "stride"), "padding": pad, "dilation": single(m.dilation, "dilation"),
            "groups": int(m.groups), "bias": m.bias is not None, "padding_mode": str(m.padding_mode)}


# ---- pools -------------------------------------------------------------------------------------------------
def _pool1d_norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    a = dict(a)
    a["kernel_size"] = _int(a["kernel_size"], "kernel_size")
    a["stride"] = a["kernel_size"] if a["stride"] is None else _int(a["stride"], "stride")
    a["padding"] = _int(a["padding"], "padding")
    if "dilation" in a:
        a["dilation"] = _int(a["dilation"], "dilation")
    return a


def _pool1d_shape(op: str) -> Callable[[list[Shape], dict[str, Any]], Shape]:
    def rule(shapes: list[Shape], a: dict[str, Any]) -> Shape:
        c, length = _need_seq(shapes, op)
        _check_positive(a, ["kernel_size", "stride", *(["dilation"] if "dilation" in a else [])])
        _check_positive(a, ["padding"], allow_zero=["padding"])
        k, p = a["kernel_size"], a["padding"]
        if p > k // 2:
            raise ShapeError(f"padding {p} is more than half the kernel {k}", arg="padding",
                             hint="PyTorch requires pad <= kernel_size // 2 for pooling")
        out = pool_out(length, k, a["stride"], p, a.get("dilation", 1), a["ceil_mode"])
        if out <= 0:
            raise ShapeError(f"pooling window {k} is longer than the padded input {length + 2 * p}",
                             arg="kernel_size", hint=f"the input here is {list(shapes[0])}")
        return (c, out)
    return rule


def _pool1d_args(e: EmitArgs) -> Expr:
    a = e.args
    return (Lit(a["kernel_size"], "kernel_size"), ", ", Lit(a["stride"], "stride"), ", ", Lit(a["padding"], "padding"))


def _max_tail(e: EmitArgs) -> Expr:
    return (Kw("dilation", e.args["dilation"], 1), Kw("ceil_mode", e.args["ceil_mode"], False), ")")


def _avg_tail(e: EmitArgs) -> Expr:
    return (Kw("ceil_mode", e.args["ceil_mode"], False), Kw("count_include_pad", e.args["count_include_pad"], True),
            ")")


def _pool_module_form(kind: str) -> Callable[[TorchCall], dict[str, Any] | None]:
    """nn.MaxPool1d / nn.AvgPool1d: their attributes are the op's arguments."""
    def form(c: TorchCall) -> dict[str, Any] | None:
        need_batch_first(c, kind)
        m = c.module
        if getattr(m, "return_indices", False):
            return None
        out = {"kernel_size": single(m.kernel_size, "kernel_size"), "stride": single(m.stride, "stride"),
               "padding": single(m.padding, "padding"), "ceil_mode": bool(m.ceil_mode)}
        if kind == "MaxPool1d":
            out["dilation"] = single(m.dilation, "dilation")
        else:
            out["count_include_pad"] = bool(m.count_include_pad)
        return out
    return form


def _pool_function_form(kind: str) -> Callable[[TorchCall], dict[str, Any] | None]:
    """F.max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
    return_indices=False) / F.avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
    count_include_pad=True)."""
    def form(c: TorchCall) -> dict[str, Any] | None:
        need_batch_first(c, kind)
        k = single(plain_value(call_arg(c, 1, "kernel_size"), "kernel_size"), "kernel_size")
        s = plain_value(call_arg(c, 2, "stride", None), "stride")
        out: dict[str, Any] = {"kernel_size": k, "stride": None if s in (None, (), []) else single(s, "stride"),
                               "padding": single(plain_value(call_arg(c, 3, "padding", 0), "padding"), "padding")}
        if kind == "max_pool1d":
            if call_arg(c, 6, "return_indices", False):
                return None
            out["dilation"] = single(plain_value(call_arg(c, 4, "dilation", 1), "dilation"), "dilation")
            out["ceil_mode"] = bool(call_arg(c, 5, "ceil_mode", False))
        else:
            out["ceil_mode"] = bool(call_arg(c, 4, "ceil_mode", False))
            out["count_include_pad"] = bool(call_arg(c, 5, "count_include_pad", True))
        return out
    return form


def _adaptive1d_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    c, _ = _need_seq(shapes, "adaptive pooling")
    a = {**a, "output_size": _int(a["output_size"], "output_size")}
    _check_positive(a, ["output_size"])
    return (c, a["output_size"])


def _adaptive_form(module: bool) -> Callable[[TorchCall], dict[str, Any] | None]:
    def form(c: TorchCall) -> dict[str, Any] | None:
        need_batch_first(c, "adaptive pooling")
        if module:
            if getattr(c.module, "return_indices", False):
                return None
            size = c.module.output_size
        else:
            if call_arg(c, 2, "return_indices", False):
                return None
            size = plain_value(call_arg(c, 1, "output_size"), "output_size")
        if size is None or (isinstance(size, (tuple, list)) and None in size):
            raise ShapeError("an output_size of None keeps the input length; write identity")
        return {"output_size": single(size, "output_size")}
    return form


def _adaptive(name: str, fn: str, mod: str, doc: str, builtin: bool) -> OpDef:
    # F.adaptive_avg_pool1d is the builtin torch.adaptive_avg_pool1d (named so by its __module__)
    extra = (TorchForm("function", f"torch.{fn}", _adaptive_form(False)),) if builtin else ()
    return OpDef(name, "pool", [ArgSpec("output_size", "int")], _adaptive1d_shape, doc, key_args=("output_size",),
                 emit=lambda e: (f"F.{fn}(", In(0), ", ", Lit(e.args["output_size"], "output_size"), ")"),
                 module_form=lambda e: (f"nn.{mod}(", Lit(e.args["output_size"], "output_size"), ")"),
                 traits={"channel-wise"},
                 torch_forms=(TorchForm("module", f"torch.nn.{mod}", _adaptive_form(True)),
                              TorchForm("function", f"torch.nn.functional.{fn}", _adaptive_form(False)), *extra))


_A = ArgSpec
register(
    OpDef("conv1d", "conv", [
        _A("out_channels", "int"), _A("kernel_size", "int"), _A("stride", "int", 1), _A("padding", "padding", 0),
        _A("dilation", "int", 1), _A("groups", "int", 1), _A("bias", "bool", True),
        _A("padding_mode", "str", "zeros", ("zeros", "reflect", "replicate", "circular")),
    ], _conv1d_shape, "1-D convolution over a sequence [C, L] (nn.Conv1d); input channels are inferred.",
        params=_conv1d_params, macs=_conv1d_macs, stateful=True, normalize=_conv1d_norm,
        key_args=("kernel_size", "stride", "groups"), ctor=_conv1d_ctor,
        traits={"stateful-module", "inplace-safe-producer"},
        torch_forms=(TorchForm("module", "torch.nn.Conv1d", _conv1d_form),)),
    OpDef("maxpool1d", "pool", [_A("kernel_size", "int"), _A("stride", "int?", None), _A("padding", "int", 0),
                                _A("dilation", "int", 1), _A("ceil_mode", "bool", False)], _pool1d_shape("maxpool1d"),
          "Max pooling over a sequence [C, L] (nn.MaxPool1d; stride defaults to the kernel size).",
          normalize=_pool1d_norm, key_args=("kernel_size", "stride"),
          emit=lambda e: ("F.max_pool1d(", In(0), ", ", *_pool1d_args(e), *_max_tail(e)),
          module_form=lambda e: ("nn.MaxPool1d(", *_pool1d_args(e), *_max_tail(e)), traits={"channel-wise"},
          torch_forms=(TorchForm("module", "torch.nn.MaxPool1d", _pool_module_form("MaxPool1d")),
                       TorchForm("function", "torch.nn.functional.max_pool1d", _pool_function_form("max_pool1d")))),
    OpDef("avgpool1d", "pool", [_A("kernel_size", "int"), _A("stride", "int?", None), _A("padding", "int", 0),
                                _A("ceil_mode", "bool", False), _A("count_include_pad", "bool", True)],
          _pool1d_shape("avgpool1d"),
          "Average pooling over a sequence [C, L] (nn.AvgPool1d; stride defaults to the kernel size).",
          normalize=_pool1d_norm, key_args=("kernel_size", "stride"),
          emit=lambda e: ("F.avg_pool1d(", In(0), ", ", *_pool1d_args(e), *_avg_tail(e)),
          module_form=lambda e: ("nn.AvgPool1d(", *_pool1d_args(e), *_avg_tail(e)), traits={"channel-wise"},
          torch_forms=(TorchForm("module", "torch.nn.AvgPool1d", _pool_module_form("AvgPool1d")),
                       TorchForm("function", "torch.nn.functional.avg_pool1d", _pool_function_form("avg_pool1d")),
                       # F.avg_pool1d is the builtin torch.avg_pool1d (its __module__ is "torch")
                       TorchForm("function", "torch.avg_pool1d", _pool_function_form("avg_pool1d")))),
    _adaptive("adaptive_avgpool1d", "adaptive_avg_pool1d", "AdaptiveAvgPool1d",
              "Adaptive average pooling of a sequence [C, L] to a fixed length (nn.AdaptiveAvgPool1d).", True),
    _adaptive("adaptive_maxpool1d", "adaptive_max_pool1d", "AdaptiveMaxPool1d",
              "Adaptive max pooling of a sequence [C, L] to a fixed length (nn.AdaptiveMaxPool1d).", False),
)
