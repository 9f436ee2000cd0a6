"""Re-rolling the items of an imported list: runs of equal items as ``item * n``, runs of calls of one block
whose numeric arguments step linearly with the position as a comprehension over the index.

A model built by a loop — ``for k in range(n): Block(dim, sd * (first + k) / (total - 1))`` (torchvision's
ConvNeXt, EfficientNet and Swin stages; timm's ``torch.linspace(0, drop_path_rate, depth)``) — traces into one
call per block with the loop's values as literals. :func:`reroll` writes such a run back as the loop:
``[CNBlock(96, 0.1 * (i + 3) / 17) for i in range(3)]``. An argument equal in every item stays as written; a
numeric one becomes a formula of the index only when the formula, evaluated for every index as the language
evaluates it, gives every stored value (bit for bit where a short formula does, else within 1e-7 relative:
timm's schedule was rounded to float32); otherwise the run stays one item per call. A comprehension inside a
list is spliced into it and its items are numbered by position, so the module paths (and state_dict keys)
are those of the items written one by one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Union

from ..lang import ast as A
from ..lang.printer import print_expr
from .astlit import SPAN, num

__all__ = ["reroll", "formula", "MIN_RUN"]

#: the fewest items written as a comprehension (any two numbers step linearly: two stay as they are)
MIN_RUN = 3
#: how far a formula's value may be from a stored float (relative): the float32 rounding of a schedule
REL_TOL = 1e-7
# the largest divisor tried in ``a * (i + b) / d`` (the number of blocks of a network, less one)
_MAX_DIV = 512
# index names tried for the comprehension's variable (one the item's expression does not read)
_VARS = ("i", "j", "k", "n_", "idx")

Number = Union[int, float]


@dataclass
class _Cand:
    """One formula for a run's values: its AST (of the index name), and what ranks it."""

    expr: Callable[[str], A.Expr]
    exact: bool
    cost: int


def _number(e: A.Expr) -> Number | None:
    """The value of a numeric literal node (``-x`` included); None for anything else."""
    if isinstance(e, A.Num) and not isinstance(e.value, bool):
        return e.value
    if isinstance(e, A.UnaryOp) and e.op == "-" and isinstance(e.operand, A.Num):
        return -e.operand.value
    return None


def _eval(e: A.Expr, var: str, i: int) -> Number:
    """A formula :func:`formula` built, evaluated as the language evaluates it (Python arithmetic)."""
    if isinstance(e, A.Num):
        return e.value
    if isinstance(e, A.Name):
        assert e.id == var
        return i
    if isinstance(e, A.UnaryOp):
        return -_eval(e.operand, var, i)
    assert isinstance(e, A.BinOp), e
    a, b = _eval(e.left, var, i), _eval(e.right, var, i)
    return {"+": a + b, "-": a - b, "*": a * b}[e.op] if e.op != "/" else a / b


def _bin(op: str, a: A.Expr, b: A.Expr) -> A.Expr:
    return A.BinOp(SPAN, op, a, b, SPAN)


def _plus(var: str, b: int) -> A.Expr:
    """``var + b`` (``var - |b|``; ``var`` for 0)."""
    v = A.Name(SPAN, var)
    return v if b == 0 else _bin("+" if b > 0 else "-", v, A.Num(SPAN, abs(b)))


def _short(x: float, digits: int) -> float:
    return float(f"{x:.{digits}g}")


def _matches(e: A.Expr, values: list[Number]) -> tuple[bool, bool]:
    """(within tolerance, bit-exact) of the formula ``e`` (in ``i``) against every value."""
    exact = True
    for i, want in enumerate(values):
        got = _eval(e, "i", i)
        if type(got) is not type(want):
            return False, False
        if got != want:
            exact = False
            if isinstance(want, int) or not math.isfinite(got) or abs(got - want) > REL_TOL * abs(want):
                return False, False
    return True, exact


