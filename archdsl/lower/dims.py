"""Sizes read from tensors (``in.h``, ``t.shape[1]``) as symbolic ints, and the facts a lowering relies on.

A :class:`Dim` *is* its value at the declared input size, so every compile-time use sees a plain number,
and it keeps the formula that computed it from the graph's node sizes. What happens to a size decides how
the model built at the declared size can run at another one (the input contract,
:mod:`archdsl.passes.sizes`):

- ``+ - * // %``, ``min``, ``max``, ``abs``, ``int``, ``round``, ``ceil``, ``floor`` keep the formula:
  a ``reshape`` reads it and the generated code computes the size at run time (``_size_max(h // 2, 4)``);
- everything else turns the formula into a **fact**, a condition on the sizes recorded while the spec is
  lowered (:func:`recording`), which the contract must keep true: an order comparison (``in.h > 8``, the
  condition of an ``if`` or ``a if c else b``) must keep its outcome; an equality, a truth test, a float
  or power computation, a list index, ``range``, ``str``, a constructor argument (a conv's channels, a
  parameter's shape, a pad amount), and any formula too long to keep must keep its *value* ("pinned").

A fact is ``(expr, value)``: ``expr`` a formula over ``("dim", node id, axis)`` leaves (``("k", n)`` for a
constant, ``(op, a, b)`` for an operation, comparisons at the top only), ``value`` what it must evaluate to.
"""
from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from ..ops.tensor import SIZE_OPS

__all__ = ["Dim", "SizeFacts", "recording", "pin", "pin_all", "compare", "strip_dims", "dims_of", "has_dims",
           "size_min", "size_max", "size_abs", "size_int",
           "MAX_DIM_TERMS", "MAX_FACTS", "ORDER_OPS", "SIZE_OPS"]

# A size stays symbolic through this many operations; a longer computation keeps only its value (and is
# pinned: the contract fixes the sizes that give the same value).
MAX_DIM_TERMS = 32
# A lowering records at most this many distinct facts; beyond that the contract keeps the declared size only.
MAX_FACTS = 20_000

# SIZE_OPS: the operations a formula keeps (binary; ``abs(a)`` is ``max(a, 0 - a)``), shared with reshape's
# run-time sizes (archdsl.ops.tensor), which evaluates and emits the same formulas.
#: Comparisons whose outcome a fact keeps (only at a fact's top).
ORDER_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
_EQ_OPS: dict[str, Callable[[Any, Any], bool]] = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


class SizeFacts:
    """The facts one lowering relied on (see the module docstring); ``overflow``: more than MAX_FACTS."""

    def __init__(self) -> None:
        self.facts: dict[tuple[Any, ...], Any] = {}
        self.overflow = False

    def note(self, expr: tuple[Any, ...], value: Any) -> None:
        if expr in self.facts:
            return
        if len(self.facts) >= MAX_FACTS:
            self.overflow = True
            return
        self.facts[expr] = value


_SINK: contextvars.ContextVar[SizeFacts | None] = contextvars.ContextVar("archdsl_size_facts", default=None)


@contextmanager
def recording() -> Iterator[SizeFacts]:
    """Collect the facts noted while the ``with`` body runs (one network's lowering)."""
    facts = SizeFacts()
    token = _SINK.set(facts)
    try:
        yield facts
    finally:
        _SINK.reset(token)


def _note(expr: tuple[Any, ...], value: Any) -> None:
    sink = _SINK.get()
    if sink is not None and _has_leaf(expr):
        sink.note(expr, value)


def _has_leaf(expr: tuple[Any, ...]) -> bool:
    if expr[0] == "dim":
        return True
    if expr[0] == "k":
        return False
    return any(_has_leaf(e) for e in expr[1:])


def pin(v: Any) -> None:
    """``v`` (a :class:`Dim`; anything else is ignored) must keep its value at every accepted size."""
    if isinstance(v, Dim):
        _note(v.expr, int(v))


