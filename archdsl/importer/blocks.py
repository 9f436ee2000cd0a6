"""One ``block`` per module class: instances with equal structure share a block whose differing literal
values are its parameters.

Every converted body has a *signature* (its nodes, ops, labels, argument names and wiring, and its
children's signatures) and a *slot vector* (every literal argument value in a fixed order, plus each
child block's call arguments). Bodies of one class with one signature become one :class:`BlockDef`; the
slots that differ between its instances are its parameters (slots with equal values in every instance
share one parameter; a slot that is a whole multiple of a parameter is written ``c * 4``; the most common
value is the default). Plain ``nn.Sequential`` bodies are not blocks: they are labelled groups, part of
their parent's signature and slots.
"""
from __future__ import annotations

import keyword
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..lang.parser import KEYWORDS
from ..ops import OPS
from .convert import Body, SNode

__all__ = ["Param", "BlockDef", "Blocks", "dedupe", "Expr", "Layer", "is_act"]


class Layer(str):
    """A layer value in a slot (an activation passed to a block: ``act=relu``), printed as its bare name."""

    def __repr__(self) -> str:
        return f"Layer({str(self)})"


def is_act(node: SNode) -> bool:
    """An argument-free activation: one slot holding the op itself, so blocks that differ only in their
    activation share one definition with an ``act`` parameter."""
    d = OPS.get(node.op) if node.kind == "op" else None
    return d is not None and d.family == "act" and not d.args and not node.args and d.arity == 1

# how a parameter coming from an op argument is named in a block's signature
_NAMES = {"out_channels": "c", "out_features": "c", "kernel_size": "k", "negative_slope": "slope", "shape": "shape",
          "chunks": "n", "sizes": "sizes", "upscale_factor": "r", "output_size": "size"}


@dataclass(frozen=True)
class Expr:
    """A parameter reference in a template: ``name`` times ``factor``."""

    name: str
    factor: int = 1
    div: int = 1

    def text(self) -> str:
        if self.div != 1:
            return f"{self.name} // {self.div}"
        return self.name if self.factor == 1 else f"{self.name} * {self.factor}"


@dataclass
class Param:
    """A block parameter: its name, its default (``REQUIRED`` when none) and the slots it stands for."""

    name: str
    default: Any
    required: bool
    slots: list[int]


@dataclass
class BlockDef:
    """A block: its name, the source class, parameters, and the body of its first instance as the template
    (``slot_expr`` maps a slot to a parameter expression; other slots print their value)."""

    name: str
    cls: str
    template: Body
    params: list[Param] = field(default_factory=list)
    slot_expr: dict[int, Expr] = field(default_factory=dict)
    instances: list[Body] = field(default_factory=list)
    # a condition slot (after the nodes' slots) -> the template nodes it leaves out when false
    cond: dict[int, frozenset[int]] = field(default_factory=dict)


@dataclass
class Blocks:
    """The dedupe result: block definitions in dependency order, and for each block body its definition and
    call arguments (parameter name -> value, only those that differ from the default)."""

    defs: list[BlockDef]
    of: dict[int, BlockDef]
    call: dict[int, dict[str, Any]]
    merge: bool = True          # fold variants with left-out layers into one block


def _arg_slots(node: SNode) -> list[tuple[str, Any]]:
    """The literal slots of one node's own arguments, in a fixed order (an activation: the op itself)."""
    if is_act(node):
        return [("act", Layer(node.op))]
    return [(k, node.args[k]) for k in sorted(node.args)]


def node_key(node: SNode, blocks: Blocks) -> Any:
    """What must be equal for two nodes to be the same statement (their literal values aside)."""
    child: Any = None
    if node.child is not None:
        child = _sig(node.child, blocks) if node.kind == "group" else blocks.of[id(node.child)].name
    return (node.kind, "<act>" if is_act(node) else node.op, node.label, node.n_out, tuple(sorted(node.args)), child)


def _sig(body: Body, blocks: Blocks) -> Any:
    items: list[Any] = []
    for node in body.nodes:
        child: Any = None
        if node.child is not None:
            child = _sig(node.child, blocks) if node.kind == "group" else blocks.of[id(node.child)].name
        items.append((node.kind, "<act>" if is_act(node) else node.op, node.label, tuple(node.inputs), node.n_out,
                      tuple(sorted(node.args)),
                      child))
    return (tuple(items), body.out)


