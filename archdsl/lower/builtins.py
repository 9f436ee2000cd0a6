"""The built-in functions and constants of the .arch expression language.

Each is a plain Python function over compile-time values; the evaluator checks their arguments against
the budget (:mod:`.budget`) before calling them and their results after, so nothing here has to.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Callable

from .dims import size_abs, size_int, size_max, size_min
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


def _num(name: str, x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"{name}(...) takes a number, got {type_name(x)}")
    return x


def _log(x: Any, base: Any = None) -> float:
    # math.log's own 'math domain error' says nothing about which value: name the rule instead
    if _num("log", x) <= 0 or (base is not None and (_num("log", base) <= 0 or base == 1)):
        raise ValueError(f"log needs x > 0 (and a base > 0, not 1); got {x}" + ("" if base is None else f", base {base}"))
    return math.log(x) if base is None else math.log(x, base)


def _log2(x: Any) -> float:
    if _num("log2", x) <= 0:
        raise ValueError(f"log2 needs x > 0, got {x}")
    return math.log2(x)


def _sqrt(x: Any) -> float:
    if _num("sqrt", x) < 0:
        raise ValueError(f"sqrt needs x >= 0, got {x}")
    return math.sqrt(x)


def _exp(x: Any) -> float:
    return math.exp(_num("exp", x))   # an OverflowError ('math range error') is reported at the call


def _zip(*lists: Any) -> list[list[Any]]:
    if not all(isinstance(x, list) for x in lists):
        raise TypeError("zip(...) takes lists")
    return [list(t) for t in zip(*lists)]


def _enumerate(items: Any, start: Any = 0) -> list[list[Any]]:
    if not isinstance(items, list) or not is_int(start):
        raise TypeError("enumerate(...) takes a list (and an integer start)")
    return [[start + i, x] for i, x in enumerate(items)]


def _sum(items: Any, start: Any = 0) -> Any:
    if isinstance(start, list):   # concatenation, in linear time (Python's sum(..., []) is quadratic)
        if not isinstance(items, list) or not all(isinstance(x, list) for x in items):
            raise TypeError("sum(..., []) concatenates a list of lists")
        return list(itertools.chain(start, *items))
    return sum(items, start)


BUILTINS: dict[str, Callable[..., Any]] = {
    # min, max, abs and int of a size read from a tensor stay symbolic (archdsl.lower.dims)
    "min": size_min, "max": size_max, "abs": size_abs, "round": _round, "int": size_int, "float": float, "len": len,
    "sum": _sum, "range": lambda *a: list(range(*a)), "make_divisible": make_divisible,
    # EfficientNet's depth multiplier rounds repeat counts up: ceil(n * depth_mult)
    "ceil": math.ceil, "floor": math.floor,
    # RegNet's widths are quantized on a log scale: round(log(w / w0, wm)); also tensor ops (sqrt, exp, log):
    # called with numbers they are these functions, applied to a tensor they are element-wise layers
    # pairs for 'for a, b in ...' unpacking
    "zip": _zip, "enumerate": _enumerate,
    "log": _log, "log2": _log2, "sqrt": _sqrt, "exp": _exp,
    # computed labels, for module names built from loop indices (RegNet's 'block1-0'): named("b" + str(i), layer)
    "str": _str,
    "named": named,
    # a block expanded in place, without a module level of its own (shared network bodies)
    "inline": inline,
}
CONSTANTS = {"true": True, "false": False, "none": None}
# builtins that take O(1) whatever their argument: no walk is charged
CHEAP_BUILTINS = {BUILTINS[n] for n in ("len", "range", "named", "inline")}
