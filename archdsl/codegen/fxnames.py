"""The torch.fx node names of a network's steps, without torch: what ``create_feature_extractor`` takes.

torchvision's feature extraction (``get_graph_node_names``, ``create_feature_extractor(model, return_nodes)``)
names each step of the symbolically traced model: a leaf module call by its path (``layer1.0.conv1``), any
other call by the path of the module whose ``forward`` makes it, a dot and the fx name of the function
(``layer1.0.add_``, ``adaptive_avg_pool2d``, ``features.1.0.attn.getitem_18``: the ``_k`` counts the earlier
steps of that name in that module, every ``x.shape[0]`` included). A module path names the module's output.

:func:`fx_node_names` replays the symbolic trace of the generated module on the program codegen builds
(:class:`archdsl.codegen.emit._Parts`: the same bodies, the same ``nn.Sequential`` decisions): each
statement's expression, rendered as it is written out, is evaluated over values that are traced tensors,
constants or modules, in eval mode (``self.training`` is False: a drop-path is no step there), creating the
fx nodes Python's evaluation order creates. A statement whose code the replay does not model names its node,
and the later ones of that forward, by the enclosing module's path (still a name the feature extractor takes:
that module's output); in the network's own forward, which has no path, those nodes are left out (the
summary keeps their IR names). Every network of specs/ and examples/ replays completely.
"""
from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable
from typing import Any

from ..ir import Graph
from ..ops import HELPERS
from .emit import _Parts
from .names import GenerationError
from .program import PLAIN_CALL, Body, Ctor, Stmt
from .render import _Holes, render_expr

__all__ = ["fx_node_names"]

_STRIP = re.compile(r".+_[0-9]+$")       # fx's global ``_k`` suffix, which torchvision makes module-local
_CAMEL = re.compile(r"(?<=[a-z])([A-Z])")
_ILLEGAL = re.compile(r"[^0-9a-zA-Z_]+")
_BINOPS: dict[type, tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Add: ("add", operator.add), ast.Sub: ("sub", operator.sub), ast.Mult: ("mul", operator.mul),
    ast.Div: ("truediv", operator.truediv), ast.FloorDiv: ("floordiv", operator.floordiv),
    ast.Mod: ("mod", operator.mod), ast.Pow: ("pow", operator.pow), ast.MatMult: ("matmul", operator.matmul),
    ast.BitAnd: ("and_", operator.and_), ast.BitOr: ("or_", operator.or_), ast.BitXor: ("xor", operator.xor),
    ast.LShift: ("lshift", operator.lshift), ast.RShift: ("rshift", operator.rshift)}
_CMPOPS: dict[type, tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Eq: ("eq", operator.eq), ast.NotEq: ("ne", operator.ne), ast.Lt: ("lt", operator.lt),
    ast.LtE: ("le", operator.le), ast.Gt: ("gt", operator.gt), ast.GtE: ("ge", operator.ge),
    ast.Is: ("", operator.is_), ast.IsNot: ("", operator.is_not)}
# torch's submodules an expression may name on the way to a function (``torch.nn.functional.relu``)
_NAMESPACES = frozenset({"jit", "fx", "nn", "functional", "linalg", "fft", "special", "autograd"})
_NS_PREFIX = {"linalg": "linalg_", "fft": "fft_", "special": "special_"}
_BUILTINS: dict[str, Callable[..., Any]] = {"int": int, "float": float, "bool": bool, "min": min, "max": max,
                                            "abs": abs, "len": len, "list": list, "tuple": tuple, "range": range}


class _Unsupported(Exception):
    """Code the replay does not model (the step is then named by its module's path)."""


class _V:
    """A value of the replayed trace: ``proxy`` (a traced tensor: ``name`` is its node's feature-extraction
    name), ``attr`` (``x.shape``: a getattr node only once something reads it), ``const``, ``module`` (a
    child module at path ``name``; ``leaf``: traced as one call), ``fn`` (a function named ``name``),
    ``self`` or ``seq`` (a tuple or list holding traced values)."""

    __slots__ = ("kind", "leaf", "name", "node", "value")

    def __init__(self, kind: str, name: str = "", value: Any = None, leaf: bool = True) -> None:
        self.kind, self.name, self.value, self.leaf = kind, name, value, leaf
        self.node: _V | None = None   # an attr's getattr node, once made (fx caches it on the Attribute proxy)


