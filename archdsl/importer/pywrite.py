"""Python source for the constructor arguments of a class kept whole: what the plugin file writes to rebuild it.

Only two kinds of text reach the plugin: repr literals (numbers, strings, None, tuples/lists/dicts of them) and
references to importable objects, written as ``_load('module', 'Qual.Name')`` (bound once to an alias at the top
of the file). A reference is checked here, at import time: :func:`load` of its module and qualified name must give
back the very object the model was built with (``timm.layers.conv2d_same`` is a module *and*, as an attribute of
``timm.layers``, a function: attribute access from the package would find the function). On top of those:

- an ``nn.Module`` argument (``nn.Sequential(*blocks)``, a block passed in) is its own constructor call, from the
  arguments :func:`~archdsl.importer.plugin.recording_inits` saw (else attributes named like the parameters);
- a dataclass config (timm's ``MaxxVitTransformerCfg``, ``LayerFn``) is a call with its ``init`` fields; a plain
  object whose attributes are its constructor's parameters likewise; an ``Enum`` member is ``Alias.NAME``;
- ``functools.partial(f, *args, **kw)`` is written as such;
- a closure made by a module-level factory (``act_with_gamma('relu', gamma=1.7)`` returning ``_create``) is that
  factory's call, when its free variables are the factory's parameters and calling it again gives the same code
  over equal cells (checked here).

Anything else raises :class:`Unwritable` with what and why; the caller may then take the module from the model's
source instead (see :mod:`.plugin`).
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import importlib
import inspect
import keyword
import math
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["LOAD_SOURCE", "Unwritable", "Writer", "load"]

#: how deep module / config arguments may nest (a cycle ends here, not in a RecursionError)
MAX_DEPTH = 24

#: the plugin's copy of :func:`load` (the plugin file must not need this module to run)
LOAD_SOURCE = '''def _load(module, qualname):
    """A class or function by module and qualified name: the module imported, then the name looked up attribute
    by attribute (a package attribute may shadow a module: timm.layers.conv2d_same is also a function)."""
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj'''


class Unwritable(ValueError):
    """A value the plugin cannot write as Python (a lambda, a closure over computed values, an object of no
    importable class)."""


def load(module: str, qualname: str) -> Any:
    """The object ``module``.``qualname`` as the plugin finds it: :func:`importlib.import_module`, then getattr."""
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _same(a: Any, b: Any) -> bool:
    """``a`` and ``b`` are the same value for a closure's cell: identical, or equal plain values."""
    if a is b:
        return True
    if type(a) is not type(b) or not isinstance(a, (bool, int, float, str, bytes, tuple, frozenset, type(None))):
        return False
    try:
        return bool(a == b)
    except Exception:   # noqa: BLE001 - a tuple holding something that cannot compare: not the same
        return False


