"""Variants of one class as one block: a body that is another with some layers left out joins it, the
left-out layers written ``layer if flag`` (a ResNet block's ``downsample``, a residual ``identity`` branch
that only some instances have) with ``flag`` a boolean parameter of the block.

``embed(a, b)`` finds ``b`` in ``a``: ``b``'s nodes are ``a``'s in order minus some, and every input of
``b`` is what ``a``'s input becomes once the left-out nodes pass their tensor through (a unary layer its
input; a merge with an identity branch its other branch, as the language's combinator with one branch
left does). The printer writes each left-out node with the condition (:mod:`.emit`); where that would
need a form the language lacks, the import falls back to one block per variant.
"""
from __future__ import annotations

from typing import Any, Callable

from .convert import Body, Ref, SNode

__all__ = ["embed", "aligned", "flag_name", "identity_input"]

_MERGES = {"add", "mul", "concat"}


def identity_input(body: Body, i: int) -> Ref | None:
    """For merge node ``i`` with two inputs: the input that is also read elsewhere (the combinator's
    source, its identity branch), or None when that is not exactly one of them."""
    node = body.nodes[i]
    if node.kind != "op" or node.op not in _MERGES or len(node.inputs) != 2:
        return None
    shared = [r for r in node.inputs
              if any(r in n.inputs for j, n in enumerate(body.nodes) if j != i) or r == Ref(-1)]
    return shared[0] if len(shared) == 1 else None


def embed(a: Body, b: Body, key: Callable[[SNode], Any], *, enabled: bool = True
          ) -> tuple[dict[int, int], frozenset[int]] | None:
    """``b`` as ``a`` with some nodes left out: (a's node -> b's node, a's left-out nodes), or None."""
    if not enabled or len(b.nodes) >= len(a.nodes):
        return None
    mapping: dict[int, int] = {}
    j = 0
    for i, node in enumerate(a.nodes):
        if j < len(b.nodes) and key(node) == key(b.nodes[j]):
            mapping[i] = j
            j += 1
    if j != len(b.nodes):
        return None
    removed = frozenset(set(range(len(a.nodes))) - set(mapping))
    for r in removed:
        n = a.nodes[r]
        if n.kind == "param" or n.n_out != 1:
            return None
        if len(n.inputs) != 1 and identity_input(a, r) is None:
            return None

    def resolve(ref: Ref, depth: int = 0) -> Ref | None:
        if ref.node < 0 or ref.node not in removed:
            return ref
        n = a.nodes[ref.node]
        if len(n.inputs) == 1:
            return resolve(n.inputs[0], depth + 1)
        ident = identity_input(a, ref.node)
        other = [r for r in n.inputs if r != ident]
        return resolve(other[0], depth + 1) if len(other) == 1 else None

    def to_b(ref: Ref | None) -> Ref | None:
        if ref is None:
            return None
        if ref.node < 0:
            return ref
        return Ref(mapping[ref.node], ref.k) if ref.node in mapping else None

    for i, j in mapping.items():
        want = [to_b(resolve(r)) for r in a.nodes[i].inputs]
        if want != b.nodes[j].inputs:
            return None
    if to_b(resolve(a.out)) != b.out:
        return None
    return mapping, removed


def aligned(template: Body, b: Body, mapping: dict[int, int], node_slots: Callable[[SNode], list[Any]],
            any_value: Any) -> list[Any]:
    """``b``'s slot vector laid out as the template's: a left-out node's slots are ``any_value``."""
    out: list[Any] = []
    for i, node in enumerate(template.nodes):
        out += node_slots(b.nodes[mapping[i]]) if i in mapping else [any_value] * len(node_slots(node))
    return out


def flag_name(template: Body, removed: frozenset[int]) -> str:
    """The condition's name: the left-out layer's label, ``residual`` for a shortcut."""
    nodes = [template.nodes[i] for i in sorted(removed)]
    if len(nodes) == 1 and nodes[0].kind == "op" and nodes[0].op in _MERGES:
        return "residual"
    labels = [n.label for n in nodes if n.label and n.label.isidentifier()]
    if labels:
        return labels[0]
    return "activation" if len(nodes) == 1 and nodes[0].kind == "op" and not nodes[0].args else "optional"