def _const(v: Any) -> _V:
    return _V("const", value=v)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _leaf_ctor(expr: tuple[Any, ...]) -> bool:
    """Whether a module constructor builds a torch.nn module fx traces as one call (not a container)."""
    head = next((p for p in expr if isinstance(p, str) and p.strip()), "")
    return head.startswith("nn.") and not head.startswith(("nn.Sequential", "nn.ModuleList", "nn.ModuleDict"))


def _helper_defs() -> tuple[dict[str, ast.FunctionDef], set[str]]:
    """The codegen helpers' functions by name, and those ``torch.fx.wrap`` makes one call of the trace."""
    defs: dict[str, ast.FunctionDef] = {}
    wrapped: set[str] = set()
    from .render import CHECK_INPUT_HELPER
    for text in [*HELPERS.values(), CHECK_INPUT_HELPER]:
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        for st in tree.body:
            if isinstance(st, ast.FunctionDef):
                defs[st.name] = st
            elif (isinstance(st, ast.Expr) and isinstance(st.value, ast.Call) and st.value.args
                  and isinstance(st.value.args[0], ast.Constant) and ast.unparse(st.value.func) == "torch.fx.wrap"):
                wrapped.add(str(st.value.args[0].value))
    return defs, wrapped


class _Replay:
    """One symbolic trace of the generated network, replayed."""

    def __init__(self, parts: _Parts) -> None:
        self.bodies = parts.bodies
        self.sequential = parts.sequential
        self.last: dict[str, int] = {}          # feature-extraction name -> its latest ``_k``
        self.params: dict[str, _V] = {}          # fx makes one get_attr node per parameter or buffer
        self.names: dict[int, str] = {}          # IR node id -> name
        self.defs, self.wrapped = _helper_defs()
        self.path = ""                           # the module whose forward runs
        self.opaque: set[str] = set()            # modules whose forward the replay could not follow

    # ------------------------------------------------------------------------------------------ nodes
    def _name(self, raw: str) -> str:
        """torchvision's NodePathTracer naming: drop fx's global ``_k``, add the local one."""
        if _STRIP.match(raw):
            raw = raw.rsplit("_", 1)[0]
        k = self.last.get(raw)
        self.last[raw] = 0 if k is None else k + 1
        return raw if k is None else f"{raw}_{k + 1}"

    def node(self, fx_name: str) -> _V:
        """A call_function/call_method node made in the current module's forward."""
        if self.path in self.opaque:
            return _V("proxy", self.path)
        return _V("proxy", self._name(_join(self.path, fx_name)))

    def get_attr(self, target: str) -> _V:
        if target not in self.params:
            fx = _ILLEGAL.sub("_", _CAMEL.sub(r"_\1", target).lower())
            fx = "_" + fx if fx[:1].isdigit() else fx
            self.params[target] = self.node(fx)
        return self.params[target]

    def call_module(self, path: str, leaf: bool) -> _V:
        if not leaf:   # traced through: its own steps; its path names its output
            return _V("proxy", path)
        return _V("proxy", path if self.path in self.opaque else self._name(path))

    def tensor(self, v: _V) -> _V:
        """``v`` as a node argument: an attribute read becomes its getattr node (once)."""
        if v.kind == "attr":
            if v.node is None:
                self.tensor(v.value)
                v.node = self.node("getattr")
            return v.node
        if v.kind == "seq":
            for x in v.value:
                self.tensor(x)
        return v

    # ------------------------------------------------------------------------------------------ units
    def run(self) -> dict[int, str]:
        x = _V("proxy", self._name("x"))          # the forward's placeholder
        self.node("_check_input")                  # the input guard (torch.fx.wrap'd)
        self.unit("", [x])
        return self.names

    def unit(self, path: str, ins: list[_V]) -> list[_V]:
        body = self.bodies.get(path)
        if body is None:
            raise GenerationError(f"internal: no program for the unit '{path}'")
        old, self.path = self.path, path
        try:
            return self._body(body, ins, path in self.sequential)
        finally:
            self.path = old

    def _body(self, body: Body, ins: list[_V], sequential: bool) -> list[_V]:
        env: dict[int, _V] = dict(enumerate(ins))
        ctors = {c.path: c for c in body.ctors}
        for s in body.stmts:
            args = [env[i] for i in s.ins]
            if s.kind == "call":
                outs = self.unit(_join(self.path, s.ref), args)
                env.update(zip(s.outs, outs))
                continue
            if s.kind == "alias":
                # in an nn.Sequential an identity is an nn.Identity child: a step of its own
                v = self.call_module(_join(self.path, s.name), True) if sequential else args[0]
            elif sequential:
                ctor = ctors.get(s.ref) if s.expr == PLAIN_CALL else None
                leaf = _leaf_ctor(ctor.expr) if ctor is not None else _leaf_ctor(s.module_form or ())
                v = self.call_module(_join(self.path, s.name), leaf)
            else:
                v = self.stmt(s, ctors, args)
            env[s.outs[0]] = v
            if s.kind == "op" and s.node >= 0 and v.name:
                self.names[s.node] = v.name
        return [env[r] for r in body.returns]

    def stmt(self, s: Stmt, ctors: dict[str, Ctor], args: list[_V]) -> _V:
        if self.path not in self.opaque:
            try:
                text = render_expr(s.expr, _Holes(None, 0), [f"_in{k}" for k in range(len(args))], "__mod__")
                env = {f"_in{k}": a for k, a in enumerate(args)}
                if s.ref:
                    env["__mod__"] = self.ref(s.ref, ctors)
                v = _Eval(self, env).expr(ast.parse(text.strip(), mode="eval").body)
                v = self.tensor(v)
                if v.kind == "proxy":
                    return v
            except Exception:   # any code the replay cannot evaluate (_Unsupported, or Python refusing a value)
                pass
            # from here on this forward's steps cannot be counted: its path names them all
            self.opaque.add(self.path)
        return _V("proxy", self.path)   # (the network's own forward: no name, the IR's is kept)

    def ref(self, rel: str, ctors: dict[str, Ctor]) -> _V:
        c = ctors.get(rel)
        full = _join(self.path, rel)
        if c is not None and c.kind in ("param", "buffer", "buffer-np"):
            return self.get_attr(full)
        return _V("module", full, leaf=c is not None and c.kind == "module" and _leaf_ctor(c.expr))


