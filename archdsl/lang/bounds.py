"""Bounds on one source file, checked before it is parsed: size, lines, line length, nesting.

Parsing is the one stage whose cost grows with the file itself (Lark's LALR parser, with positions,
spends ~0.3 ms a line of a typical spec), and whose recursion depth grows with its nesting; the
evaluator then walks the AST recursively. These checks run first, in linear time and C-speed regular
expressions, so a hostile file (20,000 lines, a 1 MB line, 200 nested indented blocks) ends in well
under a second with one located error instead of a long parse, a ``RecursionError`` or a huge echo;
the depth of the AST is checked right after parsing, before anything walks it recursively.
The bounds are fields of :class:`archdsl.limits.Limits` (``--limit max_source_lines=20000``).
"""
from __future__ import annotations

import re

from ..errors import ArchError, Diagnostic
from ..limits import Limits
from ..source import Source, Span
from . import ast as A

__all__ = ["check_source", "count_tokens", "check_ast_depth", "ast_depth_limit"]

# roughly the grammar's tokens (comments and line breaks are counted too: they cost the parser as well)
_TOKEN = re.compile(r"""#[^\n]*|"[^"\n]*"|'[^'\n]*'|[A-Za-z_][A-Za-z0-9_]*|\d+\.?\d*(?:[eE][-+]?\d+)?"""
                    r"""|\.\d+(?:[eE][-+]?\d+)?|\*\*|//|->|[=!<>]=|\n|[^\s]""")
# strings and comments are skipped (a bracket inside them does not nest); a newline with the
# indentation that follows it marks where a line starts
_SCAN = re.compile(r"\"[^\"\n]*\"|'[^'\n]*'|#[^\n]*|[\[\]()]|\n[ \t]*")


def _hint(name: str) -> str:
    return f"the limit is Limits.{name} (raise it with --limit {name}=N)"  # the evaluator's wording too


def _line_of(text: str, pos: int) -> tuple[int, int]:
    """1-based (line, col) of character offset ``pos``."""
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def check_source(source: Source, limits: Limits) -> None:
    """Raise a located :class:`ArchError` when ``source`` exceeds a size or nesting bound of ``limits``."""
    text = source.text
    if len(text) > limits.max_source_bytes:
        line, col = _line_of(text, limits.max_source_bytes)
        raise ArchError(Diagnostic(f"the file is longer than {limits.max_source_bytes:,} characters",
                                   Span(source, line, col), hint=_hint("max_source_bytes")))
    n_lines = len(source.lines)
    if n_lines > limits.max_source_lines:
        raise ArchError(Diagnostic(f"the file has {n_lines:,} lines, more than {limits.max_source_lines:,}",
                                   Span(source, limits.max_source_lines + 1, 1),
                                   hint=_hint("max_source_lines")))
    first = next((i for i, ln in enumerate(source.lines) if len(ln) > limits.max_line_length), None)
    if first is not None:
        raise ArchError(Diagnostic(
            f"line {first + 1} has {len(source.lines[first]):,} characters, more than {limits.max_line_length:,}",
            Span(source, first + 1, limits.max_line_length + 1),
            hint="break it inside brackets (a line break there continues the line); " + _hint("max_line_length")))
    _check_nesting(source, limits.max_nesting)
    count_tokens(source, limits.max_source_tokens, limits.max_source_tokens)


def count_tokens(source: Source, budget: int, limit: int) -> int:
    """The number of tokens in ``source``; a located :class:`ArchError` at the first one past ``budget``.

    ``budget`` is what is left of ``limit`` (``Limits.max_source_tokens``) after the files parsed before.

    The parser's time is proportional to the tokens (about 30-50 us each with positions), so this,
    not the byte size, is what bounds it: 30,000 tokens parse in about 1.5 s on a slow core, and the
    largest file in specs/ has 1,911.
    """
    n = 0
    for m in _TOKEN.finditer(source.text):
        n += 1
        if n > budget:
            line, col = _line_of(source.text, m.start())
            raise ArchError(Diagnostic(f"more than {limit:,} tokens to parse", Span(source, line, col),
                                       hint="a spec and the files it imports share this budget; "
                                            + _hint("max_source_tokens")))
    return n


def _check_nesting(source: Source, limit: int) -> None:
    """Indentation levels (outside brackets). Brackets themselves are free: ``((((8))))`` adds no depth
    to the AST, and what does nest (``[[[...]]]``, ``f(f(...))``) is bounded by :func:`check_ast_depth`."""
    text = source.text
    depth = 0
    indents = [0]
    for m in _SCAN.finditer(text):
        tok = m.group()
        ch = tok[0]
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        elif ch == "\n" and depth == 0:
            nxt = m.end()
            if nxt >= len(text) or text[nxt] in "\n\r#":
                continue  # blank or comment line: no indentation level
            width = len(tok) - 1
            if width > indents[-1]:
                indents.append(width)
                if len(indents) - 1 > limit:
                    line, _ = _line_of(text, nxt)
                    raise ArchError(Diagnostic(f"indented blocks nest more than {limit} deep",
                                               Span(source, line, width + 1),
                                               hint="move the inner statements into a block; "
                                                    + _hint("max_nesting")))
            else:
                while len(indents) > 1 and width < indents[-1]:
                    indents.pop()


def ast_depth_limit(limits: Limits) -> int:
    """How deep the AST of one file may be: statements and expressions count, so twice ``max_nesting``.

    The evaluator and the passes walk expressions recursively (a few Python frames per level);
    this keeps them far from Python's recursion limit, whatever nests: ``- - - x``, ``a ** b ** c``,
    ``x if c else y if d else ...``.
    """
    return 2 * limits.max_nesting


def check_ast_depth(spec: A.SpecFile, source: Source, limits: Limits) -> None:
    """Raise a located :class:`ArchError` when the AST of ``spec`` is deeper than :func:`ast_depth_limit`."""
    limit = ast_depth_limit(limits)
    for node, depth in A.walk(spec):
        if depth > limit:
            raise ArchError(Diagnostic("the expression nests too deeply", node.span,
                                       hint=f"split it with named values: 'a = ...' then use 'a' (more than {limit} "
                                            "levels); " + _hint("max_nesting")))
