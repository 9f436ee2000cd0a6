"""The built-in functions and constants of the .arch expression language.

Each is a plain Python function over compile-time values; the evaluator checks their arguments against
the budget (:mod:`.budget`) before calling them and their results after, so nothing here has to.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Callable

from .values import LayerSpec, fmt, inline, is_int, make_divisible, named, type_name

__all__ = ["BUILTINS", "CONSTANTS", "CHEAP_BUILTINS"]


def _str(v: Any) -> str:
    return fmt(v, 1 << 62) if isinstance(v, (bool, type(None), list, LayerSpec)) else str(v)


def _round(x: Any, ndigits: Any = None) -> Any:
    if ndigits is None:
        return round(x)
    if not is_int(ndigits):   # (its size is checked against Limits.max_int_bits before the call)
        raise TypeError(f"ndigits must be an integer, got {type_name(ndigits)}")
    return round(x, ndigits)


def _sum(items: Any, start: Any = 0) -> Any:
    if isinstance(start, list):   # concatenation, in linear time (Python's sum(..., []) is quadratic)
        if not isinstance(items, list) or not all(isinstance(x, list) for x in items):
            raise TypeError("sum(..., []) concatenates a list of lists")
        return list(itertools.chain(start, *items))
    return sum(items, start)


BUILTINS: dict[str, Callable[..., Any]] = {
    "min": min, "max": max, "abs": abs, "round": _round, "int": int, "float": float, "len": len,
    "sum": _sum, "range": lambda *a: list(range(*a)), "make_divisible": make_divisible,
    # EfficientNet's depth multiplier rounds repeat counts up: ceil(n * depth_mult)
    "ceil": math.ceil, "floor": math.floor,
    # computed labels, for module names built from loop indices (RegNet's 'block1-0'): named("b" + str(i), layer)
    "str": _str,
    "named": named,
    # a block expanded in place, without a module level of its own (shared network bodies)
    "inline": inline,
}
CONSTANTS = {"true": True, "false": False, "none": None}
# builtins that take O(1) whatever their argument: no walk is charged
CHEAP_BUILTINS = {BUILTINS[n] for n in ("len", "range", "named", "inline")}
