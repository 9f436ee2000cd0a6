"""Stage 2: AST -> graph IR. Expands blocks, repetition and conditions, and infers every shape.

Elaboration and shape inference run together because the language lets a block look at its input
shape (``in.c``) and take compile-time decisions on it. Errors are collected, not thrown at the first:
a failed layer yields a *poisoned* value that later layers skip silently, so one run reports every
independent mistake.

The pieces: values (:mod:`.values`), the expression evaluator and its budget (:mod:`.evaluate`,
:mod:`.budget`), argument binding (:mod:`.bind`), applying layers (:mod:`.layers`), the name rule
(:mod:`.names`) and, here, statements (dispatched through :data:`STMT_HANDLERS` and
:data:`BRANCH_HANDLERS`, both checked against ``ast.Stmt`` at import), combinators, reparam groups,
module paths and node creation. Checks over the finished graph (the reparam fusability proof, lint)
are passes, run by :mod:`archdsl.pipeline` after :func:`lower_network`.
"""
from __future__ import annotations

from typing import Any, Callable, get_args

from ..errors import ArchError, Diagnostic, Reporter, did_you_mean
from ..ir import DEFAULT_FUSED_NAME, Graph, Loc, Node, ReparamGroup, ScopeFrame
from ..lang import ast as A
from ..lang.loader import Program
from ..limits import Limits
from ..ops import OPS, batched_output
from ..source import Span
from .bind import bind, fill_defaults, network_signature
from .budget import limit_hint
from .dims import recording, strip_dims
from .evaluate import Env
from .layers import LayerApplier, span_from_loc
from .names import binding_problem, check_identifier, class_name
from .paths import ModulePaths
from .scope import Scope
from .values import ABSENT, POISON, LayerSpec, TensorVal, fmt, is_tensorish, type_name

__all__ = ["Lowerer", "lower_network", "network_params", "span_from_loc", "STMT_HANDLERS", "BRANCH_HANDLERS"]

