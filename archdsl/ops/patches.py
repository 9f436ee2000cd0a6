"""Built-in ops, sliding blocks: ``unfold`` (nn.Unfold, im2col) and ``fold`` (nn.Fold, col2im).

``unfold`` turns a map ``[C, H, W]`` into its ``L`` sliding ``kh x kw`` blocks as columns ``[C*kh*kw, L]``;
``fold`` sums such columns back into a map ``[C, H, W]`` of the given ``output_size``. The block count ``L`` is
the product over H and W of PyTorch's conv output length. Neither has weights or counts MACs (fvcore does not).
"""
from __future__ import annotations

import math
from typing import Any

from .core import (REQUIRED, ArgSpec, EmitArgs, Expr, In, OpDef, Shape, ShapeError, TorchCall, TorchForm,
                   _check_positive, _pair, conv_out, int_or_pair, register)
from .forms import call_arg, need_batch_first, plain_value

__all__: list[str] = []

_WINDOW = ("kernel_size", "dilation", "padding", "stride")


def _norm(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
    a = dict(a)
    for n in (*_WINDOW, "output_size"):
        if n in a:
            a[n] = _pair(a[n])
    return a


def _blocks(size: tuple[int, int], a: dict[str, Any]) -> tuple[int, int]:
    """The number of blocks along H and W for a map of ``size`` (nn.Unfold's L = their product)."""
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = (a[n] for n in _WINDOW)
    return conv_out(size[0], kh, sh, ph, dh), conv_out(size[1], kw, sw, pw, dw)


def _check(a: dict[str, Any]) -> None:
    _check_positive(a, ["kernel_size", "dilation", "stride"])
    _check_positive(a, ["padding"], allow_zero=["padding"])


def _unfold_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    s = shapes[0]
    if len(s) != 3:
        raise ShapeError(f"unfold expects a feature map [C, H, W], got {list(s)}",
                         hint="reshape a sequence to [C, 1, L] first" if len(s) == 2 else None)
    _check(a)
    bh, bw = _blocks((s[1], s[2]), a)
    if bh <= 0 or bw <= 0:
        (kh, kw), (ph, pw) = a["kernel_size"], a["padding"]
        raise ShapeError(f"unfold block {kh}x{kw} does not fit the padded input {s[1] + 2 * ph}x{s[2] + 2 * pw}",
                         arg="kernel_size", hint=f"the input here is {list(s)}")
    return (s[0] * math.prod(a["kernel_size"]), bh * bw)


def _fold_shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    s = shapes[0]
    if len(s) != 2:
        raise ShapeError(f"fold expects columns [C*kh*kw, L], got {list(s)}",
                         hint="unfold makes such columns; reshape a map to [C*kh*kw, L] first")
    _check(a)
    _check_positive(a, ["output_size"])
    kk = math.prod(a["kernel_size"])
    if s[0] % kk:
        kh, kw = a["kernel_size"]
        raise ShapeError(f"fold needs rows that are a multiple of the block size {kh}x{kw} = {kk}; {list(s)} has "
                         f"{s[0]}",
                         arg="kernel_size", hint="the rows are C * kh * kw")
    bh, bw = _blocks(a["output_size"], a)
    if bh <= 0 or bw <= 0 or bh * bw != s[1]:
        raise ShapeError(f"fold output_size {list(a['output_size'])} holds {max(bh, 0)}x{max(bw, 0)} = "
                         f"{max(bh, 0) * max(bw, 0)} blocks, but {list(s)} has L = {s[1]} columns",
                         arg="output_size", hint="output_size, kernel_size, dilation, padding and stride must be "
                                                 "those of the unfold that made the columns")
    return (s[0] // kk, *a["output_size"])


def _window_kw(e: EmitArgs) -> Expr:
    a = e.args
    out: list[Any] = []
    for n, default in (("dilation", 1), ("padding", 0), ("stride", 1)):
        v = int_or_pair(a[n], n)
        if v.value != default:
            out += [f", {n}=", v]
    return tuple(out)


def _form(kind: str, module: bool) -> Any:
    """nn.Unfold/nn.Fold (their attributes) and F.unfold(input, kernel_size, dilation=1, padding=0, stride=1) /
    F.fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1)."""
    names = (("output_size",) if kind == "fold" else ()) + _WINDOW

    def form(c: TorchCall) -> dict[str, Any]:
        need_batch_first(c, kind)
        defaults = {"dilation": 1, "padding": 0, "stride": 1}
        if module:
            vals = {n: getattr(c.module, n) for n in names}
        else:
            vals = {n: plain_value(call_arg(c, 1 + k, n, defaults.get(n, REQUIRED)), n) for k, n in enumerate(names)}
        return {n: (list(v) if isinstance(v, (tuple, list)) else int(v)) for n, v in vals.items()}
    return form


_A = ArgSpec
register(
    OpDef("unfold", "shape", [_A("kernel_size", "int2"), _A("dilation", "int2", 1), _A("padding", "int2", 0),
                              _A("stride", "int2", 1)], _unfold_shape,
          "Sliding blocks of a map as columns (nn.Unfold, im2col): [C, H, W] -> [C*kh*kw, L], L the number of "
          "blocks.", normalize=_norm, key_args=("kernel_size", "stride"),
          emit=lambda e: ("F.unfold(", In(0), ", ", int_or_pair(e.args["kernel_size"], "kernel_size"), *_window_kw(e),
                          ")"),
          module_form=lambda e: ("nn.Unfold(", int_or_pair(e.args["kernel_size"], "kernel_size"), *_window_kw(e), ")"),
          traits={"layout-sensitive"},
          torch_forms=(TorchForm("module", "torch.nn.Unfold", _form("unfold", True)),
                       TorchForm("function", "torch.nn.functional.unfold", _form("unfold", False)))),
    OpDef("fold", "shape", [_A("output_size", "int2"), _A("kernel_size", "int2"), _A("dilation", "int2", 1),
                            _A("padding", "int2", 0), _A("stride", "int2", 1)], _fold_shape,
          "Sum columns of sliding blocks back into a map (nn.Fold, col2im): [C*kh*kw, L] -> [C, H, W] with "
          "[H, W] = output_size; overlapping blocks add up.", normalize=_norm,
          key_args=("output_size", "kernel_size"),
          emit=lambda e: ("F.fold(", In(0), ", ", int_or_pair(e.args["output_size"], "output_size"), ", ",
                          int_or_pair(e.args["kernel_size"], "kernel_size"), *_window_kw(e), ")"),
          module_form=lambda e: ("nn.Fold(", int_or_pair(e.args["output_size"], "output_size"), ", ",
                                 int_or_pair(e.args["kernel_size"], "kernel_size"), *_window_kw(e), ")"),
          traits={"layout-sensitive"},
          torch_forms=(TorchForm("module", "torch.nn.Fold", _form("fold", True)),
                       TorchForm("function", "torch.nn.functional.fold", _form("fold", False)))),
)
