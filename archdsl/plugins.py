"""Plugins: ops defined in Python (``register_op``) and loading the modules that define them.

A plugin is an ordinary Python module that calls :func:`register_op`; see ``docs/extending.md``. Plugins
are loaded only by whoever runs the compiler (``archc ... --plugin MODULE_OR_FILE.py``, the
``ARCHDSL_PLUGINS`` environment variable, ``archdsl.build(spec, plugins=[...])``, or an ``import`` before
building), never by spec text: a spec can only call ops that are already registered.

torch is imported lazily: to infer the shape or parameter count of an op on the ``meta`` device when the
plugin gave no function for it, and, under :func:`verifying_shapes` (``build``, ``source``, ``summary``,
``compile``, ``deploy``), to compare the functions the plugin gave with its module on the meta device once
per input shape and arguments. An op with ``shape`` and ``params`` functions never needs torch to be
checked or rendered.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from .errors import ArchError
from .lang.parser import KEYWORDS as _LANG_KEYWORDS
from .lower.evaluate import BUILTINS, CONSTANTS
from .ops import MULTI_OUTPUT_OPS
from .ops.user import (InShape, UserOp, factory_args, forward_inputs, register_user_op, unregister_user_op,
                       user_ops, verifying_shapes)

__all__ = ["register_op", "unregister_op", "load_plugin", "load_plugins", "plugins_from_env", "user_ops",
           "verifying_shapes", "ENV_VAR"]

#: The environment variable naming plugins to load (``os.pathsep``-separated modules or files).
ENV_VAR = "ARCHDSL_PLUGINS"

F = TypeVar("F", bound=Callable[..., Any])


def register_op(name: str, factory: F | None = None, *, shape: Callable[..., Any] | None = None,
                params: Callable[..., Any] | None = None, macs: Callable[..., Any] | None = None,
                inputs: int | None = None, doc: str = "", family: str = "plugin") -> Any:
    """Make ``factory`` (an ``nn.Module`` subclass or a function returning a module) callable from specs as
    op ``name``. Use it directly, ``register_op("eca", ECA)``, or as a decorator, ``@register_op("eca")``
    (the decorated object is returned unchanged).

    - ``factory(in_shape, *args, **kwargs)`` builds the module; ``in_shape`` is the input's shape without
      the batch dimension (a tuple, e.g. ``(256, 56, 56)``); the op's arguments are the factory's parameters
      after ``in_shape`` (spec lists arrive as tuples).
    - ``shape(in_shape, *args, **kwargs)`` returns the output shape; without it the module is built on the
      ``meta`` device and run once on an empty meta tensor (no memory, no weights).
    - ``params(in_shape, *args, **kwargs)`` returns the parameter count; without it the meta module's
      parameters are counted.
    - ``macs(in_shape, out_shape, *args, **kwargs)`` returns the multiply-accumulates; without it 0.
    - ``inputs``: how many tensors the module's forward takes. By default the number of positional
      parameters of a class factory's ``forward`` that have no default (``forward(self, q, kv)``: 2), else
      1. An op with several inputs is called over named tensors, ``fuse(a, b, width=64)``, and
      ``in_shape`` is then a tuple of the inputs' shapes (``((64, 28, 28), (128, 14, 14))``).

    Raises ValueError for a name that is a built-in op, a spec keyword or builtin, a factory a spec
    cannot call (see :func:`archdsl.ops.user.factory_args`), or an ``inputs`` the factory's ``forward``
    cannot take."""
    if factory is None:
        def deco(f: F) -> F:
            register_op(name, f, shape=shape, params=params, macs=macs, inputs=inputs, doc=doc, family=family)
            return f
        return deco
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"op name {name!r} is not an identifier")
    if name in BUILTINS or name in CONSTANTS or name in _LANG_KEYWORDS or name in MULTI_OUTPUT_OPS:
        raise ValueError(f"'{name}' is a word of the spec language; give the plugin op another name")
    if not callable(factory):
        raise ValueError(f"op {name!r}: the factory must be callable, got {type(factory).__name__}")
    old = user_ops().get(name)
    if old is not None and (old.module, old.qualname) != (getattr(factory, "__module__", ""),
                                                          getattr(factory, "__qualname__", "")):
        raise ValueError(f"op '{name}' is already registered by {old.where()}")
    args, positional = factory_args(name, factory)
    n_in, in_names = forward_inputs(name, factory, inputs)
    first_line = ((factory.__doc__ or "").strip().splitlines() or [""])[0]
    register_user_op(UserOp(name, factory, _infer, args, positional, shape=shape, params=params, macs=macs,
                            doc=doc or first_line, family=family, inputs=n_in, input_names=in_names,
                            verify=_real_values))
    return factory


def unregister_op(name: str) -> None:
    """Remove plugin op ``name`` from the registry (for notebooks and tests)."""
    unregister_user_op(name)


def _shape_tuple(v: Any, what: str) -> tuple[int, ...]:
    if not isinstance(v, (tuple, list)) or not all(isinstance(d, int) and not isinstance(d, bool) for d in v):
        raise TypeError(f"{what} must return a shape (a tuple of ints), got {v!r:.60}")
    out = tuple(int(d) for d in v)
    if any(d < 0 for d in out) or not out:
        raise ValueError(f"{what} returned the invalid shape {list(out)}")
    return out


def _count(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise TypeError(f"{what} must return a non-negative int, got {v!r}")
    return v


def _infer(op: UserOp, in_shape: InShape, args: tuple[Any, ...], kwargs: dict[str, Any]
           ) -> tuple[tuple[int, ...], int, int]:
    """(output shape, params, MACs): the plugin's functions where given, else the meta device."""
    out = _shape_tuple(op.shape(in_shape, *args, **kwargs), f"the shape function of '{op.name}'") \
        if op.shape is not None else None
    n = _count(op.params(in_shape, *args, **kwargs), f"the params function of '{op.name}'") \
        if op.params is not None else None
    if out is None or n is None:
        meta_out, meta_n = _on_meta(op, in_shape, args, kwargs, run=out is None)
        out = out if out is not None else meta_out
        n = n if n is not None else meta_n
    assert out is not None
    macs = _count(op.macs(in_shape, out, *args, **kwargs), f"the macs function of '{op.name}'") \
        if op.macs is not None else 0
    return out, n, macs


