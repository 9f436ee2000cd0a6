"""Classes kept whole (``--keep``, or not expressible in the language) as plugin ops: a real
``register_op`` file written beside the spec that imports the user's class and builds it with its
recorded constructor arguments.

Constructor arguments are recovered from what :func:`recording_inits` saw while the model was built (the
CLI builds it), else from attributes named like the ``__init__`` parameters (``self.dim = dim``); arguments
that are plain values become the op's arguments in the spec, others (classes, functions,
``functools.partial``) are written into the plugin as Python expressions that import them by name.
"""
from __future__ import annotations

import functools
import inspect
import re
import sys
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from .trace import class_name

__all__ = ["recording_inits", "PluginOp", "plugin_ops", "plugin_source", "INIT_ARGS"]

#: module -> its constructor's bound arguments (filled by :func:`recording_inits`; weak keys: an id is
#: reused once a temporary module is freed)
INIT_ARGS: "weakref.WeakKeyDictionary[Any, dict[str, Any]]" = weakref.WeakKeyDictionary()


@contextmanager
def recording_inits() -> Iterator[None]:
    """Record the arguments of every ``nn.Module`` subclass ``__init__`` run inside (the most derived one's)."""
    import torch.nn as nn
    old = sys.getprofile()

    def prof(frame: Any, event: str, arg: Any) -> None:
        if event != "call" or frame.f_code.co_name != "__init__":
            return
        self = frame.f_locals.get("self")
        if isinstance(self, nn.Module) and self not in INIT_ARGS \
                and getattr(type(self).__init__, "__code__", None) is frame.f_code:
            info = inspect.getargvalues(frame)
            args = {k: info.locals[k] for k in info.args[1:] if k in info.locals}
            if info.varargs and info.locals.get(info.varargs):
                args["*"] = tuple(info.locals[info.varargs])
            if info.keywords:
                args.update(info.locals.get(info.keywords) or {})
            INIT_ARGS[self] = args
    sys.setprofile(prof)
    try:
        yield
    finally:
        sys.setprofile(old)


def _py(v: Any, imports: set[str]) -> str:
    """Python source for ``v``: literals, importable classes/functions, functools.partial of them."""
    if v is None or isinstance(v, (bool, int, str)):
        return repr(v)
    if isinstance(v, float):
        return repr(v) if v == v and v not in (float("inf"), float("-inf")) else f"float({str(v)!r})"
    if isinstance(v, (list, tuple)):
        inner = ", ".join(_py(x, imports) for x in v)
        return f"[{inner}]" if isinstance(v, list) else f"({inner}{',' if len(v) == 1 else ''})"
    if isinstance(v, dict) and all(isinstance(k, str) for k in v):
        return "{" + ", ".join(f"{k!r}: {_py(x, imports)}" for k, x in v.items()) + "}"
    if isinstance(v, functools.partial):
        parts = [_py(v.func, imports)] + [_py(a, imports) for a in v.args]
        parts += [f"{k}={_py(x, imports)}" for k, x in v.keywords.items()]
        imports.add("functools")
        return f"functools.partial({', '.join(parts)})"
    if isinstance(v, type) or inspect.isfunction(v) or inspect.isbuiltin(v):
        mod, qual = getattr(v, "__module__", ""), getattr(v, "__qualname__", "")
        if mod and qual and "<" not in qual and all(p.isidentifier() for p in mod.split(".")):
            imports.add(mod)
            return f"{mod}.{qual}"
    raise ValueError(f"cannot write {type(v).__name__} {v!r:.60} into the plugin")


def _plain(v: Any) -> bool:
    if v is None or isinstance(v, (bool, int, float, str)):
        return True
    return isinstance(v, (list, tuple)) and all(_plain(x) for x in v) and not any(isinstance(x, (list, tuple)) for x in v)


def _guess_args(m: Any) -> dict[str, Any]:
    """Constructor arguments read back from attributes of the same name (the common ``self.x = x``)."""
    sig = inspect.signature(type(m).__init__)
    out: dict[str, Any] = {}
    for k, p in list(sig.parameters.items())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        for attr in (k, "_" + k):
            if attr in vars(m) or (hasattr(m, attr) and not callable(getattr(m, attr))):
                out[k] = getattr(m, attr)
                break
        else:
            if p.default is inspect.Parameter.empty:
                raise ValueError(f"cannot recover the constructor argument '{k}' of {class_name(m)} "
                                 "(build the model under archc import, or keep an attribute of that name)")
            out[k] = p.default
    return out


@dataclass
class PluginOp:
    """One plugin op: the class it builds, its spec arguments (with defaults) and baked Python arguments."""

    name: str
    cls: type
    spec_args: list[str]
    baked: dict[str, str]
    defaults: dict[str, Any] = field(default_factory=dict)
    imports: set[str] = field(default_factory=set)
    # (per-sample input shape, full spec arguments) -> output shape, as traced
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def _snake(name: str) -> str:
    s = re.sub(r"(?<!^)(?=[A-Z])", "_", name.lstrip("_")).lower()
    return re.sub(r"[^a-z0-9_]", "_", s) or "kept"