class _Eval:
    """Python's evaluation of one expression (or a helper's body) over replayed values."""

    def __init__(self, rp: _Replay, env: dict[str, _V]) -> None:
        self.rp, self.env = rp, env

    def expr(self, e: ast.expr) -> _V:
        m = getattr(self, "_" + type(e).__name__, None)
        if m is None:
            raise _Unsupported(type(e).__name__)
        return m(e)  # type: ignore[no-any-return]

    def _Constant(self, e: ast.Constant) -> _V:
        return _const(e.value)

    def _Name(self, e: ast.Name) -> _V:
        if e.id in self.env:
            return self.env[e.id]
        if e.id in ("torch", "F", "nn", "math"):
            return _V("fn", e.id, value="ns")
        if e.id == "self":
            return _V("self")
        if e.id in self.rp.defs or e.id in _BUILTINS or e.id == "getattr":
            return _V("fn", e.id)
        raise _Unsupported(e.id)

    def _items(self, elts: list[ast.expr]) -> list[_V]:
        """The values of a tuple's items or a call's positional arguments, ``*seq`` spread."""
        items: list[_V] = []
        for x in elts:
            if isinstance(x, ast.Starred):
                v = self.expr(x.value)
                if v.kind not in ("const", "seq"):
                    raise _Unsupported("starred")
                items += [_const(y) for y in v.value] if v.kind == "const" else list(v.value)
            else:
                items.append(self.expr(x))
        return items

    def _seq(self, e: ast.Tuple | ast.List, kind: type) -> _V:
        items = self._items(e.elts)
        if all(v.kind == "const" for v in items):
            return _const(kind(v.value for v in items))
        return _V("seq", value=tuple(items))

    def _Tuple(self, e: ast.Tuple) -> _V:
        return self._seq(e, tuple)

    def _List(self, e: ast.List) -> _V:
        return self._seq(e, list)

    def _Slice(self, e: ast.Slice) -> _V:
        parts = [self.expr(p) if p is not None else _const(None) for p in (e.lower, e.upper, e.step)]
        if all(p.kind == "const" for p in parts):
            return _const(slice(*(p.value for p in parts)))
        return _V("seq", value=tuple(parts))

    def _Attribute(self, e: ast.Attribute) -> _V:
        return self.attribute(self.expr(e.value), e.attr)

    def attribute(self, base: _V, attr: str) -> _V:
        if base.kind == "fn" and base.value == "ns":
            if attr in _NAMESPACES:
                return _V("fn", attr, value="ns")
            # fx names a call by the function's __name__: torch.linalg.vector_norm is linalg_vector_norm
            return _V("fn", _CAMEL.sub(r"_\1", _NS_PREFIX.get(base.name, "") + attr).lower())
        if base.kind in ("proxy", "attr"):
            return _V("attr", attr, value=base)
        if base.kind == "self":
            if attr == "training":
                return _const(False)
            raise _Unsupported("self." + attr)
        if base.kind == "module":
            if attr in ("weight", "bias"):
                return self.rp.get_attr(_join(base.name, attr))
            raise _Unsupported("module attribute")
        if base.kind == "const":
            return _const(getattr(base.value, attr))
        raise _Unsupported("attribute")

    def _Subscript(self, e: ast.Subscript) -> _V:
        base = self.expr(e.value)
        idx = self.expr(e.slice)
        if base.kind == "const" and idx.kind == "const":
            return _const(base.value[idx.value])
        if base.kind == "seq" and idx.kind == "const" and isinstance(idx.value, int):
            return base.value[idx.value]  # type: ignore[no-any-return]
        return self.op("getitem", [base, idx])

    def op(self, name: str, args: list[_V]) -> _V:
        if not any(self._traced(a) for a in args):
            raise _Unsupported(name)
        for a in args:
            self.rp.tensor(a)
        return self.rp.node(name)

    def _traced(self, v: _V) -> bool:
        if v.kind in ("proxy", "attr"):
            return True
        return v.kind == "seq" and any(self._traced(x) for x in v.value)

    def _BinOp(self, e: ast.BinOp) -> _V:
        a, b = self.expr(e.left), self.expr(e.right)
        name, fn = _BINOPS.get(type(e.op), ("", None))  # type: ignore[arg-type]
        if fn is None:
            raise _Unsupported("operator")
        if a.kind == "const" and b.kind == "const":
            return _const(fn(a.value, b.value))
        return self.op(name, [a, b])

    def _UnaryOp(self, e: ast.UnaryOp) -> _V:
        v = self.expr(e.operand)
        if v.kind == "const":
            unary: dict[type, Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos,
                                                       ast.Not: operator.not_, ast.Invert: operator.invert}
            return _const(unary[type(e.op)](v.value))
        name = {ast.USub: "neg", ast.UAdd: "pos", ast.Invert: "invert"}.get(type(e.op))
        if name is None:   # ``not`` of a traced value: a branch on data
            raise _Unsupported("not")
        return self.op(name, [v])

    def _Compare(self, e: ast.Compare) -> _V:
        if len(e.ops) != 1:
            raise _Unsupported("chained comparison")
        a, b = self.expr(e.left), self.expr(e.comparators[0])
        name, fn = _CMPOPS.get(type(e.ops[0]), ("", None))  # type: ignore[arg-type]
        if fn is None:
            raise _Unsupported("comparison")
        if a.kind == "const" and b.kind == "const":
            return _const(fn(a.value, b.value))
        if not name:
            raise _Unsupported("identity test")
        return self.op(name, [a, b])

    def _BoolOp(self, e: ast.BoolOp) -> _V:
        out: _V = _const(None)
        for x in e.values:
            out = self.expr(x)
            if out.kind != "const":
                raise _Unsupported("bool of a traced value")
            if bool(out.value) == isinstance(e.op, ast.Or):
                return out
        return out

    def _IfExp(self, e: ast.IfExp) -> _V:
        c = self.expr(e.test)
        if c.kind != "const":
            raise _Unsupported("branch on a traced value")
        return self.expr(e.body if c.value else e.orelse)

    def _Call(self, e: ast.Call) -> _V:
        f = self.expr(e.func)
        args = self._items(e.args)
        kwargs: dict[str, _V] = {}
        for k in e.keywords:
            if k.arg is None:
                raise _Unsupported("**kwargs")
            kwargs[k.arg] = self.expr(k.value)
        every = args + list(kwargs.values())
        if f.kind == "attr":   # a method of a traced value: one call_method node
            self.rp.tensor(f.value)
            for v in every:
                self.rp.tensor(v)
            return self.rp.node(f.name)
        if f.kind == "module":
            for v in every:
                self.rp.tensor(v)
            return self.rp.call_module(f.name, f.leaf)
        if f.kind != "fn":
            raise _Unsupported("call")
        if f.name == "getattr" and len(args) == 2 and not kwargs and args[1].kind == "const":
            return self.attribute(args[0], str(args[1].value))
        if f.name in self.rp.defs and f.name not in self.rp.wrapped:
            return self.helper(self.rp.defs[f.name], args, kwargs)
        traced = any(self._traced(a) for a in every)
        if f.name in _BUILTINS:
            if traced or any(a.kind != "const" for a in every):
                raise _Unsupported(f.name + " of a traced value")
            return _const(_BUILTINS[f.name](*(a.value for a in args), **{k: v.value for k, v in kwargs.items()}))
        if not traced:   # a torch function of constants runs for real: no node
            return _const(None)
        return self.op(f.name, every)

    # -------------------------------------------------------------------------------- helper bodies
    def helper(self, fn: ast.FunctionDef, args: list[_V], kwargs: dict[str, _V]) -> _V:
        """Run a (not fx-wrapped) codegen helper's body, as tracing runs it."""
        if fn.args.vararg or fn.args.kwarg or fn.args.kwonlyargs or fn.args.defaults:
            raise _Unsupported("helper signature")
        names = [a.arg for a in fn.args.args]
        if len(args) > len(names) or set(kwargs) - set(names):
            raise _Unsupported("helper call")
        env = dict(zip(names, args))
        env.update(kwargs)
        if set(env) != set(names):
            raise _Unsupported("helper call")
        inner = _Eval(self.rp, env)
        out = inner.block(fn.body)
        if out is None:
            raise _Unsupported("helper without a value")
        return out

    def block(self, stmts: list[ast.stmt]) -> _V | None:
        for st in stmts:
            if isinstance(st, ast.Return):
                return self.expr(st.value) if st.value is not None else _const(None)
            if isinstance(st, ast.If):
                c = self.expr(st.test)
                if c.kind != "const":
                    raise _Unsupported("branch on a traced value")
                out = self.block(st.body if c.value else st.orelse)
                if out is not None:
                    return out
            elif isinstance(st, (ast.Assign, ast.AnnAssign)) and st.value is not None:
                targets = st.targets if isinstance(st, ast.Assign) else [st.target]
                v = self.expr(st.value)
                for t in targets:
                    self.assign(t, v)
            elif isinstance(st, ast.Expr):
                self.expr(st.value)
            elif not isinstance(st, ast.Pass):
                raise _Unsupported(type(st).__name__)
        return None

    def assign(self, t: ast.expr, v: _V) -> None:
        if isinstance(t, ast.Name):
            self.env[t.id] = v
        elif isinstance(t, (ast.Tuple, ast.List)) and all(isinstance(x, ast.Name) for x in t.elts):
            if v.kind == "const" or v.kind == "seq":
                vals = [_const(y) for y in v.value] if v.kind == "const" else list(v.value)
            else:   # unpacking a traced value: fx reads it item by item (getitem nodes)
                vals = [self.op("getitem", [v, _const(k)]) for k in range(len(t.elts))]
            if len(vals) != len(t.elts):
                raise _Unsupported("unpack")
            for x, y in zip(t.elts, vals):
                self.env[x.id] = y  # type: ignore[attr-defined]
        else:
            raise _Unsupported("assignment target")


def fx_node_names(graph: Graph) -> dict[int, str]:
    """IR node id -> the name torchvision's feature extraction gives that node's output in the eval-mode trace
    of the module :func:`archdsl.build` makes from ``graph`` (a module path or an fx node name, e.g.
    ``layer1.0.conv1``, ``layer1.0.add_``, ``flatten``; a step with no node of its own in eval mode, such as a
    drop-path, is named by the node whose value it passes on). Identities and the input are not listed."""
    return _Replay(_Parts(graph, "")).run()
