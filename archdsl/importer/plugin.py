"""Classes kept whole (``--keep``, or not expressible in the language) as plugin ops: a real
``register_op`` file written beside the spec that loads the user's class and builds it with its recorded
constructor arguments.

Constructor arguments are recovered from what :func:`recording_inits` saw while the model was built (the
CLI builds it), else from attributes named like the ``__init__`` parameters (``self.dim = dim``); arguments
that are plain values become the op's arguments in the spec, the others (modules, configs, classes, functions,
``functools.partial``, closures made by a factory) are written into the plugin by :mod:`.pywrite` as Python of
repr literals and checked references. A class whose arguments cannot be written (a lambda) is taken from the
model rebuilt from its source (:func:`remember_source`: ``timm:NAME``, ``torchvision:NAME``, ``FILE.py:NAME``
with the same arguments) at its module path.
"""
from __future__ import annotations

import enum
import inspect
import re
import sys
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from .bound import BOUND_HELPERS, CALL_PREFIX, Binding, bound_lines
from .pywrite import LOAD_SOURCE, Unwritable, Writer, load
from .trace import class_name

__all__ = ["recording_inits", "PluginOp", "plugin_ops", "plugin_source", "INIT_ARGS", "ModelSource", "SOURCES",
           "remember_source"]

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


def _plain(v: Any) -> bool:
    """A value the spec can hold as the op's argument (an Enum member is written into the plugin instead)."""
    if isinstance(v, enum.Enum):
        return False
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
class ModelSource:
    """How the model was built, for kept modules the plugin takes from it: ``kind`` is "timm", "torchvision" or
    the module of a user's file (FILE.py), ``name`` the model (timm / torchvision) or the file's factory, ``args``
    the keyword arguments (literals: ``--arg`` values)."""

    kind: str
    name: str
    args: dict[str, Any] = field(default_factory=dict)


#: model -> how it was built (:func:`remember_source`; weak keys, as for INIT_ARGS)
SOURCES: "weakref.WeakKeyDictionary[Any, ModelSource]" = weakref.WeakKeyDictionary()


def remember_source(model: Any, kind: str, name: str, args: dict[str, Any] | None = None) -> None:
    """Record that ``model`` is ``timm.create_model(name, pretrained=False, **args)`` (kind "timm"),
    ``torchvision.models.get_model(name, weights=None, **args)`` ("torchvision") or ``kind.name(**args)`` (a
    module, a user's FILE.py): a kept class whose constructor arguments cannot be written as Python (a lambda,
    a closure over computed values) is then taken from a model the plugin builds the same way."""
    SOURCES[model] = ModelSource(kind, name, dict(args or {}))


@dataclass
class PluginOp:
    """One plugin op: the class it builds, its spec arguments (with defaults) and the Python call building it
    (``call``); for a class taken from the model's source (``paths``: the module paths it may take), ``call``
    builds the source model."""

    name: str
    cls: type
    spec_args: list[str]
    call: str
    writer: Writer
    defaults: dict[str, Any] = field(default_factory=dict)
    # (per-sample input shape, full spec arguments) -> output shape, as traced
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    paths: list[str] | None = None
    why: str = ""
    bound: Binding | None = None        # the model calls it with more than a tensor (:mod:`.bound`)
    alias: str = ""                     # the class's name in the plugin file (a bound op subclasses it)


def _snake(name: str) -> str:
    s = re.sub(r"(?<!^)(?=[A-Z])", "_", name.lstrip("_")).lower()
    return re.sub(r"[^a-z0-9_]", "_", s) or "kept"


def _shape_key(in_shape: tuple[int, ...], args: dict[str, Any]) -> str:
    return repr((tuple(in_shape), tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in args.items()))))


# names of the plugin file an alias must not take
_RESERVED = {"_t", "_load", "_model", "_submodule", "_MODEL", "in_shape", "path"}
_PATH_RE = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")


def _source_call(w: Writer, src: ModelSource) -> str:
    """The Python call building the model the way ``src`` says (references checked by the writer)."""
    args = ", ".join(f"{w.ident(k, src.name)}={w.value(v)}" for k, v in src.args.items())
    if src.kind == "timm":
        import timm
        fn = w.named("timm", "create_model", timm.create_model)
        return f"{fn}({src.name!r}, pretrained=False{', ' + args if args else ''})"
    if src.kind == "torchvision":
        import torchvision
        fn = w.named("torchvision.models", "get_model", torchvision.models.get_model)
        return f"{fn}({src.name!r}, weights=None{', ' + args if args else ''})"
    return f"{w.named(src.kind, src.name, load(src.kind, src.name))}({args})"