class Writer:
    """Writes values as Python source, collecting the references they need. ``init_args(module)`` gives a
    module's recorded constructor arguments (None: not recorded); ``guess(module)`` reads them back from its
    attributes (raising ValueError when it cannot). ``reserved``: names an alias must not take."""

    def __init__(self, init_args: Callable[[Any], Mapping[str, Any] | None],
                 guess: Callable[[Any], dict[str, Any]], reserved: set[str]) -> None:
        self.init_args, self.guess = init_args, guess
        self.refs: dict[tuple[str, str], str] = {}     # (module, qualname) -> alias in the plugin
        self.reserved = set(reserved)
        self.functools = False                          # a functools.partial was written

    # ------------------------------------------------------------------------------------------ references
    def ref(self, obj: Any) -> str:
        """The alias of an importable class or function (Unwritable when ``load`` would not give ``obj``)."""
        mod, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
        if not isinstance(mod, str) or not isinstance(qual, str) or "<" in qual:
            raise Unwritable(f"{_what(obj)} is not importable by name")
        return self.named(mod, qual, obj)

    def named(self, mod: str, qual: str, obj: Any) -> str:
        """The alias of ``obj`` found at ``mod``/``qual`` (checked: loading them gives ``obj`` itself)."""
        if not all(p.isidentifier() for p in mod.split(".") + qual.split(".")):
            raise Unwritable(f"{_what(obj)}: '{mod}' / '{qual}' is not a dotted name")
        try:
            found = load(mod, qual)
        except Exception as e:   # noqa: BLE001 - whatever importing it raises, it cannot be loaded by name
            raise Unwritable(f"{_what(obj)} cannot be loaded as {mod}.{qual} ({type(e).__name__}: {e})") from None
        if found is not obj:
            raise Unwritable(f"{_what(obj)}: {mod}.{qual} is another object")
        key = (mod, qual)
        if key not in self.refs:
            base = "_" + qual.replace(".", "_")
            alias, k = base, 2
            while alias in self.reserved or alias in self.refs.values() or keyword.iskeyword(alias):
                alias, k = f"{base}_{k}", k + 1
            self.refs[key] = alias
        return self.refs[key]

    # ------------------------------------------------------------------------------------------------ values
    def value(self, v: Any, depth: int = 0) -> str:
        """Python source giving ``v`` (see the module docstring); Unwritable says what could not be written."""
        if depth > MAX_DEPTH:
            raise Unwritable(f"arguments nest deeper than {MAX_DEPTH} levels (a cycle?)")
        d = depth + 1
        if v is None or isinstance(v, (bool, int, str)) and not isinstance(v, enum.Enum):
            return repr(v)
        if isinstance(v, float):
            return repr(v) if math.isfinite(v) else f"float({str(v)!r})"
        if type(v) in (list, tuple):
            inner = ", ".join(self.value(x, d) for x in v)
            return f"[{inner}]" if isinstance(v, list) else f"({inner}{',' if len(v) == 1 else ''})"
        if type(v) is dict:
            return "{" + ", ".join(f"{self.value(k, d)}: {self.value(x, d)}" for k, x in v.items()) + "}"
        if isinstance(v, enum.Enum):
            return f"{self.ref(type(v))}.{self.ident(v.name, v)}"
        if isinstance(v, functools.partial):
            self.functools = True
            parts = [self.value(v.func, d)] + [self.value(a, d) for a in v.args]
            parts += [f"{self.ident(k, v)}={self.value(x, d)}" for k, x in v.keywords.items()]
            return f"functools.partial({', '.join(parts)})"
        if isinstance(v, type) or inspect.isbuiltin(v):
            return self.ref(v)
        if inspect.isfunction(v):
            return self.ref(v) if v.__closure__ is None and "<" not in v.__qualname__ else self._closure(v, d)
        if _is_module(v):
            args = self.init_args(v)
            if args is None:
                try:
                    args = self.guess(v)
                except ValueError as e:
                    raise Unwritable(str(e)) from None
            return self.call(type(v), {k: self.value(x, d) for k, x in args.items() if k != "*"},
                             [self.value(x, d) for x in args.get("*", ())])
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            fields = {f.name: getattr(v, f.name) for f in dataclasses.fields(v) if f.init}
            return self.call(type(v), {k: self.value(x, d) for k, x in fields.items()}, [])
        return self._object(v, d)

    def call(self, cls: type, kw: dict[str, str], star: list[str]) -> str:
        """``Cls(...)`` with the written arguments ``kw`` (parameter -> source) and ``star`` (``*args``): those
        before a ``*args`` (and positional-only ones) positionally, in the signature's order."""
        try:
            params = list(inspect.signature(cls).parameters.values())
        except (TypeError, ValueError):
            raise Unwritable(f"{_what(cls)} has no signature to call") from None
        has_star = any(p.kind is p.VAR_POSITIONAL for p in params)
        pos: list[str] = []
        named: list[str] = []
        left = dict(kw)
        for i, p in enumerate(params):
            if p.kind is p.VAR_POSITIONAL:
                pos += star
            elif p.kind is p.VAR_KEYWORD:
                continue
            elif p.kind is p.POSITIONAL_ONLY or (has_star and p.kind is p.POSITIONAL_OR_KEYWORD):
                if p.name in left:
                    pos.append(left.pop(p.name))
                elif p.default is p.empty or any(q.name in left or q.kind is q.VAR_POSITIONAL and star
                                                 for q in params[i + 1:] if q.kind is not q.KEYWORD_ONLY):
                    raise Unwritable(f"{_what(cls)}: the argument '{p.name}' before *args was not recorded")
        if star and not has_star:
            raise Unwritable(f"{_what(cls)} takes no *args")
        named = [f"{self.ident(k, cls)}={src}" for k, src in left.items()]
        return f"{self.ref(cls)}({', '.join(pos + named)})"

    # ------------------------------------------------------------------------------------------- the rest
    def _closure(self, f: Any, depth: int) -> str:
        """A closure as the call of the module-level factory that made it (checked by calling it again)."""
        outer_q, sep, inner = f.__qualname__.rpartition(".<locals>.")
        if not sep or "<" in outer_q or "<" in inner:
            raise Unwritable(f"{_what(f)} is a lambda or nested function that cannot be imported")
        try:
            outer = load(f.__module__, outer_q)
        except Exception:   # noqa: BLE001
            raise Unwritable(f"{_what(f)}: its factory {f.__module__}.{outer_q} cannot be loaded") from None
        cells = dict(zip(f.__code__.co_freevars, (c.cell_contents for c in f.__closure__ or ())))
        try:
            sig = inspect.signature(outer)
            sig.bind(**cells)
        except (TypeError, ValueError):
            raise Unwritable(f"{_what(f)} closes over values other than the arguments of "
                             f"{f.__module__}.{outer_q}") from None
        try:
            again = outer(**cells)
        except Exception as e:   # noqa: BLE001
            raise Unwritable(f"{_what(f)}: calling {f.__module__}.{outer_q} again raised {type(e).__name__}") from None
        if not inspect.isfunction(again) or again.__code__ is not f.__code__ or not all(
                _same(a.cell_contents, b.cell_contents) for a, b in zip(again.__closure__ or (), f.__closure__ or ())):
            raise Unwritable(f"{_what(f)}: calling {f.__module__}.{outer_q} again does not give it back")
        args = ", ".join(f"{k}={self.value(x, depth)}" for k, x in cells.items())
        return f"{self.ref(outer)}({args})"

    def _object(self, v: Any, depth: int) -> str:
        """A plain object whose attributes are its constructor's parameters (``self.dim = dim``), as that call."""
        cls = type(v)
        state = getattr(v, "__dict__", None)
        # a class whose constructor is Python (a tensor's is not: `Tensor()` would be an empty one)
        if not isinstance(state, dict) or cls.__module__ == "builtins" or not inspect.isfunction(cls.__init__) \
                or _is_tensor(v):
            raise Unwritable(f"{_what(v)} is not a literal, an importable class or function, or a config object")
        try:
            params = list(inspect.signature(cls).parameters.values())
        except (TypeError, ValueError):
            raise Unwritable(f"{_what(v)}: its class has no signature") from None
        kw: dict[str, str] = {}
        for p in params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise Unwritable(f"{_what(v)}: its class takes *args or **kwargs")
            attr = p.name if p.name in state else "_" + p.name
            if attr in state:
                kw[p.name] = self.value(state[attr], depth)
            elif p.default is p.empty:
                raise Unwritable(f"{_what(v)}: no attribute holds its argument '{p.name}'")
        if set(state) - {p.name for p in params} - {"_" + p.name for p in params}:
            raise Unwritable(f"{_what(v)} holds attributes that are not its constructor's arguments")
        return self.call(cls, kw, [])

    @staticmethod
    def ident(name: Any, where: Any) -> str:
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise Unwritable(f"{_what(where)}: {name!r:.40} is not an identifier")
        return name


def _is_module(v: Any) -> bool:
    try:
        from torch import nn
    except ImportError:   # pragma: no cover - the importer runs with torch
        return False
    return isinstance(v, nn.Module)


def _is_tensor(v: Any) -> bool:
    try:
        import torch
    except ImportError:   # pragma: no cover
        return False
    return isinstance(v, torch.Tensor)


def _what(v: Any) -> str:
    if isinstance(v, type):
        return f"class {v.__module__}.{v.__qualname__}"
    if inspect.isfunction(v) or inspect.isbuiltin(v):
        return f"function {getattr(v, '__module__', '?')}.{getattr(v, '__qualname__', '?')}"
    return f"{type(v).__name__} {v!r:.60}"
