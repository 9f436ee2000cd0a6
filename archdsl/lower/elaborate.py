"""Stage 2: AST -> graph IR. Expands blocks, repetition and conditions, and infers every shape.

Elaboration and shape inference run together because the language lets a block look at its input
shape (``in.c``) and take compile-time decisions on it. Errors are collected, not thrown at the first:
a failed layer yields a *poisoned* value that later layers skip silently, so one run reports every
independent mistake.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Iterable, Iterator

from ..lang import ast as A
from ..limits import Limits
from ..errors import ArchError, Diagnostic, Reporter, did_you_mean
from ..ir import Graph, Loc, Node, ScopeFrame
from ..passes.lint import lint_graph
from ..lang.loader import Namespace, Program
from ..lang.parser import KEYWORDS
from ..ops import MULTI_OUTPUT_OPS, OPS, REQUIRED, ArgSpec, OpDef, ShapeError
from ..source import Span

__all__ = ["LayerSpec", "TensorVal", "lower_network", "network_params"]


class _Poison:
    """The value of something that already failed: using it reports nothing more."""

    def __repr__(self) -> str:
        return "<error>"


POISON: Any = _Poison()
ABSENT: Any = object()   # a branch/pipeline that evaluated to nothing (``x if false``)


@dataclass
class LayerSpec:
    """A layer as a compile-time value: an op or block, with the arguments written so far."""

    kind: str                       # 'op' | 'block' | 'multi'
    name: str
    target: Any                     # OpDef | BlockDef | list[ArgSpec]
    span: Span
    args: list[tuple[Any, Span]] = field(default_factory=list)
    kwargs: dict[str, tuple[Any, Span]] = field(default_factory=dict)
    called: bool = False
    call_span: Span | None = None
    label: str | None = None        # a computed label from named("...", layer); an explicit 'label:' wins
    inline: bool = False            # inline(Block(...)): the block's layers go into the caller's container

    def describe(self) -> str:
        if not self.called:
            return self.name
        parts = [_fmt(v) for v, _ in self.args] + [f"{k}={_fmt(v)}" for k, (v, _) in self.kwargs.items()]
        return f"{self.name}({', '.join(parts)})"


@dataclass
class TensorVal:
    """A named value in a block's dataflow: a node's output."""

    nid: int
    shape: tuple[int, ...]

    def attr(self, name: str) -> Any:
        return _shape_attr(self.shape, name)


@dataclass
class ShapeVal:
    """``in``: the input shape of the enclosing block."""

    shape: tuple[int, ...]

    def attr(self, name: str) -> Any:
        return _shape_attr(self.shape, name)


def _shape_attr(shape: tuple[int, ...], name: str) -> Any:
    if name == "shape":
        return list(shape)
    if name == "rank":
        return len(shape)
    idx = {"c": 0, "h": 1, "w": 2}.get(name)
    if idx is None:
        raise KeyError(name)
    if idx >= len(shape):
        raise IndexError(name)
    return shape[idx]


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, LayerSpec):
        return v.describe()
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def _type_name(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if v is None:
        return "none"
    if isinstance(v, LayerSpec):
        return f"layer {v.describe()}"
    if isinstance(v, TensorVal):
        return f"tensor {list(v.shape)}"
    if isinstance(v, ShapeVal):
        return "shape"
    return {int: "int", float: "float", str: "string", list: "list"}.get(type(v), type(v).__name__)


def _named(label: Any, layer: Any) -> "LayerSpec":
    """``named(label, layer)``: the layer, to be named ``label`` where it is applied (when not labelled there)."""
    if not isinstance(label, str) or not label:
        raise TypeError(f"the label must be a non-empty string, got {_type_name(label)} {_fmt(label)}")
    if "." in label or any(ch.isspace() for ch in label):
        raise ValueError(f"the label \"{label}\" may not contain '.' or spaces (it is one module name)")
    if not isinstance(layer, LayerSpec):
        raise TypeError(f"the second argument must be a layer, got {_type_name(layer)}")
    return replace(layer, label=label)


def _inline(layer: Any) -> "LayerSpec":
    """``inline(Block(...))``: the block's layers are named and numbered as if written where it is applied."""
    if not isinstance(layer, LayerSpec) or layer.kind != "block":
        raise TypeError(f"inline(...) takes a block call, got {_type_name(layer)}")
    return replace(layer, inline=True)


