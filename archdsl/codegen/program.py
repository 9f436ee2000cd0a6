"""One unit instance as a small program: its constructor entries and forward statements (torch-free).

A :class:`Body` is what code generation knows about one block instantiation before it is written out: the
modules it registers (``Ctor``) and the statements of its ``forward`` (``Stmt``), built from the op
registry's emit data. Every literal is still a :class:`~archdsl.ops.Lit`/:class:`~archdsl.ops.Kw` piece, so
two instantiations of one block can be compared by structure (:meth:`Body.key`) and their differing values
turned into constructor arguments (:mod:`archdsl.codegen.emit`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..ops import MOD, OPS, EmitArgs, In, Kw, Lit, has_trait, size_helpers, wrap_unbatched
from .names import GenerationError, check_child_name
from .units import Hierarchy, Unit

__all__ = ["UnitCall", "Stmt", "Ctor", "Body", "build_body", "expr_key", "holes_of", "PLAIN_CALL", "module_chain",
           "SEQUENTIAL_SLICE"]

PLAIN_CALL = (MOD, "(", In(0), ")")


@dataclass(frozen=True)
class UnitCall:
    """The constructor call of the child unit at ``path`` (a ``cls`` instance), expanded when its class is done."""

    path: str
    cls: str


@dataclass
class Stmt:
    """``outs = <expr>(ins)``: kind 'op' (an op's emit, ``MOD`` = ``ref``), 'call' (the child unit ``ref``) or
    'alias' (an identity: no code, ``outs[0]`` is ``ins[0]``)."""

    kind: str
    ins: tuple[int, ...]
    outs: tuple[int, ...]
    expr: tuple[Any, ...] = ()
    ref: str = ""
    name: str = ""                 # local name (for matching an identity with an optional child)
    module_form: tuple[Any, ...] | None = None   # the op as an nn.Module, for nn.Sequential
    note: str = ""                 # shape comment
    node: int = field(default=-1, compare=False)   # the IR node an 'op'/'alias' computes (not structure)

    def key(self) -> tuple[Any, ...]:
        return (self.kind, self.ins, self.outs, expr_key(self.expr), self.ref,
                self.name if self.kind == "alias" else "")


@dataclass
class Ctor:
    """A registration in ``__init__``: 'module' (``expr`` at ``path``), 'param' (an ``nn.Parameter``),
    'buffer' (a persistent buffer), 'buffer-np' (a non-persistent one), 'list'/'dict' (a holder container)."""

    path: str
    kind: str
    expr: tuple[Any, ...] = ()

    def key(self) -> tuple[Any, ...]:
        return (self.path, self.kind, expr_key(self.expr))


@dataclass
class Body:
    """One unit instance: inputs, constructor entries, statements, returned values."""

    unit: Unit
    n_in: int
    ctors: list[Ctor] = field(default_factory=list)
    stmts: list[Stmt] = field(default_factory=list)
    returns: tuple[int, ...] = ()
    helpers: set[str] = field(default_factory=set)
    in_shapes: list[tuple[int, ...]] = field(default_factory=list)
    node_vals: dict[int, int] = field(default_factory=dict)   # graph node -> its value here (no part of key())

    def key(self) -> tuple[Any, ...]:
        """The structure (cached: a body is complete once built)."""
        k = self.__dict__.get("_key")
        if k is None:
            k = self.__dict__["_key"] = (self.n_in, tuple(c.key() for c in self.ctors),
                                         tuple(s.key() for s in self.stmts), self.returns)
        return k


def expr_key(expr: tuple[Any, ...]) -> tuple[Any, ...]:
    """The structure of an expression: its code, with every literal value replaced by a hole."""
    out: list[Any] = []
    for p in expr:
        if isinstance(p, str):
            out.append(p)
        elif isinstance(p, Lit):
            out.append(("L",))
        elif isinstance(p, Kw):
            out.append(("K", p.name, repr(p.default), p.sep))
        elif isinstance(p, In):
            out.append(("I", p.k))
        elif p is MOD:
            out.append(("M",))
        elif isinstance(p, UnitCall):
            out.append(("U", p.cls))
        else:
            raise TypeError(f"internal: unknown expression piece {p!r}")
    return tuple(out)


def holes_of(expr: tuple[Any, ...]) -> list[Any]:
    """The Lit/Kw pieces of ``expr``, in order."""
    return [p for p in expr if isinstance(p, (Lit, Kw))]


def build_body(h: Hierarchy, u: Unit, unit_exprs: dict[str, tuple[Any, ...]], holder_kind: dict[str, str],
               rcons: dict[int, int], res: Any, inference: bool = False) -> Body:
    """The program of unit ``u`` (its items were ordered by :func:`archdsl.codegen.units.analyze`);
    ``inference``: the module is a deploy form (see :class:`archdsl.ops.EmitArgs`)."""
    g = h.graph
    body = Body(u, len(u.inputs) if u.path else 1)
    vals: dict[int, int] = {}
    if u.path:
        for k, i in enumerate(u.inputs):
            vals[i] = k
        body.in_shapes = [tuple(g.node(i).shape) for i in u.inputs]
    else:
        vals[g.inputs[0]] = 0
        body.in_shapes = [tuple(g.input_shape)]
    nxt = [body.n_in]
    local_ops: set[int] = set()
    registered: set[str] = set()

    def new() -> int:
        nxt[0] += 1
        return nxt[0] - 1

    def ensure(rel: str) -> None:
        """Register the holder containers on the way to ``rel``."""
        parts = rel.split(".")
        for k in range(1, len(parts)):
            p = ".".join(parts[:k])
            if p not in registered:
                full = (u.path + "." + p) if u.path else p
                kind = holder_kind.get(full)
                if kind is None:
                    raise GenerationError(f"the module path '{full}' is used both as a layer and as a container; "
                                          "rename one of them")
                check_child_name(parts[k - 1], f"container '{full}'")
                registered.add(p)
                body.ctors.append(Ctor(p, kind))

    def register(rel: str, kind: str, expr: tuple[Any, ...]) -> None:
        if rel in registered:
            raise GenerationError(f"two modules would be named '{u.path + '.' + rel if u.path else rel}'")
        ensure(rel)
        check_child_name(rel.rpartition(".")[2], f"'{rel}'")
        registered.add(rel)
        body.ctors.append(Ctor(rel, kind, expr))

    for kind, what in u.items:
        if kind == "unit":
            ch = h.units[what]  # type: ignore[index]
            rel = u.rel(ch.path)
            register(rel, "module", unit_exprs[ch.path])
            outs = tuple(new() for _ in ch.outputs)
            for o, v in zip(ch.outputs, outs):
                vals[o] = v
            body.stmts.append(Stmt("call", tuple(vals[i] for i in ch.inputs), outs, (), rel, rel))
            continue
        n = g.node(what)  # type: ignore[arg-type]
        ins = tuple(vals[i] for i in n.inputs)
        local = u.rel(n.name) if (not u.path or n.name.startswith(u.path + ".")) else n.name
        out = new()
        vals[n.id] = out
        if n.op == "identity":
            body.stmts.append(Stmt("alias", ins, (out,), name=local, node=n.id))
            continue
        opdef = OPS.get(n.op)
        if opdef is None:
            raise GenerationError(f"no code generation for op '{n.op}' (is it registered?)")
        inplace = False
        if has_trait(n.op, "inplace") and (n.op != "add" or all(tuple(s) == tuple(n.shape) for s in n.in_shapes)):
            src = res(n.inputs[0])
            inplace = (src in local_ops and has_trait(g.node(src).op, "inplace-safe-producer")
                       and rcons.get(src, 0) == 1 and src not in h.outputs)
        batched = tuple(g.node(i).batched for i in n.inputs)
        # an in-place add must write into a tensor of the result's size: not into one without the batch axis
        inplace = inplace and (batched[0] or not n.batched)
        finite = tuple(has_trait(g.node(i).op, "finite-values") for i in n.inputs) if inference else ()
        e = EmitArgs(dict(n.args), [tuple(s) for s in n.in_shapes], tuple(n.shape), len(n.inputs), inplace,
                     batched=batched, out_batched=n.batched, inference=inference, finite_inputs=finite)
        data = batched if opdef.size_inputs_from is None else batched[:opdef.size_inputs_from]
        if all(data):   # (a tensor read only for its sizes that lacks the batch axis is read as a batch of one)
            expr = tuple(opdef.emit(e) if all(batched) else wrap_unbatched(e, opdef.emit(e), whole=False))
        else:   # an input without the batch axis (a buffer, a batch_dim=false parameter): see OpDef.unbatched_emit
            expr = tuple(opdef.unbatched_emit(e) if opdef.unbatched_emit is not None
                         else wrap_unbatched(e, opdef.emit(e)))
        rel = ""
        if n.module:
            if opdef.ctor is None:
                raise GenerationError(f"op '{n.op}' has a module path but no constructor")
            rel = u.rel(n.module)
            kind = "param" if has_trait(n.op, "parameter") else "module"
            if has_trait(n.op, "buffer"):   # a non-persistent buffer is no state_dict key
                kind = "buffer" if opdef.persistent(e.args) else "buffer-np"
            ctor = tuple(opdef.ctor(e))
            register(rel, kind, ctor)
            body.helpers.update(size_helpers(ctor))
        elif MOD in expr:
            raise GenerationError(f"op '{n.op}' calls its module but the node has none")
        body.helpers.update(opdef.helpers)
        body.helpers.update(size_helpers(expr))
        mf = tuple(opdef.module_form(e)) if opdef.module_form is not None else None
        if not all(data) and opdef.unbatched_emit is None:
            mf = None   # the module form would see the tensor without its batch axis
        if (not u.path and not n.module and n.label and mf is not None and local == n.label and "." not in local
                and all(batched) and n.batched
                and local not in registered and local not in h.module_roots):
            # a labelled parameter-free op of the network itself is a child module, as in torchvision
            # (``relu``, ``maxpool``, ``avgpool``): tools that run the root's children in order
            # (IntermediateLayerGetter, BackboneWithFPN) then see every step; no state_dict key changes
            rel = local
            register(rel, "module", mf)
            expr = PLAIN_CALL
        if n.module and expr == PLAIN_CALL:
            mf = ("<module>",)
        body.stmts.append(Stmt("op", ins, (out,), expr, rel, local, mf, str(list(n.shape)), n.id))
        local_ops.add(n.id)
    if u.path:
        body.returns = tuple(vals[o] for o in u.outputs)
    else:
        body.returns = tuple(vals[nid] for _, nid in g.outputs)
    body.node_vals = vals
    return body


def module_chain(body: Body) -> bool:
    """Whether ``body`` only runs its child modules one after the other, each on the previous one's output
    (the first on the input, the last returned): the forward ``nn.Sequential`` runs, in registration order."""
    if body.n_in != 1 or len(body.returns) != 1 or not body.stmts:
        return False
    if any(c.kind != "module" or "." in c.path for c in body.ctors):
        return False
    prev, refs = 0, []
    uses: dict[int, int] = {}
    for s in body.stmts:
        for i in s.ins:
            uses[i] = uses.get(i, 0) + 1
    for s in body.stmts:
        plain = s.kind == "call" or (s.kind == "op" and s.expr == PLAIN_CALL)
        if not plain or not s.ref or s.ins != (prev,) or len(s.outs) != 1 or uses.get(prev, 0) != 1:
            return False
        refs.append(s.ref)
        prev = s.outs[0]
    return body.returns == (prev,) and refs == [c.path for c in body.ctors]


# A block class that subclasses nn.Sequential takes the block's arguments, so nn.Sequential's own slicing
# (``type(self)(OrderedDict(...))``) cannot rebuild it: a slice is a plain nn.Sequential of the same modules.
SEQUENTIAL_SLICE = '''
    def __getitem__(self, idx: int | slice) -> nn.Module:
        """``self[i]`` is the i-th module (negative counts from the end); a slice is an ``nn.Sequential``."""
        if isinstance(idx, slice):
            out = nn.Sequential()
            for name, module in list(self._modules.items())[idx]:
                out.add_module(name, module)
            return out
        return super().__getitem__(idx)'''
