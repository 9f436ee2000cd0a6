"""Compile-time values of the .arch evaluator: layers, tensors, shapes, the poison marker, formatting.

Everything here is plain data with no access to the evaluator's state, so the evaluator
(:mod:`.evaluate`), the binder (:mod:`.bind`) and the elaborator (:mod:`.elaborate`) share it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, TypeGuard

from ..source import Span
from .dims import Dim, dims_of, strip_dims

__all__ = ["POISON", "ABSENT", "LayerSpec", "TensorVal", "ShapeVal", "fmt", "type_name", "is_int", "is_num",
           "is_tensorish", "iter_flat", "make_divisible", "named", "inline", "FMT_MESSAGE_CHARS", "fmt_exact",
           "non_finite", "Dim", "strip_dims", "dims_of"]


class _Poison:
    """The value of something that already failed: using it reports nothing more."""

    def __repr__(self) -> str:
        return "<error>"


POISON: Any = _Poison()
ABSENT: Any = object()   # a branch/pipeline that evaluated to nothing (``x if false``)

# Values quoted in messages are cut here: a message must stay readable (and cheap) for any value.
FMT_MESSAGE_CHARS = 1000


@dataclass
class LayerSpec:
    """A layer as a compile-time value: an op or block, with the arguments written so far."""

    kind: str                       # 'op' | 'block' | 'multi'
    name: str
    target: Any                     # OpDef | BlockDef | list[ArgSpec]
    span: Span
    args: list[tuple[Any, Span]] = field(default_factory=list)
    kwargs: dict[str, tuple[Any, Span]] = field(default_factory=dict)
    called: bool = False
    call_span: Span | None = None
    label: str | None = None        # a computed label from named("...", layer); an explicit 'label:' wins
    inline: bool = False            # inline(Block(...)): the block's layers go into the caller's container

    def describe(self) -> str:
        if not self.called:
            return self.name
        parts = [fmt(v) for v, _ in self.args] + [f"{k}={fmt(v)}" for k, (v, _) in self.kwargs.items()]
        return f"{self.name}({', '.join(parts)})"


def _shape_attr(shape: tuple[int, ...], nid: int | None, name: str) -> Any:
    if name == "shape":
        return dims_of(shape, nid)
    if name == "rank":
        return len(shape)
    # a video or volume [C, T, H, W] also has .t, its frames (depth)
    idx = ({"c": 0, "t": 1, "h": 2, "w": 3} if len(shape) == 4 else {"c": 0, "h": 1, "w": 2}).get(name)
    if idx is None:
        if name == "t":
            raise IndexError(name)
        raise KeyError(name)
    # [N, C] tokens have no channel-first layout: .c would be N, .h would be C; shape[-1] says what is meant
    if idx >= len(shape) or len(shape) == 2:
        raise IndexError(name)
    return dims_of(shape, nid)[idx]


@dataclass
class TensorVal:
    """A named value in a block's dataflow: a node's output."""

    nid: int
    shape: tuple[int, ...]

    def attr(self, name: str) -> Any:
        return _shape_attr(self.shape, self.nid, name)

    def dims(self) -> list[int]:
        return dims_of(self.shape, self.nid)


@dataclass
class ShapeVal:
    """``in``: the input shape of the enclosing block (``nid``: the node that feeds it)."""

    shape: tuple[int, ...]
    nid: int | None = None

    def attr(self, name: str) -> Any:
        return _shape_attr(self.shape, self.nid, name)

    def dims(self) -> list[int]:
        return dims_of(self.shape, self.nid)


class _Full(Exception):
    """Raised by :class:`_Writer` when the text reaches its limit."""


class _Writer:
    """Collects text up to ``limit`` characters, so formatting a huge value costs at most the limit."""

    def __init__(self, limit: int) -> None:
        self.parts: list[str] = []
        self.left = limit

    def put(self, s: str) -> None:
        self.left -= len(s)
        if self.left < 0:
            self.parts.append(s[: len(s) + self.left])
            raise _Full
        self.parts.append(s)


def _write(w: _Writer, v: Any) -> None:
    if isinstance(v, bool):
        w.put("true" if v else "false")
    elif v is None:
        w.put("none")
    elif isinstance(v, str):
        w.put('"')
        w.put(v)
        w.put('"')
    elif isinstance(v, LayerSpec):
        w.put(v.name)
        if v.called:
            w.put("(")
            first = True
            for a, _ in v.args:
                w.put("" if first else ", ")
                first = False
                _write(w, a)
            for k, (a, _) in v.kwargs.items():
                w.put("" if first else ", ")
                first = False
                w.put(k + "=")
                _write(w, a)
            w.put(")")
    elif isinstance(v, (list, tuple)):
        w.put("[")
        for i, x in enumerate(v):
            if i:
                w.put(", ")
            _write(w, x)
        w.put("]")
    elif isinstance(v, int) and v.bit_length() > 4096:
        w.put(f"<an integer of {v.bit_length():,} bits>")   # str(int) is quadratic in the digits
    else:
        w.put(str(v))


def fmt(v: Any, limit: int = FMT_MESSAGE_CHARS) -> str:
    """``v`` as .arch source text (``true``, ``none``, ``"s"``, ``[1, 2]``), cut at ``limit`` characters."""
    w = _Writer(limit)
    try:
        _write(w, v)
    except _Full:
        return "".join(w.parts) + "..."
    return "".join(w.parts)


def fmt_exact(v: Any, limit: int) -> str | None:
    """``v`` formatted like :func:`fmt`, or None when the text would exceed ``limit`` characters."""
    w = _Writer(limit)
    try:
        _write(w, v)
    except _Full:
        return None
    return "".join(w.parts)


def type_name(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if v is None:
        return "none"
    if isinstance(v, LayerSpec):
        return f"layer {v.describe()}"
    if isinstance(v, TensorVal):
        return f"tensor {list(v.shape)}"
    if isinstance(v, ShapeVal):
        return "shape"
    if isinstance(v, int):
        return "int"
    return {float: "float", str: "string", list: "list"}.get(type(v), type(v).__name__)


def is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_tensorish(v: Any) -> bool:
    return isinstance(v, TensorVal) or (isinstance(v, list) and bool(v) and all(isinstance(x, TensorVal) for x in v))


def iter_flat(v: list[Any]) -> Iterator[Any]:
    """The layers of a nested list, in order, without building the flattened list."""
    for x in v:
        if isinstance(x, list):
            yield from iter_flat(x)
        elif x is not None:
            yield x


def named(label: Any, layer: Any) -> LayerSpec:
    """``named(label, layer)``: the layer, to be named ``label`` where it is applied (when not labelled there)."""
    if not isinstance(label, str) or not label:
        raise TypeError(f"the label must be a non-empty string, got {type_name(label)} {fmt(label)}")
    if "." in label or any(ch.isspace() for ch in label):
        raise ValueError(f"the label \"{fmt(label)[1:-1]}\" may not contain '.' or spaces (it is one module name)")
    if not isinstance(layer, LayerSpec):
        raise TypeError(f"the second argument must be a layer, got {type_name(layer)}")
    return replace(layer, label=label)


def inline(layer: Any) -> LayerSpec:
    """``inline(Block(...))``: the block's layers are named and numbered as if written where it is applied."""
    if not isinstance(layer, LayerSpec) or layer.kind != "block":
        raise TypeError(f"inline(...) takes a block call, got {type_name(layer)}")
    return replace(layer, inline=True)


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to a multiple of ``divisor``, never going below 90% of it (MobileNet's rule)."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def non_finite(v: Any) -> float | None:
    """The first non-finite float (inf or nan) inside ``v`` (through lists and layer arguments), or None."""
    stack = [v]
    seen = 0
    while stack and seen < 1_000_000:
        x = stack.pop()
        seen += 1
        if isinstance(x, float) and not math.isfinite(x):
            return x
        if isinstance(x, (list, tuple)):
            stack.extend(x)
        elif isinstance(x, LayerSpec):
            stack.extend(a for a, _ in x.args)
            stack.extend(a for a, _ in x.kwargs.values())
    return None