def _walk(body: Body, out: list[Body]) -> None:
    """Post-order: children before parents."""
    for node in body.nodes:
        if node.child is not None:
            _walk(node.child, out)
    out.append(body)


def _height(body: Body) -> int:
    """1 + the height of the highest child block (groups are part of their parent: no level of their own)."""
    best = 0
    for n in body.nodes:
        if n.child is not None:
            best = max(best, _height(n.child) - 1 if n.kind == "group" else _height(n.child))
    return 1 + best


def node_slots(node: SNode, blocks: Blocks) -> list[Any]:
    """The slots of one node: its literal arguments, a group's nodes' slots, a child block's call arguments."""
    if node.kind == "group" and node.child is not None:
        return slots(node.child, blocks)
    if node.kind == "use" and node.child is not None:
        d = blocks.of[id(node.child)]
        full = _full_call(d, blocks.call[id(node.child)])
        return [full[p.name] for p in d.params]
    return [v for _, v in _arg_slots(node)]


def slots(body: Body, blocks: Blocks) -> list[Any]:
    """The slot vector of a body: its nodes' literal arguments (groups inlined), and each child block's
    call arguments by its parameters in order."""
    return [v for node in body.nodes for v in node_slots(node, blocks)]


def slot_names(body: Body, blocks: Blocks) -> list[str]:
    """A name hint for each slot of :func:`slots` (the op argument or the child's parameter name)."""
    out: list[str] = []
    for node in body.nodes:
        if node.kind == "group" and node.child is not None:
            out += slot_names(node.child, blocks)
        elif node.kind == "use" and node.child is not None:
            out += [p.name for p in blocks.of[id(node.child)].params]
        else:
            out += [_NAMES.get(k, k) for k, _ in _arg_slots(node)]
    return out


def _full_call(d: BlockDef, call: dict[str, Any]) -> dict[str, Any]:
    return {p.name: call.get(p.name, p.default) for p in d.params}


def _identifier(name: str) -> str:
    name = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name) or "Block"
    if name[0].isdigit():
        name = "B" + name
    if name in OPS or name in KEYWORDS or keyword.iskeyword(name) or name in ("x", "true", "false", "none"):
        name += "Block"
    return name


def _key(v: Any) -> Any:
    return repr(v)


class _Any:
    """A slot of a layer an instance leaves out: any value fits it."""

    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()


def dedupe(root: Body, merge: bool = True) -> Blocks:
    """Group the block bodies under ``root`` by class and signature (children first: a signature names
    its children's blocks), fold a variant that is another with layers left out into it (a condition
    parameter, :mod:`.variants`), then find each block's parameters."""
    from .variants import aligned, embed, flag_name
    order: list[Body] = []
    _walk(root, order)
    blocks = Blocks([], {}, {}, merge)
    used: Counter[str] = Counter()
    by_height: dict[int, list[Body]] = {}
    for b in order:
        if b is not root and not b.container:
            by_height.setdefault(_height(b), []).append(b)
    for h in sorted(by_height):
        groups: dict[tuple[str, str], list[Body]] = {}
        for b in by_height[h]:
            groups.setdefault((b.cls, _key(_sig(b, blocks))), []).append(b)
        # per class, the largest variants first; a smaller one that embeds in a base joins it
        bases: list[tuple[list[Body], list[tuple[list[Body], dict[int, int], frozenset[int]]]]] = []
        for (cls, _), bodies in sorted(groups.items(), key=lambda kv: (kv[0][0], -len(kv[1][0].nodes))):
            for base, attached in bases:
                if base[0].cls != cls:
                    continue
                m = embed(base[0], bodies[0], lambda n: node_key(n, blocks), enabled=blocks.merge)
                if m is not None:
                    attached.append((bodies, m[0], m[1]))
                    break
            else:
                bases.append((bodies, []))
        for base, attached in bases:
            cls = base[0].cls
            name_base = _identifier(cls.rsplit(".", 1)[-1])
            used[name_base] += 1
            name = name_base if used[name_base] == 1 else f"{name_base}{used[name_base]}"
            template = base[0]
            instances = list(base) + [b for bodies, _, _ in attached for b in bodies]
            d = BlockDef(name, cls, template, instances=instances)
            vectors = [slots(b, blocks) for b in base]
            names = slot_names(template, blocks)
            # larger sets first: a node left out in several is written with the last (smallest) set's flag
            sets = sorted({removed for _, _, removed in attached}, key=lambda r: (-len(r), sorted(r)))
            for removed in sets:
                d.cond[len(names)] = removed
                names.append(flag_name(template, removed))
            vectors = [v + [True] * len(sets) for v in vectors]
            for bodies, mapping, removed in attached:
                for b in bodies:
                    vectors.append(aligned(template, b, mapping, lambda n: node_slots(n, blocks), ANY)
                                   + [not r <= removed for r in sets])
            _params(d, vectors, names)
            blocks.defs.append(d)
            for b, vec in zip(instances, vectors):
                blocks.of[id(b)] = d
                call = {}
                for p in d.params:
                    v = vec[p.slots[0]]
                    if v is ANY:
                        v = p.default if not p.required else _known(vectors, p.slots[0])
                    if p.required or v != p.default:
                        call[p.name] = v
                blocks.call[id(b)] = call
    return blocks