class Lowerer(LayerApplier):
    """Elaborates one network into a :class:`Graph`."""

    def __init__(self, program: Program, reporter: Reporter, limits: Limits):
        super().__init__(program, reporter, limits)
        self.graph: Graph | None = None
        self.next_id = 0
        self.depth = 0
        self._params_checked: set[int] = set()
        self._locs: dict[tuple[str, int, int], Loc] = {}
        self.paths = ModulePaths(self.err)
        self.total_params = 0
        self._scope = Scope("", [])   # the naming scope expressions are evaluated in
        self._reparam: str | None = None
        self._open_groups: dict[str, Scope] = {}   # labelled groups by path, so a later 'name:' reopens one
        # 'y = name: fuse(a, b)': the label of a pipeline's first item when it calls a several-tensor op with
        # a module (a plugin's); that call's span, the label and its span, taken by combine()
        self._call_label: tuple[Span, str, Span | None] | None = None
        self.group_spans: dict[str, Span] = {}     # reparam group path -> its statement (for the proof's errors)

    @property
    def steps(self) -> int:
        return self.budget.steps

    # ------------------------------------------------------------------ helpers for LayerApplier
    def loc(self, span: Span | None) -> Loc | None:
        if span is None:
            return None
        key = (span.path, span.line, span.col)
        loc = self._locs.get(key)
        if loc is None:
            # built without validation: the fields come straight from a Span, already typed
            loc = self._locs[key] = Loc.model_construct(file=span.path, line=span.line, col=span.col)
        return loc

    def node(self, nid: int) -> Node:
        assert self.graph is not None
        return self.graph.node(nid)

    # ------------------------------------------------------------------ network
    def lower(self, net: A.NetworkDef, overrides: dict[str, Any], override_spans: dict[str, Span]) -> Graph:
        g = Graph(net.name, net.reference)
        g.loc = self.loc(net.name_span)
        self.graph = g
        self._check_network_names(net)
        env = Env(self.program.namespace_of(net), {}, None)
        sig = network_signature(net)
        given, _, _ = bind(sig, [], {k: (v, override_spans.get(k)) for k, v in overrides.items()}, net.name_span,
                           self.err)
        for k in list(given):
            given[k] = self._check_override(k, given[k], override_spans.get(k) or net.name_span)
        fill_defaults(sig, given, lambda s: self.eval(s.default, env), self.err, net.params, sink=env.vars)
        g.params_used = {k: v for k, v in env.vars.items() if v is not POISON and not isinstance(v, LayerSpec)}
        body = list(net.body)
        if not body or not isinstance(body[0], A.InputStmt):
            first = body[0].span if body else net.name_span
            self.err(f"network '{net.name}' must start with its input shape", first,
                     hint="write e.g. 'input [3, 224, 224]' as the first line of the network")
            raise ArchError(self.rep.diagnostics)
        inp = body.pop(0)
        assert isinstance(inp, A.InputStmt)
        shape = self._check_input_shape(self.eval(inp.shape, env), inp.shape.span)
        if shape is None:
            raise ArchError(self.rep.diagnostics)
        node = self.new_node("input", {}, [], [], shape, "input", None, inp.span, [])
        env.vars["x"] = TensorVal(node.id, shape)
        env.in_shape, env.in_nid = shape, node.id
        g.inputs.append(node.id)
        root = Scope("", [ScopeFrame(path="", kind="network", name=net.name,
                                     args=", ".join(f"{k}={fmt(v)}" for k, v in g.params_used.items()),
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
        self.check_outputs_batched(g, net.name_span)
        if isinstance(cur, list) and not outputs and cur and all(isinstance(t, TensorVal) for t in cur):
            self.err(f"network '{net.name}' ends with {len(cur)} tensors, not one", net.name_span,
                     hint="bind them ('a, b = x -> chunk(2)') and merge them, or list them with 'output a, b'")
        return g

    def _check_network_names(self, net: A.NetworkDef) -> None:
        """The network's class name and parameter names must be usable in the generated module."""
        cls = class_name(net.name)
        p = check_identifier(cls, "class")
        if p is not None:
            self.err(f"the network name '{net.name}' becomes the class '{cls}': {p.message}", net.name_span,
                     hint=f"rename the network, e.g. '{net.name}_net'")
        for prm in net.params:
            p = check_identifier(prm.name, "param")
            if p is not None:
                self.err(f"the parameter name '{prm.name}' cannot be used: {p.message}", prm.span, hint=p.hint)

    def _check_override(self, name: str, v: Any, span: Span) -> Any:
        """A parameter value from outside the spec (``--set``, the API) within the budget's bounds."""
        p = self.budget.external_problem(name, v, span)
        return v if p is None else self.err(p[0], span, hint=p[1])

    def _check_input_shape(self, v: Any, span: Span) -> tuple[int, ...] | None:
        if v is POISON:
            return None
        if not isinstance(v, list) or not v or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            self.err(f"input shape must be a list of integers like [3, 224, 224], got {fmt(v)}", span,
                     hint="the batch dimension is left out: [C, H, W] for images, [C, T, H, W] for videos, "
                          "[F] for vectors")
            return None
        if len(v) not in (1, 2, 3, 4):
            self.err(f"input shape must be [C, H, W], [C, T, H, W] (video or volume), [N, C] (tokens) or [F] "
                     f"(batch left out), got {len(v)} dimensions", span, hint="e.g. input [3, 224, 224]")
            return None
        if any(x <= 0 for x in v):
            self.err(f"input shape {fmt(v)} has a non-positive size", span, hint="every size must be at least 1")
            return None
        if any(x > self.limits.max_channels for x in v):
            self.err(f"input shape {fmt(v)} exceeds the size limit {self.limits.max_channels:,}", span,
                     hint=limit_hint("max_channels"))
            return None
        return tuple(v)

    # ------------------------------------------------------------------ statements
    def exec_body(self, stmts: list[A.Stmt], env: Env, cur: Any, scope: Scope,
                  outputs: list[tuple[str, Span]] | None = None) -> Any:
        for st in stmts:
            cur = STMT_HANDLERS[type(st)](self, st, env, cur, scope, outputs)
        return cur

    def _s_let(self, st: A.LetStmt, env: Env, cur: Any, scope: Scope, outputs: Any) -> Any:
        self.exec_let(st, env, scope)
        return cur

    def _s_layer(self, st: A.LayerStmt, env: Env, cur: Any, scope: Scope, outputs: Any) -> Any:
        r = self.run_pipeline(st.value, env, cur, scope)
        return cur if r is ABSENT else r

    def _s_combinator(self, st: A.CombinatorStmt, env: Env, cur: Any, scope: Scope, outputs: Any) -> Any:
        return self.run_combinator(st, env, cur, scope)

    def _s_spread(self, st: A.SpreadStmt, env: Env, cur: Any, scope: Scope, outputs: Any) -> Any:
        self.err("'*' spreads a list into branches, and belongs inside add:, concat:, mul: or stack:", st.span,
                 hint="in a sequence a list is already a chain of layers: write it without '*'")
        return cur

    def _s_seq(self, st: A.SeqStmt, env: Env, cur: Any, scope: Scope, outputs: Any) -> Any:
        return self.run_seq(st, env, cur, scope)

    def _s_if(self, st: A.IfStmt, env: Env, cur: Any, scope: Scope, outputs: Any) -> Any:
        chosen = self._choose(st, env)
        return cur if chosen is None else self.exec_body(chosen, env, cur, scope, outputs)

    def _s_input(self, st: A.InputStmt, env: Env, cur: Any, scope: Scope, outputs: Any) -> Any:
        self.err("'input' may only appear once, as the first line of a network", st.span,
                 hint="blocks take the shape of whatever feeds them; use 'in.c' to read it")
        return cur

    def _s_output(self, st: A.OutputStmt, env: Env, cur: Any, scope: Scope, outputs: Any) -> Any:
        if outputs is None:
            self.err("'output' may only appear in a network", st.span)
        else:
            outputs.extend(st.names)
        return cur

    def _choose(self, st: A.IfStmt, env: Env) -> list[A.Stmt] | None:
        for cond, body in st.branches:
            c = self.eval(cond, env)
            if c is POISON:
                return None
            if not isinstance(c, (bool, int)) or isinstance(c, float):
                self.err(f"a condition must be true or false, got {type_name(c)} {fmt(c)}", cond.span,
                         hint="compare it, e.g. 'if stride == 2:'")
                return None
            if c:
                return body
        return st.orelse

    def exec_let(self, st: A.LetStmt, env: Env, scope: Scope) -> None:
        self._scope = scope
        items = st.value.items
        labelled = False
        key = st.names[0]   # a free parameter's state_dict key: its name, or its label
        if items[0].label:   # 'y = name: fuse(a, b)' names the op's module; any other label is refused below
            first, labelled = self._eval_labelled_call(items[0], env)
            first = first if labelled or first is POISON else ABSENT
            if first is ABSENT:
                # 'gamma = "layer_scale.gamma": parameter([C], dim=1)': the label is the key (any path the
                # reference uses), the name the value's name in the block
                made = self.eval(items[0].expr, env)
                if isinstance(made, LayerSpec) and made.kind == "op" and made.target.arity == 0:
                    first, key = made, (items[0].label, items[0].label_span or items[0].span)
                    labelled = True   # the label is taken (run_pipeline does not refuse it on the tensor)
                elif made is POISON:
                    first = POISON
        else:
            first = self.eval(items[0].expr, env)
        if isinstance(first, LayerSpec) and first.kind == "op" and first.target.arity == 0:
            first = self._make_source(first, env, scope, key)
        value: Any
        if len(items) == 1 and not is_tensorish(first) and first is not ABSENT:
            value = first
        elif is_tensorish(first) or first is POISON:
            value = self.run_pipeline(st.value, env, None, scope, first=first, labelled=labelled)
        else:
            self.err("a named value must start from a named tensor", items[0].span,
                     hint=f"start the pipeline from a tensor, e.g. '{st.names[0][0]} = x -> ...' "
                          "('x' is the block's input)")
            value = POISON
        names = st.names
        if len(names) == 1:
            self._bind_var(env, names[0], value)
            return
        if value is POISON:
            for n in names:
                self._bind_var(env, n, POISON)
            return
        if not isinstance(value, list) or len(value) != len(names):
            n_got = len(value) if isinstance(value, list) else 1
            self.err(f"{len(names)} names but the value has {n_got} part{'s' if n_got != 1 else ''}", st.span,
                     hint="chunk(n) and split([...]) produce several tensors")
            for n in names:
                self._bind_var(env, n, POISON)
            return
        for n, v in zip(names, value):
            self._bind_var(env, n, v)

    def _make_source(self, op: LayerSpec, env: Env, scope: Scope, name: tuple[str, Span]) -> Any:
        """``pos_embed = parameter(...)``: a zero-input op makes a tensor labelled by the name. It reads the
        block's input only for the batch size at run time (the parameter is expanded over the batch)."""
        x = env.vars.get("x")
        if not isinstance(x, TensorVal):
            return POISON if x is POISON else self.err(
                f"'{op.name}' needs the block's input 'x' for its batch size, but 'x' is {type_name(x)}",
                op.call_span or op.span, hint="do not rebind 'x' before making a parameter")
        return self.apply_op(op, x, scope, name[0], name[1], op.call_span or op.span, source=True)

    def _bind_var(self, env: Env, name: tuple[str, Span], value: Any) -> None:
        n, span = name
        # A local shadows an op, a block or a built-in function for the rest of its block, as in Python, so a
        # built-in added later never breaks a spec that used its name ('exp = make_divisible(...)').
        p = binding_problem(n)
        if p is not None:
            self.err(p.message, span, hint=p.hint)
            return
        env.vars[n] = value

    # ------------------------------------------------------------------ pipelines
    def run_pipeline(self, pipe: A.Pipeline, env: Env, cur: Any, scope: Scope, first: Any = ABSENT,
                     labelled: bool = False) -> Any:
        """Run ``a -> b -> ...`` from ``cur`` (or from ``first``, the first item already evaluated;
        ``labelled``: by a labelled call of a several-tensor op, whose module the label named)."""
        self._scope = scope
        items = pipe.items
        vals: list[tuple[A.PipeItem, Any]] = []
        head = items[0]
        if first is ABSENT and head.label is not None:
            first, labelled = self._eval_labelled_call(head, env)
        v0 = first if first is not ABSENT else self.eval(head.expr, env)
        if v0 is POISON and first is not ABSENT:
            return POISON   # a named value whose start already failed (reported there)
        if labelled:
            start = v0   # the labelled call made this tensor
        elif is_tensorish(v0):
            if head.label:
                self.err(f"the label '{head.label}' names a layer, but this is a tensor value", head.label_span,
                         hint="labels go on layers: 'y = x -> name: conv2d(...)'")
            start = v0
        else:
            start = cur
            vals.append((head, v0))
            if len(items) == 1 and v0 is None:
                return ABSENT
        for it in items[1:]:
            vals.append((it, self.eval(it.expr, env)))
        x = start
        for it, v in vals:
            if x is None:
                return self.err("nothing to apply this layer to: the block's flow starts from a named value",
                                it.span, hint="start from a tensor, e.g. 'x -> conv2d(...)'")
            x = self.apply(v, x, scope, it.label, it.label_span, it.span)
        return x

    def run_seq(self, st: A.SeqStmt, env: Env, cur: Any, scope: Scope) -> Any:
        if st.label is None:
            return self.exec_body(st.body, env, cur, scope)
        name = self.name_in(scope, st.label, st.label_span or st.span)
        path = scope.prefix + name
        # A labelled group written again in the same block reopens it and goes on numbering its items:
        # that is how two containers interleave in the forward (RepLKNet: stages.0, transitions.0, stages.1).
        inner = self._open_groups.get(path)
        if inner is None or self.paths.what(path) != "group":
            self.claim(path, st.label_span or st.span, "group")
            inner = scope.child(name, ScopeFrame(path=path, kind="group", name=st.label, loc=self.loc(st.span)))
            self._open_groups[path] = inner
        return self.exec_body(st.body, env, cur, inner)

    def run_combinator(self, st: A.CombinatorStmt, env: Env, cur: Any, scope: Scope) -> Any:
        assert self.graph is not None
        kind = st.kind
        if st.label is not None:
            name = self.name_in(scope, st.label, st.label_span or st.span)
            path = scope.prefix + name
            self.claim(path, st.label_span or st.span, "combinator")
        else:
            name = kind
            path = scope.prefix + kind
        frame = ScopeFrame(path=path, kind="reparam" if st.reparam else "combinator", name=kind, loc=self.loc(st.span))
        inner = scope.child(name, frame) if st.label is not None else Scope(scope.prefix, scope.frames + [frame])
        if st.label is None:
            inner.counter = scope.counter
        outer_reparam = self._reparam
        st_kwargs = list(st.kwargs)
        if st.reparam:
            if path in self.graph.reparam_groups:   # several unlabelled groups in one scope: keep keys unique
                path = f"{path}#{sum(1 for p in self.graph.reparam_groups if p.split('#')[0] == path)}"
            self._reparam = path
            self.graph.reparam_groups[path] = ReparamGroup(kind=kind, loc=self.loc(st.span), label=st.label)
            self.group_spans[path] = st.span
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
                self.graph.reparam_groups[path].single = True
                return self._record_group(path, cur, branches[0])
            return branches[0]
        # a plain combinator inside a reparam group belongs to it (the proof sees the sum inside the group)
        out = self.merge(kind, branches, kwargs, scope.prefix + (st.label or kind), st.span,
                         path if st.reparam else outer_reparam, scope.frames + [frame])
        return self._record_group(path, cur, out) if st.reparam else out

    def _reparam_fused_name(self, st: A.CombinatorStmt, env: Env, scope: Scope, path: str) -> list[A.Kwarg]:
        """Take ``fused="name"`` off a reparam group's arguments and claim the fused conv's module path.

        The deploy form replaces the group by one conv named ``fused`` (default ``reparam_conv``, timm's
        name) inside the group's container: the labelled group itself, or the enclosing block.
        """
        assert self.graph is not None
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
            if v == ".":   # the fused layer replaces the container itself (timm's fuse(): ConvNorm -> Conv2d)
                return self._fused_container(st, scope, path, k.span)
            if not isinstance(v, str) or not v.isidentifier():
                self.err(f"fused= names the deploy conv and must be an identifier string or \".\", got {fmt(v)}",
                         k.span, hint='e.g. reparam add(fused="lkb_reparam"):, or fused="." for the container itself')
                continue
            if self.paths.label_problem(v, k.span):
                continue
            name = v
        prefix = scope.prefix + (st.label + "." if st.label is not None else "")
        self.graph.reparam_groups[path].fused_path = prefix + name
        self.claim(prefix + name, span, "fused reparam conv")
        return rest

    def _fused_container(self, st: A.CombinatorStmt, scope: Scope, path: str, span: Span) -> list[A.Kwarg]:
        """``fused="."``: the deploy layer takes the path of the group's container (the labelled group, or the
        block it is written in); the proof checks that nothing else lives in that container."""
        assert self.graph is not None
        rest = [k for k in st.kwargs if k.name != "fused"]
        container = scope.prefix + st.label if st.label is not None else scope.prefix.rstrip(".")
        if not container:
            self.err('fused="." names the fused layer after the group\'s container, and this group has none (it '
                     "is at the network's top level)", span,
                     hint='label the group (head: reparam add(fused="."):) or write it in a block')
            return rest
        info = self.graph.reparam_groups[path]
        info.fused_path, info.fused_container = container, True   # the container's path is already claimed
        return rest

    def _record_group(self, path: str, cur: Any, out: Any) -> Any:
        """Note what the group reads and makes; the fusability proof runs as a pass on the finished graph."""
        assert self.graph is not None
        if isinstance(cur, TensorVal) and isinstance(out, TensorVal):
            info = self.graph.reparam_groups[path]
            info.input, info.output = cur.nid, out.nid
        return out

    def _branches(self, stmts: list[A.Stmt], env: Env, cur: Any, scope: Scope) -> list[Any]:
        out: list[Any] = []
        for st in stmts:
            BRANCH_HANDLERS[type(st)](self, st, env, cur, scope, out)
        return out

    def _b_let(self, st: A.LetStmt, env: Env, cur: Any, scope: Scope, out: list[Any]) -> None:
        self.exec_let(st, env, scope)

    def _b_layer(self, st: A.LayerStmt, env: Env, cur: Any, scope: Scope, out: list[Any]) -> None:
        r = self.run_pipeline(st.value, env, cur, scope)
        if r is not ABSENT:
            out.append(r)

    def _b_spread(self, st: A.SpreadStmt, env: Env, cur: Any, scope: Scope, out: list[Any]) -> None:
        """``*[...]``: one branch per item (a layer, a chain list, a named tensor; none is left out)."""
        self._scope = scope
        items = self.eval(st.value, env)
        if items is POISON:
            out.append(POISON)
            return
        if not isinstance(items, list):
            out.append(self.err(f"'*' spreads a list into branches, got {type_name(items)} {fmt(items)}",
                                st.value.span, hint="e.g. *[conv2d(c, 3) for i in range(n)]"))
            return
        for i, item in enumerate(items):
            if item is None:
                continue
            if isinstance(item, TensorVal):
                out.append(item)
                continue
            label = None
            if st.label is not None:
                own = item.label if isinstance(item, LayerSpec) else None
                label = f"{st.label}.{own if own is not None else i}"
            out.append(self.apply(item, cur, scope, label, st.label_span, st.value.span))

    def _b_seq(self, st: A.SeqStmt, env: Env, cur: Any, scope: Scope, out: list[Any]) -> None:
        out.append(self.run_seq(st, env, cur, scope))

    def _b_combinator(self, st: A.CombinatorStmt, env: Env, cur: Any, scope: Scope, out: list[Any]) -> None:
        out.append(self.run_combinator(st, env, cur, scope))

    def _b_if(self, st: A.IfStmt, env: Env, cur: Any, scope: Scope, out: list[Any]) -> None:
        chosen = self._choose(st, env)
        if chosen is not None:
            out.extend(self._branches(chosen, env, cur, scope))

    def _b_other(self, st: A.Stmt, env: Env, cur: Any, scope: Scope, out: list[Any]) -> None:
        self.err("only branches (layers, groups, if) may appear inside a combinator", st.span)

    def combine(self, kind: str, tensors: list[TensorVal], kwargs: dict[str, tuple[Any, Span]], span: Span) -> Any:
        scope = self._scope
        opdef = OPS.get(kind)
        if opdef is not None and opdef.stateful:
            # a several-tensor op with a module (a plugin's fuse(a, b)): named like a layer, by its label or position
            label, label_span = None, None
            if self._call_label is not None and self._call_label[0] is span:
                _, label, label_span = self._call_label
                self._call_label = None
            v = LayerSpec("op", kind, opdef, span, [], kwargs, True, span)
            return self.apply_op_many(v, tensors, scope, label, label_span, span)
        return self.merge(kind, tensors, kwargs, scope.prefix + kind, span, self._reparam, scope.frames)

    def _eval_labelled_call(self, item: A.PipeItem, env: Env) -> tuple[Any, bool]:
        """``name: fuse(a, b)`` first in a pipeline, where ``fuse`` is a several-tensor op with a module: the
        call's value, and whether the call took the label (it names the module). ``(ABSENT, False)`` for
        any other first item, which is then evaluated as before."""
        e = item.expr
        if not (isinstance(e, A.Call) and isinstance(e.func, A.Name) and e.func.id not in env.vars):
            return ABSENT, False
        opdef = OPS.get(e.func.id)
        if opdef is None and self._unknown(e.func.id, env):
            # an unknown name (a plugin op whose plugin is not loaded): the call's error, with its hint, not
            # "a named value must start from a named tensor"
            return self.eval(e, env), False
        if opdef is None or not opdef.stateful or opdef.arity == 1 or item.label is None:
            return ABSENT, False
        self._call_label = (e.span, item.label, item.label_span)
        try:
            v = self.eval(e, env)
        finally:
            taken, self._call_label = self._call_label is None, None
        return v, taken

    # ------------------------------------------------------------------ names and module paths
    def name_in(self, scope: Scope, label: str | None, span: Span | None) -> str:
        """The next name in ``scope``: the label (checked against the name rule) or the position."""
        if label is not None:
            self.paths.label_problem(label, span)
        return scope.next_name(label)

    def claim(self, path: str, span: Span, what: str) -> None:
        self.paths.claim(path, span, what)

    def new_node(self, op: str, args: dict[str, Any], inputs: list[int], in_shapes: list[tuple[int, ...]],
                 shape: tuple[int, ...], name: str, module: str | None, span: Span | None,
                 frames: list[ScopeFrame], label: str | None = None) -> Node:
        assert self.graph is not None
        if len(self.graph) >= self.limits.max_nodes:
            raise ArchError(Diagnostic(f"the network expands to more than {self.limits.max_nodes:,} layers", span,
                                       hint=limit_hint("max_nodes", "check repetition counts")))
        # a size read from a tensor that reaches a node's arguments is a number there from now on: pinned
        args = {k: strip_dims(a) for k, a in args.items()}
        node = Node(id=self.next_id, op=op, args=args, inputs=inputs, in_shapes=in_shapes, shape=shape, name=name,
                    module=module, scope=list(frames), loc=self.loc(span), reparam=self._reparam, label=label,
                    batched=op not in OPS or batched_output(OPS[op], args, [self.node(i).batched for i in inputs]))
        self.next_id += 1
        return self.graph.add(node)


StmtHandler = Callable[[Lowerer, Any, Env, Any, Scope, Any], Any]
STMT_HANDLERS: dict[type, StmtHandler] = {
    A.LetStmt: Lowerer._s_let, A.LayerStmt: Lowerer._s_layer, A.CombinatorStmt: Lowerer._s_combinator,
    A.SpreadStmt: Lowerer._s_spread,
    A.SeqStmt: Lowerer._s_seq, A.IfStmt: Lowerer._s_if, A.InputStmt: Lowerer._s_input,
    A.OutputStmt: Lowerer._s_output,
}
# inside a combinator every statement is a branch (or a 'let'); 'input'/'output' are refused there
BRANCH_HANDLERS: dict[type, StmtHandler] = {
    A.LetStmt: Lowerer._b_let, A.LayerStmt: Lowerer._b_layer, A.SeqStmt: Lowerer._b_seq,
    A.SpreadStmt: Lowerer._b_spread,
    A.CombinatorStmt: Lowerer._b_combinator, A.IfStmt: Lowerer._b_if,
    A.InputStmt: Lowerer._b_other, A.OutputStmt: Lowerer._b_other,
}
for _table in (STMT_HANDLERS, BRANCH_HANDLERS):
    _missing = set(get_args(A.Stmt)) ^ set(_table)
    if _missing:
        raise ImportError("archdsl.lower.elaborate: a statement table does not match ast.Stmt: "
                          + ", ".join(sorted(c.__name__ for c in _missing)))


def network_params(net: A.NetworkDef) -> list[str]:
    return [p.name for p in net.params]


def lower_network(program: Program, net: A.NetworkDef, overrides: dict[str, Any] | None = None,
                  override_spans: dict[str, Span] | None = None, limits: Limits | None = None,
                  reporter: Reporter | None = None, group_spans: dict[str, Span] | None = None) -> Graph:
    """Expand ``net`` into a shape-annotated :class:`Graph`; raises :class:`ArchError` listing every error.

    Only lowering: the checks over the finished graph (reparam proof, lint) are run by the pipeline.
    ``group_spans``, when given, receives each reparam group's statement span (where the proof's errors
    point). Warnings found while lowering are in ``graph.warnings``.
    """
    rep = reporter or Reporter()
    lw = Lowerer(program, rep, limits or Limits())
    try:
        with recording() as facts:
            g = lw.lower(net, overrides or {}, override_spans or {})
        # what the expansion relied on about sizes read from tensors: conditions of the input contract
        g.size_facts = dict(facts.facts)
        g.size_facts_complete = not facts.overflow
    except RecursionError:
        raise ArchError(Diagnostic("the spec nests too deeply to expand", net.name_span,
                                   hint="check for recursive blocks")) from None
    rep.raise_if_errors()
    g.warnings = list(rep.warnings)
    if group_spans is not None:
        group_spans.update(lw.group_spans)
    return g
