"""The difference between two compiled networks: an analysis of two graphs (no torch).

:func:`diff_graphs` pairs the layers of graph ``a`` with those of graph ``b`` and reports what an edit did:

1. layers with the same path and op are the same layer (changed if their arguments or output shape differ);
2. the layers left on each side are aligned in graph order by their signature (op, arguments, input and
   output shapes): an aligned pair under another path is a *renamed* layer (a label changed, an item moved);
3. inside a stretch the alignment could not match, layers of the same op are paired in order as *changed*
   (a widened conv keeps its place even though its arguments differ); everything else is *removed* (only in
   ``a``) or *added* (only in ``b``).

The pairing of the layers that own tensors is also the weight map :mod:`archdsl.codegen.migrate` uses to carry
a checkpoint across the edit, and the checkpoint report (keys that load unchanged, change shape, are new or
dropped) is computed from the IR's ``state_dict`` shapes (:func:`archdsl.passes.deploy.state_shapes`).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from ..ir import Graph, Node
from .deploy import state_shapes

__all__ = ["LayerChange", "BlockDelta", "KeyReport", "SpecDiff", "diff_graphs", "tensor_groups"]


@dataclass
class LayerChange:
    """One layer that differs. ``kind``: ``added``, ``removed``, ``changed`` or ``renamed``."""

    kind: str
    path: str                                   # the layer's path in b (in a for a removed layer)
    op: str
    old_path: str | None = None                 # renamed / changed across paths: the path in a
    old_op: str | None = None                   # changed op
    args: dict[str, tuple[Any, Any]] = field(default_factory=dict)   # argument -> (old, new)
    old_shape: tuple[int, ...] | None = None
    shape: tuple[int, ...] | None = None
    params: tuple[int, int] = (0, 0)            # (in a, in b)
    loc: str | None = None                      # the spec line of the layer (b's, a's for a removed one)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "op": self.op, "old_path": self.old_path,
                "old_op": self.old_op,
                "args": {k: [_jsonable(o), _jsonable(n)] for k, (o, n) in self.args.items()},
                "old_shape": list(self.old_shape) if self.old_shape is not None else None,
                "shape": list(self.shape) if self.shape is not None else None,
                "params": list(self.params), "loc": self.loc}


@dataclass
class BlockDelta:
    """Parameters and MACs of one container (a module-path prefix) in a and in b."""

    path: str
    params: tuple[int, int]
    macs: tuple[int, int]

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "params": list(self.params), "macs": list(self.macs)}


@dataclass
class KeyReport:
    """How a state_dict of ``a`` relates to ``b``'s keys."""

    unchanged: list[str] = field(default_factory=list)                       # same key, same shape
    reshaped: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)             # (key in a, key in b), same shape
    new: list[str] = field(default_factory=list)                             # only in b, no source
    dropped: list[str] = field(default_factory=list)                         # only in a, not carried

    def to_json(self) -> dict[str, Any]:
        return {"unchanged": self.unchanged,
                "reshaped": [{"key": k, "old": list(o), "new": list(n)} for k, o, n in self.reshaped],
                "renamed": [{"old": o, "new": n} for o, n in self.renamed],
                "new": self.new, "dropped": self.dropped}


@dataclass
class SpecDiff:
    """What changed from network ``a`` to network ``b``."""

    a: str
    b: str
    layers: list[LayerChange]
    blocks: list[BlockDelta]
    keys: KeyReport | None
    totals: dict[str, tuple[int, int]]
    renumbered: int = 0           # parameter-free layers that only moved (their numbered name shifted)
    pairs: dict[int, int] = field(default_factory=dict)    # node id in b -> node id in a (same layer)

    def marks(self, b: Graph) -> dict[int, str]:
        """Node id in ``b`` -> 'added' / 'changed' / 'renamed', for drawing the diff on ``b``'s diagram."""
        by_name = {n.name: n.id for n in b.records()}
        out: dict[int, str] = {}
        for c in self.layers:
            if c.kind != "removed" and c.path in by_name:
                out[by_name[c.path]] = c.kind
        return out

    def removed(self) -> list[str]:
        """Paths (in ``a``) of the layers ``b`` no longer has."""
        return [c.path for c in self.layers if c.kind == "removed"]

    @property
    def identical(self) -> bool:
        return not self.layers and all(x == y for x, y in self.totals.values())

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "identical": self.identical,
                "totals": {k: list(v) for k, v in self.totals.items()},
                "layers": [c.to_json() for c in self.layers],
                "blocks": [d.to_json() for d in self.blocks],
                "renumbered": self.renumbered,
                "checkpoint": self.keys.to_json() if self.keys is not None else None}

    def text(self, *, limit: int = 60) -> str:
        """The report as plain text (what ``archc diff`` prints)."""
        out = [f"--- {self.a}", f"+++ {self.b}"]
        for name, (x, y) in self.totals.items():
            out.append(f"{name:>7}: {x:,} -> {y:,} ({_signed(y - x)})")
        if self.identical:
            out.append("no difference in layers, shapes, parameters or MACs")
            return "\n".join(out)
        if self.layers:
            out.append(f"layers ({len(self.layers)} differ):")
            for c in self.layers[:limit]:
                out.append("  " + _layer_line(c))
            if len(self.layers) > limit:
                out.append(f"  ... and {len(self.layers) - limit} more (--json lists all)")
        if self.renumbered:
            out.append(f"  ({self.renumbered} parameter-free layers only moved: their numbered names shifted)")
        if self.blocks:
            out.append("blocks (params / MACs):")
            for d in self.blocks[:limit]:
                out.append(f"  {d.path or '<network>'}: params {_signed(d.params[1] - d.params[0])}, "
                           f"MACs {_signed(d.macs[1] - d.macs[0])}")
        if self.keys is not None:
            k = self.keys
            out.append(f"checkpoint of a -> b: {len(k.unchanged)} keys load unchanged, {len(k.renamed)} renamed "
                       f"(same shape), {len(k.reshaped)} change shape, {len(k.new)} new, {len(k.dropped)} dropped")
            for old, new in k.renamed[:limit]:
                out.append(f"  renamed  {old} -> {new}")
            for key, o, n in k.reshaped[:limit]:
                out.append(f"  reshaped {key}: {list(o)} -> {list(n)}")
            for key in k.new[:limit]:
                out.append(f"  new      {key}")
            for key in k.dropped[:limit]:
                out.append(f"  dropped  {key}")
        return "\n".join(out)