def pin_all(v: Any, limit: int = 100_000) -> None:
    """Pin every :class:`Dim` inside ``v`` (lists and tuples, at most ``limit`` items walked)."""
    stack = [v]
    while stack and limit > 0:
        x = stack.pop()
        limit -= 1
        if isinstance(x, Dim):
            pin(x)
        elif isinstance(x, (list, tuple)):
            stack.extend(x)


def has_dims(v: Any, limit: int = 100_000) -> bool:
    """Whether a :class:`Dim` is inside ``v`` (lists and tuples; True when the walk passes ``limit``)."""
    stack = [v]
    while stack:
        x = stack.pop()
        limit -= 1
        if limit < 0 or isinstance(x, Dim):
            return True
        if isinstance(x, (list, tuple)):
            stack.extend(x)
    return False


def _monotone(expr: tuple[Any, ...]) -> bool:
    """Whether ``expr`` moves one way as the sizes grow (every leaf with the same sign), so the sizes where
    a comparison of it keeps its outcome are a threshold the contract's search finds exactly."""
    signs = _signs(expr)
    return signs is not None and len(signs) <= 1


def _signs(expr: tuple[Any, ...]) -> set[int] | None:
    """The signs with which size leaves enter ``expr`` (None: not monotone in them)."""
    op = expr[0]
    if op == "dim":
        return {1}
    if op == "k":
        return set()
    a, b = _signs(expr[1]), _signs(expr[2])
    if a is None or b is None:
        return None
    if op in ("+", "max", "min"):
        return a | b
    if op == "-":
        return a | {-s for s in b}
    if op in ("*", "//") and not b and expr[2][0] == "k" and isinstance(expr[2][1], (int, float)):
        k = expr[2][1]
        return a if k > 0 else ({-s for s in a} if k < 0 and op == "*" else None)
    if op == "*" and not a and expr[1][0] == "k" and isinstance(expr[1][1], (int, float)):
        k = expr[1][1]
        return b if k >= 0 else {-s for s in b}
    if not a and not b:
        return set()
    return None


def _expr(v: Any) -> tuple[Any, ...]:
    return v.expr if isinstance(v, Dim) else ("k", v if isinstance(v, float) else int(v))


def _terms(v: Any) -> int:
    return v.terms if isinstance(v, Dim) else 1


def _plain(v: Any) -> Any:
    return int(v) if isinstance(v, Dim) else v


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def compare(op: str, a: Any, b: Any) -> bool:
    """``a op b`` for two numbers, noting the fact it relies on when either is a :class:`Dim`: an order
    comparison keeps its outcome (or pins both sides when the difference is not monotone), an equality
    pins the difference ``a - b``."""
    va, vb = _plain(a), _plain(b)
    res = (ORDER_OPS.get(op) or _EQ_OPS[op])(va, vb)
    if not (isinstance(a, Dim) or isinstance(b, Dim)):
        return res
    ea, eb = _expr(a), _expr(b)
    if op in _EQ_OPS:
        _note(("-", ea, eb), va - vb)
    elif _monotone(("-", ea, eb)):
        _note((op, ea, eb), res)
    else:
        pin(a)
        pin(b)
    return res