def _known(vectors: list[list[Any]], i: int) -> Any:
    return next((v[i] for v in vectors if v[i] is not ANY), None)


def _params(d: BlockDef, vectors: list[list[Any]], names: list[str]) -> None:
    n = len(vectors[0])
    columns: list[tuple[list[Any], list[int]]] = []
    for i in range(n):
        col = [v[i] for v in vectors if v[i] is not ANY]
        if all(c == col[0] and type(c) is type(col[0]) for c in col):
            for v in vectors:          # one value wherever it is known: a literal
                v[i] = col[0] if col else None
            continue
        full = [v[i] for v in vectors]
        for rep, idxs in columns:
            # equal wherever both are known (a left-out layer's slot fits any value)
            if all(a is ANY or b is ANY or (a == b and type(a) is type(b)) for a, b in zip(rep, full)):
                rep[:] = [b if a is ANY else a for a, b in zip(rep, full)]
                idxs.append(i)
                break
        else:
            columns.append((full, [i]))
    for rep, idxs in columns:
        for v, x in zip(vectors, rep):     # a left-out slot takes the value its parameter has there
            for i in idxs:
                if v[i] is ANY:
                    v[i] = x
    taken: set[str] = set()
    params: list[Param] = []
    for _, idxs in columns:
        col = [v[idxs[0]] for v in vectors if v[idxs[0]] is not ANY]
        hints = [names[i] for i in idxs if names[i]]
        # a width is "c" whichever argument showed it first (groups=c of a depthwise conv)
        base = "c" if "c" in hints else _identifier(hints[0].lower()) if hints else "p"
        name = base
        k = 2
        while name in taken:
            name = f"{base}{k}"
            k += 1
        taken.add(name)
        counts = Counter(_key(c) for c in col)
        top, many = counts.most_common(1)[0]
        required = many * 2 < len(col) or many == 1 or base == "c"
        default = next(c for c in col if _key(c) == top)
        params.append(Param(name, None if required else default, required, idxs))
    # a parameter that is a whole multiple of another (c * 4) is written as that multiple, a padding that is
    # half a kernel as k // 2
    ints = {p.name: [v[p.slots[0]] for v in vectors] for p in params}
    for p in list(params):
        if any(e.name == p.name for e in d.slot_expr.values()):
            continue
        for q in params:
            pairs = [(a, b) for a, b in zip(ints[p.name], ints[q.name]) if a is not ANY and b is not ANY]
            col, other = [a for a, _ in pairs], [b for _, b in pairs]
            if q is p or not pairs or not all(isinstance(a, int) and not isinstance(a, bool) and a >= 0 for a in col) \
                    or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in other):
                continue
            f = col[0] // other[0]
            if f > 1 and all(a == f * b for a, b in zip(col, other)):
                expr = Expr(q.name, f)
            elif p.name.startswith("padding") and q.name.startswith("k") and len(set(other)) > 1 \
                    and all(a == b // 2 for a, b in zip(col, other)):
                expr = Expr(q.name, div=2)
            else:
                continue
            params.remove(p)
            for s in p.slots:
                d.slot_expr[s] = expr
            break
    params.sort(key=lambda p: (not p.required, p.name != "c", p.slots[0]))
    for p in params:
        for s in p.slots:
            d.slot_expr[s] = Expr(p.name)
    d.params = params
