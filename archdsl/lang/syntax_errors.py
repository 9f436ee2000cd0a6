"""Syntax diagnostics and recovery: a Lark parse error becomes a located message, and parsing goes on.

Split from the parser (issue 12) because it is the larger half: turning Lark's ``UnexpectedInput`` into
words a user reads ("'(' is never closed", "unexpected indent", "'in' is a keyword ..."), and
recovering statement by statement so one run reports every independent syntax error.
"""
from __future__ import annotations

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.indenter import DedentError

from ..errors import ArchError, Diagnostic
from ..source import Source, Span

__all__ = ["parse_tree", "too_deep", "MAX_SYNTAX_ERRORS"]

MAX_SYNTAX_ERRORS = 20  # reported per file; recovery stops after this many

# Friendly words for grammar terminals in "expected ..." messages.
_TERMINAL_WORDS = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "_NL": "end of line",
    "_INDENT": "an indented block", "_DEDENT": "end of the indented block", "COMP_OP": "a comparison",
    "ADD_OP": "'+' or '-'", "MUL_OP": "'*', '/', '//' or '%'", "COMBINATOR": "add/concat/mul/stack",
    "INPUT": "'in'", "REPARAM": "'reparam'", "$END": "end of file",
}


def parse_tree(source: Source, lark: Lark, keywords: frozenset[str]) -> Tree:
    """Parse ``source`` with ``lark``. Raises :class:`ArchError` with every syntax error found.

    Recovery works by statements, not tokens: after a syntax error the offending statement is
    replaced by a neutral one of the same indentation (``identity``, or ``seq:`` when it heads an
    indented body) and the file is parsed again. Line numbers never change, so every later error is
    reported where it really is, and no error is a cascade of an earlier one.
    """
    diags: list[Diagnostic] = []
    text = source.text if source.text.endswith("\n") else source.text + "\n"
    lines = text.split("\n")
    tree = None
    for _ in range(MAX_SYNTAX_ERRORS):
        cur = Source("\n".join(lines), source.path)
        try:
            tree = lark.parse(cur.text)
            break
        except UnexpectedInput as e:
            d = _syntax_diag(cur, e, lark, keywords)
            sp = d.span
            if sp is not None:  # point into the original text (same lines), for the snippet
                d.span = Span(source, sp.line, sp.col, sp.end_line, sp.end_col)
            if d.span is None or all(d.span.line != x.span.line for x in diags if x.span is not None):
                diags.append(d)
            if not _neutralize(lines, d, e):
                break
        except RecursionError:
            diags.append(too_deep(source))
            break
        except DedentError:
            if not diags:
                line = _dedent_line(cur.text)
                diags.append(Diagnostic("unindent does not match any outer indentation level",
                                        Span(source, line, 1),
                                        hint="indent with the same spaces as an enclosing block"))
            break
    if diags or tree is None:
        raise ArchError(diags or [Diagnostic("too many syntax errors", Span(source, 1, 1))])
    return tree


def _describe_expected(lark: Lark, expected: set[str]) -> str:
    words = []
    for name in sorted(expected):
        if name in _TERMINAL_WORDS:
            words.append(_TERMINAL_WORDS[name])
            continue
        try:
            pat = lark.get_terminal(name).pattern
            words.append(f"'{pat.value}'" if pat.type == "str" else name)
        except KeyError:
            words.append(name)
    words = sorted(set(words))
    if len(words) > 8:
        words = words[:8] + ["..."]
    return ", ".join(words)


def _token_text(tok: Token) -> str:
    if tok.type == "_NL":
        return "end of line"
    if tok.type == "_INDENT":
        return "an unexpected indent"
    if tok.type == "_DEDENT":
        return "end of the indented block"
    if tok.type == "$END":
        return "end of file"
    return f"'{tok}'"


def too_deep(source: Source) -> Diagnostic:
    """Nesting too deep for the parser's tree walk: point at the most nested-looking line."""
    def depth(line: str) -> int:
        return sum(line.count(ch) for ch in "([-+")
    n = max(range(1, len(source.lines) + 1), key=lambda i: depth(source.line(i)), default=1)
    return Diagnostic("the expression nests too deeply", Span(source, n, 1),
                      hint="split it with named values: 'a = ...' then use 'a'")


def _neutralize(lines: list[str], d: Diagnostic, e: UnexpectedInput) -> bool:
    """Replace the statement holding error ``d`` by a neutral one, in place. False: cannot recover."""
    tok = getattr(e, "token", None)
    if d.span is None or isinstance(e, UnexpectedEOF) or "never closed" in d.message:
        return False
    if isinstance(tok, Token) and tok.type in ("_INDENT", "_DEDENT", "$END"):
        return False  # indentation errors would only cascade
    cur = Source("\n".join(lines), "")
    first = d.span.line
    br = _unclosed_bracket(cur, first, 1)
    if br is not None:
        first = br[1]          # the statement started on the line that opened the bracket
    while first > 1 and lines[first - 2].rstrip().endswith("\\"):
        first -= 1             # or on an earlier line continued with a backslash
    last = d.span.line
    while last < len(lines) and (_unclosed_bracket(cur, last + 1, 1) is not None or
                                 lines[last - 1].rstrip().endswith("\\")):
        last += 1
    head = lines[first - 1]
    indent = head[: len(head) - len(head.lstrip(" \t"))]
    if not indent:
        return False           # a top-level line (block/network header): nothing neutral to put there
    nxt = next((ln for ln in lines[last:] if ln.strip() and not ln.lstrip().startswith("#")), "")
    opens_body = len(nxt) - len(nxt.lstrip(" \t")) > len(indent)
    lines[first - 1] = indent + ("seq:" if opens_body else "identity")
    for i in range(first, last):
        lines[i] = ""
    return True


