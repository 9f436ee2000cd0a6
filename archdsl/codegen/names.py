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

__all__ = ["NN_MODULE_ATTRS", "RESERVED_GLOBALS", "GenerationError", "py_identifier", "attr_ok", "check_child_name",
           "literal", "fmt_value", "camel"]


class GenerationError(ValueError):
    """The graph cannot be written as Python (a name that would break the module); never a crash mid-output."""


# Every attribute of a torch 2.x ``nn.Module`` instance: a child registered under one of these would shadow
# or be refused by it (``forward``, ``training``, ``state_dict``, ``_modules``, ...). Kept here so that code
# generation needs no torch import; tests compare it with ``dir(nn.Module())``.
NN_MODULE_ATTRS = frozenset("""
T_destination __annotations__ __call__ __class__ __delattr__ __dict__ __dir__ __doc__ __eq__ __format__ __ge__
__getattr__ __getattribute__ __getstate__ __gt__ __hash__ __init__ __init_subclass__ __le__ __lt__ __module__
__ne__ __new__ __reduce__ __reduce_ex__ __repr__ __setattr__ __setstate__ __sizeof__ __str__ __subclasshook__
__weakref__ _apply _backward_hooks _backward_pre_hooks _buffers _call_impl _compiled_call_impl _forward_hooks
_forward_hooks_always_called _forward_hooks_with_kwargs _forward_pre_hooks _forward_pre_hooks_with_kwargs
_get_backward_hooks _get_backward_pre_hooks _get_name _is_full_backward_hook _load_from_state_dict
_load_state_dict_post_hooks _load_state_dict_pre_hooks _maybe_warn_non_full_backward_hook _modules
_named_members _non_persistent_buffers_set _parameters _register_load_state_dict_pre_hook
_register_state_dict_hook _replicate_for_data_parallel _save_to_state_dict _slow_forward _state_dict_hooks
_state_dict_pre_hooks _version _wrapped_call_impl add_module apply bfloat16 buffers call_super_init children
compile cpu cuda double dump_patches eval extra_repr float forward get_buffer get_extra_state get_parameter
get_submodule half ipu load_state_dict modules mtia named_buffers named_children named_modules named_parameters
parameters register_backward_hook register_buffer register_forward_hook register_forward_pre_hook
register_full_backward_hook register_full_backward_pre_hook register_load_state_dict_post_hook
register_load_state_dict_pre_hook register_module register_parameter register_state_dict_post_hook
register_state_dict_pre_hook requires_grad_ set_extra_state set_submodule share_memory state_dict to to_empty
train training type xpu zero_grad
""".split())

# Attributes every generated class defines besides its children.
CLASS_ATTRS = frozenset({"input_shape", "reference", "memory_format", "arch_graph", "deploy_info"})

# Names the generated module defines or imports at top level, and builtins its code calls.
RESERVED_GLOBALS = frozenset({
    "torch", "nn", "F", "OrderedDict", "Optional", "self", "super", "getattr", "float", "int", "bool", "str",
    "tuple", "dict", "list", "print", "sum", "len", "range", "None", "True", "False", "object", "type",
    "_channel_shuffle", "_stochastic_depth", "_smoke_test", "x", "__name__", "__doc__",
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
    """A child module/parameter name ``nn.Module`` accepts (``add_module`` refuses the rest at run time)."""
    if not name or "." in name or name in NN_MODULE_ATTRS or name in CLASS_ATTRS:
        raise GenerationError(f"the name {name!r} of {where} cannot be a submodule name: it is empty, holds a dot "
                              "or is an attribute nn.Module already has; choose another label")


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
