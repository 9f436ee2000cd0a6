"""AST -> text in the one canonical layout of the language (the printer behind ``archc fmt`` and the importer).

The layout: 4-space indents; one space around binary operators, comparisons and ``->``; ``name=value`` for
keyword arguments and defaults; ``, `` between items; no space before ``(`` or ``[``; the fewest parentheses
that parse back to the same tree (derived from the grammar's precedence levels below); strings in double
quotes unless the value holds one; numbers as Python writes them (``repr``, the exponent without ``+`` or
leading zeros); one blank line between top-level definitions (consecutive imports stay together); inside a
body, a blank line where the source had one or more (from the comment map). A line longer than :data:`WIDTH` columns is wrapped inside one of its brackets (the
indenter ignores line breaks inside ``()`` and ``[]``), its items on one indented line or one per line with
a trailing comma (a long list of plain literals — an imported table — fills its lines instead); a line that carries an ``# archc:`` directive is never wrapped, since the directive
applies to the diagnostics of its own line. A line without brackets stays long.

Comments are not in the AST: they travel in a :class:`~archdsl.lang.comments.CommentMap` beside it.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Union

from . import ast as A
from .comments import CommentMap, NodeComments, top_level
from .parser import KEYWORDS

__all__ = ["print_spec", "print_expr", "string_literal", "label_text", "Group", "WIDTH", "INDENT"]

WIDTH = 110
INDENT = "    "

# precedence levels of the grammar (arch.lark), loosest first; an operand printed where the grammar wants a
# tighter level gets parentheses
_TEST, _OR, _AND, _NOT, _CMP, _ARITH, _TERM, _UNARY, _POWER, _ATOM = range(10)


@dataclass
class Group:
    """A bracketed run of items (call arguments, list items, parameters): where a long line may break."""

    open: str
    items: list["Parts"]
    close: str
    comma: bool = True   # the grammar takes a trailing comma here (arglists, lists, params)


Parts = list[Union[str, Group]]


def _s(text: str) -> Parts:
    return [text]


# ---- expressions ------------------------------------------------------------------------------------
def _prec(e: A.Expr) -> int:
    if isinstance(e, (A.Ternary, A.OptionalExpr)):
        return _TEST
    if isinstance(e, A.BoolOp):
        return _OR if e.op == "or" else _AND
    if isinstance(e, A.UnaryOp):
        return _NOT if e.op == "not" else _UNARY
    if isinstance(e, A.Compare):
        return _CMP
    if isinstance(e, A.BinOp):
        return {"+": _ARITH, "-": _ARITH, "**": _POWER}.get(e.op, _TERM)
    if isinstance(e, A.Num) and e.value < 0:   # only built, never parsed: it reads back as a unary minus
        return _UNARY
    return _ATOM


def _num(v: int | float) -> str:
    if isinstance(v, float):
        if v != v:   # NaN has no literal; the language has no use for it
            raise ValueError("NaN cannot be written as a number literal")
        if v in (float("inf"), float("-inf")):
            return "1e999" if v > 0 else "-1e999"   # what the parser reads as infinity
        text = repr(v)
        if "e" in text:   # Python's 1e-06 / 1e+20 as people write them: 1e-6 / 1e20 (the same value)
            mant, exp = text.split("e")
            sign = "-" if exp.startswith("-") else ""
            text = f"{mant}e{sign}{exp.lstrip('+-').lstrip('0') or '0'}"
        return text
    return str(v)


def string_literal(value: str) -> str:
    """A string value as a literal: double quotes, or single quotes when the value holds a double quote."""
    if "\n" in value or "\r" in value:
        raise ValueError(f"a string literal cannot hold a line break: {value!r}")
    if '"' in value:
        if "'" in value:   # the grammar's strings have no escapes
            raise ValueError(f"a string literal cannot hold both quote characters: {value!r}")
        return f"'{value}'"
    return f'"{value}"'


def label_text(label: str) -> str:
    """A label as written before ``:``: a bare name, or quoted when it is a module path or a keyword that
    would not read as a label everywhere a label stands (``block:`` does, ``input:`` does not)."""
    if label.isidentifier() and (label not in KEYWORDS or _bare_label_reads_back(label)):
        return label
    return string_literal(label)


@functools.lru_cache(maxsize=None)
def _bare_label_reads_back(word: str) -> bool:
    """Whether the keyword ``word`` parses as a bare label in every place a label stands (the lexer is
    contextual: a keyword of the top level is a name inside a body). Asked of the parser, once per word."""
    from ..errors import ArchError
    from ..source import Source
    from .parser import parse
    text = (f"network n:\n    {word}: relu\n    y = {word}: relu\n    z = y -> {word}: relu\n"
            f"    {word}:\n        relu\n    {word}: add:\n        relu\n        {word}: *[relu]\n")
    try:
        spec = parse(Source(text, "<label>"))
    except ArchError:
        return False
    body = spec.networks["n"].body
    labels = [getattr(s, "label", None) for s in body]
    return len(body) == 5 and labels == [word, None, None, word, word]


def _sub(e: A.Expr, need: int) -> Parts:
    inner = _expr(e)
    if _prec(e) < need:
        return [Group("(", [inner], ")", comma=False)]
    return inner


def _args(args: list[A.Expr], kwargs: list[A.Kwarg]) -> list[Parts]:
    return [_expr(a) for a in args] + [_s(k.name + "=") + _expr(k.value) for k in kwargs]


def _join(parts: list[Parts], sep: str) -> Parts:
    out: Parts = []
    for i, p in enumerate(parts):
        if i:
            out.append(sep)
        out.extend(p)
    return out


def _expr(e: A.Expr) -> Parts:
    if isinstance(e, A.Num):
        return [_num(e.value)]
    if isinstance(e, A.Str):
        return [string_literal(e.value)]
    if isinstance(e, A.Name):
        return [e.id]
    if isinstance(e, A.InputRef):
        return ["in"]
    if isinstance(e, A.ListExpr):
        return [Group("[", [_expr(i) for i in e.items], "]")]
    if isinstance(e, A.ListComp):
        body: Parts = list(_expr(e.elt))
        for f in e.fors:
            body += [" for " + ", ".join([f.var, *f.unpack]) + " in "] + _sub(f.iter, _OR)
            if f.cond is not None:
                body += [" if "] + _sub(f.cond, _OR)
        return [Group("[", [body], "]", comma=False)]
    if isinstance(e, A.Call):
        return _sub(e.func, _ATOM) + [Group("(", _args(e.args, e.kwargs), ")")]
    if isinstance(e, A.CombinatorCall):
        return [e.kind, Group("(", _args(e.args, e.kwargs), ")")]
    if isinstance(e, A.Index):
        return _sub(e.obj, _ATOM) + [Group("[", [_expr(e.index)], "]", comma=False)]
    if isinstance(e, A.Attr):
        # `1.x` would lex as the number `1.` and a name: a number before `.` always gets parentheses
        obj = [Group("(", [_expr(e.obj)], ")", comma=False)] if isinstance(e.obj, A.Num) else _sub(e.obj, _ATOM)
        return obj + ["." + e.name]
    if isinstance(e, A.BinOp):
        lvl = _prec(e)
        if e.op == "**":   # right-associative: postfix ** factor
            return _sub(e.left, _ATOM) + [" ** "] + _sub(e.right, _UNARY)
        return _sub(e.left, lvl) + [f" {e.op} "] + _sub(e.right, lvl + 1)
    if isinstance(e, A.UnaryOp):
        if e.op == "not":
            return ["not "] + _sub(e.operand, _NOT)
        return [e.op] + _sub(e.operand, _UNARY)
    if isinstance(e, A.Compare):
        out = _sub(e.first, _ARITH)
        for op, right in e.rest:
            out += [f" {op} "] + _sub(right, _ARITH)
        return out
    if isinstance(e, A.BoolOp):
        need = _AND if e.op == "or" else _NOT
        return _join([_sub(v, need) for v in e.values], f" {e.op} ")
    if isinstance(e, A.Ternary):
        return _sub(e.value, _OR) + [" if "] + _sub(e.cond, _OR) + [" else "] + _sub(e.orelse, _TEST)
    if isinstance(e, A.OptionalExpr):
        return _sub(e.value, _OR) + [" if "] + _sub(e.cond, _OR)
    raise TypeError(f"not an expression node: {type(e).__name__}")


def _flat(parts: Parts) -> str:
    out: list[str] = []
    for p in parts:
        if isinstance(p, Group):
            out.append(p.open + ", ".join(_flat(i) for i in p.items) + p.close)
        else:
            out.append(p)
    return "".join(out)


def print_expr(e: A.Expr) -> str:
    """One expression on one line, in the canonical layout."""
    return _flat(_expr(e))


# ---- line breaking -----------------------------------------------------------------------------------
def _layout(parts: Parts, indent: str, width: int) -> list[str]:
    """``parts`` as lines starting with ``indent``: one line if it fits, else broken inside the bracket group
    chosen below (its items on one indented line, else one per line)."""
    flat = _flat(parts)
    if len(indent) + len(flat) <= width:
        return [indent + flat]
    # the group to break: the one with the most text inside, among those whose first line (up to the
    # bracket) and last line (from the closing bracket) fit; else among those whose first line fits; else
    # the one that leaves the shortest first and last lines
    best: tuple[int, int, int] | None = None
    for i, p in enumerate(parts):
        if isinstance(p, Group) and p.items:
            head = len(indent) + len(_flat(parts[:i])) + len(p.open)
            tail = len(indent) + len(p.close) + len(_flat(parts[i + 1:]))
            size = len(_flat([p])) - len(p.open) - len(p.close)
            fits = 2 if head <= width and tail <= width else 1 if head <= width else 0
            score = (fits, size if fits else -max(head, tail), -i)
            if best is None or score > best[:2] + (-best[2],):
                best = (score[0], score[1], i)
    if best is None:
        return [indent + flat]
    i = best[2]
    g = parts[i]
    assert isinstance(g, Group)
    inner = indent + INDENT
    lines = [indent + _flat(parts[:i]) + g.open]
    joined = ", ".join(_flat(it) for it in g.items)
    if len(inner) + len(joined) <= width:
        lines.append(inner + joined)
    elif len(g.items) > _FILL_MIN and all(_LITERAL.fullmatch(_flat(it)) for it in g.items):
        lines.extend(_fill([_flat(it) for it in g.items], inner, width, g.comma))
    else:
        for k, item in enumerate(g.items):
            sub = _layout(item, inner, width - 1)
            if g.comma or k < len(g.items) - 1:
                sub[-1] += ","
            lines.extend(sub)
    lines.extend(_layout([g.close, *parts[i + 1:]], indent, width))
    return lines


# a long list of plain literals (an imported table of buffer values) fills its lines: one value per line
# would make a 4,096-value table a 4,096-line file
_FILL_MIN = 8
_LITERAL = re.compile(r"-?(?:[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?|inf|nan)|true|false|none")


def _fill(items: list[str], indent: str, width: int, comma: bool) -> list[str]:
    """``items`` (each followed by a comma, the last one only where the grammar takes a trailing comma)
    as lines of ``indent`` filled up to ``width``."""
    lines: list[str] = []
    cur = ""
    for k, it in enumerate(items):
        text = it + ("," if comma or k < len(items) - 1 else "")
        if cur and len(indent) + len(cur) + 1 + len(text) > width:
            lines.append(indent + cur)
            cur = ""
        cur = f"{cur} {text}" if cur else text
    if cur:
        lines.append(indent + cur)
    return lines


# ---- statements and definitions ----------------------------------------------------------------------
class _Printer:
    def __init__(self, comments: CommentMap | None) -> None:
        self.comments = comments if comments is not None else CommentMap()
        self.lines: list[str] = []

    def _c(self, key: object) -> NodeComments:
        return self.comments.get(id(key)) or NodeComments()

    def leading(self, node: object, indent: str, *, first: bool) -> None:
        """The comment lines above ``node``; a blank line where ``leading`` has one (never first in a body)."""
        for k, text in enumerate(self._c(node).leading):
            if text.strip() == "":
                if not (first and k == 0) and self.lines and self.lines[-1] != "":
                    self.lines.append("")
            else:
                self.lines.extend(indent + c for c in _comment_lines(text))

    def line(self, node: object, parts: Parts, indent: str) -> None:
        """One logical line for ``node``, wrapped if long, with its trailing comment."""
        trailing = self._c(node).trailing
        width = 10 ** 9 if trailing is not None and "archc:" in trailing else WIDTH
        lines = _layout(parts, indent, width)
        if trailing is not None:
            lines[0] += "  " + " ".join(_comment_lines(trailing))
        self.lines.extend(lines)

    def body(self, stmts: list[A.Stmt], indent: str) -> None:
        for k, s in enumerate(stmts):
            self.stmt(s, indent, first=k == 0)
        self.footer(stmts, indent)

    def footer(self, key: object, indent: str) -> None:
        """The comments after the last item of a body (or of the file): blank lines only between them."""
        texts = self._c(key).leading
        for k, text in enumerate(texts):
            if text.strip():
                self.lines.extend(indent + c for c in _comment_lines(text))
            elif k < len(texts) - 1 and self.lines and self.lines[-1] != "":
                self.lines.append("")

    def stmt(self, s: A.Stmt, indent: str, *, first: bool) -> None:
        self.leading(s, indent, first=first)
        deeper = indent + INDENT
        if isinstance(s, A.InputStmt):
            self.line(s, _s("input ") + _expr(s.shape), indent)
        elif isinstance(s, A.OutputStmt):
            self.line(s, ["output " + ", ".join(n for n, _ in s.names)], indent)
        elif isinstance(s, A.LetStmt):
            self.line(s, _s(", ".join(n for n, _ in s.names) + " = ") + _pipeline(s.value), indent)
        elif isinstance(s, A.LayerStmt):
            # the parser copies the first item's label to the statement; a built statement may set only it
            self.line(s, _pipeline(s.value, s.label), indent)
        elif isinstance(s, A.SpreadStmt):
            star = (label_text(s.label) + ": " if s.label is not None else "") + "*"
            self.line(s, _s(star) + _expr(s.value), indent)
        elif isinstance(s, A.CombinatorStmt):
            head = _s((label_text(s.label) + ": " if s.label is not None else "")
                      + ("reparam " if s.reparam else "") + s.kind)
            if s.args or s.kwargs:
                head.append(Group("(", _args(s.args, s.kwargs), ")"))
            self.line(s, head + _s(":"), indent)
            self.body(s.body, deeper)
        elif isinstance(s, A.SeqStmt):
            self.line(s, [(label_text(s.label) if s.label is not None else "seq") + ":"], indent)
            self.body(s.body, deeper)
        elif isinstance(s, A.IfStmt):
            for k, (cond, stmts) in enumerate(s.branches):
                self.line(s if k == 0 else stmts, ["if " if k == 0 else "elif "] + _expr(cond) + [":"], indent)
                self.body(stmts, deeper)
            if s.orelse is not None:
                self.line(s.orelse, ["else:"], indent)
                self.body(s.orelse, deeper)
        else:
            raise TypeError(f"not a statement node: {type(s).__name__}")

    def definition(self, d: A.Import | A.BlockDef | A.ScalesDef) -> None:
        if isinstance(d, A.Import):
            if d.names is None:
                self.line(d, ["import " + string_literal(d.path)], "")
            else:
                self.line(d, [f"from {string_literal(d.path)} import " + ", ".join(n for n, _ in d.names)], "")
        elif isinstance(d, A.BlockDef):
            header = _s(("network " if isinstance(d, A.NetworkDef) else "block ") + d.name)
            if d.params:
                header.append(Group("(", [_s(p.name) + (_s("=") + _expr(p.default) if p.default is not None else [])
                                          for p in d.params], ")"))
            if isinstance(d, A.NetworkDef) and d.reference is not None:
                header.append(" reference " + d.reference)
            self.line(d, header + _s(":"), "")
            self.body(d.body, INDENT)
        else:
            self.line(d, [f"scales {d.network}:"], "")
            for k, row in enumerate(d.rows):
                self.leading(row, INDENT, first=k == 0)
                self.line(row, _s(row.name + ": ") + _join(_args([], row.kwargs), ", "), INDENT)
            self.footer(d.rows, INDENT)


def _comment_lines(text: str) -> list[str]:
    """A comment as lines that each start with ``#`` (a program may hand over text without the ``#`` or
    with line breaks)."""
    return [c if c.startswith("#") else "# " + c for c in (t.strip() for t in text.splitlines()) if c]


def _pipeline(p: A.Pipeline, first_label: str | None = None) -> Parts:
    items: list[Parts] = []
    for k, it in enumerate(p.items):
        label = it.label if it.label is not None or k else first_label
        items.append((_s(label_text(label) + ": ") if label is not None else []) + _expr(it.expr))
    return _join(items, " -> ")


def print_spec(spec: A.SpecFile, comments: CommentMap | None = None) -> str:
    """The whole file ``spec`` as text in the canonical layout, ending with one line break.

    ``comments`` (optional) places comment lines: see :class:`~archdsl.lang.comments.CommentMap`. The text
    parses back to an AST equal to ``spec`` (:func:`~archdsl.lang.astcompare.ast_equal`), whatever the spans
    of ``spec`` (an AST built by a program may give every node the same span).
    """
    pr = _Printer(comments)
    prev: object = None
    for d in top_level(spec):
        if prev is not None:
            imports = isinstance(prev, A.Import) and isinstance(d, A.Import)
            lead = pr._c(d).leading
            if not imports or (lead and not lead[0].strip()):
                pr.lines.append("")
        pr.leading(d, "", first=True)
        pr.definition(d)
        prev = d
    footer = pr._c(spec).leading
    if footer:
        if pr.lines and (prev is not None and not isinstance(prev, A.Import) or not footer[0].strip()):
            pr.lines.append("")
        pr.footer(spec, "")
    while pr.lines and pr.lines[-1] == "":
        pr.lines.pop()
    return "\n".join(pr.lines) + "\n" if pr.lines else ""