class Dim(int):
    """An ``int`` read from a tensor's shape that remembers how it was computed (see the module docstring).

    ``expr`` is its formula: ``("dim", nid, axis)`` for the size of node ``nid``'s output along per-sample
    ``axis``, ``("k", n)`` for a constant, ``(op, a, b)`` for an operation of :data:`SIZE_OPS`. ``reshape``
    reads the formula so the generated code computes its sizes from the tensors at run time; anything else
    that looks at the value notes a fact (:func:`compare`, :func:`pin`). Ops that need a number (a conv's
    channels) get the plain value (:func:`strip_dims`, which pins it).
    """

    expr: tuple[Any, ...]
    terms: int

    def __new__(cls, value: int, expr: tuple[Any, ...], terms: int = 1) -> "Dim":
        obj = super().__new__(cls, value)
        obj.expr = expr
        obj.terms = terms
        return obj

    def __repr__(self) -> str:
        return int.__repr__(self)

    __str__ = __repr__
    __hash__ = int.__hash__

    def _combine(self, op: str, other: Any, swap: bool) -> Any:
        if isinstance(other, bool) or not isinstance(other, int):
            if isinstance(other, float):
                pin(self)      # a float computation keeps only its value
            return NotImplemented
        a, b = (other, self) if swap else (self, other)
        value = SIZE_OPS[op](int(a), int(b))
        return _symbolic(op, a, b, value)

    def __add__(self, o: Any) -> Any: return self._combine("+", o, False)
    def __radd__(self, o: Any) -> Any: return self._combine("+", o, True)
    def __sub__(self, o: Any) -> Any: return self._combine("-", o, False)
    def __rsub__(self, o: Any) -> Any: return self._combine("-", o, True)
    def __mul__(self, o: Any) -> Any: return self._combine("*", o, False)
    def __rmul__(self, o: Any) -> Any: return self._combine("*", o, True)
    def __floordiv__(self, o: Any) -> Any: return self._combine("//", o, False)
    def __rfloordiv__(self, o: Any) -> Any: return self._combine("//", o, True)
    def __mod__(self, o: Any) -> Any: return self._combine("%", o, False)
    def __rmod__(self, o: Any) -> Any: return self._combine("%", o, True)

    def __neg__(self) -> Any:
        return self._combine("-", 0, True)

    def __pos__(self) -> Any:
        return self

    def __abs__(self) -> Any:
        return size_abs(self)

    # comparisons and truth tests: the outcome becomes a fact
    def __lt__(self, o: Any) -> Any: return compare("<", self, o) if _is_number(o) else NotImplemented
    def __le__(self, o: Any) -> Any: return compare("<=", self, o) if _is_number(o) else NotImplemented
    def __gt__(self, o: Any) -> Any: return compare(">", self, o) if _is_number(o) else NotImplemented
    def __ge__(self, o: Any) -> Any: return compare(">=", self, o) if _is_number(o) else NotImplemented
    def __eq__(self, o: object) -> Any: return compare("==", self, o) if _is_number(o) else NotImplemented
    def __ne__(self, o: object) -> Any: return compare("!=", self, o) if _is_number(o) else NotImplemented

    def __bool__(self) -> bool:
        pin(self)
        return int(self) != 0

    # integer-valued roundings of an int are the int itself
    def __round__(self, ndigits: Any = None) -> Any:
        if ndigits is None or (isinstance(ndigits, int) and ndigits >= 0):
            return self
        pin(self)
        return round(int(self), ndigits)

    def __trunc__(self) -> Any: return self
    def __ceil__(self) -> Any: return self
    def __floor__(self) -> Any: return self

    # everything else keeps only the value: pinned
    def __index__(self) -> int:
        pin(self)
        return int(self)

    def __float__(self) -> float:
        pin(self)
        return float(int(self))

    def _pinned(self, fn: Callable[..., Any], *a: Any) -> Any:
        pin(self)
        for x in a:
            pin(x)
        return fn(int(self), *[_plain(x) for x in a])

    def __truediv__(self, o: Any) -> Any: return self._pinned(int.__truediv__, o)
    def __rtruediv__(self, o: Any) -> Any: return self._pinned(int.__rtruediv__, o)
    def __pow__(self, o: Any, mod: Any = None) -> Any:
        return self._pinned(int.__pow__, o) if mod is None else self._pinned(int.__pow__, o, mod)
    def __rpow__(self, o: Any, mod: Any = None) -> Any: return self._pinned(int.__rpow__, o)
    def __divmod__(self, o: Any) -> Any: return self._pinned(int.__divmod__, o)
    def __rdivmod__(self, o: Any) -> Any: return self._pinned(int.__rdivmod__, o)
    def __and__(self, o: Any) -> Any: return self._pinned(int.__and__, o)
    def __rand__(self, o: Any) -> Any: return self._pinned(int.__rand__, o)
    def __or__(self, o: Any) -> Any: return self._pinned(int.__or__, o)
    def __ror__(self, o: Any) -> Any: return self._pinned(int.__ror__, o)
    def __xor__(self, o: Any) -> Any: return self._pinned(int.__xor__, o)
    def __rxor__(self, o: Any) -> Any: return self._pinned(int.__rxor__, o)
    def __lshift__(self, o: Any) -> Any: return self._pinned(int.__lshift__, o)
    def __rlshift__(self, o: Any) -> Any: return self._pinned(int.__rlshift__, o)
    def __rshift__(self, o: Any) -> Any: return self._pinned(int.__rshift__, o)
    def __rrshift__(self, o: Any) -> Any: return self._pinned(int.__rrshift__, o)
    def __invert__(self) -> Any: return self._pinned(int.__invert__)