def _signed(v: int) -> str:
    return f"{v:+,}"


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return repr(v)


def _layer_line(c: LayerChange) -> str:
    if c.kind == "added":
        return f"+ {c.path}: {c.op} -> {list(c.shape or ())} ({c.params[1]:,} params)"
    if c.kind == "removed":
        return f"- {c.path}: {c.op} -> {list(c.old_shape or ())} ({c.params[0]:,} params)"
    head = f"{c.old_path} -> {c.path}" if c.old_path and c.old_path != c.path else c.path
    parts = []
    if c.old_op and c.old_op != c.op:
        parts.append(f"op {c.old_op} -> {c.op}")
    parts += [f"{k} {_short(o)} -> {_short(n)}" for k, (o, n) in c.args.items()]
    if c.old_shape != c.shape:
        parts.append(f"shape {list(c.old_shape or ())} -> {list(c.shape or ())}")
    mark = "~" if c.kind == "changed" else ">"
    tail = ", ".join(parts) if parts else "same layer"
    return f"{mark} {head}: {c.op}" + (f" ({c.kind}: {tail})" if c.kind == "renamed" else f": {tail}")


def _short(v: Any) -> str:
    if isinstance(v, tuple) and len(set(v)) == 1 and v:
        return repr(v[0])
    return repr(v)


# ---- pairing --------------------------------------------------------------------------------------------
_IGNORED_ARGS = frozenset({"in_channels", "in_features"})   # follow from the input: shown as shapes instead


def _layers(g: Graph) -> list[Node]:
    return [n for n in g.records() if n.op != "input"]


def _signature(n: Node) -> tuple[Any, ...]:
    return (n.op, _freeze(n.args), tuple(tuple(s) for s in n.in_shapes), tuple(n.shape))


def _freeze(v: Any) -> Any:
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    return v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)


def _pair(la: list[Node], lb: list[Node]) -> dict[int, int]:
    """b id -> a id for the layers that are the same layer of the network (see the module docstring)."""
    pairs: dict[int, int] = {}
    by_name_a = {n.name: n for n in la}
    for n in lb:
        m = by_name_a.get(n.name)
        if m is not None and m.op == n.op:
            pairs[n.id] = m.id
    used = set(pairs.values())
    ra = [n for n in la if n.id not in used]
    rb = [n for n in lb if n.id not in pairs]
    sm = difflib.SequenceMatcher(a=[_signature(n) for n in ra], b=[_signature(n) for n in rb], autojunk=False)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            for k in range(i2 - i1):
                pairs[rb[j1 + k].id] = ra[i1 + k].id
        elif tag == "replace":   # the same ops in order are the same layers with other arguments
            left = list(ra[i1:i2])
            for n in rb[j1:j2]:
                m = next((x for x in left if x.op == n.op), None)
                if m is not None:
                    left.remove(m)
                    pairs[n.id] = m.id
    return pairs


def _prefixes(path: str, depth: int) -> list[str]:
    parts = path.split(".")
    return [".".join(parts[:k]) for k in range(1, min(depth, len(parts) - 1) + 1)]


def _block_sums(layers: list[Node], depth: int) -> dict[str, tuple[int, int]]:
    sums: dict[str, tuple[int, int]] = {}
    for n in layers:
        for p in _prefixes(n.name, depth):
            pa, ma = sums.get(p, (0, 0))
            sums[p] = (pa + n.params, ma + n.macs)
    return sums