def _int_formula(values: list[int]) -> Callable[[str], A.Expr] | None:
    """``c0 + c1 * i`` (simplified) when integers step by one constant; None otherwise."""
    c0, c1 = values[0], values[1] - values[0]
    if c1 == 0 or any(v != c0 + c1 * k for k, v in enumerate(values)):
        return None

    def make(var: str) -> A.Expr:
        if c0 % c1 == 0:                            # 2 * (i + 1), i + 3
            inner = _plus(var, c0 // c1)
            if c1 == 1:
                return inner
            return _bin("*", num(c1), inner) if c0 else _bin("*", num(c1), A.Name(SPAN, var))
        return _bin("+", num(c0), _bin("*", num(c1), A.Name(SPAN, var)) if c1 != 1 else A.Name(SPAN, var))
    return make


def _float_candidates(values: list[float]) -> list[_Cand]:
    """Formulas ``a * (i + b) / d`` (a short decimal, b and d integers: a linear schedule over a whole network,
    of which this run is blocks b.. of d + 1) and ``c0 + c1 * i`` (short decimals) that reproduce ``values``."""
    n = len(values)
    slope = (values[-1] - values[0]) / (n - 1)
    out: list[_Cand] = []
    if slope == 0 or not all(math.isfinite(v) for v in values):
        return out
    for d in range(1, _MAX_DIV + 1):
        for digits in range(1, 7):
            a = _short(slope * d, digits)
            if a == 0:
                continue
            b_real = values[0] * d / a
            b = round(b_real)
            if abs(b - b_real) > 1e-3:
                continue

            def make(var: str, a: float = a, b: int = b, d: int = d) -> A.Expr:
                e = _bin("*", num(a), _plus(var, b))
                return e if d == 1 else _bin("/", e, A.Num(SPAN, d))
            ok, exact = _matches(make("i"), values)
            if ok:
                cost = digits + (len(str(d)) if d > 1 else 0) + (len(str(abs(b))) if b else 0)
                out.append(_Cand(make, exact, cost))
            if ok and exact:
                break
    for digits in range(1, 8):
        c0, c1 = _short(values[0], digits), _short(slope, digits)

        def make_affine(var: str, c0: float = c0, c1: float = c1) -> A.Expr:
            step = _bin("*", num(c1), A.Name(SPAN, var))
            return step if c0 == 0 else _bin("+", num(c0), step)
        ok, exact = _matches(make_affine("i"), values)
        if ok:
            out.append(_Cand(make_affine, exact, 2 * digits + 1))
            break
    return out


def formula(values: list[Number]) -> Callable[[str], A.Expr] | None:
    """The simplest formula of the index that gives ``values`` (item ``k`` for index ``k``): bit-exact ones
    first, then the shortest; None when the values do not step linearly or no short formula reproduces them."""
    if len(values) < 2 or any(isinstance(v, bool) for v in values):
        return None
    if all(type(v) is int for v in values):
        return _int_formula([int(v) for v in values])
    if not all(type(v) is float for v in values):
        return None
    fl = [float(v) for v in values]
    slope = (fl[-1] - fl[0]) / (len(fl) - 1)
    # a quick refusal before the search: the values must lie on their line up to the float32 rounding
    if not all(math.isfinite(v) for v in fl) or any(
            abs(v - (fl[0] + slope * k)) > 1e-6 * max(abs(x) for x in fl) for k, v in enumerate(fl)):
        return None
    cands = _float_candidates(fl)
    if not cands:
        return None
    return min(cands, key=lambda c: (not c.exact, c.cost)).expr


def _shape(e: A.Expr) -> tuple[str, int, tuple[str, ...]] | None:
    """What items of one run share: the callee's text, the number of positional arguments, the keywords."""
    if not isinstance(e, A.Call) or not isinstance(e.func, A.Name) or e.func.id == "named":
        return None
    return e.func.id, len(e.args), tuple(k.name for k in e.kwargs)


def _args(e: A.Call) -> list[A.Expr]:
    return [*e.args, *(k.value for k in e.kwargs)]


def _names(e: A.Expr) -> set[str]:
    """Every name an expression reads (so the index variable shadows none)."""
    out: set[str] = set()
    stack: list[object] = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, A.Name):
            out.add(x.id)
        elif isinstance(x, list):
            stack.extend(x)
        elif isinstance(x, A.Node):
            stack.extend(v for v in vars(x).values() if isinstance(v, (A.Node, list)))
    return out


def _comprehension(run: list[A.Call]) -> A.Expr | None:
    """The run as ``[Call(..., f(i), ...) for i in range(n)]``; None when an argument differs between items
    and is not a number stepping linearly with the position."""
    cols = list(zip(*(_args(c) for c in run)))
    makers: dict[int, Callable[[str], A.Expr]] = {}
    for k, col in enumerate(cols):
        if len({print_expr(x) for x in col}) == 1:
            continue
        values = [_number(x) for x in col]
        if any(v is None for v in values):
            return None
        f = formula([v for v in values if v is not None])
        if f is None:
            return None
        makers[k] = f
    if not makers:
        return None
    first = run[0]
    taken = _names(first)
    var = next(v for v in _VARS if v not in taken)
    args = [makers[k](var) if k in makers else a for k, a in enumerate(_args(first))]
    npos = len(first.args)
    elt = A.Call(SPAN, first.func, args[:npos],
                 [A.Kwarg(SPAN, kw.name, a) for kw, a in zip(first.kwargs, args[npos:])])
    loop = A.CompFor(SPAN, var, [], A.Call(SPAN, A.Name(SPAN, "range"), [A.Num(SPAN, len(run))], []), None)
    return A.ListComp(SPAN, elt, [loop])


def reroll(items: list[tuple[A.Expr, bool]]) -> list[A.Expr]:
    """The items of a list (each with whether it is named, which keeps it alone), re-rolled: a run of equal
    unnamed items is ``item * n``; a run of at least :data:`MIN_RUN` unnamed calls of one callee whose differing
    arguments step linearly is a comprehension (spliced into the list, numbered by position). Each run is the
    longest that starts at its first item."""
    out: list[A.Expr] = []
    texts = [print_expr(e) for e, _ in items]
    i = 0
    while i < len(items):
        e, named = items[i]
        j = i + 1
        while j < len(items) and not named and not items[j][1] and texts[j] == texts[i]:
            j += 1
        if j - i > 1:
            out.append(A.BinOp(SPAN, "*", e, A.Num(SPAN, j - i), SPAN))
            i = j
            continue
        best: tuple[int, A.Expr] | None = None
        shape = None if named else _shape(e)
        if shape is not None:
            k = i + 1
            while k < len(items) and not items[k][1] and _shape(items[k][0]) == shape:
                k += 1
            # the longest run from i that re-rolls (a shorter one when the tail breaks the progression)
            for end in range(k, i + MIN_RUN - 1, -1):
                calls = [items[m][0] for m in range(i, end)]
                comp = _comprehension([c for c in calls if isinstance(c, A.Call)])
                if comp is not None:
                    best = (end, comp)
                    break
        if best is None:
            out.append(e)
            i += 1
            continue
        out.append(best[1])
        i = best[0]
    return out