def _symbolic(op: str, a: Any, b: Any, value: int) -> Any:
    """``value`` (= ``a op b``) as a :class:`Dim` with the formula, or plain (both sides pinned) when the
    formula would pass MAX_DIM_TERMS."""
    terms = _terms(a) + _terms(b)
    if terms > MAX_DIM_TERMS:
        pin(a)
        pin(b)
        return value
    return Dim(value, (op, _expr(a), _expr(b)), terms)


def _fold(op: str, items: list[Any]) -> Any:
    out = items[0]
    for x in items[1:]:
        value = SIZE_OPS[op](int(out), int(x))
        out = _symbolic(op, out, x, value) if isinstance(out, Dim) or isinstance(x, Dim) else value
    return out


def _min_max(op: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    items = list(args[0]) if len(args) == 1 and isinstance(args[0], list) else list(args)
    if (not kwargs and items and any(isinstance(x, Dim) for x in items)
            and all(isinstance(x, int) and not isinstance(x, bool) for x in items)):
        return _fold(op, items)
    return fn(*args, **kwargs)   # Dim comparisons inside note their facts


def size_min(*args: Any, **kwargs: Any) -> Any:
    """``min``: over integers with a :class:`Dim` among them, a symbolic size (``_size_min(a, b)`` at run time)."""
    return _min_max("min", min, args, kwargs)


def size_max(*args: Any, **kwargs: Any) -> Any:
    """``max``: over integers with a :class:`Dim` among them, a symbolic size (``_size_max(a, b)`` at run time)."""
    return _min_max("max", max, args, kwargs)


def size_abs(x: Any) -> Any:
    """``abs``: of a :class:`Dim`, the symbolic ``max(x, 0 - x)``."""
    if isinstance(x, Dim):
        return _fold("max", [x, 0 - x])
    return abs(x)


def size_int(x: Any = 0, *rest: Any) -> Any:
    """``int``: a :class:`Dim` is already an integer and stays symbolic."""
    if isinstance(x, Dim) and not rest:
        return x
    return int(x, *rest)


def strip_dims(v: Any, keep: bool = False) -> Any:
    """``v`` with every :class:`Dim` (also inside lists and tuples) turned into a plain ``int``. Each one is
    pinned (the value goes where its formula cannot follow), unless ``keep``: the caller keeps the formula."""
    if isinstance(v, Dim):
        if not keep:
            pin(v)
        return int(v)
    if isinstance(v, list):
        return [strip_dims(x, keep) for x in v]
    if isinstance(v, tuple):
        return tuple(strip_dims(x, keep) for x in v)
    return v


def dims_of(shape: tuple[int, ...], nid: int | None) -> list[int]:
    """The sizes of node ``nid``'s output as :class:`Dim` values (plain ints when ``nid`` is unknown)."""
    if nid is None:
        return list(shape)
    return [Dim(d, ("dim", nid, i)) for i, d in enumerate(shape)]