def _arg(w: Writer, name: str, v: Any) -> str:
    """The constructor argument ``name`` written as Python; Unwritable names it."""
    try:
        return w.value(v)
    except Unwritable as e:
        raise Unwritable(f"its argument {name}: {e}") from None


def plugin_ops(modules: list[Any], prefix: str, shapes: dict[int, tuple[tuple[int, ...], tuple[int, ...]]],
               root: Any = None, paths: dict[int, str] | None = None, bindings: dict[int, Binding] | None = None
               ) -> tuple[list[PluginOp], dict[int, tuple[str, dict[str, Any]]]]:
    """The plugin ops for ``modules`` and, per module, its op name and all its spec arguments. ``shapes`` holds
    each module's traced (input, output) per-sample shapes: the plugin's shape function (a kept class's forward
    may not run on the meta device). A module whose constructor arguments cannot be written (see
    :class:`~archdsl.importer.pywrite.Writer`) is taken from the model's source when ``root`` (the model) was
    recorded with :func:`remember_source` (``paths``: module id -> its path in ``root``). ``bindings``: the
    modules the model calls with more than a tensor (their ``call_`` arguments join the op's). Raises
    ValueError naming the module when it can be neither written nor taken."""
    ops: dict[tuple[str, str], PluginOp] = {}
    uses: dict[int, tuple[str, dict[str, Any]]] = {}
    taken: set[str] = set()
    writer = Writer(INIT_ARGS.get, _guess_args, _RESERVED)
    source = SOURCES.get(root) if root is not None else None

    def new_name(m: Any) -> str:
        base = f"{prefix}_{_snake(type(m).__name__)}"
        name, k = base, 2
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        writer.reserved |= {f"_{name}", f"_{name}_shape", f"_SHAPES_{name}", f"_PATHS_{name}", f"_{name}_call"}
        return name

    for m in modules:
        path = (paths or {}).get(id(m), "?")
        b = (bindings or {}).get(id(m))
        saved = dict(writer.refs)
        try:
            args = INIT_ARGS.get(m)
            if args is None:
                args = _guess_args(m)
            plain = {k: v for k, v in args.items() if k != "*" and _plain(v)}
            baked = {k: _arg(writer, k, v) for k, v in args.items() if k != "*" and not _plain(v)}
            star = [_arg(writer, f"*args[{i}]", x) for i, x in enumerate(args.get("*", ()))]
            call = writer.call(type(m), {**{k: f"list({k})" if isinstance(v, list) else k for k, v in plain.items()},
                                         **baked}, star)
        except ValueError as e:     # (Unwritable included)
            writer.refs = saved
            if source is None or not _PATH_RE.fullmatch(path):
                raise ValueError(f"{path} ({class_name(m)}): {e}; the plugin cannot rebuild it"
                                 + (" (import it with `archc import`, which can take it from the model's source)"
                                    if source is None else "")) from None
            key = (class_name(m), "<source>" + (repr(b.layout()) if b is not None else ""))
            full = {"path": path, **(b.values if b else {})}
            op = ops.get(key)
            if op is None:
                op = PluginOp(new_name(m), type(m), ["path", *sorted(b.values if b else {})],
                              _source_call(writer, source), writer, dict(full), paths=[], why=str(e), bound=b,
                              alias=_alias(writer, m, b))
                ops[key] = op
            assert op.paths is not None
            op.paths.append(path)
            uses[id(m)] = (op.name, full)
            if id(m) in shapes:
                op.shapes[_shape_key(shapes[id(m)][0], full)] = shapes[id(m)][1]
            continue
        # one op per class and written (non-spec) arguments; a spec passes lists as tuples: an argument the
        # model was built with as a list gets one back (the call's list(k))
        key = (class_name(m), repr(sorted(baked.items())) + repr(star) + (repr(b.layout()) if b else ""))
        if b is not None:
            clash = sorted(set(plain) & set(b.values))
            if clash:
                raise ValueError(f"{path} ({class_name(m)}): its constructor argument {clash[0]} is named like "
                                 "a bound call's argument")
            plain = {**plain, **b.values}
        op = ops.get(key)
        if op is None:
            op = PluginOp(new_name(m), type(m), list(plain), call, writer, plain, bound=b,
                          alias=_alias(writer, m, b))
            ops[key] = op
        given = {k: v for k, v in plain.items() if k not in op.defaults or op.defaults[k] != v}
        for arg in given:
            if arg not in op.spec_args:
                raise ValueError(f"{path} ({class_name(m)}): argument {arg} differs between instances in kind")
        full = {**op.defaults, **given}
        uses[id(m)] = (op.name, {k: (list(v) if isinstance(v, tuple) else v) for k, v in full.items()
                                 if k in op.spec_args})
        if id(m) in shapes:
            op.shapes[_shape_key(shapes[id(m)][0], {k: full[k] for k in op.spec_args})] = shapes[id(m)][1]
    return list(ops.values()), uses


