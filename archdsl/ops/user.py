"""User ops: an :class:`~archdsl.ops.core.OpDef` made from a Python factory (torch-free registry side).

:func:`archdsl.plugins.register_op` (the public entry, which may import torch) describes a plugin op as a
:class:`UserOp` and calls :func:`register_user_op`; this module turns it into an ordinary ``OpDef``, so
lowering, checking, summaries, rendering and code generation treat it like a built-in:

- the op's arguments are the factory's parameters after ``in_shape`` (names, defaults, and a type taken
  from an ``int``/``float``/``bool``/``str`` annotation; anything else is :attr:`ArgType.ANY`);
- an op with several tensor inputs (``UserOp.inputs`` > 1, from the module's ``forward`` or given) is an
  ``OpDef`` of that arity, called like ``matmul`` over named tensors (``fuse(a, b, width=64)``); its
  ``in_shape`` is then a tuple of shapes, one per input, and its forward is called with the inputs in order;
- its arguments are normalized once, when the call is bound (lists become tuples, recursively), so the
  shape rule, the graph, summaries, generated code and the built module all see the same values;
- its shape rule calls the plugin's functions once per distinct (input shape, arguments) and keeps the
  output shape, parameter count and MACs together, so an exception raised by plugin code (a factory, a
  shape function, a meta-device forward) becomes one :class:`ShapeError`, which lowering reports at the
  spec line that called the op;
- inside :func:`verifying_shapes` (what ``build``, ``source``, ``summary``, ``compile`` and ``deploy`` run
  under; ``check`` and ``render`` stay torch-free and trust the plugin) a declared ``shape``/``params``
  function is compared once per (input shape, arguments) with the module built on the ``meta`` device;
  a disagreement is a :class:`ShapeError` at the call naming the plugin and both values;
- code generation constructs the module as ``<alias>.<factory>(<in_shape>, <args>)`` with every value a
  :class:`Lit`/:class:`Kw` piece (rendered with a checked ``repr``), and imports the plugin module through
  a :data:`~archdsl.ops.tensor.HELPERS` entry ``import <module> as <alias>``. The module and factory names
  come from the Python object the plugin registered, never from spec text, and are checked to be
  identifiers before they are written.
"""
from __future__ import annotations

import contextlib
import contextvars
import inspect
import keyword
import math
import re
import sys
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ..errors import ArchError
from .core import MOD, OPS, REQUIRED, ArgSpec, ArgType, EmitArgs, Expr, In, Kw, Lit, OpDef, ShapeError, Shape, register
from .tensor import HELPERS

__all__ = ["UserOp", "PYTHON_DEFAULT", "register_user_op", "unregister_user_op", "user_ops", "factory_args",
           "forward_inputs", "import_alias", "verifying_shapes", "as_spec_value"]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_CACHE_MAX = 4096   # distinct (input shape, arguments) results kept per op


class _PythonDefault:
    """The default of a factory parameter that a spec cannot write (an object, a class): left to Python."""

    def __repr__(self) -> str:
        return "<python default>"


#: Stands for a factory default that is not a spec value; such an argument is passed only when given.
PYTHON_DEFAULT: Any = _PythonDefault()

Result = tuple[Shape, int, int]   # output shape, parameter count, MACs
InShape = Any   # a shape (one input), or a tuple of shapes (an op with several inputs)
Infer = Callable[["UserOp", InShape, tuple[Any, ...], dict[str, Any]], Result]
#: What the module really does: (its output shape, or None when its forward cannot run on ``meta``; its
#: parameter count), or None when it cannot be built there (no torch, a factory that needs real tensors).
Verify = Callable[["UserOp", InShape, tuple[Any, ...], dict[str, Any]], "tuple[Shape | None, int] | None"]

_VERIFY: contextvars.ContextVar[bool] = contextvars.ContextVar("archdsl_verify_plugin_shapes", default=False)


@contextlib.contextmanager
def verifying_shapes(on: bool = True) -> Iterator[None]:
    """Within this context, plugin ops' declared ``shape``/``params`` functions are checked against the
    module on the ``meta`` device (once per op, input shape and arguments); outside it they are trusted
    (``archc check``/``render``, ``archdsl.graph``: no module is built, torch is never imported for it)."""
    token = _VERIFY.set(on)
    try:
        yield
    finally:
        _VERIFY.reset(token)