def _on_meta(op: UserOp, in_shape: InShape, args: tuple[Any, ...], kwargs: dict[str, Any], *,
             run: bool) -> tuple[tuple[int, ...] | None, int]:
    """Build the module on the meta device (no memory, no weights) and, if ``run``, run it on one sample
    (one meta tensor per input, in order)."""
    m = _meta_module(op, in_shape, args, kwargs)   # imports torch: only ops without a shape/params function
    n = sum(p.numel() for p in m.parameters())
    if not run:
        return None, n
    return _meta_run(op, m, in_shape), n


def _meta_module(op: UserOp, in_shape: InShape, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    import torch

    with torch.device("meta"):
        m = op.factory(in_shape, *args, **kwargs)
    if not isinstance(m, torch.nn.Module):
        raise TypeError(f"the factory returned {type(m).__name__}, not an nn.Module")
    # a function factory's module is seen only now: its forward must take the op's number of tensors
    forward_inputs(op.name, type(m), op.inputs)
    return m


def _meta_run(op: UserOp, m: Any, in_shape: InShape) -> tuple[int, ...]:
    """The output shape (batch left out) of meta module ``m`` on one empty sample per input."""
    import torch

    shapes = [in_shape] if op.inputs == 1 else list(in_shape)
    with torch.no_grad():
        y = m(*[torch.empty((1, *s), device="meta") for s in shapes])
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"the module returned {type(y).__name__}, not one tensor")
    if y.dim() < 1 or y.shape[0] != 1:
        raise ValueError(f"the module changed the batch dimension: output {list(y.shape)} for a batch of 1")
    return tuple(int(d) for d in y.shape[1:])


def _real_values(op: UserOp, in_shape: InShape, args: tuple[Any, ...], kwargs: dict[str, Any]
                 ) -> tuple[tuple[int, ...] | None, int] | None:
    """What the module really gives, to compare with the plugin's declared functions: (output shape or
    None, parameter count), or None when it cannot be seen. Nothing here is an error of its own: without
    torch, or for a module that cannot be built or run on the ``meta`` device (a forward that needs real
    data is why a plugin gives a shape function), the declared functions are trusted, as documented."""
    if "torch" not in sys.modules and importlib.util.find_spec("torch") is None:
        return None
    try:
        m = _meta_module(op, in_shape, args, kwargs)
        n = sum(p.numel() for p in m.parameters())
    except Exception:   # the build reports a factory that fails; here it only means "cannot compare"
        return None
    if op.shape is None:
        return None, n
    try:
        return _meta_run(op, m, in_shape), n
    except Exception:
        return None, n


# ---- loading ----------------------------------------------------------------------------------------------
def load_plugin(ref: str) -> Any:
    """Import one plugin: a module name (``mypkg.attention``) or a ``.py`` file. Returns the module.

    A file is imported under its stem (``examples/plugins/attention.py`` -> ``attention``), which is the
    name generated code imports, so the compiled model needs it importable by that name (on ``PYTHONPATH``).
    Loading the same file twice does nothing the second time. Raises :class:`ArchError` (one message, no
    traceback) when the plugin does not exist or raises while it is imported."""
    ref = str(ref).strip()
    if not ref:
        raise ArchError("empty plugin name", None)
    try:
        if ref.endswith(".py") or os.sep in ref or (os.altsep and os.altsep in ref):
            return _load_file(Path(ref))
        if not all(p.isidentifier() for p in ref.split(".")):
            raise ArchError(f"plugin '{ref}' is neither a module name nor a .py file", None)
        if importlib.util.find_spec(ref.split(".")[0]) is None:
            raise ArchError(f"plugin '{ref}': no module named '{ref}'", None)
        return importlib.import_module(ref)
    except ArchError:
        raise
    except Exception as e:   # the plugin's own code failed: one line, the plugin named
        raise ArchError(f"plugin '{ref}' raised {type(e).__name__} while loading: {e}", None) from None


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise ArchError(f"plugin file '{path}' does not exist", None)
    name = path.stem
    if not name.isidentifier() or not name.isascii():
        raise ArchError(f"plugin file '{path}': '{name}' is not a module name", None,
                        hint="generated code imports the plugin by its file name; rename it")
    real = path.resolve()
    mod = sys.modules.get(name)
    if mod is not None:
        known = getattr(mod, "__file__", None)
        if known and Path(known).resolve() == real:
            return mod
        raise ArchError(f"plugin file '{path}': a module named '{name}' is already loaded from {known}", None)
    spec = importlib.util.spec_from_file_location(name, real)
    if spec is None or spec.loader is None:
        raise ArchError(f"plugin file '{path}' cannot be imported", None)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod   # before running it: generated code and pickles find it by this name
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod


def plugins_from_env() -> list[str]:
    """The plugins named by ``ARCHDSL_PLUGINS`` (``os.pathsep``-separated)."""
    return [p for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]


def load_plugins(refs: Iterable[str] = (), *, env: bool = True) -> list[Any]:
    """Load ``ARCHDSL_PLUGINS`` (when ``env``) and then ``refs``; returns the modules, in order."""
    todo = [*(plugins_from_env() if env else []), *refs]
    return [load_plugin(r) for r in todo]
