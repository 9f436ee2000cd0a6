"""Values and names from an imported model as nodes of :mod:`archdsl.lang.ast` (for :mod:`.emit`).

Values from the model become nodes only through :func:`lit` and names only through :func:`ident`: nothing from
the model reaches the spec except numbers, booleans, strings (written by the printer's ``string_literal``,
which refuses what it cannot quote) and validated identifiers. Every node gets one synthetic span: the AST is
printed, never diagnosed.
"""
from __future__ import annotations

import math
import re
from typing import Any, Union

from ..lang import ast as A
from ..lang.parser import KEYWORDS
from ..lang.printer import label_text, print_expr, string_literal
from ..ops import OPS
from ..source import Source, Span
from .blocks import Expr, Layer

__all__ = ["PATH", "SPAN", "Item", "ident", "name_node", "num", "lit", "callish", "kw", "named", "path_label",
           "equal", "value_name", "width"]

# the grammar's COMBINATOR words: `add(a, b)` is a combinator call, not a call of a name
COMBINATOR_CALLS = frozenset({"add", "concat", "mul", "stack"})
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# the names the emitter gives values (t3, t3_1) and renamed parameters (p3)
MADE_NAME = re.compile(r"t\d+(_\d+)?|p\d+")
#: the file name of the synthetic spans
PATH = "<import>"
#: the one span every node gets
SPAN = Span(Source("", PATH), 1, 1)

#: a labelled item of a pipeline: (label or None, expression)
Item = tuple[Union[str, None], A.Expr]


def ident(name: str) -> str:
    """``name`` when the language reads it as a name (ASCII, not a keyword); else ValueError."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or name in KEYWORDS:
        raise ValueError(f"{name!r} cannot be written as a name in a spec")
    return name


def name_node(text: str) -> A.Name:
    """The name ``text`` as an expression node (checked by :func:`ident`)."""
    return A.Name(SPAN, ident(text))


def num(v: int | float) -> A.Expr:
    """A number as an expression node."""
    # a negative number is written (and parsed back) as a unary minus on its magnitude
    if v < 0 or (v == 0 and math.copysign(1.0, v) < 0):
        return A.UnaryOp(SPAN, "-", A.Num(SPAN, -v))
    return A.Num(SPAN, v)


def lit(v: Any) -> A.Expr:
    """A Python value (or a template's parameter expression) as an expression node; ValueError for a value
    the language cannot write."""
    if isinstance(v, Expr):
        if v.div != 1:
            return A.BinOp(SPAN, "//", name_node(v.name), A.Num(SPAN, int(v.div)), SPAN)
        if v.factor != 1:
            return A.BinOp(SPAN, "*", name_node(v.name), A.Num(SPAN, int(v.factor)), SPAN)
        return name_node(v.name)
    if isinstance(v, Layer):
        return name_node(str(v))
    if v is None:
        return A.Name(SPAN, "none")
    if isinstance(v, bool):
        return A.Name(SPAN, "true" if v else "false")
    if isinstance(v, int):
        return num(int(v))
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"a non-finite number {v} cannot be written in a spec")
        return num(float(v))
    if isinstance(v, str):
        string_literal(v)       # raises ValueError for a line break or both quote characters
        return A.Str(SPAN, v)
    if isinstance(v, (list, tuple)):
        return A.ListExpr(SPAN, [lit(x) for x in v])
    raise ValueError(f"a value of type {type(v).__name__} cannot be written in a spec")


def callish(op: str, args: list[A.Expr], kwargs: list[A.Kwarg]) -> A.Expr:
    """``op``, or ``op(args)`` when it has arguments."""
    if op in COMBINATOR_CALLS:
        return A.CombinatorCall(SPAN, op, args, kwargs)
    return A.Call(SPAN, name_node(op), args, kwargs) if args or kwargs else name_node(op)


def kw(name: str, v: Any) -> A.Kwarg:
    """``name=v`` as a keyword argument node."""
    return A.Kwarg(SPAN, ident(name), lit(v))


def named(label: str, e: A.Expr) -> A.Expr:
    """``named("label", e)``: a label that is no module path (RegNet's block1-0)."""
    return A.Call(SPAN, A.Name(SPAN, "named"), [lit(label), e], [])


def path_label(label: str) -> bool:
    """Whether ``label`` is a module path whose parts are names or numbers (it can be a label)."""
    return all(NAME_RE.fullmatch(p) or p.isdigit() for p in label.split("."))


def equal(a: Any, b: Any) -> bool:
    """Whether two argument values are the same value (True is not 1; 1 is 1.0)."""
    return type(a) is type(b) and a == b if not isinstance(a, (int, float)) or isinstance(a, bool) \
        else (not isinstance(b, bool) and isinstance(b, (int, float)) and a == b)


def value_name(label: str) -> bool:
    """Whether a parameter's key can name its value: an identifier that is no keyword, no op it would shadow,
    not ``x`` (the input) and not of the form of the names the printer makes (t3, t3_1, p3)."""
    return (bool(NAME_RE.fullmatch(label)) and label not in KEYWORDS and label not in OPS and label != "x"
            and not MADE_NAME.fullmatch(label))


def width(items: list[Item], name: str | None = None) -> int:
    """The printed width of ``[name = ]items`` on one line (without its indentation)."""
    text = " -> ".join((label_text(lb) + ": " if lb is not None else "") + print_expr(e) for lb, e in items)
    return len(text) + (len(name) + 3 if name is not None else 0)