def _shape_key(in_shape: tuple[int, ...], args: dict[str, Any]) -> str:
    return repr((tuple(in_shape), tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in args.items()))))


def plugin_ops(modules: list[Any], prefix: str, shapes: dict[int, tuple[tuple[int, ...], tuple[int, ...]]]
               ) -> tuple[list[PluginOp], dict[int, tuple[str, dict[str, Any]]]]:
    """The plugin ops for ``modules`` and, per module, its op name and all its spec arguments. ``shapes`` holds each module's traced (input, output) per-sample shapes: the
    plugin's shape function (a kept class's forward may not run on the meta device). Raises ValueError
    when a module's arguments cannot be recovered or written."""
    ops: dict[tuple[str, str], PluginOp] = {}
    uses: dict[int, tuple[str, dict[str, Any]]] = {}
    taken: set[str] = set()
    for m in modules:
        args = INIT_ARGS.get(m)
        if args is None:
            args = _guess_args(m)
        if "*" in args:
            raise ValueError(f"{class_name(m)} takes *args: the plugin cannot rebuild it")
        imports: set[str] = set()
        baked = {k: _py(v, imports) for k, v in args.items() if not _plain(v)}
        key = (class_name(m), repr(sorted(baked.items())))
        op = ops.get(key)
        if op is None:
            base = f"{prefix}_{_snake(type(m).__name__)}"
            name, k = base, 2
            while name in taken:
                name, k = f"{base}_{k}", k + 1
            taken.add(name)
            plain = {k: v for k, v in args.items() if _plain(v)}
            op = PluginOp(name, type(m), list(plain), baked, plain, imports)
            ops[key] = op
        given = {k: v for k, v in args.items() if _plain(v) and (k not in op.defaults or op.defaults[k] != v)}
        for arg in given:
            if arg not in op.spec_args:
                raise ValueError(f"{class_name(m)}: argument {arg} differs between instances in kind")
        full = {**op.defaults, **given}
        uses[id(m)] = (op.name, {k: (list(v) if isinstance(v, tuple) else v) for k, v in full.items()
                                 if k in op.spec_args})
        if id(m) in shapes:
            op.shapes[_shape_key(shapes[id(m)][0], {k: full[k] for k in op.spec_args})] = shapes[id(m)][1]
    return list(ops.values()), uses


def plugin_source(ops: list[PluginOp], spec_name: str, paths: dict[str, str] | None = None) -> str:
    """The plugin file: imports the classes by module path and registers one op per kept class. ``paths``
    maps a module loaded from a user's file to its folder, which the plugin puts on ``sys.path``."""
    imports: set[str] = {"archdsl"}
    lines: list[str] = []
    for op in ops:
        imports.add(op.cls.__module__)
        imports |= op.imports
        params = ", ".join(f"{k}={_py(op.defaults[k], imports)}" for k in op.spec_args)
        # a spec passes lists as tuples: an argument the model was built with as a list gets one back
        call = ", ".join([f"{k}=list({k})" if isinstance(op.defaults[k], list) else f"{k}={k}" for k in op.spec_args]
                         + [f"{k}={v}" for k, v in op.baked.items()])
        key = f"({', '.join(f'({k!r}, _t({k}))' for k in op.spec_args)}{',' if len(op.spec_args) == 1 else ''})"
        lines += ["", "",
                  f"def _{op.name}(in_shape{', ' + params if params else ''}):",
                  f'    """{class_name(op.cls)}, as the imported model builds it."""',
                  f"    return {op.cls.__module__}.{op.cls.__qualname__}({call})",
                  "",
                  "",
                  f"def _{op.name}_shape(in_shape{', ' + params if params else ''}):",
                  '    """The output shape traced at import (the forward may not run on the meta device)."""',
                  f"    key = repr((tuple(in_shape), tuple(sorted({key}))))",
                  f"    if key not in _SHAPES_{op.name}:",
                  f"        raise ValueError(f'{op.name} was traced at other input shapes; import the model again "
                  "for this one')",
                  f"    return _SHAPES_{op.name}[key]",
                  "",
                  "",
                  f"_SHAPES_{op.name} = {op.shapes!r}",
                  f"archdsl.register_op({op.name!r}, _{op.name}, shape=_{op.name}_shape, doc={class_name(op.cls)!r})"]
    head = [f'"""Plugin ops for {spec_name}.arch, written by `archc import`: the classes kept whole.',
            "",
            f"Load it with `archc ... --plugin {spec_name}_plugins.py` (or ARCHDSL_PLUGINS); it imports the",
            'classes below, so their packages must be importable."""']
    imps = sorted(i for i in imports if i != "archdsl")
    lines += ["", "", "def _t(v):", '    """Lists as tuples: a spec passes tuples, a default may be a list."""',
              "    return tuple(v) if isinstance(v, list) else v"]
    dirs = sorted({(paths or {})[i] for i in imps if i in (paths or {})})
    pre = ["import sys", *(f"sys.path.insert(0, {d!r})" for d in dirs), ""] if dirs else []
    return "\n".join(head + pre + ["import archdsl"] + [f"import {i}" for i in imps] + lines) + "\n"