@dataclass
class UserOp:
    """A plugin op: the factory and the optional shape/params/macs functions the plugin gave.

    ``infer(op, in_shape, args, kwargs)`` is what the shape rule calls: :mod:`archdsl.plugins` supplies one
    that uses the plugin's functions and falls back to the ``meta`` device. ``positional`` names the
    factory's positional-only parameters (passed by position, in order). ``inputs`` is the number of
    tensors the module's forward takes; with more than one, ``in_shape`` is a tuple of their shapes."""

    name: str
    factory: Callable[..., Any]
    infer: Infer
    args: list[ArgSpec]
    positional: tuple[str, ...] = ()
    shape: Callable[..., Any] | None = None
    params: Callable[..., Any] | None = None
    macs: Callable[..., Any] | None = None
    doc: str = ""
    family: str = "plugin"
    inputs: int = 1
    input_names: tuple[str, ...] = ()   # the forward's parameter names, for messages
    verify: Verify | None = None
    _cache: dict[str, Result] = field(default_factory=dict, repr=False)
    _checked: dict[str, tuple[str, str] | None] = field(default_factory=dict, repr=False)  # key -> problem

    @property
    def module(self) -> str:
        return str(getattr(self.factory, "__module__", "") or "")

    @property
    def qualname(self) -> str:
        return str(getattr(self.factory, "__qualname__", "") or getattr(self.factory, "__name__", ""))

    def where(self) -> str:
        """``attention.ECA`` style: what the hints name."""
        return f"{self.module}.{self.qualname}" if self.module else self.qualname

    def in_shape(self, shapes: list[Shape]) -> InShape:
        """What the factory and the plugin's functions get: the input's shape, or a tuple of the inputs'
        shapes for an op with several inputs."""
        if self.inputs == 1:
            return tuple(shapes[0])
        return tuple(tuple(s) for s in shapes)

    def call_args(self, bound: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The factory's positional and keyword arguments for bound spec values (lists become tuples, the
        form generated code writes them in; unset Python defaults are left out)."""
        vals = {k: as_spec_value(v) for k, v in bound.items() if v is not PYTHON_DEFAULT}
        pos = tuple(vals.pop(k) for k in self.positional if k in vals)
        return pos, vals


_USER: dict[str, UserOp] = {}


def user_ops() -> dict[str, UserOp]:
    """The registered plugin ops by name (a copy)."""
    return dict(_USER)


def as_spec_value(v: Any) -> Any:
    """A bound argument in the one form every stage sees: lists (at any depth) become tuples, which are
    hashable, compare equal in the graph and in generated code, and are what the factory receives."""
    if isinstance(v, (list, tuple)):
        return tuple(as_spec_value(x) for x in v)
    return v


def _is_data(v: Any, depth: int = 0) -> bool:
    """A value a spec can write and generated code can spell with ``repr``."""
    if v is None or isinstance(v, (bool, int, str)):
        return True
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, (list, tuple)) and depth < 8:
        return all(_is_data(x, depth + 1) for x in v)
    return False


def _dotted(name: str) -> bool:
    return bool(name) and all(_IDENT.match(p) and not keyword.iskeyword(p) for p in name.split("."))


def import_alias(module: str) -> str:
    """The name generated code imports plugin ``module`` as (``_plugin_attention``)."""
    return "_plugin_" + module.replace(".", "__")


_ANNOTATED = {int: ArgType.INT, float: ArgType.FLOAT, bool: ArgType.BOOL, str: ArgType.STR,
              "int": ArgType.INT, "float": ArgType.FLOAT, "bool": ArgType.BOOL, "str": ArgType.STR}


def factory_args(name: str, factory: Callable[..., Any]) -> tuple[list[ArgSpec], tuple[str, ...]]:
    """The op's arguments: the factory's parameters after ``in_shape`` (for a class, its ``__init__``'s).

    Raises ValueError for a factory a spec could not call: no ``in_shape`` parameter, ``*args``/``**kwargs``
    (a spec call is checked against named parameters), or a parameter name that is not an identifier."""
    target = factory.__init__ if inspect.isclass(factory) else factory   # type: ignore[misc]
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError) as e:
        raise ValueError(f"op {name!r}: cannot read the signature of {factory!r}: {e}") from None
    ps = list(sig.parameters.values())
    if inspect.isclass(factory) and ps and ps[0].name == "self":
        ps = ps[1:]
    if not ps or ps[0].kind not in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        raise ValueError(f"op {name!r}: the factory must take the input shape as its first parameter "
                         "(factory(in_shape, ...))")
    try:
        hints = typing.get_type_hints(target)
    except Exception:   # unresolvable annotations: the arguments are simply untyped
        hints = {}
    specs: list[ArgSpec] = []
    positional: list[str] = []
    for p in ps[1:]:
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise ValueError(f"op {name!r}: the factory takes *{p.name}; a spec call is checked against named "
                             "parameters, so list them (or wrap the class in a factory function that does)")
        if not _IDENT.match(p.name):
            raise ValueError(f"op {name!r}: parameter {p.name!r} is not an ASCII identifier")
        if p.kind is inspect.Parameter.POSITIONAL_ONLY:
            positional.append(p.name)
        if p.default is inspect.Parameter.empty:
            default: Any = REQUIRED
        elif _is_data(p.default):
            default = list(p.default) if isinstance(p.default, tuple) else p.default
        else:
            default = PYTHON_DEFAULT
        ann = hints.get(p.name, p.annotation)
        t = _ANNOTATED.get(ann, ArgType.ANY) if isinstance(ann, (type, str)) else ArgType.ANY
        if default is PYTHON_DEFAULT or (default is not REQUIRED and not _type_ok(t, default)):
            t = ArgType.ANY   # e.g. 'k: int = None': the annotation does not cover the default
        specs.append(ArgSpec(p.name, t, default, doc=f"argument of {name}"))
    return specs, tuple(positional)


def forward_inputs(name: str, factory: Callable[..., Any], inputs: int | None = None) -> tuple[int, tuple[str, ...]]:
    """How many tensors op ``name``'s module takes, and their names for messages (the ``forward``'s, when
    known): ``inputs`` when given, else read from the ``forward`` of a class factory (its positional
    parameters after ``self`` that have no default: ``forward(self, q, kv, mask=None)`` takes 2), else 1
    (a function factory's module is not known before it is built).

    Raises ValueError for an ``inputs`` that is not a positive int or that the class's ``forward`` cannot
    take by position."""
    if inputs is not None and (isinstance(inputs, bool) or not isinstance(inputs, int) or inputs < 1):
        raise ValueError(f"op {name!r}: inputs must be a positive int, got {inputs!r}")
    fwd = getattr(factory, "forward", None) if inspect.isclass(factory) else None
    try:
        ps = list(inspect.signature(fwd).parameters.values())[1:] if callable(fwd) else None
    except (TypeError, ValueError):   # a forward whose signature Python cannot read: no inference
        ps = None
    if ps is None:
        return inputs or 1, ()
    pos_kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = [p for p in ps if p.kind in pos_kinds]
    required = sum(1 for p in positional if p.default is inspect.Parameter.empty)
    variadic = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in ps)
    if inputs is None:   # forward(self, *xs) (or nn.Module's own, unimplemented one) needs inputs=
        inputs = required or 1
        return inputs, tuple(p.name for p in positional[:inputs])
    if inputs < required or (inputs > len(positional) and not variadic):
        names = ", ".join(p.name for p in positional)
        raise ValueError(f"op {name!r}: inputs={inputs}, but {factory.__qualname__}.forward({names}) takes "
                         f"{required}{'' if required == len(positional) else f' to {len(positional)}'} tensors; "
                         f"register it with inputs={required or 1}")
    return inputs, tuple(p.name for p in positional[:inputs])


def _type_ok(t: ArgType, v: Any) -> bool:
    if t is ArgType.ANY:
        return True
    if t is ArgType.BOOL:
        return isinstance(v, bool)
    if t is ArgType.INT:
        return isinstance(v, int) and not isinstance(v, bool)
    if t is ArgType.FLOAT:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    return isinstance(v, str)


def _key(in_shape: InShape, bound: dict[str, Any]) -> str:
    return repr((in_shape, sorted((k, repr(v)) for k, v in bound.items())))


def _check_count(op: UserOp, shapes: list[Shape]) -> None:
    """A ShapeError (at the call) when the op is given another number of tensors than its forward takes."""
    if len(shapes) == op.inputs:
        return
    names = op.input_names if len(op.input_names) == op.inputs else tuple(f"t{i}" for i in range(op.inputs))
    call = f"{op.name}({', '.join(names)}{', name=value' if op.args else ''})"
    raise ShapeError(f"{op.name} takes {op.inputs} tensors, got {len(shapes)}",
                     hint=f"write {call}: {op.inputs} named tensors, in the order of the module's forward, "
                          "then the op's arguments by name")


def _evaluate(op: UserOp, shapes: list[Shape], bound: dict[str, Any]) -> Result:
    """(output shape, params, MACs) of ``op`` at this input and these arguments, computed once."""
    _check_count(op, shapes)
    in_shape = op.in_shape(shapes)
    key = _key(in_shape, bound)
    hit = op._cache.get(key)
    if hit is not None:
        if _VERIFY.get():
            _verify(op, in_shape, bound, hit)
        return hit
    for a in op.args:
        v = bound.get(a.name)
        if v is not PYTHON_DEFAULT and not _is_data(v):
            raise ShapeError(f"argument '{a.name}' must be a number, string, bool, none or a list of them",
                             arg=a.name)
    pos, kw = op.call_args(bound)
    try:
        res = op.infer(op, in_shape, pos, kw)
    except ShapeError:
        raise
    except Exception as e:   # plugin code: reported at the spec line that called the op, not as a traceback
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ShapeError(f"{type(e).__name__}: {msg}" if msg else type(e).__name__,
                         hint=f"raised by plugin op '{op.name}' ({op.qualname} in module {op.module or '?'})") from None
    if len(op._cache) >= _CACHE_MAX:
        op._cache.clear()
    op._cache[key] = res
    if _VERIFY.get():
        _verify(op, in_shape, bound, res)
    return res


def _verify(op: UserOp, in_shape: InShape, bound: dict[str, Any], res: Result) -> None:
    """Raise a ShapeError when the plugin's declared shape (or params) function disagrees with its module
    on the meta device; each (input shape, arguments) is compared once."""
    if op.verify is None or (op.shape is None and op.params is None):
        return   # nothing declared: the values already come from the module itself
    key = _key(in_shape, bound)
    if key not in op._checked:
        pos, kw = op.call_args(bound)
        real = op.verify(op, in_shape, pos, kw)
        problem: tuple[str, str] | None = None
        if real is not None and op.shape is not None and real[0] is not None and tuple(real[0]) != tuple(res[0]):
            problem = (f"the plugin's shape function gives {list(res[0])} but the module returns "
                       f"{list(real[0])} for the input {_shape_text(in_shape)}", "shape")
        elif real is not None and op.params is not None and real[1] != res[1]:
            problem = (f"the plugin's params function gives {res[1]:,} but the module has {real[1]:,} "
                       f"parameters for the input {_shape_text(in_shape)}", "params")
        if len(op._checked) >= _CACHE_MAX:
            op._checked.clear()
        op._checked[key] = problem
    found = op._checked[key]
    if found is not None:
        raise ShapeError(found[0], hint=f"plugin op '{op.name}' ({op.qualname} in module {op.module or '?'}): fix "
                                        f"its {found[1]} function, which summaries, MACs and the input contract "
                                        "rely on (it was compared with the module on the meta device)")


def _shape_text(in_shape: InShape) -> str:
    if in_shape and isinstance(in_shape[0], tuple):
        return ", ".join(str(list(s)) for s in in_shape)
    return str(list(in_shape))


def _checked_names(op: UserOp) -> tuple[str, str]:
    """The module and factory names generated code will spell, checked; ArchError when not importable."""
    mod, qual = op.module, op.qualname
    if not _dotted(mod) or not _dotted(qual) or "<locals>" in qual:
        raise ArchError(f"plugin op '{op.name}': {op.where()} cannot be imported by generated code",
                        None, hint="define the factory at the top level of an importable module")
    obj: Any = sys.modules.get(mod)
    for part in qual.split("."):
        obj = getattr(obj, part, None)
    if obj is not op.factory:
        raise ArchError(f"plugin op '{op.name}': {mod}.{qual} is not the registered factory",
                        None, hint="register the object the module defines under that name")
    return mod, qual


def _ctor(op: UserOp) -> Callable[[EmitArgs], Expr]:
    def ctor(e: EmitArgs) -> Expr:
        mod, qual = _checked_names(op)
        pieces: list[Any] = [f"{import_alias(mod)}.{qual}(", Lit(op.in_shape(e.in_shapes), "in_shape")]
        for a in op.args:
            v = e.args.get(a.name, PYTHON_DEFAULT)
            if v is PYTHON_DEFAULT:
                continue
            if a.name in op.positional:
                pieces += [", ", Lit(v, a.name)]
            elif a.default is REQUIRED:
                pieces += [f", {a.name}=", Lit(v, a.name)]
            else:
                pieces.append(Kw(a.name, v, as_spec_value(a.default)))
        pieces.append(")")
        return tuple(pieces)
    return ctor


def _emit(n: int) -> Callable[[EmitArgs], Expr]:
    """The forward call of a module taking ``n`` tensors: ``self.fuse(a, b)``, the inputs in order."""
    call: tuple[Any, ...] = (MOD, "(", *[p for k in range(n) for p in ((", ", In(k)) if k else (In(k),))], ")")
    return lambda e: call


def register_user_op(op: UserOp) -> OpDef:
    """Register ``op`` as an OpDef (replacing an earlier registration of the same name by a plugin)."""
    if not _IDENT.match(op.name) or keyword.iskeyword(op.name):
        raise ValueError(f"op name {op.name!r} is not an identifier")
    if op.name in OPS and op.name not in _USER:
        raise ValueError(f"'{op.name}' is a built-in op; give the plugin op another name")

    def normalize(shapes: list[Shape], a: dict[str, Any]) -> dict[str, Any]:
        # the graph keeps only spec values: a default only Python can write stays the factory's; lists
        # become tuples here, once, so check, summary, codegen and the factory all see the same values
        return {k: as_spec_value(v) for k, v in a.items() if v is not PYTHON_DEFAULT}

    def shape(shapes: list[Shape], a: dict[str, Any]) -> Shape:
        return _evaluate(op, shapes, a)[0]

    def params(shapes: list[Shape], a: dict[str, Any]) -> int:
        return _evaluate(op, shapes, a)[1]

    def macs(shapes: list[Shape], out: Shape, a: dict[str, Any]) -> int:
        return _evaluate(op, shapes, a)[2]

    mod = op.module
    doc = op.doc or f"plugin op ({op.where()})"
    if op.inputs > 1:   # archc ops shows how it is called: the signature lists only the factory's arguments
        names = op.input_names if len(op.input_names) == op.inputs else tuple(f"t{i}" for i in range(op.inputs))
        doc = f"{doc.rstrip('.')}. Over {op.inputs} named tensors: {op.name}({', '.join(names)}, ...)"
    d = OpDef(op.name, op.family, op.args, shape, doc, params=params, macs=macs,
              stateful=True, ctor=_ctor(op), traits=frozenset({"stateful-module"}), normalize=normalize,
              key_args=tuple(a.name for a in op.args[:4]), arity=op.inputs, emit=_emit(op.inputs),
              helpers=(f"plugin:{mod}",) if _dotted(mod) else ())
    if _dotted(mod):
        HELPERS[f"plugin:{mod}"] = f"import {mod} as {import_alias(mod)}"
    register(d)
    _USER[op.name] = op
    return d


def unregister_user_op(name: str) -> None:
    """Forget plugin op ``name`` (built-in ops cannot be removed)."""
    op = _USER.pop(name, None)
    if op is None:
        raise KeyError(f"no plugin op named {name!r}")
    OPS.pop(name, None)
    if not any(o.module == op.module for o in _USER.values()):
        HELPERS.pop(f"plugin:{op.module}", None)
