"""What generated source may contain from a spec: checked identifiers and ``repr``-rendered literals.

The one rule of code generation: no spec value (label, name, string or number parameter, file name) is ever
pasted into the source as text. Identifiers pass :func:`py_identifier` (ASCII, not a keyword, not a name the
generated module or ``nn.Module`` already uses) or are emitted as string literals (``add_module('0', ...)``,
``getattr(self, '0')``); every value is rendered by :func:`literal`, which only knows numbers, booleans,
``None``, strings (via ``repr``) and tuples of those; free text (file names, parameter values) only appears
inside a string constant built by ``repr``. Names are ASCII-only on purpose: Python normalizes non-ASCII
identifiers (NFKC), so two different labels could name one attribute.
"""
from __future__ import annotations

import keyword
import math
import re
from typing import Any, Iterable

from ..lower.names import RESERVED_ATTRS, check_identifier

__all__ = ["NN_MODULE_ATTRS", "RESERVED_GLOBALS", "GenerationError", "py_identifier", "attr_ok", "check_child_name",
           "literal", "fmt_value", "camel"]


class GenerationError(ValueError):
    """The graph cannot be written as Python (a name that would break the module); never a crash mid-output."""


# Every attribute of an ``nn.Module``/``nn.Sequential`` and of the generated model (lowering's one rule,
# :func:`archdsl.lower.names.check_identifier`, refuses these labels at ``archc check`` time already).
NN_MODULE_ATTRS = RESERVED_ATTRS

# Attributes every generated class defines besides its children.
CLASS_ATTRS = frozenset({"input_shape", "reference", "memory_format", "arch_graph", "deploy_info"})

# Names the generated module defines or imports at top level, and builtins its code calls.
RESERVED_GLOBALS = frozenset({
    "torch", "nn", "F", "OrderedDict", "Optional", "self", "super", "getattr", "float", "int", "bool", "str",
    "tuple", "dict", "list", "print", "sum", "len", "range", "None", "True", "False", "object", "type",
    "_channel_shuffle", "_stochastic_depth", "_smoke_test", "_check_input", "_reset_linear", "ValueError", "x",
    "_size_max", "_size_min", "max", "min",
    "__name__", "__doc__",
})

_ASCII_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def py_identifier(name: str) -> bool:
    """``name`` can be written as a Python identifier exactly as it is (ASCII, not a keyword)."""
    return bool(_ASCII_IDENT.match(name)) and not keyword.iskeyword(name) and not keyword.issoftkeyword(name)


def attr_ok(name: str) -> bool:
    """``self.<name>`` is safe: an identifier that is no ``nn.Module``/class attribute and is not mangled."""
    return (py_identifier(name) and not name.startswith("__") and name not in NN_MODULE_ATTRS
            and name not in CLASS_ATTRS)


def check_child_name(name: str, where: str) -> None:
    """A child module/parameter name: the label rule of :func:`archdsl.lower.names.check_identifier`."""
    problem = check_identifier(name, "label") if name not in CLASS_ATTRS else None
    if problem is not None or name in CLASS_ATTRS:
        msg = problem.message if problem is not None else f"the label '{name}' is an attribute of the generated class"
        raise GenerationError(f"{where}: {msg} ({problem.hint if problem is not None else 'choose another label'})")


def camel(name: str, fallback: str) -> str:
    """A class name for ``name``: ASCII, CamelCase when written in snake_case; ``fallback`` if nothing is left."""
    if py_identifier(name) and name[:1].isupper():
        return name
    parts = re.split(r"[^A-Za-z0-9]+", name)
    out = "".join(p[:1].upper() + p[1:] for p in parts if p)
    if not out or not out[0].isalpha():
        out = fallback + out
    return out


def literal(v: Any) -> str:
    """Python source for a value, for any value a spec can produce; anything else is a code-generation bug."""
    if v is None or isinstance(v, bool):
        return repr(v)
    if isinstance(v, int):
        # huge integers: hex is exact and not subject to the int->str digit limit
        return repr(v) if abs(v) < 10 ** 60 else ("-" if v < 0 else "") + hex(abs(v))
    if isinstance(v, float):
        if math.isfinite(v):
            return repr(v)
        return "float('nan')" if math.isnan(v) else ("float('inf')" if v > 0 else "float('-inf')")
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, (tuple, list)):
        items = [literal(x) for x in v]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    raise TypeError(f"internal: no literal for a {type(v).__name__}")


def fmt_value(v: Any, depth: int = 0) -> str:
    """Spec-like text of a parameter value for documentation (deterministic: no object addresses)."""
    if v is None or isinstance(v, bool):
        return {None: "none", True: "true", False: "false"}[v]
    if isinstance(v, (int, float)):
        return literal(v)
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, (list, tuple)) and depth < 4:
        shown = [fmt_value(x, depth + 1) for x in list(v)[:16]]
        return "[" + ", ".join(shown) + (", ..." if len(v) > 16 else "") + "]"
    return f"<{type(v).__name__}>"


def unique(base: str, taken: Iterable[str] | set[str]) -> str:
    """``base``, or ``base_2``, ``base_3``, ... the first not in ``taken``."""
    taken = taken if isinstance(taken, set) else set(taken)
    if base not in taken:
        return base
    k = 2
    while f"{base}_{k}" in taken:
        k += 1
    return f"{base}_{k}"
