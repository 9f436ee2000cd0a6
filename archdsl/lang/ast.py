"""The .arch abstract syntax tree: plain dataclasses, each carrying its source span."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields
from typing import Any, Iterator, Union, cast

from ..source import Span

__all__ = [
    "Expr", "Num", "Str", "Name", "InputRef", "ListExpr", "ListComp", "CompFor", "Call", "Kwarg",
    "Index", "Attr", "BinOp", "UnaryOp", "Compare", "BoolOp", "Ternary", "OptionalExpr",
    "CombinatorCall", "PipeItem", "Pipeline",
    "Stmt", "InputStmt", "OutputStmt", "LetStmt", "LayerStmt", "SpreadStmt", "CombinatorStmt", "SeqStmt", "IfStmt",
    "Param", "BlockDef", "NetworkDef", "Import", "ScaleRow", "ScalesDef", "SpecFile", "Node", "walk",
]


@dataclass
class Node:
    """Base of every AST node: a span plus the fields of its dataclass."""

    span: Span

    def children(self) -> Iterator["Node"]:
        """The direct child nodes, in field order (through lists and tuples, e.g. ``IfStmt.branches``)."""
        out: list[Node] = []
        # a type object is hashable even where its instances are not (dataclasses with eq=True); mypy
        # judges the class's __hash__ instead, so the key is cast
        for name in _field_names(cast(Any, type(self))):
            _collect(getattr(self, name), out)
        return iter(out)


@functools.lru_cache(maxsize=None)
def _field_names(cls: type) -> tuple[str, ...]:
    """The fields that can hold nodes (not the span, not plain strings): looked up once per class."""
    return tuple(f.name for f in fields(cls) if f.name not in ("span", "name_span", "label_span", "op_span",
                                                               "reference_span", "path"))


def _collect(value: Any, out: list[Node]) -> None:
    if isinstance(value, Node):
        out.append(value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            if isinstance(v, (Node, list, tuple)):
                _collect(v, out)


def walk(root: "Node | SpecFile") -> Iterator[tuple[Node, int]]:
    """Every node under ``root`` (pre-order) with its depth (1 for the top nodes), without recursion.

    Iterative on purpose: it is how the parser measures the nesting of a hostile file, whose AST may be
    deeper than Python's recursion limit.
    """
    tops = root.children() if isinstance(root, (Node, SpecFile)) else iter(())
    stack: list[tuple[Iterator[Node], int]] = [(tops, 1)]
    while stack:
        it, depth = stack[-1]
        node = next(it, None)
        if node is None:
            stack.pop()
            continue
        yield node, depth
        stack.append((node.children(), depth + 1))


# ---- expressions -------------------------------------------------------------------------------
@dataclass
class Num(Node):
    value: int | float


@dataclass
class Str(Node):
    value: str


@dataclass
class Name(Node):
    id: str


@dataclass
class InputRef(Node):
    """``in``: the shape of the enclosing block's input."""


@dataclass
class ListExpr(Node):
    items: list["Expr"]


@dataclass
class CompFor(Node):
    var: str
    # the further names of 'for a, b in pairs' (each item unpacked into var, *unpack); empty for one name
    unpack: list[str]
    iter: "Expr"
    cond: "Expr | None"


@dataclass
class ListComp(Node):
    elt: "Expr"
    fors: list[CompFor]


@dataclass
class Kwarg(Node):
    name: str
    value: "Expr"


@dataclass
class Call(Node):
    func: "Expr"
    args: list["Expr"]
    kwargs: list[Kwarg]


@dataclass
class Index(Node):
    obj: "Expr"
    index: "Expr"


@dataclass
class Attr(Node):
    obj: "Expr"
    name: str


@dataclass
class BinOp(Node):
    op: str
    left: "Expr"
    right: "Expr"
    op_span: Span


@dataclass
class UnaryOp(Node):
    op: str
    operand: "Expr"


@dataclass
class Compare(Node):
    first: "Expr"
    rest: list[tuple[str, "Expr"]]


