"""The evaluator's budget: steps, and the size of every value it makes or works through.

``Limits.max_steps`` alone bounds how many expressions are evaluated, not what one evaluation costs:
squaring an integer doubles its bits, ``s + s`` doubles a string, and ``str``/``==``/``sum`` on a list
built with ``*`` walk every element of every nested list. So the budget also

- measures values: a list by its items counted through nested lists (shared sublists once per use, as
  ``str`` would walk them; memoised per list, so measuring costs about what building cost), a string by
  its characters, an integer by its bits;
- refuses, before building it, an integer over ``Limits.max_int_bits``, a string over
  ``Limits.max_value_size`` characters, a list over ``Limits.max_repeat`` items, and a walk (``str``,
  ``==``, ``sum``, ``min``/``max``) over a value larger than ``Limits.max_value_size``;
- charges every walk and every list it builds to ``max_steps``, so many cheap-looking operations on big
  values add up and stop too.

Each refusal is a located error naming the limit and the ``--limit`` override.
"""
from __future__ import annotations

import math
from typing import Any

from ..errors import ArchError, Diagnostic
from ..limits import Limits
from ..source import Span
from .values import LayerSpec, non_finite, type_name

__all__ = ["Budget", "limit_hint", "WALK_STEPS"]

WALK_STEPS = 4   # steps charged per item walked by str/==/sum/min/max (measured: ~4x an expression step)


def limit_hint(name: str, what: str = "") -> str:
    """The hint of every budget error: which limit, and how to raise it."""
    return (what + "; " if what else "") + f"the limit is Limits.{name} (raise it with --limit {name}=N)"


class Budget:
    """Counts evaluation steps and measures values against :class:`Limits`."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.steps = 0
        # id -> (the list itself, its size): the reference keeps the id from being reused while memoised
        self._sizes: dict[int, tuple[Any, int]] = {}

    # ------------------------------------------------------------------ steps
    def charge(self, n: int, span: Span | None) -> None:
        """Count ``n`` steps of work; past ``max_steps`` the whole expansion stops (raises)."""
        self.steps += n
        if self.steps > self.limits.max_steps:
            raise ArchError(Diagnostic(
                f"the spec takes more than {self.limits.max_steps:,} evaluation steps to expand", span,
                hint=limit_hint("max_steps", "look for large range(...) loops, nested comprehensions or work on "
                                "large values")))

    # ------------------------------------------------------------------ sizes
    def size(self, v: Any) -> int:
        """The cost of walking ``v``: list items through nested lists, string characters, integer words."""
        if isinstance(v, list):
            hit = self._sizes.get(id(v))
            if hit is not None and hit[0] is v:
                return hit[1]
            n = 1
            for x in v:
                n += self.size(x)
            self._sizes[id(v)] = (v, n)
            return n
        if isinstance(v, str):
            return 1 + len(v)
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, LayerSpec) and v.called:
                return 1 + len(v.name) + sum(self.size(a) for a, _ in v.args) + \
                    sum(1 + len(k) + self.size(a) for k, (a, _) in v.kwargs.items())
            return 1
        return 1 + v.bit_length() // 64

    def walk(self, what: str, values: list[Any], span: Span | None) -> str | None:
        """Allow (and charge) a walk over ``values``; the reason it is refused otherwise."""
        cost = 0
        for v in values:
            cost += self.size(v)
            if cost > self.limits.max_value_size:
                return (f"{what} would work through more than {self.limits.max_value_size:,} items "
                        f"(list items counted through nested lists, and string characters)")
        # a walk step (formatting or comparing one item in Python) costs several evaluation steps of time
        self.charge(cost * WALK_STEPS, span)
        return None

    def problem(self, v: Any) -> tuple[str, str] | None:
        """(message, hint) when the scalar ``v`` is out of bounds (an integer too wide, a string too long,
        a float not finite); lists are bounded where they are built."""
        if isinstance(v, bool):
            return None
        if isinstance(v, int):
            if v.bit_length() > self.limits.max_int_bits:
                return (f"the integer has {v.bit_length():,} bits, more than the limit "
                        f"{self.limits.max_int_bits:,}", limit_hint("max_int_bits"))
        elif isinstance(v, float):
            if not math.isfinite(v):
                return (f"the value is not a finite number ({v})",
                        "inf and nan cannot be used in a spec; check divisions and large powers")
        elif isinstance(v, str):
            if len(v) > self.limits.max_value_size:
                return (f"the string has {len(v):,} characters, more than the limit "
                        f"{self.limits.max_value_size:,}", limit_hint("max_value_size"))
        return None

    def int_product_too_wide(self, a: int, b: int) -> bool:
        """Whether ``a * b`` would exceed ``max_int_bits`` (checked before multiplying)."""
        return a.bit_length() + b.bit_length() > self.limits.max_int_bits + 1

    def list_too_long(self, n: int) -> bool:
        return n > self.limits.max_repeat

    def range_len(self, args: list[Any]) -> int | None:
        """The length of ``range(*args)`` computed without building it (None: range itself will complain)."""
        if not args or len(args) > 3 or not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
            return None
        start, stop, step = (0, args[0], 1) if len(args) == 1 else (args[0], args[1], args[2] if len(args) == 3 else 1)
        if step == 0:
            return None
        n = (stop - start + step - (1 if step > 0 else -1)) // step
        return max(0, n)

    def external_problem(self, name: str, v: Any, span: Span | None) -> tuple[str, str] | None:
        """(message, hint) when a parameter value from outside the spec (``--set``, the API) is not spec data
        (numbers, strings, true/false/none, lists of them) or is out of bounds; None when it is fine."""
        bad = non_finite(v)
        if bad is not None:
            return (f"parameter '{name}': the value is not a finite number ({bad})",
                    "inf and nan cannot be used in a spec")
        stack = [v]
        while stack:
            x = stack.pop()
            if isinstance(x, list):
                if self.list_too_long(len(x)):
                    return (f"parameter '{name}': a list of {len(x):,} items, more than the limit "
                            f"{self.limits.max_repeat:,}", limit_hint("max_repeat"))
                stack.extend(x)
            elif not isinstance(x, (int, float, str, type(None))):
                return (f"parameter '{name}': {type_name(x)} is not a spec value",
                        "parameters are numbers, strings, true/false/none and lists of them")
            else:
                p = self.problem(x)
                if p is not None:
                    return f"parameter '{name}': {p[0]}", p[1]
        refused = self.walk(f"parameter '{name}'", [v], span)
        return (refused, limit_hint("max_value_size")) if refused else None
