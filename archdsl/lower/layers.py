"""Applying layers to tensors: ops, multi-output ops, blocks and merges become graph nodes.

:class:`LayerApplier` sits between the evaluator (values) and the elaborator (statements): given a
layer value and the tensor it applies to, it binds the arguments (:mod:`.bind`), runs the op's shape
rule, names the result in its scope and creates the node. Naming, module paths and node creation
live in :class:`.elaborate.Lowerer`, which it calls through the methods declared here.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import Any

from ..errors import ArchError, Diagnostic
from ..ir import Loc, Node, ScopeFrame
from ..lang import ast as A
from ..ops import OPS, OpDef, ShapeError, batched_output, check_batch_mix, has_trait
from ..source import Span
from .bind import bind, block_signature, check_op_types, fill_defaults, op_signature
from .budget import limit_hint
from .evaluate import Env, Evaluator
from .names import binding_problem
from .scope import Scope
from .dims import pin
from .values import POISON, Dim, LayerSpec, TensorVal, fmt, iter_flat, strip_dims, type_name

__all__ = ["LayerApplier"]


class LayerApplier(Evaluator):
    """Turns layer values into nodes; the elaborator provides naming and node creation."""

    depth: int
    total_params: int
    _params_checked: set[int]   # ids of the block definitions whose parameter names were checked

    # ------------------------------------------------------------------ provided by the elaborator
    @abstractmethod
    def name_in(self, scope: Scope, label: str | None, span: Span | None) -> str:
        """The next name in ``scope`` for a layer (its label, checked, or its position)."""

    @abstractmethod
    def claim(self, path: str, span: Span, what: str) -> None:
        """Reserve the module path ``path`` (an error when it is taken or clashes)."""

    @abstractmethod
    def new_node(self, op: str, args: dict[str, Any], inputs: list[int], in_shapes: list[tuple[int, ...]],
                 shape: tuple[int, ...], name: str, module: str | None, span: Span | None,
                 frames: list[ScopeFrame], label: str | None = None) -> Node:
        """Add a node to the graph (counted against ``Limits.max_nodes``)."""

    @abstractmethod
    def loc(self, span: Span | None) -> Loc | None:
        """The IR location of ``span``."""

    @abstractmethod
    def node(self, nid: int) -> Node:
        """The graph node ``nid``."""

    @abstractmethod
    def exec_body(self, stmts: list[A.Stmt], env: Env, cur: Any, scope: Scope,
                  outputs: list[tuple[str, Span]] | None = None) -> Any:
        """Run a block body's statements from the tensor ``cur``; the value they end with."""

    # ------------------------------------------------------------------ binding
    def bind_op(self, fname: str, spec: list[Any], args: list[tuple[Any, Span]],
                kwargs: dict[str, tuple[Any, Span]], span: Span) -> dict[str, Any] | None:
        """An op's arguments, bound, defaulted and type-checked; None after reporting what is wrong."""
        sig = op_signature(fname, spec)
        given, spans, ok = bind(sig, args, kwargs, span, self.err)   # type: ignore[arg-type]
        if not ok or any(v is POISON for v in given.values()):
            return None
        out = fill_defaults(sig, given, lambda s: s.default)
        return out if check_op_types(fname, spec, out, spans, span, self.err) else None

    # ------------------------------------------------------------------ applying
    def apply(self, v: Any, x: Any, scope: Scope, label: str | None, label_span: Span | None, span: Span) -> Any:
        if v is POISON:
            scope.next_name(label)
            return POISON
        if v is None:
            return x
        if isinstance(v, list):
            flat = iter_flat(v)  # lazily: nested repetitions reach Limits.max_nodes before memory runs out
            if label is not None:
                name = self.name_in(scope, label, label_span or span)
                path = scope.prefix + name
                self.claim(path, label_span or span, "list")
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
                    self.bind_op(v.name, v.target.args, v.args, v.kwargs, v.call_span or span)
                return POISON
            if not isinstance(x, TensorVal):
                return self.err(f"cannot apply {v.describe()} to {type_name(x)}", span)
            if v.kind == "op":
                return self.apply_op(v, x, scope, label, label_span, span)
            if v.kind == "block":
                return self.apply_block(v, x, scope, label, label_span, span)
            return self.apply_multi(v, x, scope, label, label_span, span)
        if isinstance(v, TensorVal):
            return self.err("a tensor value cannot be used as a layer here", span,
                            hint="named values start a pipeline: 'y -> layer'")
        return self.err(f"expected a layer, got {type_name(v)} {fmt(v)}", span,
                        hint=self.shadow_hint(span) or "layers are ops like conv2d(64, 3) or block calls")

    def apply_op(self, v: LayerSpec, x: TensorVal, scope: Scope, label: str | None, label_span: Span | None,
                 span: Span, source: bool = False) -> Any:
        """Apply op ``v`` to ``x``. ``source``: ``v`` is a zero-input op (a free parameter) bound by
        ``name = op(...)``; ``x`` (the block's input) only gives it the batch size at run time."""
        opdef: OpDef = v.target
        name = self.name_in(scope, label, label_span or span)
        if opdef.arity == 0 and not source:
            return self.err(f"'{v.name}' makes a tensor of its own and is not applied to one", span,
                            hint=f"bind it to a name, which is its state_dict key: 'pos_embed = {v.name}(...)'")
        if opdef.arity not in (0, 1):
            # add/concat/mul/stack also have the combinator statement; every several-tensor op the call form
            combinator = f"'{v.name}:' with one branch per line, or " if v.name in ("add", "concat", "mul", "stack") \
                else ""
            return self.err(f"'{v.name}' combines several tensors; it is not applied with '->'", span,
                            hint=f"{combinator}{v.name}(a, b, ...) over named values")
        return self.op_node(v, [x], scope, name, label, label_span, span)

    def apply_op_many(self, v: LayerSpec, xs: list[TensorVal], scope: Scope, label: str | None,
                      label_span: Span | None, span: Span) -> Any:
        """A several-tensor op that has a module (a plugin's ``fuse(a, b)`` over named tensors): named in
        ``scope`` by its label or position, its path claimed and its parameters counted, as for one tensor."""
        name = self.name_in(scope, label, label_span or span)
        return self.op_node(v, xs, scope, name, label, label_span, span)

    def op_node(self, v: LayerSpec, xs: list[TensorVal], scope: Scope, name: str, label: str | None,
                label_span: Span | None, span: Span) -> Any:
        """The node of op ``v`` over the tensors ``xs``: arguments bound, shape rule run (its errors located at
        the argument or the call), parameters counted, module path claimed for a stateful op."""
        opdef: OpDef = v.target
        args = self.bind_op(v.name, opdef.args, v.args, v.kwargs, v.call_span or span)
        if args is None:
            return POISON
        if has_trait(opdef.name, "reads-sizes") and len(xs) == 1:
            args, xs = self._size_sources(args, xs[0])
        else:
            args = {k: strip_dims(a) for k, a in args.items()}
        bound = dict(args)   # as the spec gave them: the contract normalizes them again at other sizes
        shapes = [x.shape for x in xs]
        argspans = {a.name: s for a, (_, s) in zip(opdef.args, v.args)}
        argspans.update({k: s for k, (_, s) in v.kwargs.items()})
        cap = self.limits.max_literal_values
        for k, a in args.items():   # list arguments reach the generated code as literals: bounded
            if isinstance(a, list) and _count_items(a, cap) > cap:
                return self.err(f"{v.name}: {k}= holds more than {cap:,} values", argspans.get(k, span),
                                hint=limit_hint("max_literal_values", "compute large tables with an init= "
                                                "generator, or load them (init=\"loaded\")"))
        try:
            if opdef.normalize:
                args = opdef.normalize(shapes, args)
            shape = opdef.shape(shapes, args)
            check_batch_mix(opdef, shapes, [self.node(x.nid).batched for x in xs])
            if opdef.arity == 0 and not self.node(xs[0].nid).batched and batched_output(opdef, args, []):
                # a parameter expanded over the batch reads the batch size from the block's input
                raise ShapeError(f"{v.name} with the batch axis takes its batch size from the block's input, "
                                 f"which has none here ({list(shapes[0])}: a buffer or a value computed from one)",
                                 hint="give it batch_dim=false")
        except ShapeError as e:
            msg = e.message if e.message.startswith(v.name + " ") else f"{v.name}: {e.message}"
            # provenance only when the input shape is part of the problem, not for a bad argument alone
            about_input = e.arg in (None, "kernel_size", "groups", "dim", "output_size")
            return self.err(msg, argspans.get(e.arg or "", v.call_span or span), e.hint,
                            notes=self.provenance(xs) if about_input else None)
        if any(d > self.limits.max_channels for d in shape):
            return self.err(f"{v.name}: output shape {list(shape)} exceeds the size limit {self.limits.max_channels:,}",
                            v.call_span or span, hint=limit_hint("max_channels"))
        params = opdef.params(shapes, args)
        macs = opdef.macs(shapes, shape, args)
        self.total_params += params
        if self.total_params > self.limits.max_params:
            raise ArchError(Diagnostic(f"the network exceeds {self.limits.max_params:,} parameters", span,
                                       hint=limit_hint("max_params", "check channel counts")))
        path = scope.prefix + name
        module = None
        if opdef.stateful:
            module = path
            self.claim(path, label_span or span, "layer")
        node = self.new_node(opdef.name, args, [x.nid for x in xs], shapes, shape, path, module, span, scope.frames,
                             label=label)
        node.params, node.macs, node.bound = params, macs, bound
        return TensorVal(node.id, shape)

    def _size_sources(self, args: dict[str, Any], x: TensorVal) -> tuple[dict[str, Any], list[TensorVal]]:
        """A "reads-sizes" op's args with every :class:`Dim` list item (``in.h // 16``) replaced by its value,
        its formula kept in ``args["dyn"]`` (per item; None for a plain number) over the op's inputs: ``x``
        first, then each other tensor a size is read from, which becomes an extra input of the node."""
        sources = [x]
        where = {x.nid: 0}

        def rebase(f: tuple[Any, ...]) -> tuple[Any, ...]:
            if f[0] == "k":
                return f
            if f[0] == "dim":
                if f[1] not in where:
                    where[f[1]] = len(sources)
                    sources.append(TensorVal(f[1], self.node(f[1]).shape))
                return ("in", where[f[1]], f[2])
            return (f[0], rebase(f[1]), rebase(f[2]))

        out: dict[str, Any] = {}
        for k, a in args.items():
            keep = isinstance(a, list) and any(isinstance(d, Dim) for d in a)
            if keep:
                out["dyn"] = tuple(rebase(d.expr) if isinstance(d, Dim) else None for d in a)
            out[k] = strip_dims(a, keep=keep)   # kept: the formulas are computed at run time
        return out, sources

    def apply_multi(self, v: LayerSpec, x: TensorVal, scope: Scope, label: str | None, label_span: Span | None,
                    span: Span) -> Any:
        name = self.name_in(scope, label, label_span or span)
        args = self.bind_op(v.name, v.target, v.args, v.kwargs, v.call_span or span)
        if args is None:
            return POISON
        rank = len(x.shape)
        dim = args["dim"] + rank + 1 if args["dim"] < 0 else args["dim"]   # dim=-1: the last, as torch.chunk
        if not 1 <= dim <= rank:
            return self.err(f"{v.name}: dim={args['dim']} is out of range for {list(x.shape)} (batch is dim 0)",
                            v.call_span or span, hint=f"valid dims here: 1..{rank} or -{rank}..-1")
        size = x.shape[dim - 1]
        if v.name == "unbind":
            return self._unbind(x, dim, size, scope, name, v.call_span or span, span)
        if v.name == "chunk":
            n = args["chunks"]
            if n < 1 or size % n:
                return self.err(f"chunk: {size} cannot be split into {n} equal parts", v.call_span or span,
                                hint="use split([...]) for unequal parts")
            if n > self.limits.max_repeat:
                return self.err(f"chunk: {n:,} parts exceed the limit {self.limits.max_repeat:,}", v.call_span or span,
                                hint=limit_hint("max_repeat"))
            sizes = [size // n] * n
        else:
            sizes = args["sizes"]
            if not all(isinstance(s, int) and s > 0 for s in sizes) or sum(sizes) != size:
                return self.err(f"split: sizes {fmt(sizes)} must be positive and add up to {size}", v.call_span or span)
        # the parts are numbers computed from this size: the model keeps them, so the size keeps its value
        pin(x.dims()[dim - 1])
        outs = []
        start = 0
        for i, s in enumerate(sizes):
            shape = list(x.shape)
            shape[dim - 1] = s
            node = self.new_node("narrow", {"dim": dim, "start": start, "length": s}, [x.nid], [x.shape],
                                 tuple(shape), f"{scope.prefix}{name}[{i}]", None, span, scope.frames)
            outs.append(TensorVal(node.id, tuple(shape)))
            start += s
        return outs

    def _unbind(self, x: TensorVal, dim: int, size: int, scope: Scope, name: str, call_span: Span,
                span: Span) -> Any:
        """``unbind(dim)``: one select node per index of ``dim``, each without that dim."""
        if len(x.shape) == 1:
            return self.err(f"unbind: {list(x.shape)} has one dim; unbinding it would leave only the batch",
                            call_span, hint="use chunk(n) to keep a dim")
        if size > self.limits.max_repeat:
            return self.err(f"unbind: {size:,} parts exceed the limit {self.limits.max_repeat:,}", call_span,
                            hint=limit_hint("max_repeat"))
        pin(x.dims()[dim - 1])   # the number of outputs is this size: it keeps its value
        shape = tuple(s for k, s in enumerate(x.shape) if k != dim - 1)
        outs = []
        for i in range(size):
            node = self.new_node("select", {"dim": dim, "index": i}, [x.nid], [x.shape], shape,
                                 f"{scope.prefix}{name}[{i}]", None, span, scope.frames)
            outs.append(TensorVal(node.id, shape))
        return outs

    def apply_block(self, v: LayerSpec, x: TensorVal, scope: Scope, label: str | None, label_span: Span | None,
                    span: Span) -> Any:
        bdef: A.BlockDef = v.target
        if v.inline and label is not None:
            return self.err(f"inline({bdef.name}(...)) puts the block's layers directly here, so it cannot be "
                            f"named '{label}'", label_span or span,
                            hint=f"drop the label, or write '{label}: {bdef.name}(...)' for a module of its own")
        name = "" if v.inline else self.name_in(scope, label, label_span or span)
        path = scope.prefix + name
        if self.depth >= self.limits.max_depth:
            raise ArchError(Diagnostic(
                f"blocks nest more than {self.limits.max_depth} deep (is '{bdef.name}' recursive?)", span,
                hint=limit_hint("max_depth", "a block may not use itself, directly or through others")))
        if id(bdef) not in self._params_checked:   # once per definition, not once per instance
            self._params_checked.add(id(bdef))
            for prm in bdef.params:
                p = binding_problem(prm.name, param=True)
                if p is not None:
                    self.err(f"the parameter name '{prm.name}' cannot be used: {p.message}", prm.span, hint=p.hint)
        benv = Env(self.program.namespace_of(bdef), {}, x.shape, x.nid)
        sig = block_signature(bdef)
        given, _, ok = bind(sig, v.args, v.kwargs, v.call_span or span, self.err)  # type: ignore[arg-type]
        outer = self.instance
        if not v.inline:   # an inline block's layers, and errors, belong to the instance it is written in
            self.instance = path
        try:
            fill_defaults(sig, given, lambda slot: self.eval(slot.default, benv), sink=benv.vars)
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
            self.claim(path, label_span or span, "block")
            args_txt = ", ".join(f"{p.name}={fmt(benv.vars[p.name])}" for p in bdef.params)
            inner = scope.child(name, ScopeFrame(path=path, kind="block", name=bdef.name, args=args_txt,
                                                 loc=self.loc(span),
                                                 defaults=tuple(p.name for p in bdef.params if p.name not in given)))
            self.depth += 1
            try:
                return self.exec_body(bdef.body, benv, x, inner)
            finally:
                self.depth -= 1
        finally:
            self.instance = outer

    # ------------------------------------------------------------------ merges
    def merge(self, kind: str, branches: list[Any], kwargs: dict[str, tuple[Any, Span]], name: str, span: Span,
              reparam: str | None, frames: list[ScopeFrame]) -> Any:
        tensors = [b for b in branches if isinstance(b, TensorVal)]
        if len(tensors) != len(branches):
            bad = next(b for b in branches if not isinstance(b, TensorVal))
            return self.err(f"'{kind}' combines tensors, got {type_name(bad)}", span)
        opdef = OPS[kind]
        args = self.bind_op(opdef.name, opdef.args, [], kwargs, span)
        if args is None:
            return POISON
        args = {k: strip_dims(a) for k, a in args.items()}
        bound = dict(args)
        shapes = [t.shape for t in tensors]
        try:
            if opdef.normalize:
                args = opdef.normalize(shapes, args)
            shape = opdef.shape(shapes, args)
            check_batch_mix(opdef, shapes, [self.node(t.nid).batched for t in tensors])
        except ShapeError as e:
            return self.err(e.message, kwargs[e.arg][1] if e.arg in kwargs else span, e.hint,
                            notes=self.provenance(tensors))
        if len({len(s) for s in shapes}) > 1 and kind in ("add", "sub", "mul", "div"):
            # torch aligns shapes from the right *with the batch dim*: a lower-rank batched operand would meet
            # the batch with a sample dim; only an unbatched parameter (batch_dim=false) broadcasts like a bias
            rank = max(len(s) for s in shapes)
            low = [t for t in tensors if len(t.shape) < rank and not self._unbatched(t)]
            if low:
                return self.err(f"{kind}: {list(low[0].shape)} has fewer dims than {list(shape)}; with the batch "
                                "in front torch would not line them up as written", span,
                                hint="give both the same rank (keepdim=true, or reshape with size-1 dims)",
                                notes=self.provenance(tensors))
        node = self.new_node(kind, args, [t.nid for t in tensors], shapes, shape, name, None, span, frames)
        node.reparam, node.bound = reparam, bound
        node.macs = opdef.macs(shapes, shape, args)   # matmul and attention count (merges count 0)
        return TensorVal(node.id, shape)

    def _unbatched(self, t: TensorVal) -> bool:
        """A value without the batch axis: a buffer, a ``batch_dim=false`` parameter, what is computed from them."""
        return not self.node(t.nid).batched

    def check_outputs_batched(self, g: Any, span: Span) -> None:
        """The model returns tensors with the batch axis: an output computed from buffers and parameters alone
        has none."""
        for name, nid in g.outputs:
            if not self.node(nid).batched:
                self.err(f"the output '{name}' has no batch axis: it is computed from buffers and parameters "
                         "alone", span, hint="an output must depend on the network's input")

    def provenance(self, tensors: list[TensorVal]) -> list[tuple[str, Span | None]]:
        """Notes saying which layer produced each operand's shape."""
        notes: list[tuple[str, Span | None]] = []
        for t in tensors[:4]:
            n = self.node(t.nid)
            what = "the network input" if n.op == "input" else f"the output of {n.op} '{n.name}'"
            notes.append((f"{list(t.shape)} is {what}", span_from_loc(self.program, n.loc)))
        return notes


def _count_items(v: Any, cap: int) -> int:
    """The numbers in a (nested) list, counted up to just past ``cap``."""
    n = 0
    stack = [v]
    while stack and n <= cap:
        x = stack.pop()
        if isinstance(x, list):
            stack.extend(x)
        else:
            n += 1
    return n


def span_from_loc(program: Any, loc: Loc | None) -> Span | None:
    """The :class:`Span` (with its source text) of an IR location, found among the program's files."""
    if loc is None:
        return None
    for spec in program.files.values():
        for d in [*spec.blocks.values(), *spec.networks.values()]:
            # the Source's own path: a file's key in program.files may be spelt differently
            if d.span.source.path == loc.file:
                return Span(d.span.source, loc.line, loc.col)
    return None
