"""Comments beside the AST: where each comment of a file goes when the file is printed again.

The grammar drops comments (they are part of the line breaks), so the AST has none. :class:`CommentMap`
keeps them by node: the full-line comments above a definition, statement or scale row (``leading``), the
comment at the end of its first line (``trailing``: ``# archc: ignore`` directives live there and must stay
on their statement's line), and the comments after the last statement of a body (``leading`` of the body
list itself). :func:`collect_comments` reads them from a source and its AST; :func:`~archdsl.lang.printer.
print_spec` writes them back. A program that builds an AST (the importer) fills a map by hand::

    comments = CommentMap()
    comments.of(block).leading.append("# from torchvision.models.resnet.Bottleneck")
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from . import ast as A
from ..source import Source

__all__ = ["NodeComments", "CommentMap", "collect_comments", "comment_of_line", "comments_in", "top_level"]


@dataclass
class NodeComments:
    """The comments of one node.

    ``leading``: comment lines above the node, each starting with ``#``; an empty string is a blank line
    (at most one is printed in a row; one first in the list is a blank line before the comments, kept
    inside a body, where the layout of top-level definitions does not already separate them).
    ``trailing``: one comment (``# ...``) at the end of the node's first line.
    Text given without a leading ``#`` gets ``# ``; a text with line breaks becomes several comment lines (one
    line, for ``trailing``).
    """

    leading: list[str] = field(default_factory=list)
    trailing: str | None = None


class CommentMap(dict[int, NodeComments]):
    """Comments by ``id()`` of the AST object they belong to; the AST must stay alive while the map is used.

    Keys: a :class:`~archdsl.lang.ast.BlockDef`/``NetworkDef``/``ScalesDef``/``Import``/``ScaleRow`` or
    any statement node (its leading and trailing comments); a body list (``BlockDef.body``, a compound
    statement's ``body``, an ``IfStmt`` branch's statement list or its ``orelse``, ``ScalesDef.rows``): its
    ``leading`` are printed after the body's last item, and for an ``elif``/``else`` branch its ``trailing``
    ends the ``elif ...:``/``else:`` line; the :class:`~archdsl.lang.ast.SpecFile`: its ``leading`` end the
    file.
    """

    def of(self, obj: object) -> NodeComments:
        """The comments of ``obj``, created empty on first use."""
        c = self.get(id(obj))
        if c is None:
            c = self[id(obj)] = NodeComments()
        return c

    def count(self) -> int:
        """How many comments the map holds (blank-line markers not counted)."""
        return sum(sum(1 for t in c.leading if t.strip()) + (c.trailing is not None) for c in self.values())


def comment_of_line(line: str) -> int | None:
    """The column (0-based) where the comment of a source line starts, or None: the first ``#`` outside a
    string literal (literals never span lines and have no escapes, as in the grammar)."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return i
    return None


def comments_in(text: str) -> list[str]:
    """Every comment of a source text, in order, without trailing spaces (to compare two texts)."""
    out = []
    for line in Source(text).lines:
        at = comment_of_line(line)
        if at is not None:
            out.append(line[at:].rstrip())
    return out


@dataclass
class _Anchor:
    line: int
    col: int
    own_end: int                     # last line of the anchor's own text (a compound's header only)
    lead: object                     # where the comments above it go
    trail: object                    # where a comment at the end of its lines goes
    chain: tuple[tuple[object, int], ...]   # the bodies it is in, innermost first: (body list, its column)