def _dedent_line(text: str) -> int:
    """Find the first line whose indentation matches no enclosing level (for DedentError)."""
    stack = [0]
    for i, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip(" \t")
        if not stripped or stripped.startswith("#"):
            continue
        ind = len(line) - len(stripped)
        if ind > stack[-1]:
            stack.append(ind)
        else:
            while ind < stack[-1]:
                stack.pop()
            if ind != stack[-1]:
                return i
    return 1


def _unclosed_bracket(source: Source, line: int, col: int) -> tuple[str, int, int] | None:
    """The innermost bracket still open at (line, col), skipping strings and comments, or None."""
    closing = {"(": ")", "[": "]"}
    stack: list[tuple[str, int, int]] = []
    for ln, text in enumerate(source.lines, 1):
        if ln > line:
            break
        quote = None
        for c, ch in enumerate(text, 1):
            if ln == line and c >= col:
                break
            if quote:
                if ch == quote:
                    quote = None
            elif ch in "\"'":
                quote = ch
            elif ch == "#":
                break
            elif ch in closing:
                stack.append((ch, ln, c))
            elif ch in ")]":
                if stack and closing[stack[-1][0]] == ch:
                    stack.pop()
                else:
                    return None  # unbalanced the other way: the ordinary message is clearer
    return stack[-1] if stack else None


def _indent_position(source: Source, after_line: int) -> tuple[int, int]:
    """Where an unexpected indent really is: the first non-blank line after ``after_line``."""
    for ln in range(after_line + 1, len(source.lines) + 1):
        text = source.line(ln)
        stripped = text.lstrip(" \t")
        if stripped and not stripped.startswith("#"):
            return ln, len(text) - len(stripped) + 1
    return after_line, 1


def _syntax_diag(source: Source, e: UnexpectedInput, lark: Lark, keywords: frozenset[str]) -> Diagnostic:
    line = getattr(e, "line", None) or 1
    col = getattr(e, "column", None) or 1
    tok = getattr(e, "token", None)
    at_line_end = isinstance(e, UnexpectedEOF) or (
        isinstance(tok, Token) and tok.type in ("_NL", "_INDENT", "_DEDENT", "$END"))
    if at_line_end or isinstance(e, UnexpectedToken):
        # brackets still open where parsing stopped (the end of the file when lark gives no position)
        upto = (line, col) if tok is not None and tok.line else (len(source.lines) + 1, 1)
        open_br = _unclosed_bracket(source, *upto)
        if open_br is not None and (at_line_end or open_br[1] < line):
            ch, bl, bc = open_br
            return Diagnostic(f"'{ch}' is never closed", Span(source, bl, bc, bl, bc + 1),
                              hint=f"add the matching '{')' if ch == '(' else ']'}'; "
                                   "a line break inside brackets continues the line")
    if isinstance(e, UnexpectedCharacters):
        ch = source.line(line)[col - 1: col] or "?"
        return Diagnostic(f"unexpected character '{ch}'", Span(source, line, col),
                          hint=_char_hint(ch))
    if isinstance(e, UnexpectedEOF):
        n = max(1, len(source.lines))
        return Diagnostic("unexpected end of file", Span(source, n, len(source.line(n)) + 1),
                          hint=f"expected {_describe_expected(lark, set(e.expected))}")
    if isinstance(e, UnexpectedToken):
        tok = e.token
        if tok.type == "$END" or tok.line is None:
            n = max(1, len(source.lines))
            line, col = n, len(source.line(n)) + 1
        elif tok.type in ("_NL",):
            # the newline token starts at the end of the offending line
            line, col = tok.line, tok.column
        expected = set(e.expected) if e.expected else set()
        visible = tok.type not in ("_NL", "_INDENT", "_DEDENT", "$END")
        span = Span(source, line, col, line, col + max(1, len(str(tok))) if visible else None)
        hint = None
        if tok.type == "_INDENT":
            line, col = _indent_position(source, tok.line or 1)
            span = Span(source, line, col)
            msg = "unexpected indent"
            hint = "only a line ending in ':' opens an indented block"
        elif tok.type == "NAME" and str(tok) in keywords:
            msg = f"'{tok}' is a keyword and cannot be used here"
            hint = f"expected {_describe_expected(lark, expected)}"
        elif tok.type in ("RPAR", "RSQB") and _unclosed_bracket(source, line, col) is None:
            msg = f"unmatched {_token_text(tok)}"
            hint = "remove it, or add the opening bracket it closes"
        else:
            msg = f"unexpected {_token_text(tok)}"
            hint = f"expected {_describe_expected(lark, expected)}" if expected else None
            if tok.type == "_NL" and "COLON" in expected:
                hint = "a block header ends with ':'"
        return Diagnostic(msg, span, hint=hint)
    return Diagnostic(str(e).splitlines()[0], Span(source, line, col))


def _char_hint(ch: str) -> str | None:
    if ch in "{}":
        return "blocks are written with indentation, not braces"
    if ch == ";":
        return "write one statement per line"
    if ch in "\"'":
        return "strings must end on the same line"
    if ch == "@":
        return "matrix multiplication is written matmul, not '@'"
    return None
