"""The index of the PyTorch spellings of the registry's ops (``OpDef.torch_forms``, the multi-output forms):
(kind, target) -> the ops and forms that write it, and the names a traced function is looked up by."""
from __future__ import annotations

from typing import Any

from ..ops import MULTI_OUTPUT_FORMS, OPS
from ..ops.core import TorchForm

__all__ = ["form_index", "fn_names"]

_INDEX: dict[tuple[str, str], list[tuple[str, TorchForm]]] = {}


def form_index() -> dict[tuple[str, str], list[tuple[str, TorchForm]]]:
    """(kind, target) -> [(op, form)] over the registry (built on first use, so ops registered by plugins
    or later modules are seen)."""
    _INDEX.clear()
    seen: set[int] = set()
    for d in OPS.values():
        if id(d) in seen:
            continue
        seen.add(id(d))
        for f in d.torch_forms:
            _INDEX.setdefault((f.kind, f.target), []).append((d.name, f))
    for name, forms in MULTI_OUTPUT_FORMS.items():
        for f in forms:
            _INDEX.setdefault((f.kind, f.target), []).append((name, f))
    return _INDEX


_PUBLIC = ("torch.nn.functional", "torch", "torch.linalg", "operator")


def fn_names(fn: Any) -> list[str]:
    """The names a function is looked up by: the public modules that hold this very object (F.gelu is
    ``torch._C._nn.gelu`` underneath), then its own module."""
    import importlib
    name = getattr(fn, "__name__", "")
    out = []
    for m in _PUBLIC:
        if getattr(importlib.import_module(m), name, None) is fn:
            out.append(f"{m}.{name}")
    own = _fn_name(fn)
    return out + ([own] if own not in out else [])


def _fn_name(fn: Any) -> str:
    mod = getattr(fn, "__module__", None) or ""
    if mod == "_operator":
        mod = "operator"
    if mod.startswith("torch._C") or mod == "torch._tensor":
        mod = "torch"
    return f"{mod}.{getattr(fn, '__name__', repr(fn))}"
