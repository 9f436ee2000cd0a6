"""Re-rolling the items of an imported list: runs of equal items as ``item * n``, runs of calls of one block
whose numeric arguments step linearly with the position as a comprehension over the index.

A model built by a loop — ``for k in range(n): Block(dim, sd * (first + k) / (total - 1))`` (torchvision's
ConvNeXt, EfficientNet and Swin stages; timm's ``torch.linspace(0, drop_path_rate, depth)``) — traces into one
call per block with the loop's values as literals. :func:`reroll` writes such a run back as the loop:
``[CNBlock(96, 0.1 * (i + 3) / 17) for i in range(3)]``. An argument equal in every item stays as written; a
numeric one becomes a formula of the index only when the formula, evaluated for every index as the language
evaluates it, gives every stored value bit for bit (or, for a value torch rounded to float32 — timm's
``linspace`` schedule — within 1e-7 relative); otherwise the run stays one item per call. A comprehension inside a
list is spliced into it and its items are numbered by position, so the module paths (and state_dict keys)
are those of the items written one by one.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Callable, Union

from ..lang import ast as A
from ..lang.printer import print_expr
from .astlit import SPAN, num

__all__ = ["reroll", "reroll_lines", "formula", "MIN_RUN"]

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
    """One formula for a run's values: its AST (of the index name), and what ranks it (bit-exact first, then
    the shortest text)."""

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


def _is_float32(x: float) -> bool:
    """Whether ``x`` is a float32 value (what ``tensor.item()`` of a float32 tensor gives)."""
    try:
        return struct.unpack("f", struct.pack("f", x))[0] == x
    except OverflowError:
        return False


def _matches(e: A.Expr, values: list[Number]) -> tuple[bool, bool]:
    """(within tolerance, bit-exact) of the formula ``e`` (in ``i``) against every value."""
    exact = True
    for i, want in enumerate(values):
        got = _eval(e, "i", i)
        if type(got) is not type(want):
            return False, False
        if got != want:
            exact = False
            # only a value torch rounded to float32 may be off (by less than that rounding); a float64 one
            # (torchvision's schedules are Python floats) is matched bit for bit
            if isinstance(want, int) or not _is_float32(want) or not math.isfinite(got) \
                    or abs(got - want) > REL_TOL * abs(want):
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
                out.append(_Cand(make, exact, len(print_expr(make("i")))))
            if ok and exact:
                break
    for digits in range(1, 8):
        c0, c1 = _short(values[0], digits), _short(slope, digits)

        def make_affine(var: str, c0: float = c0, c1: float = c1) -> A.Expr:
            step = _bin("*", num(c1), A.Name(SPAN, var))
            return step if c0 == 0 else _bin("+", num(c0), step)
        ok, exact = _matches(make_affine("i"), values)
        if ok:
            out.append(_Cand(make_affine, exact, len(print_expr(make_affine("i")))))
            break
    return out


def formula(values: list[Number], exact: bool = False) -> Callable[[str], A.Expr] | None:
    """The simplest formula of the index that gives ``values`` (item ``k`` for index ``k``): bit-exact ones
    first, then the shortest; None when the values do not step linearly or no short formula reproduces them
    (with ``exact``, none that is not bit-exact)."""
    if len(values) < 2 or any(isinstance(v, bool) for v in values):
        return None
    if all(type(v) is int for v in values):
        f = _int_formula([int(v) for v in values])
        return f if f is not None and _matches(f("i"), values) == (True, True) else None
    if not all(type(v) is float for v in values):
        return None
    fl = [float(v) for v in values]
    slope = (fl[-1] - fl[0]) / (len(fl) - 1)
    # a quick refusal before the search: the values must lie on their line up to the float32 rounding
    if not all(math.isfinite(v) for v in fl) or any(
            abs(v - (fl[0] + slope * k)) > 1e-6 * max(abs(x) for x in fl) for k, v in enumerate(fl)):
        return None
    cands = [c for c in _float_candidates(fl) if c.exact or not exact]
    if not cands:
        return None
    return min(cands, key=lambda c: (not c.exact, c.cost)).expr


#: a callee's default for a keyword it was called without (``Default(callee, keyword)``), None if none
Default = Callable[[str, str], Union[A.Expr, None]]


def _shape(e: A.Expr) -> tuple[str, int] | None:
    """What items of one run share: the callee's name and the number of positional arguments."""
    if not isinstance(e, A.Call) or not isinstance(e.func, A.Name) or e.func.id == "named":
        return None
    return e.func.id, len(e.args)


