"""The converter's values: spec-level nodes of a body (:class:`SNode`), references to their outputs
(:class:`Ref`), and what a traced value is when it is no tensor (a constant, a parameter).

Kept apart from :mod:`.convert` so that the parts of the conversion living in their own modules
(:mod:`.bound`) share them without importing the converter. Nothing here imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .trace import Val

__all__ = ["Ref", "SNode", "Body", "Const", "Param", "has_tensor", "plain", "hoist_params"]


@dataclass(frozen=True)
class Ref:
    """A tensor of a body: output ``k`` of node ``node`` (-1: the body's input ``x``)."""

    node: int
    k: int = 0


@dataclass
class SNode:
    """One statement-level node: ``kind`` "op" (a registry op or a multi-output chunk/split), "use" (a child
    block), "group" (an nn.Sequential: a labelled group), "plugin" (a kept class) or "param" (a free
    parameter)."""

    kind: str
    op: str
    args: dict[str, Any]
    label: str | None
    inputs: list[Ref]
    n_out: int = 1
    child: "Body | None" = None
    module: Any = None
    bound: Any = None           # a plugin op's Binding (.bound) when the model calls it with more than a tensor


@dataclass
class Body:
    """The converted body of one module: its nodes in order, its output, and where it came from."""

    path: str
    cls: str
    module: Any
    in_shape: tuple[int, ...]
    nodes: list[SNode] = field(default_factory=list)
    out: Ref = Ref(-1)
    container: bool = False


@dataclass(frozen=True)
class Const:
    """A traced value known at trace time (a size, a shape, None)."""

    value: Any


@dataclass(frozen=True)
class Param:
    """A parameter read in forward, not yet placed (it becomes a ``parameter`` node where it is used)."""

    name: str
    shape: tuple[int, ...]
    # the traced tensor, read for its dtype only (a cast of a float32 parameter is the identity)
    value: Any = field(default=None, compare=False, repr=False)


def has_tensor(v: Val) -> bool:
    """Whether a traced value is or holds a tensor."""
    return v.kind == "tensor" or any(has_tensor(i) for i in v.items)


def plain(v: Val) -> Any:
    """A traced non-tensor value as Python (a sequence as a tuple)."""
    if v.kind == "seq":
        return tuple(plain(i) for i in v.items)
    return v.value


def hoist_params(body: Body) -> None:
    """Free parameters first (they read no tensor), so branches that use one stay contiguous."""
    order = [i for i, n in enumerate(body.nodes) if n.kind == "param"]
    order += [i for i, n in enumerate(body.nodes) if n.kind != "param"]
    if order == list(range(len(order))):
        return
    new = {old: k for k, old in enumerate(order)}

    def remap(r: Ref) -> Ref:
        return r if r.node < 0 else Ref(new[r.node], r.k)
    body.nodes = [body.nodes[i] for i in order]
    for n in body.nodes:
        n.inputs = [remap(r) for r in n.inputs]
    body.out = remap(body.out)
