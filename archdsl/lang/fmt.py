"""``archc fmt`` as a function: spec text -> the same spec in the canonical layout, comments kept."""
from __future__ import annotations

from .astcompare import ast_equal
from .comments import collect_comments, comments_in
from .parser import parse
from .printer import print_spec
from ..limits import Limits
from ..source import Source

__all__ = ["format_text"]


def format_text(text: str, path: str = "<spec>", limits: Limits | None = None) -> str:
    """``text`` (a whole spec file, named ``path`` in its diagnostics) in the canonical layout.

    Comments stay with the statement, block or network they were written at (a trailing comment, such as
    ``# archc: ignore``, on its statement's line). Raises :class:`~archdsl.errors.ArchError` for a syntax
    error. The result is checked before it is returned: it parses to an AST equal to that of ``text`` and
    holds the same comments (a failure there is a bug in the formatter, raised as ``RuntimeError``).
    """
    src = Source(text, path)
    spec = parse(src, limits)
    out = print_spec(spec, collect_comments(src, spec))
    again = parse(Source(out, path), limits)
    if not ast_equal(spec, again):
        raise RuntimeError(f"formatting {path} would change its meaning (a bug in archc fmt)")
    if sorted(comments_in(out)) != sorted(c.strip() for c in comments_in(text)):
        raise RuntimeError(f"formatting {path} would lose or change a comment (a bug in archc fmt)")
    return out