def tensor_groups(g: Graph) -> dict[int, dict[str, tuple[int, ...]]]:
    """Per node that owns tensors: its state_dict keys relative to the node's module path and their shapes."""
    shapes = state_shapes(g) or {}
    out: dict[int, dict[str, tuple[int, ...]]] = {}
    owners = sorted(((n.module, n.id) for n in g.records() if n.module), key=lambda t: -len(t[0]))
    for key, shape in shapes.items():
        for mod, nid in owners:   # the longest owning path first: 'a.b.weight' belongs to 'a.b', not 'a'
            if key == mod or key.startswith(mod + "."):
                out.setdefault(nid, {})[key[len(mod) + 1:] if key != mod else ""] = shape
                break
    return out


def _join(mod: str, rel: str) -> str:
    return f"{mod}.{rel}" if rel else mod


def diff_graphs(a: Graph, b: Graph, *, depth: int = 2) -> SpecDiff:
    """The difference from ``a`` to ``b`` (layers, per-block parameter/MAC deltas, checkpoint keys)."""
    la, lb = _layers(a), _layers(b)
    pairs = _pair(la, lb)
    a_of = {n.id: n for n in la}
    changes: list[LayerChange] = []
    renumbered = 0
    for n in lb:
        mid = pairs.get(n.id)
        if mid is None:
            changes.append(LayerChange("added", n.name, n.op, shape=tuple(n.shape), params=(0, n.params),
                                       loc=str(n.loc) if n.loc else None))
            continue
        m = a_of[mid]
        args = {k: (m.args.get(k), n.args.get(k)) for k in sorted(set(m.args) | set(n.args))
                if k not in _IGNORED_ARGS and _freeze(m.args.get(k)) != _freeze(n.args.get(k))}
        same = not args and tuple(m.shape) == tuple(n.shape) and m.op == n.op
        if same and m.name == n.name:
            continue
        if same and not n.module and not m.module:
            renumbered += 1       # a parameter-free layer whose numbered name shifted: no weight depends on it
            continue
        kind = "renamed" if same else "changed"
        changes.append(LayerChange(kind, n.name, n.op, old_path=m.name, old_op=m.op, args=args,
                                   old_shape=tuple(m.shape), shape=tuple(n.shape), params=(m.params, n.params),
                                   loc=str(n.loc) if n.loc else None))
    paired_a = set(pairs.values())
    for m in la:
        if m.id not in paired_a:
            changes.append(LayerChange("removed", m.name, m.op, old_shape=tuple(m.shape), params=(m.params, 0),
                                       loc=str(m.loc) if m.loc else None))
    sa, sb = _block_sums(la, depth), _block_sums(lb, depth)
    blocks = [BlockDelta(p, (sa.get(p, (0, 0))[0], sb.get(p, (0, 0))[0]), (sa.get(p, (0, 0))[1], sb.get(p, (0, 0))[1]))
              for p in sorted(set(sa) | set(sb), key=_path_order(la, lb))
              if sa.get(p, (0, 0)) != sb.get(p, (0, 0))]
    totals = {"params": (a.total_params, b.total_params), "MACs": (a.total_macs, b.total_macs),
              "layers": (len(la), len(lb))}
    return SpecDiff(a.address, b.address, changes, blocks, _key_report(a, b, pairs), totals, renumbered, pairs)


def _path_order(la: list[Node], lb: list[Node]) -> Any:
    first: dict[str, int] = {}
    for i, n in enumerate([*lb, *la]):
        parts = n.name.split(".")
        for k in range(1, len(parts)):
            first.setdefault(".".join(parts[:k]), i)
    return lambda p: (first.get(p, 1 << 30), p)


def _key_report(a: Graph, b: Graph, pairs: dict[int, int]) -> KeyReport | None:
    sa, sb = state_shapes(a), state_shapes(b)
    if sa is None or sb is None:
        return None
    rep = KeyReport()
    carried: set[str] = set()
    ga, gb = tensor_groups(a), tensor_groups(b)
    for key, shape in sb.items():
        if key in sa:
            if tuple(sa[key]) == tuple(shape):
                rep.unchanged.append(key)
                carried.add(key)
            else:
                rep.reshaped.append((key, tuple(sa[key]), tuple(shape)))
                carried.add(key)
    for bid, aid in pairs.items():   # a layer that moved: its tensors travel under the new path
        tb, ta = gb.get(bid), ga.get(aid)
        if not tb or not ta:
            continue
        mb, ma = b.node(bid).module or "", a.node(aid).module or ""
        if ma == mb:
            continue
        for rel, shape in tb.items():
            old, new = _join(ma, rel), _join(mb, rel)
            if new in sa or rel not in ta or tuple(ta[rel]) != tuple(shape):
                continue
            rep.renamed.append((old, new))
            carried.add(old)
    renamed_new = {n for _, n in rep.renamed}
    rep.new = [k for k in sb if k not in sa and k not in renamed_new]
    rep.dropped = [k for k in sa if k not in sb and k not in carried]
    return rep
