"""Carry trained weights across an edit of a spec (imports torch): ``archc migrate``.

The weight map is the layer pairing of :func:`archdsl.passes.diff.diff_graphs` (same path and op, or aligned by
structure when a label changed or an item moved). For every tensor of the edited network ``b``:

- a tensor of ``a`` at the same key with the same shape is copied;
- otherwise the tensor of the paired layer of ``a`` (same relative key, same shape) is copied: a renamed layer;
- otherwise the tensor keeps the value ``b``'s module gave it at construction (its own init), and the report
  says why (a new layer, or a shape that changed).

Nothing is guessed beyond that: a tensor whose shape changed is never cropped or padded.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ArchError
from ..ir import Graph
from ..passes.diff import SpecDiff, diff_graphs, tensor_groups

__all__ = ["Decision", "Migration", "migrate_state_dict"]


@dataclass
class Decision:
    """What happened to one tensor of ``b``: ``copied`` / ``renamed`` (from ``source``) or ``initialized``."""

    key: str
    action: str
    source: str | None = None
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "action": self.action, "source": self.source, "reason": self.reason}


@dataclass
class Migration:
    """The migrated state_dict and one decision per key of ``b``, plus the tensors of ``a`` left behind."""

    state_dict: dict[str, Any]
    decisions: list[Decision]
    unused: list[str] = field(default_factory=list)
    diff: SpecDiff | None = None

    def count(self, action: str) -> int:
        return sum(d.action == action for d in self.decisions)

    def text(self, *, limit: int = 40) -> str:
        lines = [f"{self.count('copied')} tensors copied, {self.count('renamed')} carried from renamed layers, "
                 f"{self.count('initialized')} initialized, {len(self.unused)} tensors of the source not used"]
        for d in self.decisions:
            if d.action == "renamed" and limit > 0:
                lines.append(f"  renamed     {d.source} -> {d.key}")
                limit -= 1
        for d in self.decisions:
            if d.action == "initialized" and limit > 0:
                lines.append(f"  initialized {d.key} ({d.reason})")
                limit -= 1
        for k in self.unused:
            if limit > 0:
                lines.append(f"  not used    {k}")
                limit -= 1
        return "\n".join(lines)


def migrate_state_dict(a: Graph, b: Graph, source: dict[str, Any], init: dict[str, Any]) -> Migration:
    """``b``'s state_dict with every tensor of ``source`` (a state_dict of ``a``) that transfers.

    ``init`` is a state_dict of a freshly constructed ``b`` (the values of the tensors nothing transfers to).
    Raises :class:`ArchError` when no tensor transfers at all (the two specs are not related).
    """
    d = diff_graphs(a, b)
    ga, gb = tensor_groups(a), tensor_groups(b)
    from_pair: dict[str, str] = {}
    for bid, aid in d.pairs.items():
        ma, mb = a.node(aid).module, b.node(bid).module
        if not ma or not mb:
            continue
        for rel in gb.get(bid, {}):
            if rel in ga.get(aid, {}):
                from_pair[f"{mb}.{rel}" if rel else mb] = f"{ma}.{rel}" if rel else ma
    out: dict[str, Any] = {}
    decisions: list[Decision] = []
    used: set[str] = set()
    for key, value in init.items():
        src = source.get(key)
        if src is not None and tuple(src.shape) == tuple(value.shape):
            out[key] = src.detach().clone().to(value.dtype)
            decisions.append(Decision(key, "copied", key))
            used.add(key)
            continue
        old = from_pair.get(key)
        alt = source.get(old) if old is not None else None
        if old is not None and old != key and alt is not None and tuple(alt.shape) == tuple(value.shape):
            out[key] = alt.detach().clone().to(value.dtype)
            decisions.append(Decision(key, "renamed", old))
            used.add(old)
            continue
        out[key] = value
        if src is not None:
            why = f"shape changed: {list(src.shape)} -> {list(value.shape)}"
        elif alt is not None:
            why = f"paired with {old}, whose shape {list(alt.shape)} differs from {list(value.shape)}"
        else:
            why = "new in the target"
        decisions.append(Decision(key, "initialized", None, why))
    if not used:
        raise ArchError(f"no tensor of {a.address} transfers to {b.address}: no layer keeps its key and shape, and "
                        "none could be matched by structure", None,
                        hint="migrate carries weights across an edit of one network; these look like two others")
    unused = [k for k in source if k not in used]
    return Migration(out, decisions, unused, d)
