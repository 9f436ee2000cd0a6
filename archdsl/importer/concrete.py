"""Tracing with concrete shapes: fx that resolves conditions on sizes at the import's input size.

fx's symbolic tracer cannot branch on a value it traces (``if H != ss[0]:`` after ``H, W = x.shape[-2:]``,
``for i in range(x.shape[1])``, ``len(x.shape)``): it raises "symbolically traced variables cannot be used as
inputs to control flow" and the whole model could not be imported. Most such conditions only read sizes,
and the spec is written for the input size it was traced at (its ``input`` line) anyway, so the import may
take the branch the real run takes. :func:`concrete_tracer` runs every traced call on real tensors as the
graph is recorded, and a condition, ``len`` or iteration on a traced value then takes its real value **when the value was computed from sizes only** (``x.shape``, ``x.size()``, ``x.dim()``,
``numel``, and arithmetic on those and constants). A condition on tensor data (``if x.max() > 0:``,
``x.sum().item()``) is still refused as data-dependent control flow, with the source line. (An integer use,
``range(n)``, is not resolved: a proxy that is an integer to torch's argument parser would turn a size into
a constant of the graph.)

Soundness: the graph is traced at both batch sizes of :data:`~.trace.BATCHES` and must be the same; a forward
whose branches depend on the batch size is refused. The round trip then proves the result.

torch is imported inside the functions only.
"""
from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable, cast

__all__ = ["concrete_tracer", "user_line", "skipped_dirs", "DataDependent"]

#: attributes and methods of a tensor that read its metadata, not its values
_SHAPE_ATTRS = {"shape", "ndim", "dtype", "device", "is_cuda", "requires_grad", "layout", "is_sparse"}
_SHAPE_METHODS = {"size", "dim", "numel", "nelement", "ndimension", "get_device", "is_contiguous",
                  "is_floating_point", "is_complex", "element_size"}

_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))     # the archdsl package


class DataDependent(Exception):
    """A traced value that depends on tensor data was used in Python control flow."""


@functools.lru_cache(maxsize=1)
def skipped_dirs() -> tuple[str, ...]:
    """The folders whose frames are not the user's code: torch's and archdsl's."""
    import torch
    return (os.path.dirname(os.path.abspath(torch.__file__)), _HERE)


def user_line() -> str | None:
    """``file.py:LINE`` of the innermost frame of the user's code (not torch, not archdsl) on the stack."""
    skip = skipped_dirs()
    f = sys._getframe(1)
    while f is not None:
        path = os.path.abspath(f.f_code.co_filename)
        if not path.startswith(skip) and not f.f_code.co_filename.startswith("<"):
            return f"{os.path.basename(path)}:{f.f_lineno}"
        f = f.f_back        # type: ignore[assignment]
    return None


def _unpatched() -> Any:
    """A context in which fx's tracing patches are undone (torch's private helper; without it, nothing)."""
    import contextlib

    from torch.fx import _symbolic_trace
    revert = getattr(_symbolic_trace, "_maybe_revert_all_patches", None)
    return revert() if revert is not None else contextlib.nullcontext()


def concrete_tracer(base: type, module: Any, x: Any, concrete: dict[str, Any]) -> Any:
    """An instance of a subclass of the fx tracer class ``base`` that traces ``module`` on the real input
    ``x`` (batched), with ``concrete`` the forward's other arguments at their defaults."""
    import torch
    import torch.fx as fx
    from torch.fx.proxy import Attribute, Proxy

    unknown = object()

    class _Mixin:
        tracer: Any
        node: Any

        def _concrete(self, what: str) -> Any:
            return self.tracer.concrete_value(self, what)

        def __len__(self) -> int:
            v = self.tracer.values.get(self.node, unknown)
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                return int(v.shape[0])      # a size: the batch size when dim 0 is the batch (traced twice)
            return len(self._concrete("len()"))

        def __getattr__(self, k: str) -> Any:
            return CAttribute(cast(Proxy, self), k)

    # named like fx's own class: Python's messages about it ("'Proxy' object does not support item
    # assignment") then read as fx's do
    CProxy = type("Proxy", (_Mixin, Proxy), {})

    class CAttribute(_Mixin, Attribute):   # type: ignore[misc]
        pass

    class Concrete(base):       # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.values: dict[Any, Any] = {}
            self.static: set[Any] = set()
            self.placeholders = 0

        def proxy(self, node: Any) -> Any:
            return CProxy(node, self)

        def create_proxy(self, kind: str, target: Any, args: Any, kwargs: Any, name: str | None = None,
                         type_expr: Any = None, proxy_factory_fn: Callable[..., Any] | None = None) -> Any:
            p = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
            self._run(p.node)
            return p

        def _run(self, n: Any) -> None:
            def val(a: Any) -> Any:
                return self.values.get(a, unknown) if isinstance(a, fx.Node) else a
            args = fx.node.map_arg(n.args, val)
            kwargs = fx.node.map_arg(n.kwargs, val)
            ins = n.all_input_nodes
            try:
                # the real run outside fx's patches (Module.__call__ and __getattr__ record while tracing)
                with _unpatched(), torch.no_grad():
                    out = self._eval(n, args, kwargs, ins)
            except Exception:       # a value fx records but the run cannot compute: it stays unknown
                out = unknown
            self.values[n] = out
            # a size is static: read from a tensor's metadata, or computed from static values only
            if out is unknown or isinstance(out, torch.Tensor):
                return
            if (n.op == "call_function" and n.target is getattr and len(n.args) > 1 and n.args[1] in _SHAPE_ATTRS) \
                    or (n.op == "call_method" and n.target in _SHAPE_METHODS) \
                    or (n.op == "call_function" and n.target is len) \
                    or (n.op in ("call_function", "call_method") and all(i in self.static for i in ins)):
                self.static.add(n)

        def _eval(self, n: Any, args: Any, kwargs: Any, ins: list[Any]) -> Any:
            """The value of node ``n`` on the real input (unknown when an input is)."""
            out: Any = unknown
            if any(self.values.get(i, unknown) is unknown for i in ins):
                return unknown
            elif n.op == "placeholder":
                out = x if self.placeholders == 0 else concrete.get(str(n.target).lstrip("*"))
                self.placeholders += 1
            elif n.op == "get_attr":
                out = module
                for part in str(n.target).split("."):
                    out = getattr(out, part)
            elif n.op == "call_module":
                out = module.get_submodule(n.target)(*args, **kwargs)
            elif n.op == "call_method":
                out = getattr(args[0], n.target)(*args[1:], **kwargs)
            elif n.op == "call_function":
                out = n.target(*args, **kwargs)
            return out

        def concrete_value(self, p: Any, what: str) -> Any:
            n = p.node
            v = self.values.get(n, unknown)
            if n in self.static and v is not unknown:
                return v
            raise DataDependent(f"data-dependent control flow ({what} of `{n.name}`, a value computed from "
                                "tensor data)")

        def to_bool(self, obj: Any) -> bool:
            return bool(self.concrete_value(obj, "a condition"))

        def iter(self, obj: Any) -> Any:
            v = self.concrete_value(obj, "iteration")
            return iter([obj[i] for i in range(len(v))])

    return Concrete()