def _alias(w: Writer, m: Any, b: Binding | None) -> str:
    """The class's alias in the plugin file when a bound op subclasses it ("" otherwise)."""
    return w.ref(type(m)) if b is not None else ""


def _op_lines(op: PluginOp) -> list[str]:
    """The op's factory and shape function and its registration."""
    w = op.writer
    params = ", ".join(f"{k}={w.value(op.defaults[k])}" for k in op.spec_args)
    key = f"({', '.join(f'({k!r}, _t({k}))' for k in op.spec_args)}{',' if len(op.spec_args) == 1 else ''})"
    made = op.call if op.paths is None else "_submodule(path)"
    if op.bound is not None:        # the call's arguments: its spec arguments named call_<parameter>
        values = ", ".join(f"{k[len(CALL_PREFIX):]!r}: {k}" for k in op.spec_args if k in op.bound.values)
        made = f"_bind({made}, _{op.name}_call, {{{values}}})"
    if op.paths is None:
        body = [f'    """{class_name(op.cls)}, as the imported model builds it."""',
                f"    return {made}"]
    else:
        why = re.sub(r"[^ -~]|[\\\"]", "'", op.why)[:200]    # (printable, no quote or backslash: a docstring)
        body = [f'    """{class_name(op.cls)}, taken from the model built from its source: its constructor',
                f'    arguments cannot be written here ({why})."""',
                f"    if path not in _PATHS_{op.name}:",
                f"        raise ValueError(f'{op.name}: {{path!r}} is none of the modules this plugin was written for')",
                f"    return {made}"]
    sub = [] if op.bound is None else bound_lines(op.name, op.alias, re.sub(r"[^A-Za-z0-9_.]", "_", class_name(op.cls)),
                                                   op.bound)
    return [*sub, "", "",
            f"def _{op.name}(in_shape{', ' + params if params else ''}):",
            *body,
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
            *([f"_PATHS_{op.name} = {tuple(op.paths)!r}"] if op.paths is not None else []),
            f"_SHAPES_{op.name} = {op.shapes!r}",
            f"archdsl.register_op({op.name!r}, _{op.name}, shape=_{op.name}_shape, doc={class_name(op.cls)!r})"]


_SOURCE_LINES = '''

_MODEL = {{}}


def _model():
    """The model as `archc import` built it, {call}, built once (on the CPU, the
    random number generator left as it was): the classes taken from their source below come from it."""
    if "model" not in _MODEL:
        import torch
        with torch.random.fork_rng(devices=[]), torch.device("cpu"):
            _MODEL["model"] = {call}
    return _MODEL["model"]


def _submodule(path):
    """A copy of the source model's module at ``path`` (the spec loads its weights), on the default device."""
    import copy
    import torch
    sub = copy.deepcopy(_model().get_submodule(path))
    device = torch.empty(0).device
    return sub if device.type == "cpu" else sub.to(device)'''


def plugin_source(ops: list[PluginOp], spec_name: str, paths: dict[str, str] | None = None) -> str:
    """The plugin file: loads the classes by module and qualified name and registers one op per kept class.
    ``paths`` maps a module loaded from a user's file to its folder, which the plugin puts on ``sys.path``."""
    lines: list[str] = []
    for op in ops:
        lines += _op_lines(op)     # (writes the defaults: may add references)
    w = ops[0].writer
    head = [f'"""Plugin ops for {spec_name}.arch, written by `archc import`: the classes kept whole.',
            "",
            f"Load it with `archc ... --plugin {spec_name}_plugins.py` (or ARCHDSL_PLUGINS); it imports the",
            'classes below, so their packages must be importable."""']
    dirs = sorted({(paths or {})[m] for m, _ in w.refs if m in (paths or {})})
    pre = ["import sys", *(f"sys.path.insert(0, {d!r})" for d in dirs), ""] if dirs else []
    imps = ["import archdsl"] + (["import functools"] if w.functools else []) + ["import importlib", "", ""]
    refs = [f"{alias} = _load({m!r}, {q!r})" for (m, q), alias in w.refs.items()]
    srcs = [o for o in ops if o.paths is not None]
    helpers = BOUND_HELPERS.splitlines() if any(o.bound is not None for o in ops) else []
    tail = ["", "", "def _t(v):", '    """Lists as tuples: a spec passes tuples, a default may be a list."""',
            "    return tuple(v) if isinstance(v, list) else v"]
    return "\n".join(head + pre + imps + LOAD_SOURCE.splitlines() + ["", ""] + refs
                     + (_SOURCE_LINES.format(call=srcs[0].call).splitlines() if srcs else []) + helpers
                     + lines + tail) + "\n"
