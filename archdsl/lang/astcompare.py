"""Comparing ASTs as the language sees them: every field but the source positions.

Two parses of differently laid out text give ASTs that differ only in their spans (and in the file path
each definition records); :func:`ast_equal` compares what is left. The formatter's guarantee (``archc fmt``
never changes the meaning of a spec) is stated with it, and so is the importer's round trip.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any

from . import ast as A
from ..source import Span

__all__ = ["ast_dump", "ast_equal"]

# fields that locate a node in its file rather than describe it
_POSITION_FIELDS = frozenset({"span", "name_span", "label_span", "op_span", "reference_span", "path"})


def ast_dump(node: Any) -> Any:
    """A plain, comparable value (nested tuples) for an AST node, a :class:`SpecFile` or a list of them, with
    the spans and paths left out. Numbers keep their type (``1`` and ``1.0`` differ); a ``SpecFile``'s
    definitions keep their order."""
    if isinstance(node, A.SpecFile):
        return ("SpecFile",
                tuple(ast_dump(i) for i in node.imports),
                tuple((k, ast_dump(v)) for k, v in node.blocks.items()),
                tuple((k, ast_dump(v)) for k, v in node.networks.items()),
                tuple((k, ast_dump(v)) for k, v in node.scales.items()))
    if isinstance(node, A.Node):
        return (type(node).__name__,) + tuple(
            (f.name, ast_dump(getattr(node, f.name))) for f in fields(node) if f.name not in _POSITION_FIELDS)
    if isinstance(node, (list, tuple)):
        # (name, Span) pairs (OutputStmt.names, Import.names) keep the name only
        return tuple(ast_dump(v) for v in node if not isinstance(v, Span))
    if isinstance(node, Span):
        return None
    if isinstance(node, (bool, int, float)):
        return (type(node).__name__, node)
    return node


def ast_equal(a: Any, b: Any) -> bool:
    """Whether two ASTs (nodes, lists of nodes or whole :class:`SpecFile` s) are equal, ignoring where in
    their files they come from (spans and paths)."""
    return bool(ast_dump(a) == ast_dump(b))