def _make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to a multiple of ``divisor``, never going below 90% of it (MobileNet's rule)."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


BUILTINS: dict[str, Callable[..., Any]] = {
    "min": min, "max": max, "abs": abs, "round": round, "int": int, "float": float, "len": len,
    "sum": sum, "range": lambda *a: list(range(*a)), "make_divisible": _make_divisible,
    # EfficientNet's depth multiplier rounds repeat counts up: ceil(n * depth_mult)
    "ceil": math.ceil, "floor": math.floor,
    # computed labels, for module names built from loop indices (RegNet's 'block1-0'): named("b" + str(i), layer)
    "str": lambda v: _fmt(v) if isinstance(v, (bool, type(None))) else str(v),
    "named": lambda label, layer: _named(label, layer),
    # a block expanded in place, without a module level of its own (shared network bodies)
    "inline": lambda layer: _inline(layer),
}
CONSTANTS = {"true": True, "false": False, "none": None}


class _Scope:
    """A naming container: module path prefix, position counter and hierarchy frames."""

    def __init__(self, prefix: str, frames: list[ScopeFrame]):
        self.prefix = prefix
        self.counter = 0
        self.frames = frames

    def child(self, name: str, frame: ScopeFrame) -> "_Scope":
        return _Scope(self.prefix + name + ".", self.frames + [frame])

    def next_name(self, label: str | None) -> str:
        idx = self.counter
        self.counter += 1
        return label if label is not None else str(idx)


class _Env:
    """Lexical environment of a block instance."""

    def __init__(self, ns: Namespace, vars: dict[str, Any], in_shape: tuple[int, ...] | None):
        self.ns = ns
        self.vars = vars
        self.in_shape = in_shape

    def names(self) -> Iterable[str]:
        return [*self.vars, *self.ns.blocks, *OPS, *MULTI_OUTPUT_OPS, *BUILTINS, *CONSTANTS]


class Lowerer:
    """Elaborates one network into a :class:`Graph`."""

    def __init__(self, program: Program, reporter: Reporter, limits: Limits):
        self.program = program
        self.rep = reporter
        self.limits = limits
        self.graph: Graph | None = None
        self.next_id = 0
        self.depth = 0
        self.steps = 0
        self._locs: dict[tuple[str, int, int], Loc] = {}
        self.paths: dict[str, tuple[Span, str]] = {}   # module/container path -> (span, what)
        self.total_params = 0
        self._scope = _Scope("", [])   # the naming scope expressions are evaluated in
        self._reparam: str | None = None
        self._open_groups: dict[str, _Scope] = {}   # labelled groups by path, so a later 'name:' reopens one

    # ------------------------------------------------------------------ diagnostics helpers
    def err(self, msg: str, span: Span | None, hint: str | None = None,
            notes: list[tuple[str, Span | None]] | None = None) -> Any:
        self.rep.add(Diagnostic(msg, span, "error", hint, notes or []))
        return POISON

    def loc(self, span: Span | None) -> Loc | None:
        if span is None:
            return None
        key = (span.path, span.line, span.col)
        loc = self._locs.get(key)
        if loc is None:
            # built without validation: the fields come straight from a Span, already typed
            loc = self._locs[key] = Loc.model_construct(file=span.path, line=span.line, col=span.col)
        return loc

    # ------------------------------------------------------------------ network
    def lower(self, net: A.NetworkDef, overrides: dict[str, Any], override_spans: dict[str, Span]) -> Graph:
        g = Graph(net.name, net.reference)
        g.loc = self.loc(net.name_span)
        self.graph = g
        ns = self.program.namespace_of(net)
        env = _Env(ns, {}, None)
        known = {p.name for p in net.params}
        for k in overrides:
            if k not in known:
                self.err(f"network '{net.name}' has no parameter '{k}'", override_spans.get(k),
                         hint=did_you_mean(k, known) or ("its parameters: " + ", ".join(sorted(known)) if known
                                                         else "it takes no parameters"))
        for p in net.params:
            if p.name in overrides:
                env.vars[p.name] = overrides[p.name]
            elif p.default is not None:
                env.vars[p.name] = self.eval(p.default, env)
            else:
                self.err(f"network parameter '{p.name}' has no default and was not given", p.span,
                         hint=f"give it a default or pass --set {p.name}=...")
                env.vars[p.name] = POISON
        g.params_used = {k: v for k, v in env.vars.items() if v is not POISON and not isinstance(v, LayerSpec)}
        body = list(net.body)
        if not body or not isinstance(body[0], A.InputStmt):
            first = body[0].span if body else net.name_span
            self.err(f"network '{net.name}' must start with its input shape", first,
                     hint="write e.g. 'input [3, 224, 224]' as the first line of the network")
            raise ArchError(self.rep.diagnostics)
        inp = body.pop(0)
        shape_v = self.eval(inp.shape, env)
        shape = self._check_input_shape(shape_v, inp.shape.span)
        if shape is None:
            raise ArchError(self.rep.diagnostics)
        node = self._new_node("input", {}, [], [], shape, "input", None, inp.span, [])
        env.vars["x"] = TensorVal(node.id, shape)
        env.in_shape = shape
        g.inputs.append(node.id)
        root = _Scope("", [ScopeFrame(path="", kind="network", name=net.name,
                                      args=", ".join(f"{k}={_fmt(v)}" for k, v in g.params_used.items()),
                                      loc=self.loc(net.name_span))])
        outputs: list[tuple[str, Span]] = []
        cur = self.exec_body(body, env, TensorVal(node.id, shape), root, outputs=outputs)
        if outputs:
            for name, span in outputs:
                v = env.vars.get(name)
                if isinstance(v, TensorVal):
                    g.outputs.append((name, v.nid))
                elif v is not POISON:
                    self.err(f"output '{name}' is not a named tensor", span,
                             hint=did_you_mean(name, [k for k, x in env.vars.items() if isinstance(x, TensorVal)]))
        elif isinstance(cur, TensorVal):
            g.outputs.append(("out", cur.nid))
        elif isinstance(cur, list) and cur and all(isinstance(t, TensorVal) for t in cur):
            self.err(f"network '{net.name}' ends with {len(cur)} tensors, not one", net.name_span,
                     hint="bind them ('a, b = x -> chunk(2)') and merge them, or list them with 'output a, b'")
        return g

    def _check_input_shape(self, v: Any, span: Span) -> tuple[int, ...] | None:
        if v is POISON:
            return None
        if not isinstance(v, list) or not v or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            self.err(f"input shape must be a list of integers like [3, 224, 224], got {_fmt(v)}", span,
                     hint="the batch dimension is left out: [C, H, W] for images, [F] for vectors")
            return None
        if len(v) not in (1, 3):
            self.err(f"input shape must be [C, H, W] or [F] (batch left out), got {len(v)} dimensions", span,
                     hint="e.g. input [3, 224, 224]")
            return None
        if any(x <= 0 for x in v):
            self.err(f"input shape {v} has a non-positive size", span, hint="every size must be at least 1")
            return None
        if any(x > self.limits.max_channels for x in v):
            self.err(f"input shape {v} exceeds the size limit {self.limits.max_channels:,}", span,
                     hint="the limit is Limits.max_channels")
            return None
        return tuple(v)

    # ------------------------------------------------------------------ statements
    def exec_body(self, stmts: list[A.Stmt], env: _Env, cur: Any, scope: _Scope,
                  outputs: list[tuple[str, Span]] | None = None) -> Any:
        for st in stmts:
            if isinstance(st, A.LetStmt):
                self.exec_let(st, env, scope)
            elif isinstance(st, A.LayerStmt):
                r = self.run_pipeline(st.value, env, cur, scope)
                if r is not ABSENT:
                    cur = r
            elif isinstance(st, A.CombinatorStmt):
                cur = self.run_combinator(st, env, cur, scope)
            elif isinstance(st, A.SeqStmt):
                cur = self.run_seq(st, env, cur, scope)
            elif isinstance(st, A.IfStmt):
                chosen = self._choose(st, env)
                if chosen is not None:
                    cur = self.exec_body(chosen, env, cur, scope, outputs)
            elif isinstance(st, A.InputStmt):
                self.err("'input' may only appear once, as the first line of a network", st.span,
                         hint="blocks take the shape of whatever feeds them; use 'in.c' to read it")
            elif isinstance(st, A.OutputStmt):
                if outputs is None:
                    self.err("'output' may only appear in a network", st.span)
                else:
                    outputs.extend(st.names)
        return cur

    def _choose(self, st: A.IfStmt, env: _Env) -> list[A.Stmt] | None:
        for cond, body in st.branches:
            c = self.eval(cond, env)
            if c is POISON:
                return None
            if not isinstance(c, (bool, int)) or isinstance(c, float):
                self.err(f"a condition must be true or false, got {_type_name(c)} {_fmt(c)}", cond.span,
                         hint="compare it, e.g. 'if stride == 2:'")
                return None
            if c:
                return body
        return st.orelse

    def exec_let(self, st: A.LetStmt, env: _Env, scope: _Scope) -> None:
        self._scope = scope
        items = st.value.items
        first = self.eval(items[0].expr, env) if not items[0].label else ABSENT
        value: Any
        if len(items) == 1 and not _is_tensorish(first) and first is not ABSENT:
            value = first
        elif _is_tensorish(first) or first is POISON:
            value = self.run_pipeline(st.value, env, None, scope, first=first)
        else:
            self.err("a named value must start from a named tensor", items[0].span,
                     hint=f"start the pipeline from a tensor, e.g. '{st.names[0][0]} = x -> ...' "
                          "('x' is the block's input)")
            value = POISON
        names = st.names
        if len(names) == 1:
            self._bind(env, names[0], value)
            return
        if value is POISON:
            for n in names:
                self._bind(env, n, POISON)
            return
        if not isinstance(value, list) or len(value) != len(names):
            n_got = len(value) if isinstance(value, list) else 1
            self.err(f"{len(names)} names but the value has {n_got} part{'s' if n_got != 1 else ''}", st.span,
                     hint="chunk(n) and split([...]) produce several tensors")
            for n in names:
                self._bind(env, n, POISON)
            return
        for n, v in zip(names, value):
            self._bind(env, n, v)

    def _bind(self, env: _Env, name: tuple[str, Span], value: Any) -> None:
        n, span = name
        if n in OPS or n in MULTI_OUTPUT_OPS or n in env.ns.blocks or n in BUILTINS or n in CONSTANTS:
            self.err(f"'{n}' is a built-in or block name and cannot be reassigned", span,
                     hint="choose another name")
            return
        env.vars[n] = value

    # ------------------------------------------------------------------ pipelines
    def run_pipeline(self, pipe: A.Pipeline, env: _Env, cur: Any, scope: _Scope, first: Any = ABSENT) -> Any:
        self._scope = scope
        items = pipe.items
        vals: list[tuple[A.PipeItem, Any]] = []
        head = items[0]
        v0 = first if first is not ABSENT else self.eval(head.expr, env)
        if v0 is POISON and first is not ABSENT:
            return POISON   # a named value whose start already failed (reported there)
        if _is_tensorish(v0):
            if head.label:
                self.err(f"the label '{head.label}' names a layer, but this is a tensor value", head.label_span,
                         hint="labels go on layers: 'y = x -> name: conv2d(...)'")
            start = v0
            rest = items[1:]
        else:
            start = cur
            vals.append((head, v0))
            rest = []
            if len(items) == 1 and v0 is None:
                return ABSENT
            rest = items[1:]
        for it in rest:
            vals.append((it, self.eval(it.expr, env)))
        x = start
        for it, v in vals:
            if x is None:
                return self.err("nothing to apply this layer to: the block's flow starts from a named value",
                                it.span, hint="start from a tensor, e.g. 'x -> conv2d(...)'")
            x = self.apply(v, x, scope, it.label, it.label_span, it.span)
        return x

    def run_seq(self, st: A.SeqStmt, env: _Env, cur: Any, scope: _Scope) -> Any:
        if st.label is None:
            return self.exec_body(st.body, env, cur, scope)
        name = scope.next_name(st.label)
        path = scope.prefix + name
        # A labelled group written again in the same block reopens it and goes on numbering its items:
        # that is how two containers interleave in the forward (RepLKNet: stages.0, transitions.0, stages.1).
        inner = self._open_groups.get(path)
        if inner is None or self.paths.get(path, (None, ""))[1] != "group":
            self._claim(path, st.label_span or st.span, "group")
            inner = scope.child(name, ScopeFrame(path=path, kind="group", name=st.label, loc=self.loc(st.span)))
            self._open_groups[path] = inner
        return self.exec_body(st.body, env, cur, inner)

    def run_combinator(self, st: A.CombinatorStmt, env: _Env, cur: Any, scope: _Scope) -> Any:
        kind = st.kind
        if st.label is not None:
            name = scope.next_name(st.label)
            path = scope.prefix + name
            self._claim(path, st.label_span or st.span, "combinator")
        else:
            name = kind
            path = scope.prefix + kind
        frame_kind = "reparam" if st.reparam else "combinator"
        frame = ScopeFrame(path=path, kind=frame_kind, name=kind, loc=self.loc(st.span))
        inner = scope.child(name, frame) if st.label is not None else _Scope(scope.prefix, scope.frames + [frame])
        if st.label is None:
            inner.counter = scope.counter
        outer_reparam = self._reparam
        st_kwargs = list(st.kwargs)
        if st.reparam:
            if path in self.graph.reparam_groups:   # several unlabelled groups in one scope: keep keys unique
                path = f"{path}#{sum(1 for p in self.graph.reparam_groups if p.split('#')[0] == path)}"
            self._reparam = path
            self.graph.reparam_groups[path] = {"kind": kind, "loc": self.loc(st.span), "label": st.label}
            st_kwargs = self._reparam_fused_name(st, env, scope, path)
        try:
            branches = self._branches(st.body, env, cur, inner)
        finally:
            self._reparam = outer_reparam
        if st.label is None:
            scope.counter = inner.counter
        kwargs = {k.name: (self.eval(k.value, env), k.span) for k in st_kwargs}
        if st.args:
            self.err(f"'{kind}:' takes keyword arguments only (e.g. dim=1)", st.args[0].span)
        if any(b is POISON for b in branches) or cur is POISON:
            return POISON
        if not branches:
            return self.err(f"'{kind}' has no branches", st.span, hint="each indented line is one branch")
        if len(branches) == 1:
            if st.reparam:
                self.graph.reparam_groups[path]["single"] = True
                return self._check_reparam(st, path, cur, branches[0])
            return branches[0]
        out = self.merge(kind, branches, kwargs, scope.prefix + (st.label or kind), st.span,
                         path if st.reparam else None, scope.frames + [frame])
        return self._check_reparam(st, path, cur, out) if st.reparam else out

    def _reparam_fused_name(self, st: A.CombinatorStmt, env: _Env, scope: _Scope, path: str) -> list[A.Kwarg]:
        """Take ``fused="name"`` off a reparam group's arguments and claim the fused conv's module path.

        The deploy form replaces the group by one conv named ``fused`` (default ``reparam_conv``, timm's
        name) inside the group's container: the labelled group itself, or the enclosing block.
        """
        from ..passes.reparam import DEFAULT_FUSED_NAME
        name, span = DEFAULT_FUSED_NAME, st.span
        rest: list[A.Kwarg] = []
        for k in st.kwargs:
            if k.name != "fused":
                rest.append(k)
                continue
            v = self.eval(k.value, env)
            span = k.span
            if v is POISON:
                continue
            if not isinstance(v, str) or not v.isidentifier():
                self.err(f"fused= names the deploy conv and must be an identifier string, got {_fmt(v)}", k.span,
                         hint='e.g. reparam add(fused="lkb_reparam"):')
                continue
            name = v
        prefix = scope.prefix + (st.label + "." if st.label is not None else "")
        self.graph.reparam_groups[path]["fused_path"] = prefix + name
        self._claim(prefix + name, span, "fused reparam conv")
        return rest

    def _check_reparam(self, st: A.CombinatorStmt, path: str, cur: Any, out: Any) -> Any:
        """Prove the group fuses into one conv (archdsl.reparam); otherwise an error at the group's line."""
        if not isinstance(cur, TensorVal) or not isinstance(out, TensorVal):
            return out
        from ..passes.reparam import FusionError, plan_group
        info = self.graph.reparam_groups[path]
        info["input"], info["output"] = cur.nid, out.nid
        try:
            plan_group(self.graph, path)
        except FusionError as e:
            notes = []
            if e.nid is not None:
                n = self.graph.node(e.nid)
                notes.append((f"{n.name or n.op} ({n.op}) is here", self._span_from_loc(n.loc)))
            return self.err(f"reparam group cannot be fused into one conv: {e.message}", st.span,
                            hint=e.hint or "every branch must be linear (conv2d, batchnorm, avgpool, identity)",
                            notes=notes)
        return out

    def _branches(self, stmts: list[A.Stmt], env: _Env, cur: Any, scope: _Scope) -> list[Any]:
        out: list[Any] = []
        for st in stmts:
            if isinstance(st, A.LetStmt):
                self.exec_let(st, env, scope)
            elif isinstance(st, A.LayerStmt):
                r = self.run_pipeline(st.value, env, cur, scope)
                if r is not ABSENT:
                    out.append(r)
            elif isinstance(st, A.SeqStmt):
                out.append(self.run_seq(st, env, cur, scope))
            elif isinstance(st, A.CombinatorStmt):
                out.append(self.run_combinator(st, env, cur, scope))
            elif isinstance(st, A.IfStmt):
                chosen = self._choose(st, env)
                if chosen is not None:
                    out.extend(self._branches(chosen, env, cur, scope))
            else:
                self.err("only branches (layers, groups, if) may appear inside a combinator", st.span)
        return out

    def merge(self, kind: str, branches: list[Any], kwargs: dict[str, tuple[Any, Span]], name: str, span: Span,
              reparam: str | None, frames: list[ScopeFrame]) -> Any:
        tensors = [b for b in branches if isinstance(b, TensorVal)]
        if len(tensors) != len(branches):
            bad = next(b for b in branches if not isinstance(b, TensorVal))
            return self.err(f"'{kind}' combines tensors, got {_type_name(bad)}", span)
        if kind == "stack":
            shapes = [t.shape for t in tensors]
            if any(s != shapes[0] for s in shapes):
                return self.err("stack: branch shapes " + ", ".join(str(list(s)) for s in shapes) + " differ", span,
                                notes=self._provenance(tensors))
            shape = (len(tensors), *shapes[0])
            node = self._new_node("stack", {"dim": 1}, [t.nid for t in tensors], shapes, shape, name, None, span,
                                  frames)
            return TensorVal(node.id, shape)
        opdef = OPS[kind]
        args = self._bind_args(opdef.name, opdef.args, [], kwargs, span)
        if args is None:
            return POISON
        shapes = [t.shape for t in tensors]
        try:
            shape = opdef.shape(shapes, args)
        except ShapeError as e:
            return self.err(e.message, kwargs[e.arg][1] if e.arg in kwargs else span, e.hint,
                            notes=self._provenance(tensors))
        node = self._new_node(kind, args, [t.nid for t in tensors], shapes, shape, name, None, span, frames)
        node.reparam = reparam
        return TensorVal(node.id, shape)

    def _provenance(self, tensors: list[TensorVal]) -> list[tuple[str, Span | None]]:
        """Notes saying which layer produced each operand's shape."""
        notes: list[tuple[str, Span | None]] = []
        for t in tensors[:4]:
            n = self.graph.node(t.nid)
            what = "the network input" if n.op == "input" else f"the output of {n.op} '{n.name}'"
            notes.append((f"{list(t.shape)} is {what}", self._span_from_loc(n.loc)))
        return notes

    def _span_from_loc(self, loc: Loc | None) -> Span | None:
        if loc is None:
            return None
        for spec in self.program.files.values():
            for d in [*spec.blocks.values(), *spec.networks.values()]:
                # the Source's own path: a file's key in program.files may be spelt differently
                if d.span.source.path == loc.file:
                    return Span(d.span.source, loc.line, loc.col)
        return None

    # ------------------------------------------------------------------ applying layers
    def apply(self, v: Any, x: Any, scope: _Scope, label: str | None, label_span: Span | None, span: Span) -> Any:
        if v is POISON:
            scope.next_name(label)
            return POISON
        if v is None:
            return x
        if isinstance(v, list):
            flat = _iter_flat(v)  # lazily: nested repetitions reach Limits.max_nodes before memory runs out
            if label is not None:
                name = scope.next_name(label)
                path = scope.prefix + name
                self._claim(path, label_span or span, "list")
                inner = scope.child(name, ScopeFrame(path=path, kind="group", name=label, loc=self.loc(span)))
            else:
                inner = scope
            for item in flat:
                x = self.apply(item, x, inner, None, None, span)
            return x
        if isinstance(v, LayerSpec):
            if label is None and v.label is not None:
                label, label_span = v.label, span
            if x is POISON:
                scope.next_name(label)
                if v.kind == "op" and v.target.arity == 1:
                    # the input failed earlier, but the arguments can still be checked on their own:
                    # one run then reports the independent mistakes further down too
                    self._bind_args(v.name, v.target.args, v.args, v.kwargs, v.call_span or span)
                return POISON
            if not isinstance(x, TensorVal):
                return self.err(f"cannot apply {v.describe()} to {_type_name(x)}", span)
            if v.kind == "op":
                return self.apply_op(v, x, scope, label, label_span, span)
            if v.kind == "block":
                return self.apply_block(v, x, scope, label, label_span, span)
            return self.apply_multi(v, x, scope, label, span)
        if isinstance(v, TensorVal):
            return self.err("a tensor value cannot be used as a layer here", span,
                            hint="named values start a pipeline: 'y -> layer'")
        return self.err(f"expected a layer, got {_type_name(v)} {_fmt(v)}", span,
                        hint=self._shadow_hint(span) or "layers are ops like conv2d(64, 3) or block calls")

    def _shadow_hint(self, span: Span | None) -> str | None:
        """When the name written at ``span`` is an op or block that a parameter of the same name hides."""
        if span is None:
            return None
        m = re.match(r"[A-Za-z_]\w*", span.source.line(span.line)[span.col - 1:])
        name = m.group(0) if m else ""
        if name in OPS or name in MULTI_OUTPUT_OPS:
            kind = "op"
        elif any(name in f.blocks for f in self.program.files.values()):
            kind = "block"
        else:
            return None
        return f"'{name}' here is a parameter that hides the {kind} '{name}'; rename the parameter (e.g. '{name}_p')"

    def _bind_args(self, fname: str, spec: list[ArgSpec], args: list[tuple[Any, Span]],
                   kwargs: dict[str, tuple[Any, Span]], span: Span) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        ok = True
        sig = _LazySig(spec)  # formatted only if a message needs it: this runs for every layer
        if len(args) > len(spec):
            self.err(f"{fname} takes {len(spec)} argument{'s' if len(spec) != 1 else ''}, got {len(args)}",
                     args[len(spec)][1], hint=f"{fname}({sig})")
            return None
        for a, (v, _) in zip(spec, args):
            out[a.name] = v
        for k, (v, ks) in kwargs.items():
            match = next((a for a in spec if a.name == k), None)
            if match is None:
                self.err(f"{fname} has no argument '{k}'", ks,
                         hint=did_you_mean(k, [a.name for a in spec]) or f"{fname}({sig})")
                ok = False
                continue
            if k in out:
                self.err(f"{fname} got '{k}' twice (positionally and by keyword)", ks)
                ok = False
                continue
            out[k] = v
        for a in spec:
            if a.name not in out:
                if a.default is REQUIRED:
                    self.err(f"{fname} needs '{a.name}'", span, hint=f"{fname}({sig})")
                    ok = False
                else:
                    out[a.name] = a.default
        if not ok or any(v is POISON for v in out.values()):
            return None
        spans = {a.name: s for a, (_, s) in zip(spec, args)}
        spans.update({k: s for k, (_, s) in kwargs.items()})
        for a in spec:
            msg = _check_type(a, out[a.name])
            if msg:
                self.err(f"{fname}: {msg}", spans.get(a.name, span), hint=f"{fname}({sig})")
                ok = False
        return out if ok else None

    def apply_op(self, v: LayerSpec, x: TensorVal, scope: _Scope, label: str | None, label_span: Span | None,
                 span: Span) -> Any:
        opdef: OpDef = v.target
        name = scope.next_name(label)
        if opdef.arity != 1:
            return self.err(f"'{v.name}' combines several tensors; write it as a combinator", span,
                            hint=f"'{v.name}:' with one branch per line, or {v.name}(a, b) over named values")
        args = self._bind_args(v.name, opdef.args, v.args, v.kwargs, v.call_span or span)
        if args is None:
            return POISON
        argspans = {a.name: s for a, (_, s) in zip(opdef.args, v.args)}
        argspans.update({k: s for k, (_, s) in v.kwargs.items()})
        try:
            if opdef.normalize:
                args = opdef.normalize([x.shape], args)
            shape = opdef.shape([x.shape], args)
        except ShapeError as e:
            msg = e.message if e.message.startswith(v.name + " ") else f"{v.name}: {e.message}"
            # provenance only when the input shape is part of the problem, not for a bad argument alone
            about_input = e.arg in (None, "kernel_size", "groups", "dim", "output_size")
            return self.err(msg, argspans.get(e.arg or "", v.call_span or span), e.hint,
                            notes=self._provenance([x]) if about_input else None)
        if any(d > self.limits.max_channels for d in shape):
            return self.err(f"{v.name}: output shape {list(shape)} exceeds the size limit {self.limits.max_channels:,}",
                            v.call_span or span, hint="the limit is set by Limits.max_channels")
        params = opdef.params([x.shape], args)
        macs = opdef.macs([x.shape], shape, args)
        self.total_params += params
        if self.total_params > self.limits.max_params:
            raise ArchError(Diagnostic(f"the network exceeds {self.limits.max_params:,} parameters", span,
                                       hint="check channel counts; the limit is Limits.max_params"))
        path = scope.prefix + name
        module = None
        if opdef.stateful:
            module = path
            self._claim(path, label_span or span, "layer")
        node = self._new_node(opdef.name, args, [x.nid], [x.shape], shape, path, module, span, scope.frames,
                              label=label)
        node.params, node.macs = params, macs
        return TensorVal(node.id, shape)

    def apply_multi(self, v: LayerSpec, x: TensorVal, scope: _Scope, label: str | None, span: Span) -> Any:
        name = scope.next_name(label)
        args = self._bind_args(v.name, v.target, v.args, v.kwargs, v.call_span or span)
        if args is None:
            return POISON
        dim = args["dim"]
        if not 1 <= dim <= len(x.shape):
            return self.err(f"{v.name}: dim={dim} is out of range for {list(x.shape)} (batch is dim 0)", span)
        size = x.shape[dim - 1]
        if v.name == "chunk":
            n = args["chunks"]
            if n < 1 or size % n:
                return self.err(f"chunk: {size} cannot be split into {n} equal parts", v.call_span or span,
                                hint="use split([...]) for unequal parts")
            sizes = [size // n] * n
        else:
            sizes = args["sizes"]
            if not all(isinstance(s, int) and s > 0 for s in sizes) or sum(sizes) != size:
                return self.err(f"split: sizes {sizes} must be positive and add up to {size}", v.call_span or span)
        outs = []
        start = 0
        for i, s in enumerate(sizes):
            shape = list(x.shape)
            shape[dim - 1] = s
            node = self._new_node("narrow", {"dim": dim, "start": start, "length": s}, [x.nid], [x.shape],
                                  tuple(shape), f"{scope.prefix}{name}[{i}]", None, span, scope.frames)
            outs.append(TensorVal(node.id, tuple(shape)))
            start += s
        return outs

    def apply_block(self, v: LayerSpec, x: TensorVal, scope: _Scope, label: str | None, label_span: Span | None,
                    span: Span) -> Any:
        bdef: A.BlockDef = v.target
        if v.inline and label is not None:
            return self.err(f"inline({bdef.name}(...)) puts the block's layers directly here, so it cannot be "
                            f"named '{label}'", label_span or span,
                            hint=f"drop the label, or write '{label}: {bdef.name}(...)' for a module of its own")
        name = "" if v.inline else scope.next_name(label)
        path = scope.prefix + name
        if self.depth >= self.limits.max_depth:
            raise ArchError(Diagnostic(
                f"blocks nest more than {self.limits.max_depth} deep (is '{bdef.name}' recursive?)", span,
                hint="a block may not use itself, directly or through others; the limit is Limits.max_depth"))
        ns = self.program.namespace_of(bdef)
        benv = _Env(ns, {}, x.shape)
        params = {p.name: p for p in bdef.params}
        bound: dict[str, Any] = {}
        ok = True
        if len(v.args) > len(bdef.params):
            n_params = len(bdef.params)
            self.err(f"block {bdef.name} takes {n_params} argument{'s' if n_params != 1 else ''}, got {len(v.args)}",
                     v.args[n_params][1],
                     hint=f"{bdef.name}({_sig(bdef)}) at {bdef.name_span.location()}")
            ok = False
        for p, (val, _) in zip(bdef.params, v.args):
            bound[p.name] = val
        for k, (val, ks) in v.kwargs.items():
            if k not in params:
                self.err(f"block {bdef.name} has no parameter '{k}'", ks,
                         hint=did_you_mean(k, params) or f"{bdef.name}({_sig(bdef)})")
                ok = False
            elif k in bound:
                self.err(f"block {bdef.name} got '{k}' twice", ks)
                ok = False
            else:
                bound[k] = val
        for p in bdef.params:
            if p.name in bound:
                benv.vars[p.name] = bound[p.name]
            elif p.default is not None:
                benv.vars[p.name] = self.eval(p.default, benv)
            else:
                self.err(f"block {bdef.name} needs '{p.name}'", v.call_span or span,
                         hint=f"{bdef.name}({_sig(bdef)})")
                ok = False
        if not ok:
            return POISON
        benv.vars["x"] = x
        if v.inline:
            # like 'seq:': the caller's naming scope and position counter, no container, no frame
            self.depth += 1
            try:
                return self.exec_body(bdef.body, benv, x, scope)
            finally:
                self.depth -= 1
        self._claim(path, label_span or span, "block")
        args_txt = ", ".join(f"{p.name}={_fmt(benv.vars[p.name])}" for p in bdef.params)
        inner = scope.child(name, ScopeFrame(path=path, kind="block", name=bdef.name, args=args_txt,
                                             loc=self.loc(span)))
        self.depth += 1
        try:
            return self.exec_body(bdef.body, benv, x, inner)
        finally:
            self.depth -= 1

    def _claim(self, path: str, span: Span, what: str) -> None:
        prev = self.paths.get(path)
        if prev is not None:
            self.err(f"two layers would be named '{path}'", span,
                     hint="give one of them a different label",
                     notes=[("the other one is here", prev[0])])
            return
        self.paths[path] = (span, what)

    def _new_node(self, op: str, args: dict[str, Any], inputs: list[int], in_shapes: list[tuple[int, ...]],
                  shape: tuple[int, ...], name: str, module: str | None, span: Span | None,
                  frames: list[ScopeFrame], label: str | None = None) -> Node:
        assert self.graph is not None
        if len(self.graph) >= self.limits.max_nodes:
            raise ArchError(Diagnostic(f"the network expands to more than {self.limits.max_nodes:,} layers", span,
                                       hint="check repetition counts; the limit is Limits.max_nodes"))
        node = Node(id=self.next_id, op=op, args=args, inputs=inputs, in_shapes=in_shapes, shape=shape, name=name,
                    module=module, scope=list(frames), loc=self.loc(span), reparam=self._reparam, label=label)
        self.next_id += 1
        return self.graph.add(node)

    # ------------------------------------------------------------------ expressions
    def eval(self, e: A.Expr, env: _Env) -> Any:
        # Every evaluation counts against Limits.max_steps: comprehensions are the only loops, and a
        # filtered one can spin without producing items, so counting items alone would not bound time.
        self.steps += 1
        if self.steps > self.limits.max_steps:
            raise ArchError(Diagnostic(
                f"the spec takes more than {self.limits.max_steps:,} evaluation steps to expand", e.span,
                hint="look for large range(...) loops or nested comprehensions; the limit is Limits.max_steps"))
        meth = getattr(self, "_e_" + type(e).__name__)
        return meth(e, env)

    def _e_Num(self, e: A.Num, env: _Env) -> Any:
        return e.value

    def _e_Str(self, e: A.Str, env: _Env) -> Any:
        return e.value

    def _e_Name(self, e: A.Name, env: _Env) -> Any:
        n = e.id
        if n in env.vars:
            return env.vars[n]
        if n in CONSTANTS:
            return CONSTANTS[n]
        if n in env.ns.blocks:
            return LayerSpec("block", n, env.ns.blocks[n], e.span)
        if n in OPS:
            return LayerSpec("op", n, OPS[n], e.span)
        if n in MULTI_OUTPUT_OPS:
            return LayerSpec("multi", n, MULTI_OUTPUT_OPS[n], e.span)
        if n in BUILTINS:
            return BUILTINS[n]
        if n in KEYWORDS:
            return self.err(f"'{n}' is a keyword, not a value", e.span,
                            hint="keywords start statements and expressions ('if', 'for', 'in', ...)")
        hint = did_you_mean(n, env.names())
        if n in ("True", "False", "None"):
            hint = f"write {n.lower()}"
        return self.err(f"unknown name '{n}'", e.span, hint=hint or "define it with 'name = ...', or import the "
                        "block that defines it")

    def _e_InputRef(self, e: A.InputRef, env: _Env) -> Any:
        if env.in_shape is None:
            return self.err("'in' is only known inside a block or after the network's input", e.span)
        return ShapeVal(env.in_shape)

    def _e_ListExpr(self, e: A.ListExpr, env: _Env) -> Any:
        out = []
        for it in e.items:
            v = self.eval(it, env)
            if v is POISON:
                return POISON
            if v is ABSENT:
                continue
            out.append(v)
        return out

    def _e_ListComp(self, e: A.ListComp, env: _Env) -> Any:
        out: list[Any] = []
        saved = dict(env.vars)

        def rec(i: int) -> bool:
            if i == len(e.fors):
                v = self.eval(e.elt, env)
                if v is POISON:
                    return False
                out.append(v)
                if len(out) > self.limits.max_repeat:
                    self.err(f"list comprehension produces more than {self.limits.max_repeat:,} items", e.span,
                             hint="the limit is Limits.max_repeat")
                    return False
                return True
            f = e.fors[i]
            it = self.eval(f.iter, env)
            if it is POISON:
                return False
            if not isinstance(it, list):
                self.err(f"can only loop over a list or range(...), got {_type_name(it)}", f.iter.span,
                         hint=f"e.g. 'for {f.var} in range(n)'")
                return False
            for item in it:
                env.vars[f.var] = item
                if f.cond is not None:
                    c = self.eval(f.cond, env)
                    if c is POISON:
                        return False
                    if not c:
                        continue
                if not rec(i + 1):
                    return False
            return True

        ok = rec(0)
        env.vars.clear()
        env.vars.update(saved)
        return out if ok else POISON

    def _e_Call(self, e: A.Call, env: _Env) -> Any:
        f = self.eval(e.func, env)
        args = [(self.eval(a, env), a.span) for a in e.args]
        kwargs: dict[str, tuple[Any, Span]] = {}
        for k in e.kwargs:
            if k.name in kwargs:
                self.err(f"argument '{k.name}' given twice", k.span)
                return POISON
            kwargs[k.name] = (self.eval(k.value, env), k.span)
        if f is POISON or any(v is POISON for v, _ in args) or any(v is POISON for v, _ in kwargs.values()):
            return POISON
        if isinstance(f, LayerSpec):
            if f.called:
                return self.err(f"{f.describe()} already has its arguments", e.span,
                                hint="call a layer once: conv2d(64, 3, stride=2)")
            if any(isinstance(v, TensorVal) for v, _ in args):
                return self.err(f"{f.name} is a layer; apply it to a tensor with '->'", e.span,
                                hint=f"write 'y = x -> {f.name}(...)'")
            return LayerSpec(f.kind, f.name, f.target, f.span, args, kwargs, True, e.span, label=f.label,
                             inline=f.inline)
        if callable(f):
            if f is BUILTINS["range"]:
                too_long = self._range_too_long([v for v, _ in args])
                if too_long is not None:
                    return self.err(f"range(...) would make {too_long:,} items, more than the limit "
                                    f"{self.limits.max_repeat:,}", e.span, hint="the limit is Limits.max_repeat")
            try:
                return f(*[v for v, _ in args], **{k: v for k, (v, _) in kwargs.items()})
            except (TypeError, ValueError, ZeroDivisionError, OverflowError) as ex:
                return self.err(f"{getattr(e.func, 'id', 'call')}(...): {ex}", e.span)
        return self.err(f"{_type_name(f)} is not callable", e.func.span, hint=self._shadow_hint(e.func.span))

    def _range_too_long(self, args: list[Any]) -> int | None:
        """The length of ``range(*args)`` when it exceeds Limits.max_repeat (checked before building it)."""
        if not args or len(args) > 3 or not all(_is_int(a) for a in args):
            return None  # range itself reports the wrong arguments
        try:
            n = len(range(*args))
        except (ValueError, OverflowError):
            return None
        return n if n > self.limits.max_repeat else None

    def _e_Index(self, e: A.Index, env: _Env) -> Any:
        obj = self.eval(e.obj, env)
        idx = self.eval(e.index, env)
        if obj is POISON or idx is POISON:
            return POISON
        if isinstance(obj, (ShapeVal, TensorVal)):
            obj = list(obj.shape)
        if not isinstance(obj, list):
            return self.err(f"cannot index {_type_name(obj)}", e.obj.span)
        if not isinstance(idx, int) or isinstance(idx, bool):
            return self.err(f"list index must be an integer, got {_type_name(idx)}", e.index.span)
        if not -len(obj) <= idx < len(obj):
            return self.err(f"index {idx} is out of range for a list of {len(obj)}", e.index.span,
                            hint=f"valid indices are 0 to {len(obj) - 1} (or -{len(obj)} to -1)" if obj else
                            "the list is empty")
        return obj[idx]

    def _e_Attr(self, e: A.Attr, env: _Env) -> Any:
        obj = self.eval(e.obj, env)
        if obj is POISON:
            return POISON
        if isinstance(obj, (ShapeVal, TensorVal)):
            try:
                return obj.attr(e.name)
            except KeyError:
                return self.err(f"a shape has no attribute '{e.name}'", e.span,
                                hint=did_you_mean(e.name, ["c", "h", "w", "shape", "rank"]) or "use c, h, w, shape or rank")
            except IndexError:
                return self.err(f"shape {list(obj.shape)} has no '{e.name}'", e.span,
                                hint="h and w exist only for [C, H, W] feature maps")
        return self.err(f"{_type_name(obj)} has no attribute '{e.name}'", e.span,
                        hint="attributes exist on 'in' and named tensors: .c .h .w .shape")

    def _e_BinOp(self, e: A.BinOp, env: _Env) -> Any:
        a = self.eval(e.left, env)
        b = self.eval(e.right, env)
        if a is POISON or b is POISON:
            return POISON
        op = e.op
        # repetition of layers: Block(...) * n
        if op == "*" and (isinstance(a, (LayerSpec, list)) or isinstance(b, (LayerSpec, list))) and \
                (_is_int(a) or _is_int(b)):
            seq, n = (a, b) if _is_int(b) else (b, a)
            if n < 0:
                return self.err(f"repetition count must be >= 0, got {n}", e.right.span if _is_int(b) else e.left.span)
            if n > self.limits.max_repeat:
                return self.err(f"repetition count {n:,} exceeds the limit {self.limits.max_repeat:,}", e.span,
                                hint="the limit is Limits.max_repeat")
            items = seq if isinstance(seq, list) else [seq]
            if n * len(items) > self.limits.max_repeat:
                return self.err(f"repetition makes {n * len(items):,} items, more than the limit "
                                f"{self.limits.max_repeat:,}", e.span, hint="the limit is Limits.max_repeat")
            return [x for _ in range(n) for x in items]
        if op == "+" and isinstance(a, str) and isinstance(b, str):
            return a + b
        if op == "+" and isinstance(a, list) and isinstance(b, list):
            if len(a) + len(b) > self.limits.max_repeat:
                return self.err(f"the list would have {len(a) + len(b):,} items, more than the limit "
                                f"{self.limits.max_repeat:,}", e.op_span, hint="the limit is Limits.max_repeat")
            return a + b
        if not _is_num(a) or not _is_num(b):
            return self.err(f"cannot apply '{op}' to {_type_name(a)} and {_type_name(b)}", e.op_span,
                            hint="arithmetic needs numbers; lists and layers only support '+ list' and '* n'")
        try:
            if op == "+":
                return a + b
            if op == "-":
                return a - b
            if op == "*":
                return a * b
            if op == "/":
                return a / b
            if op == "//":
                return a // b
            if op == "%":
                return a % b
            if op == "**":
                if abs(b) > 64 or abs(a) > 1 << 20:
                    return self.err("exponent too large", e.span,
                                    hint="powers are limited to |base| <= 2**20 and |exponent| <= 64")
                return a ** b
        except ZeroDivisionError:
            return self.err("division by zero", e.op_span, hint=f"the right side '{_fmt(b)}' is zero here")
        return self.err(f"unknown operator '{op}'", e.op_span)

    def _e_UnaryOp(self, e: A.UnaryOp, env: _Env) -> Any:
        v = self.eval(e.operand, env)
        if v is POISON:
            return POISON
        if e.op == "not":
            return not v
        if not _is_num(v):
            return self.err(f"cannot apply '{e.op}' to {_type_name(v)}", e.span)
        return -v if e.op == "-" else v

    def _e_Compare(self, e: A.Compare, env: _Env) -> Any:
        left = self.eval(e.first, env)
        if left is POISON:
            return POISON
        for op, rexpr in e.rest:
            right = self.eval(rexpr, env)
            if right is POISON:
                return POISON
            if op in ("==", "!="):
                eq = _equal(left, right)
                res = eq if op == "==" else not eq
            else:
                if not (_is_num(left) and _is_num(right)) and not (isinstance(left, str) and isinstance(right, str)):
                    return self.err(f"cannot compare {_type_name(left)} {op} {_type_name(right)}", e.span,
                                    hint="order comparisons need two numbers or two strings")
                res = {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[op]
            if not res:
                return False
            left = right
        return True

    def _e_BoolOp(self, e: A.BoolOp, env: _Env) -> Any:
        v: Any = None
        for x in e.values:
            v = self.eval(x, env)
            if v is POISON:
                return POISON
            if e.op == "and" and not v:
                return v
            if e.op == "or" and v:
                return v
        return v

    def _e_Ternary(self, e: A.Ternary, env: _Env) -> Any:
        c = self.eval(e.cond, env)
        if c is POISON:
            return POISON
        return self.eval(e.value if c else e.orelse, env)

    def _e_OptionalExpr(self, e: A.OptionalExpr, env: _Env) -> Any:
        c = self.eval(e.cond, env)
        if c is POISON:
            return POISON
        return self.eval(e.value, env) if c else None

    def _e_CombinatorCall(self, e: A.CombinatorCall, env: _Env) -> Any:
        vals = [self.eval(a, env) for a in e.args]
        if any(v is POISON for v in vals):
            return POISON
        flat: list[Any] = []
        for v in vals:
            flat.extend(v if isinstance(v, list) else [v])
        if not flat or not all(isinstance(v, TensorVal) for v in flat):
            bad = next((v for v in flat if not isinstance(v, TensorVal)), None)
            return self.err(f"{e.kind}(...) combines named tensors" +
                            (f", got {_type_name(bad)}" if flat else ", got nothing"), e.span,
                            hint=f"for branches computed from the current value write '{e.kind}:' "
                                 "with one branch per indented line")
        kwargs = {k.name: (self.eval(k.value, env), k.span) for k in e.kwargs}
        scope = self._scope
        if len(flat) == 1:
            return flat[0]
        return self.merge(e.kind, flat, kwargs, scope.prefix + e.kind, e.span, self._reparam, scope.frames)


class _LazySig:
    """An op's signature text, formatted on first use (``f"{fname}({sig})"`` in hints)."""

    def __init__(self, spec: list[ArgSpec]) -> None:
        self.spec = spec

    def __str__(self) -> str:
        return ", ".join(a.name if a.default is REQUIRED else f"{a.name}={_fmt(a.default)}" for a in self.spec)


def _sig(b: A.BlockDef) -> str:
    return ", ".join(p.name if p.default is None else f"{p.name}=..." for p in b.params)


def _is_tensorish(v: Any) -> bool:
    return isinstance(v, TensorVal) or (isinstance(v, list) and bool(v) and all(isinstance(x, TensorVal) for x in v))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, LayerSpec) or isinstance(b, LayerSpec):
        if isinstance(a, LayerSpec) and isinstance(b, LayerSpec):
            return a.describe() == b.describe()
        return False
    if isinstance(a, str) != isinstance(b, str):
        return False
    return bool(a == b)


def _iter_flat(v: list[Any]) -> Iterator[Any]:
    """The layers of a nested list, in order, without building the flattened list."""
    for x in v:
        if isinstance(x, list):
            yield from _iter_flat(x)
        elif x is not None:
            yield x


def _flatten(v: list[Any]) -> list[Any]:
    out: list[Any] = []
    for x in v:
        if isinstance(x, list):
            out.extend(_flatten(x))
        elif x is not None:
            out.append(x)
    return out


def _check_type(a: ArgSpec, v: Any) -> str | None:
    t = a.type
    def pair_ok(x: Any) -> bool:
        return _is_int(x) or (isinstance(x, list) and len(x) == 2 and all(_is_int(i) for i in x))
    ok = True
    want = t
    if t == "int":
        ok, want = _is_int(v), "an integer"
    elif t == "int2":
        ok, want = pair_ok(v), "an integer or a pair [h, w]"
    elif t == "int?":
        ok, want = v is None or _is_int(v), "an integer or none"
    elif t == "int2?":
        ok, want = v is None or pair_ok(v), "an integer, a pair [h, w] or none"
    elif t == "float":
        ok, want = _is_num(v), "a number"
    elif t == "bool":
        ok, want = isinstance(v, bool), "true or false"
    elif t == "str":
        ok, want = isinstance(v, str), "a string"
    elif t == "padding":
        ok, want = pair_ok(v) or v in ("same", "valid"), "an integer, a pair, \"same\" or \"valid\""
    elif t == "list":
        ok, want = isinstance(v, list), "a list"
    elif t == "dims":   # one dim or several (reductions): an integer or a non-empty list of integers
        ok = _is_int(v) or (isinstance(v, list) and bool(v) and all(_is_int(i) for i in v))
        want = "an integer or a list of integers"
    if not ok:
        return f"'{a.name}' must be {want}, got {_type_name(v)} {_fmt(v)}"
    if a.choices is not None and v not in a.choices:
        return f"'{a.name}' must be one of " + ", ".join(_fmt(c) for c in a.choices) + f", got {_fmt(v)}"
    return None


def network_params(net: A.NetworkDef) -> list[str]:
    return [p.name for p in net.params]


def lower_network(program: Program, net: A.NetworkDef, overrides: dict[str, Any] | None = None,
                  override_spans: dict[str, Span] | None = None, limits: Limits | None = None,
                  reporter: Reporter | None = None) -> Graph:
    """Expand ``net`` into a shape-annotated :class:`Graph`; raises :class:`ArchError` listing every error."""
    rep = reporter or Reporter()
    lw = Lowerer(program, rep, limits or Limits())
    try:
        g = lw.lower(net, overrides or {}, override_spans or {})
    except RecursionError:
        raise ArchError(Diagnostic("the spec nests too deeply to expand", net.name_span,
                                   hint="check for recursive blocks")) from None
    rep.raise_if_errors()
    g.warnings = [*rep.warnings, *lint_graph(program, net, g)]
    return g