def _columns(run: list[A.Call], default: Default) -> tuple[list[str], list[list[A.Expr]]] | None:
    """The keywords of a run (in order of first use) and each item's arguments, positional then keywords, a
    keyword an item leaves out filled with the callee's default; None where a default is unknown."""
    names: list[str] = []
    for c in run:
        names += [k.name for k in c.kwargs if k.name not in names]
    rows: list[list[A.Expr]] = []
    for c in run:
        given = {k.name: k.value for k in c.kwargs}
        row = list(c.args)
        for n in names:
            v = given[n] if n in given else default(c.func.id, n) if isinstance(c.func, A.Name) else None
            if v is None:
                return None
            row.append(v)
        rows.append(row)
    return names, rows


def _alternating(col: list[A.Expr], var: str) -> A.Expr | None:
    """``a if i % 2 == 0 else b`` for a column alternating between two values (Swin's shifted windows)."""
    texts = [print_expr(x) for x in col]
    if len(col) < 3 or texts[0] == texts[1] or any(t != texts[k % 2] for k, t in enumerate(texts)):
        return None
    cond = A.Compare(SPAN, _bin("%", A.Name(SPAN, var), A.Num(SPAN, 2)), [("==", A.Num(SPAN, 0))])
    return A.Ternary(SPAN, col[0], cond, col[1])


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


def _comprehension(run: list[A.Call], default: Default, exact: bool = False) -> A.Expr | None:
    """The run as ``[Call(..., f(i), ...) for i in range(n)]``; None when an argument differs between items
    and is neither a number stepping linearly with the position nor alternating between two values."""
    cols_of = _columns(run, default)
    if cols_of is None:
        return None
    names, rows = cols_of
    cols = [list(c) for c in zip(*rows)]
    taken: set[str] = set()
    for c in run:
        taken |= _names(c)
    var = next((v for v in _VARS if v not in taken), None)
    if var is None:
        return None
    args: list[A.Expr] = []
    varies = False
    for col in cols:
        if len({print_expr(x) for x in col}) == 1:
            args.append(col[0])
            continue
        varies = True
        values = [_number(x) for x in col]
        f = formula([v for v in values if v is not None], exact) if all(v is not None for v in values) else None
        alt = _alternating(col, var) if f is None else None
        if f is not None:
            args.append(f(var))
        elif alt is not None:
            args.append(alt)
        else:
            return None
    if not varies:
        return None
    npos = len(run[0].args)
    elt = A.Call(SPAN, run[0].func, args[:npos], [A.Kwarg(SPAN, n, a) for n, a in zip(names, args[npos:])])
    loop = A.CompFor(SPAN, var, [], A.Call(SPAN, A.Name(SPAN, "range"), [A.Num(SPAN, len(run))], []), None)
    return A.ListComp(SPAN, elt, [loop])


def reroll(items: list[tuple[A.Expr, bool]], default: Default | None = None,
           exact: Callable[[str], bool] | None = None) -> list[A.Expr]:
    """The items of a list (each with whether it is named, which keeps it alone), re-rolled: a run of equal
    unnamed items is ``item * n``; a run of at least :data:`MIN_RUN` unnamed calls of one callee whose differing
    arguments step linearly (or alternate between two values) is a comprehension (spliced into the list, numbered by position). Each run is the
    longest that starts at its first item. ``default`` gives a callee's default for a keyword some items
    leave out (without it, such a run is not re-rolled). ``exact(callee)``: the callee takes only bit-exact
    formulas (a plugin op: its arguments rebuild the user's class and key the shapes traced at import)."""
    default = default or (lambda callee, kw: None)
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
                comp = _comprehension([c for c in calls if isinstance(c, A.Call)], default,
                                      exact is not None and exact(shape[0]))
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


def reroll_lines(e: A.Expr | None) -> list[A.Expr] | None:
    """The lines of a group body for a re-rolled list too wide for one line: its items one a line (an
    unlabelled comprehension or ``item * n`` line is spliced into the body and numbered by position, as in the
    list). None when nothing was re-rolled or an item is named (the body's own printing labels those)."""
    if isinstance(e, A.ListComp):
        return [e]
    if not isinstance(e, A.ListExpr) or not any(isinstance(x, (A.ListComp, A.BinOp)) for x in e.items):
        return None
    if any(isinstance(x, A.Call) and isinstance(x.func, A.Name) and x.func.id == "named" for x in e.items):
        return None
    return list(e.items)
