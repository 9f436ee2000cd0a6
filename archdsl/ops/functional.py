"""Built-in ops, layers with weights computed in forward: ``linear_fn`` (F.linear) and ``conv2d_fn`` (F.conv2d).

The weight (and bias) are named tensors without the batch axis: a ``parameter(..., batch_dim=false)``, a buffer,
or a value computed from them in the block (a standardized conv weight, BEiT's concatenated qkv bias, a
parameter reshaped before use). The shape rule reads the layer's sizes from the weight's shape; MACs are what
fvcore counts for the functional call (``aten::linear``: the input's elements times the output features;
``aten::_convolution``: the output's elements times in/groups * kh * kw), the bias and the weight's own
computation uncounted.
"""
from __future__ import annotations

import math
from typing import Any

from .core import (ArgSpec, EmitArgs, Expr, In, Kw, OpDef, Shape, ShapeError, TensorArg, TorchCall, TorchForm,
                   register)
from .nn import _conv_macs, _conv_norm, _conv_shape

__all__: list[str] = []


def _operands(shapes: list[Shape], what: str, weight: str) -> None:
    if len(shapes) not in (2, 3):
        raise ShapeError(f"{what} takes the input, the weight and an optional bias (named tensors), got "
                         f"{len(shapes)} tensors", hint=f"write {what}(x, weight) or {what}(x, weight, bias)")
    if len(shapes) == 3 and len(shapes[2]) != 1:
        raise ShapeError(f"{what}: the bias {list(shapes[2])} must be a vector [{weight}]")


def _linear_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    _operands(shapes, "linear_fn", "out_features")
    x, w = shapes[0], shapes[1]
    if len(w) != 2:
        raise ShapeError(f"linear_fn: the weight {list(w)} must be a matrix [out_features, in_features]",
                         hint="reshape it, e.g. w -> reshape([out, -1])")
    if x[-1] != w[1]:
        raise ShapeError(f"linear_fn: the input's last dim {x[-1]} ({list(x)}) is not the weight's in_features "
                         f"{w[1]} ({list(w)})", hint="the weight is [out_features, in_features], as nn.Linear's")
    if len(shapes) == 3 and shapes[2][0] != w[0]:
        raise ShapeError(f"linear_fn: the bias has {shapes[2][0]} values for {w[0]} output features")
    return (*x[:-1], w[0])


def _linear_emit(e: EmitArgs) -> Expr:
    bias: tuple[Any, ...] = (", ", In(2)) if e.n_inputs == 3 else ()
    return ("F.linear(", In(0), ", ", In(1), *bias, ")")


def _conv_fn_norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    _operands(shapes, "conv2d_fn", "out_channels")
    w = shapes[1]
    if len(w) != 4:
        raise ShapeError(f"conv2d_fn: the weight {list(w)} must be [out_channels, in_channels / groups, kh, kw]",
                         hint="reshape it, e.g. w -> reshape([out, c, 3, 3])")
    a = dict(a, out_channels=w[0], kernel_size=[w[2], w[3]])
    return _conv_norm(shapes[:1], a)


def _conv_fn_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    x, w = shapes[0], shapes[1]
    if len(x) != 3:
        raise ShapeError(f"conv2d_fn expects a feature map [C, H, W], got {list(x)}")
    out = _conv_shape(shapes[:1], a)
    if x[0] // a["groups"] != w[1]:
        raise ShapeError(f"conv2d_fn: the weight {list(w)} takes {w[1]} channels per group but the input has "
                         f"{x[0]} channels in {a['groups']} group(s)", arg="groups",
                         hint="the weight is [out_channels, in_channels / groups, kh, kw], as nn.Conv2d's")
    if len(shapes) == 3 and shapes[2][0] != w[0]:
        raise ShapeError(f"conv2d_fn: the bias has {shapes[2][0]} values for {w[0]} output channels")
    return out


def _one(v: tuple[int, int]) -> Any:
    return v[0] if v[0] == v[1] else tuple(v)


def _conv_emit(e: EmitArgs) -> Expr:
    a = e.args
    bias: tuple[Any, ...] = (", ", In(2)) if e.n_inputs == 3 else ()
    return ("F.conv2d(", In(0), ", ", In(1), *bias, Kw("stride", _one(a["stride"]), 1),
            Kw("padding", _one(a["padding"]), 0), Kw("dilation", _one(a["dilation"]), 1),
            Kw("groups", a["groups"], 1), ")")


def _tensors_form(n_args: tuple[int, ...]) -> Any:
    """A form taking the call's leading tensor args as the op's inputs (the bias may be None: left out)."""
    def form(c: TorchCall) -> dict[str, Any] | None:
        tensors = [x for x in (*c.args[:3], c.kwargs.get("weight"), c.kwargs.get("bias"))
                   if isinstance(x, TensorArg)]
        if len(tensors) not in n_args:
            return None
        out: dict[str, Any] = {}
        for i, name in enumerate(("stride", "padding", "dilation", "groups"), start=3):
            v = c.args[i] if len(c.args) > i else c.kwargs.get(name)
            if v is not None:
                out[name] = list(v) if isinstance(v, (tuple, list)) else v
        return out
    return form


def _linear_form(c: TorchCall) -> dict[str, Any] | None:
    tensors = [x for x in (*c.args, *c.kwargs.values()) if isinstance(x, TensorArg)]
    return {} if len(tensors) in (2, 3) else None


_A = ArgSpec
register(
    OpDef("linear_fn", "linear", [], _linear_shape,
          "F.linear(x, weight, bias) over named tensors, the weight [out_features, in_features] (and bias "
          "[out_features]) computed in forward from parameters and buffers (no batch axis): "
          "linear_fn(x, w) or linear_fn(x, w, b). MACs as fvcore counts aten::linear.",
          arity=-1, macs=lambda s, o, a: math.prod(s[0]) * o[-1], emit=_linear_emit, unbatched_emit=_linear_emit,
          mixed_batch="any", unbatched_inputs=(1, 2), traits={"layout-sensitive"},
          torch_forms=(TorchForm("function", "torch.nn.functional.linear", _linear_form),)),
    OpDef("conv2d_fn", "conv",
          [_A("stride", "int2", 1), _A("padding", "padding", 0), _A("dilation", "int2", 1), _A("groups", "int", 1)],
          _conv_fn_shape,
          "F.conv2d(x, weight, bias, stride, padding, dilation, groups) over named tensors, the weight "
          "[out_channels, in_channels / groups, kh, kw] (and bias [out_channels]) computed in forward from "
          "parameters and buffers (no batch axis), e.g. timm's StdConv2d (weight standardization): "
          "conv2d_fn(x, w, b, stride=2, padding=1). MACs as fvcore counts the convolution.",
          arity=-1, normalize=_conv_fn_norm, macs=_conv_macs, emit=_conv_emit, unbatched_emit=_conv_emit,
          mixed_batch="any", unbatched_inputs=(1, 2), key_args=("stride", "groups"),
          torch_forms=(TorchForm("function", "torch.nn.functional.conv2d", _tensors_form((2, 3))),)),
)