@dataclass
class BoolOp(Node):
    op: str
    values: list["Expr"]


@dataclass
class Ternary(Node):
    value: "Expr"
    cond: "Expr"
    orelse: "Expr"


@dataclass
class OptionalExpr(Node):
    """``value if cond`` without ``else``: the value, or nothing."""

    value: "Expr"
    cond: "Expr"


@dataclass
class CombinatorCall(Node):
    """``add(a, b)`` / ``concat(a, b, dim=...)`` over named tensors."""

    kind: str
    args: list["Expr"]
    kwargs: list[Kwarg]


@dataclass
class PipeItem(Node):
    label: str | None
    label_span: Span | None
    expr: "Expr"


@dataclass
class Pipeline(Node):
    items: list[PipeItem]


Expr = Union[Num, Str, Name, InputRef, ListExpr, ListComp, Call, Index, Attr, BinOp, UnaryOp, Compare,
             BoolOp, Ternary, OptionalExpr, CombinatorCall]


# ---- statements ------------------------------------------------------------------------------------
@dataclass
class InputStmt(Node):
    shape: "Expr"


@dataclass
class OutputStmt(Node):
    names: list[tuple[str, Span]]


@dataclass
class LetStmt(Node):
    names: list[tuple[str, Span]]
    value: Pipeline


@dataclass
class LayerStmt(Node):
    label: str | None
    label_span: Span | None
    value: Pipeline


@dataclass
class CombinatorStmt(Node):
    label: str | None
    label_span: Span | None
    reparam: bool
    kind: str
    args: list["Expr"]
    kwargs: list[Kwarg]
    body: list["Stmt"]


@dataclass
class SeqStmt(Node):
    """``seq:`` (label None: names belong to the enclosing block) or ``name:`` + indented body."""

    label: str | None
    label_span: Span | None
    body: list["Stmt"]


@dataclass
class IfStmt(Node):
    branches: list[tuple["Expr", list["Stmt"]]]
    orelse: list["Stmt"] | None


@dataclass
class SpreadStmt(Node):
    """``[label:] *expr`` inside a combinator: each item of the list ``expr`` is one branch, named
    ``label.<index>`` when labelled (``label.<its named() label>`` for a named item)."""
    label: str | None
    label_span: Span | None
    value: "Expr"


Stmt = Union[InputStmt, OutputStmt, LetStmt, LayerStmt, SpreadStmt, CombinatorStmt, SeqStmt, IfStmt]


# ---- top level -------------------------------------------------------------------------------------
@dataclass
class Param(Node):
    name: str
    default: "Expr | None"


@dataclass
class BlockDef(Node):
    name: str
    params: list[Param]
    body: list[Stmt]
    name_span: Span
    path: str = ""


@dataclass
class NetworkDef(BlockDef):
    reference: str | None = None
    reference_span: Span | None = None


@dataclass
class Import(Node):
    path: str
    names: list[tuple[str, Span]] | None  # None: import everything


@dataclass
class ScaleRow(Node):
    """One named variant of a family: ``b1: width_mult=1.0, depth_mult=1.1, input=[3, 240, 240]``."""

    name: str
    kwargs: list[Kwarg]
    name_span: Span


@dataclass
class ScalesDef(Node):
    """``scales NETWORK:`` and its rows (the variants of that network)."""

    network: str
    rows: list[ScaleRow]
    name_span: Span


@dataclass
class SpecFile:
    """One parsed file: its imports, blocks and networks (by name, in file order)."""

    path: str
    imports: list[Import] = field(default_factory=list)
    blocks: dict[str, BlockDef] = field(default_factory=dict)
    networks: dict[str, NetworkDef] = field(default_factory=dict)
    scales: dict[str, ScalesDef] = field(default_factory=dict)    # by network name

    def children(self) -> Iterator[Node]:
        """Imports, then blocks, then networks, then scales tables."""
        yield from self.imports
        yield from self.blocks.values()
        yield from self.networks.values()
        yield from self.scales.values()