class _Collector:
    def __init__(self, src: Source, spec: A.SpecFile) -> None:
        self.src = src
        self.spec = spec
        self.code: list[bool] = [False]   # 1-based: whether line n has code (not blank, not only a comment)
        self.comment: list[tuple[int, str] | None] = [None]
        for line in src.lines:
            at = comment_of_line(line)
            code = line[:at] if at is not None else line
            self.code.append(bool(code.strip()))
            self.comment.append((at, line[at:].rstrip()) if at is not None else None)
        self.anchors: list[_Anchor] = []

    # -- anchors
    def _header_end(self, line: int, body_line: int) -> int:
        """The last line with code from ``line`` up to before ``body_line`` (a span may take in the comment
        lines after it, when its rule ends with the line break that holds them)."""
        end = line
        for n in range(line, min(body_line, len(self.code))):
            if self.code[n]:
                end = n
        return end

    def _end(self, node: A.Node) -> int:
        return self._header_end(node.span.line, max(node.span.end_line or node.span.line, node.span.line) + 1)

    def _last_code_before(self, line: int) -> int:
        n = line - 1
        while n > 0 and not self.code[n]:
            n -= 1
        return max(n, 1)

    def _add(self, node: object, line: int, col: int, own_end: int, chain: tuple[tuple[object, int], ...],
             lead: object = None, trail: object = None) -> None:
        self.anchors.append(_Anchor(line, col, own_end, lead if lead is not None else node,
                                    trail if trail is not None else node, chain))

    def _body(self, stmts: list[A.Stmt], chain: tuple[tuple[object, int], ...]) -> None:
        if not stmts:
            return
        inner = ((stmts, stmts[0].span.col),) + chain
        for s in stmts:
            self._stmt(s, inner)

    def _stmt(self, s: A.Stmt, chain: tuple[tuple[object, int], ...]) -> None:
        if isinstance(s, (A.CombinatorStmt, A.SeqStmt)):
            self._add(s, s.span.line, s.span.col, self._header_end(s.span.line, s.body[0].span.line), chain)
            self._body(s.body, chain)
        elif isinstance(s, A.IfStmt):
            prev: list[A.Stmt] | None = None
            for k, (cond, stmts) in enumerate(s.branches):
                line = s.span.line if k == 0 else cond.span.line
                end = self._header_end(line, stmts[0].span.line)
                if k == 0:
                    self._add(s, line, s.span.col, end, chain)
                else:   # comments above `elif` stay at the end of the branch before (printed there)
                    self._add(stmts, line, s.span.col, end, chain, lead=prev)
                self._body(stmts, chain)
                prev = stmts
            if s.orelse:
                line = self._last_code_before(s.orelse[0].span.line)
                self._add(s.orelse, line, s.span.col, line, chain, lead=prev)
                self._body(s.orelse, chain)
        else:
            self._add(s, s.span.line, s.span.col, self._end(s), chain)

    def build(self) -> None:
        for d in top_level(self.spec):
            if isinstance(d, A.BlockDef):
                self._add(d, d.span.line, d.span.col, self._header_end(d.span.line, d.body[0].span.line), ())
                self._body(d.body, ())
            elif isinstance(d, A.ScalesDef):
                self._add(d, d.span.line, d.span.col, self._header_end(d.span.line, d.rows[0].span.line), ())
                chain = ((d.rows, d.rows[0].span.col),)
                for r in d.rows:
                    self._add(r, r.span.line, r.span.col, self._end(r), chain)
            else:
                self._add(d, d.span.line, d.span.col, self._end(d), ())
        self.anchors.sort(key=lambda a: (a.line, a.col))
        # a span may run on to the line of the next token: an anchor's own text ends before the next anchor
        for a, b in zip(self.anchors, self.anchors[1:]):
            if a.own_end >= b.line:
                a.own_end = self._header_end(a.line, b.line)
        self.starts = [a.line for a in self.anchors]

    # -- placing
    def _owner(self, line: int) -> _Anchor | None:
        """The anchor whose own text covers ``line``."""
        k = bisect.bisect_right(self.starts, line) - 1
        if k >= 0 and self.anchors[k].own_end >= line:
            return self.anchors[k]
        return None

    def _free_target(self, line: int, col: int) -> object:
        """Where a comment alone on its line goes: above the statement it is inside or the next one at its
        indentation or deeper; else at the end of the body it is indented into; else the end of the file."""
        owner = self._owner(line)
        if owner is not None:
            return owner.lead
        k = bisect.bisect_right(self.starts, line)
        nxt = self.anchors[k] if k < len(self.anchors) else None
        if nxt is not None and col <= nxt.col:
            return nxt.lead
        prev = self.anchors[k - 1] if k > 0 else None
        if prev is not None:
            open_in_next = {id(b) for b, _ in nxt.chain} if nxt is not None else set()
            for body, body_col in prev.chain:   # innermost first; only the bodies that end before `nxt`
                if id(body) in open_in_next:
                    break
                if body_col <= col:
                    return body
        return nxt.lead if nxt is not None else self.spec

    def collect(self) -> CommentMap:
        self.build()
        cmap = CommentMap()
        pending_blank = False
        n_lines = len(self.code) - 1
        for n in range(1, n_lines + 1):
            com = self.comment[n]
            if not self.code[n]:
                if com is None:   # a blank line: it belongs with what follows it
                    pending_blank = True
                    continue
            else:
                k = bisect.bisect_left(self.starts, n)
                if pending_blank and k < len(self.anchors) and self.anchors[k].line == n:
                    _blank(cmap.of(self.anchors[k].lead).leading)
                pending_blank = False
                if com is None:
                    continue
            col, text = com
            owner = self._owner(n) if self.code[n] else None
            if owner is not None:
                c = cmap.of(owner.trail)
                if c.trailing is None:
                    c.trailing = text
                    continue
                if "archc:" in text and "archc:" not in c.trailing:   # the directive keeps the line
                    c.trailing, text = text, c.trailing
                target = owner.lead
            else:
                line = self.src.line(n)
                # columns count from 1, as in spans
                target = self._free_target(n, 1 + (col if not self.code[n] else len(line) - len(line.lstrip())))
            lead = cmap.of(target).leading
            if pending_blank:
                _blank(lead)
            lead.append(text)
            pending_blank = False
        return cmap


def _blank(lead: list[str]) -> None:
    if not lead or lead[-1] != "":
        lead.append("")


def top_level(spec: A.SpecFile) -> list[A.Import | A.BlockDef | A.ScalesDef]:
    """The definitions of ``spec`` in file order (by their spans; imports, blocks, networks, scales tables
    where the spans do not tell, as for a built AST)."""
    items: list[A.Import | A.BlockDef | A.ScalesDef] = [*spec.imports, *spec.blocks.values(),
                                                        *spec.networks.values(), *spec.scales.values()]
    return sorted(items, key=lambda d: (d.span.line, d.span.col))


def collect_comments(src: Source, spec: A.SpecFile) -> CommentMap:
    """The comments of ``src`` (and its blank lines inside bodies) placed on the nodes of ``spec``, its AST."""
    return _Collector(src, spec).collect()
