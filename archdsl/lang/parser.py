"""Stage 1: text -> AST. Lark (LALR) with an indentation post-lexer; syntax errors become diagnostics."""
from __future__ import annotations

import functools
import hashlib
import os
import pickle
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError
from lark.indenter import Indenter

from . import ast as A
from ..errors import ArchError, Diagnostic
from ..source import Source, Span

__all__ = ["parse", "grammar_path", "KEYWORDS"]

KEYWORDS = frozenset({
    "block", "network", "import", "from", "reference", "input", "output", "seq", "reparam", "add",
    "concat", "mul", "stack", "if", "elif", "else", "for", "in", "and", "or", "not",
})

# Friendly words for grammar terminals in "expected ..." messages.
_TERMINAL_WORDS = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "_NL": "end of line",
    "_INDENT": "an indented block", "_DEDENT": "end of the indented block", "COMP_OP": "a comparison",
    "ADD_OP": "'+' or '-'", "MUL_OP": "'*', '/', '//' or '%'", "COMBINATOR": "add/concat/mul/stack",
    "INPUT": "'in'", "REPARAM": "'reparam'", "$END": "end of file",
}


def grammar_path() -> Path:
    """Where the shipped grammar lives: inside the installed package, else the repository's grammar/."""
    try:
        packaged = resources.files("archdsl").joinpath("_grammar/arch.lark")
        if packaged.is_file():
            return Path(str(packaged))
    except (ModuleNotFoundError, FileNotFoundError):  # pragma: no cover - defensive
        pass
    return Path(__file__).resolve().parents[2] / "grammar" / "arch.lark"


class _ArchIndenter(Indenter):
    NL_type = "_NL"
    OPEN_PAREN_types = ["LPAR", "LSQB"]
    CLOSE_PAREN_types = ["RPAR", "RSQB"]
    INDENT_type = "_INDENT"
    DEDENT_type = "_DEDENT"
    tab_len = 8


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(grammar_path().read_text(encoding="utf-8"), parser="lalr", postlex=_ArchIndenter(),
                propagate_positions=True, maybe_placeholders=True, start="start", cache=True)


def _describe_expected(expected: set[str]) -> str:
    parser = _parser()
    words = []
    for name in sorted(expected):
        if name in _TERMINAL_WORDS:
            words.append(_TERMINAL_WORDS[name])
            continue
        try:
            pat = parser.get_terminal(name).pattern
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


class _ToAst(Transformer):
    """Parse tree -> AST nodes with spans."""

    def __init__(self, source: Source) -> None:
        super().__init__()
        self.src = source

    # -- spans
    def _tok(self, t: Token) -> Span:
        return Span(self.src, t.line or 1, t.column or 1, t.end_line, t.end_column)

    def _meta(self, meta: Any) -> Span:
        if getattr(meta, "empty", True):
            return Span(self.src, 1, 1)
        return Span(self.src, meta.line, meta.column, meta.end_line, meta.end_column)

    def _span_of(self, x: Any) -> Span:
        if isinstance(x, Token):
            return self._tok(x)
        return x.span

    def _join(self, a: Any, b: Any) -> Span:
        sa, sb = self._span_of(a), self._span_of(b)
        return Span(self.src, sa.line, sa.col, sb.end_line, sb.end_col)

    # -- top level
    @v_args(meta=True)
    def start(self, meta: Any, items: list[Any]) -> A.SpecFile:
        spec = A.SpecFile(self.src.path)
        for it in items:
            if isinstance(it, A.Import):
                spec.imports.append(it)
            elif isinstance(it, A.NetworkDef):
                self._add_def(spec, it)
            elif isinstance(it, A.BlockDef):
                self._add_def(spec, it)
        return spec

    def _add_def(self, spec: A.SpecFile, d: A.BlockDef) -> None:
        other = spec.blocks.get(d.name) or spec.networks.get(d.name)
        if other is not None:
            raise ArchError(Diagnostic(f"'{d.name}' is defined twice in this file", d.name_span,
                                       notes=[("first defined here", other.name_span)],
                                       hint="rename one of them"))
        d.path = self.src.path
        (spec.networks if isinstance(d, A.NetworkDef) else spec.blocks)[d.name] = d

    @v_args(meta=True)
    def import_stmt(self, meta: Any, c: list[Any]) -> A.Import:
        return A.Import(self._meta(meta), _unquote(c[0]), None)

    @v_args(meta=True)
    def from_import(self, meta: Any, c: list[Any]) -> A.Import:
        return A.Import(self._meta(meta), _unquote(c[0]), [(str(t), self._tok(t)) for t in c[1:]])

    @v_args(meta=True)
    def block_def(self, meta: Any, c: list[Any]) -> A.BlockDef:
        name, params, body = c
        return A.BlockDef(self._meta(meta), str(name), params or [], body, self._tok(name))

    @v_args(meta=True)
    def network_def(self, meta: Any, c: list[Any]) -> A.NetworkDef:
        name, params, ref, body = c
        return A.NetworkDef(self._meta(meta), str(name), params or [], body, self._tok(name),
                            reference=ref[0] if ref else None, reference_span=ref[1] if ref else None)

    @v_args(meta=True)
    def reference(self, meta: Any, c: list[Any]) -> tuple[str, Span]:
        return c[0], self._meta(meta)

    def dotted(self, c: list[Token]) -> str:
        return ".".join(str(t) for t in c)

    def params(self, c: list[Any]) -> list[A.Param]:
        return [p for p in c if p is not None]

    @v_args(meta=True)
    def param(self, meta: Any, c: list[Any]) -> A.Param:
        return A.Param(self._meta(meta), str(c[0]), c[1])

    def suite(self, c: list[Any]) -> list[A.Stmt]:
        return list(c)

    # -- statements
    @v_args(meta=True)
    def input_stmt(self, meta: Any, c: list[Any]) -> A.InputStmt:
        return A.InputStmt(self._meta(meta), c[0])

    @v_args(meta=True)
    def output_stmt(self, meta: Any, c: list[Any]) -> A.OutputStmt:
        return A.OutputStmt(self._meta(meta), [(str(t), self._tok(t)) for t in c])

    @v_args(meta=True)
    def let_stmt(self, meta: Any, c: list[Any]) -> A.LetStmt:
        *names, value = c
        return A.LetStmt(self._meta(meta), [(str(t), self._tok(t)) for t in names], value)

    def label(self, c: list[Token]) -> Token:
        tok = c[0]
        if tok.type != "STRING":
            return tok
        # "convs.0": a module path below the current container (timm's ModuleLists of paired layers)
        path = str(tok)[1:-1]
        if not all(s.isidentifier() or s.isdigit() for s in path.split(".")):
            raise ArchError(Diagnostic(f"a quoted label must be a dotted module path, got {tok}", self._tok(tok),
                                       hint='parts are names or numbers separated by dots, e.g. "convs.0"'))
        return Token.new_borrow_pos("NAME", path, tok)

    @v_args(meta=True)
    def layer_stmt(self, meta: Any, c: list[Any]) -> A.LayerStmt:
        pipe = c[0]
        first = pipe.items[0]
        return A.LayerStmt(self._meta(meta), first.label, first.label_span, pipe)

    @v_args(meta=True)
    def combinator_stmt(self, meta: Any, c: list[Any]) -> A.CombinatorStmt:
        label, reparam, kind, args, body = c
        pos, kws = args if args else ([], [])
        return A.CombinatorStmt(self._meta(meta), str(label) if label else None,
                                self._tok(label) if label else None, reparam is not None, str(kind),
                                pos, kws, body)

    @v_args(meta=True)
    def labelled_seq(self, meta: Any, c: list[Any]) -> A.SeqStmt:
        label, body = c
        return A.SeqStmt(self._meta(meta), str(label), self._tok(label), body)

    @v_args(meta=True)
    def plain_seq(self, meta: Any, c: list[Any]) -> A.SeqStmt:
        return A.SeqStmt(self._meta(meta), None, None, c[0])

    @v_args(meta=True)
    def if_stmt(self, meta: Any, c: list[Any]) -> A.IfStmt:
        cond, body, *rest = c
        branches = [(cond, body)]
        orelse = None
        for r in rest:
            if r is None:
                continue
            if r[0] == "elif":
                branches.append((r[1], r[2]))
            else:
                orelse = r[1]
        return A.IfStmt(self._meta(meta), branches, orelse)

    def elif_clause(self, c: list[Any]) -> tuple[str, Any, Any]:
        return ("elif", c[0], c[1])

    def else_clause(self, c: list[Any]) -> tuple[str, Any]:
        return ("else", c[0])

    # -- expressions
    @v_args(meta=True)
    def pipeline(self, meta: Any, c: list[A.PipeItem]) -> A.Pipeline:
        return A.Pipeline(self._meta(meta), c)

    @v_args(meta=True)
    def pipe_item(self, meta: Any, c: list[Any]) -> A.PipeItem:
        label, expr = c
        return A.PipeItem(self._meta(meta), str(label) if label else None,
                          self._tok(label) if label else None, expr)

    @v_args(meta=True)
    def ternary(self, meta: Any, c: list[Any]) -> A.Ternary:
        return A.Ternary(self._meta(meta), c[0], c[1], c[2])

    @v_args(meta=True)
    def optional(self, meta: Any, c: list[Any]) -> A.OptionalExpr:
        return A.OptionalExpr(self._meta(meta), c[0], c[1])

    @v_args(meta=True)
    def or_test(self, meta: Any, c: list[Any]) -> A.BoolOp:
        return A.BoolOp(self._meta(meta), "or", c)

    @v_args(meta=True)
    def and_test(self, meta: Any, c: list[Any]) -> A.BoolOp:
        return A.BoolOp(self._meta(meta), "and", c)

    @v_args(meta=True)
    def not_(self, meta: Any, c: list[Any]) -> A.UnaryOp:
        return A.UnaryOp(self._meta(meta), "not", c[0])

    @v_args(meta=True)
    def comparison(self, meta: Any, c: list[Any]) -> A.Compare:
        rest = [(str(c[i]), c[i + 1]) for i in range(1, len(c), 2)]
        return A.Compare(self._meta(meta), c[0], rest)

    def _binops(self, meta: Any, c: list[Any]) -> Any:
        left = c[0]
        for i in range(1, len(c), 2):
            op, right = c[i], c[i + 1]
            left = A.BinOp(self._join(left, right), str(op), left, right, self._tok(op))
        return left

    @v_args(meta=True)
    def arith(self, meta: Any, c: list[Any]) -> Any:
        return self._binops(meta, c)

    @v_args(meta=True)
    def term(self, meta: Any, c: list[Any]) -> Any:
        return self._binops(meta, c)

    @v_args(meta=True)
    def power(self, meta: Any, c: list[Any]) -> A.BinOp:
        return A.BinOp(self._meta(meta), "**", c[0], c[1], self._span_of(c[0]))

    @v_args(meta=True)
    def neg(self, meta: Any, c: list[Any]) -> A.UnaryOp:
        return A.UnaryOp(self._meta(meta), "-", c[0])

    @v_args(meta=True)
    def pos(self, meta: Any, c: list[Any]) -> A.UnaryOp:
        return A.UnaryOp(self._meta(meta), "+", c[0])

    @v_args(meta=True)
    def call(self, meta: Any, c: list[Any]) -> A.Call:
        func, args = c
        pos, kws = args if args else ([], [])
        return A.Call(self._meta(meta), func, pos, kws)

    def call_args(self, c: list[Any]) -> tuple[list[Any], list[A.Kwarg]]:
        return c[0] if c[0] else ([], [])

    def arglist(self, c: list[Any]) -> tuple[list[Any], list[A.Kwarg]]:
        pos: list[Any] = []
        kws: list[A.Kwarg] = []
        for a in c:
            if a is None:
                continue
            if isinstance(a, A.Kwarg):
                kws.append(a)
            else:
                if kws:
                    raise ArchError("positional argument after a keyword argument", a.span,
                                    hint="put positional arguments first")
                pos.append(a)
        return pos, kws

    @v_args(meta=True)
    def kwarg(self, meta: Any, c: list[Any]) -> A.Kwarg:
        return A.Kwarg(self._tok(c[0]), str(c[0]), c[1])

    @v_args(meta=True)
    def index(self, meta: Any, c: list[Any]) -> A.Index:
        return A.Index(self._meta(meta), c[0], c[1])

    @v_args(meta=True)
    def attr(self, meta: Any, c: list[Any]) -> A.Attr:
        return A.Attr(self._meta(meta), c[0], str(c[1]))

    def number(self, c: list[Token]) -> A.Num:
        t = c[0]
        text = str(t)
        is_float = any(ch in text for ch in ".eE")
        return A.Num(self._tok(t), float(text) if is_float else int(text))

    def string(self, c: list[Token]) -> A.Str:
        return A.Str(self._tok(c[0]), _unquote(c[0]))

    def name(self, c: list[Token]) -> A.Name:
        return A.Name(self._tok(c[0]), str(c[0]))

    def input_ref(self, c: list[Token]) -> A.InputRef:
        return A.InputRef(self._tok(c[0]))

    @v_args(meta=True)
    def combinator_call(self, meta: Any, c: list[Any]) -> A.CombinatorCall:
        kind, args = c
        pos, kws = args if args else ([], [])
        return A.CombinatorCall(self._meta(meta), str(kind), pos, kws)

    @v_args(meta=True)
    def list(self, meta: Any, c: list[Any]) -> A.ListExpr:
        return A.ListExpr(self._meta(meta), [x for x in c if x is not None])

    @v_args(meta=True)
    def listcomp(self, meta: Any, c: list[Any]) -> A.ListComp:
        return A.ListComp(self._meta(meta), c[0], c[1:])

    @v_args(meta=True)
    def comp_for(self, meta: Any, c: list[Any]) -> A.CompFor:
        return A.CompFor(self._meta(meta), str(c[0]), c[2], c[3])


def _unquote(tok: Any) -> str:
    return str(tok)[1:-1]


def parse(source: Source) -> A.SpecFile:
    """Parse one source into an AST (cached). Raises :class:`ArchError` with every syntax error found.

    Like Python's ``.pyc`` files, successful parses are cached, in memory and on disk, keyed by the
    grammar, the archdsl version, the file name and the exact text: parsing is most of the time of
    ``archc check``, and a library changes a file at a time. Each call returns a fresh AST.
    ``ARCHDSL_CACHE_DIR`` moves the disk cache (default ``~/.cache/archdsl``); ``ARCHDSL_NO_CACHE=1``
    turns it off.
    """
    key = _cache_key(source)
    blob = _MEMO.get(key)
    if blob is None:
        blob = _disk_get(key)
    if blob is not None:
        try:
            return pickle.loads(blob)
        except Exception:  # a stale or damaged cache entry: parse again
            _MEMO.pop(key, None)
    spec = _parse_uncached(source)
    try:
        blob = pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL)
    except RecursionError:  # an extremely nested AST: not worth caching
        return spec
    if len(_MEMO) >= _MEMO_MAX:  # a long-lived process (fuzzing, a notebook) must not grow without end
        _MEMO.clear()
    _MEMO[key] = blob
    _disk_put(key, blob)
    return spec


_MEMO: dict[str, bytes] = {}
_MEMO_MAX = 256


def _cache_dir() -> Path | None:
    if os.environ.get("ARCHDSL_NO_CACHE"):
        return None
    base = os.environ.get("ARCHDSL_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "archdsl")
    return Path(base) / "ast"


@functools.lru_cache(maxsize=1)
def _grammar_digest() -> str:
    from .._version import __version__
    return hashlib.sha256(grammar_path().read_bytes() + __version__.encode()).hexdigest()


def _cache_key(source: Source) -> str:
    h = hashlib.sha256(_grammar_digest().encode())
    h.update(source.path.encode("utf-8", "surrogateescape") + b"\0")
    h.update(source.text.encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _disk_get(key: str) -> bytes | None:
    d = _cache_dir()
    if d is None:
        return None
    try:
        return (d / key[:2] / key).read_bytes()
    except OSError:
        return None


def _disk_put(key: str, blob: bytes) -> None:
    d = _cache_dir()
    if d is None:
        return
    target = d / key[:2] / key
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=str(target.parent))
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.replace(tmp, target)
    except OSError:  # a read-only home or a full disk must never break compilation
        pass


def _parse_uncached(source: Source) -> A.SpecFile:
    """Parse one source into an AST. Raises :class:`ArchError` with every syntax error found.

    Recovery works by statements, not tokens: after a syntax error the offending statement is
    replaced by a neutral one of the same indentation (``identity``, or ``seq:`` when it heads an
    indented body) and the file is parsed again. Line numbers never change, so every later error is
    reported where it really is, and no error is a cascade of an earlier one.
    """
    diags: list[Diagnostic] = []
    text = source.text if source.text.endswith("\n") else source.text + "\n"
    lines = text.split("\n")
    tree = None
    for _ in range(_MAX_SYNTAX_ERRORS):
        cur = Source("\n".join(lines), source.path)
        try:
            tree = _parser().parse(cur.text)
            break
        except UnexpectedInput as e:
            d = _syntax_diag(cur, e)
            sp = d.span
            if sp is not None:  # point into the original text (same lines), for the snippet
                d.span = Span(source, sp.line, sp.col, sp.end_line, sp.end_col)
            if d.span is None or all(d.span.line != x.span.line for x in diags if x.span is not None):
                diags.append(d)
            if not _neutralize(lines, d, e):
                break
        except RecursionError:
            diags.append(_too_deep(source))
            break
        except Exception as e:  # lark's indenter raises DedentError (a plain Exception subclass)
            if type(e).__name__ != "DedentError":
                raise
            if not diags:
                line = _dedent_line(cur.text)
                diags.append(Diagnostic("unindent does not match any outer indentation level",
                                        Span(source, line, 1),
                                        hint="indent with the same spaces as an enclosing block"))
            break
    if diags or tree is None:
        raise ArchError(diags or [Diagnostic("too many syntax errors", Span(source, 1, 1))])
    try:
        return _ToAst(source).transform(tree)
    except VisitError as e:
        if isinstance(e.orig_exc, ArchError):
            raise e.orig_exc from None
        if isinstance(e.orig_exc, RecursionError):
            raise ArchError(_too_deep(source)) from None
        raise
    except RecursionError:
        raise ArchError(_too_deep(source)) from None


_MAX_SYNTAX_ERRORS = 20


def _too_deep(source: Source) -> Diagnostic:
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


def _syntax_diag(source: Source, e: UnexpectedInput) -> Diagnostic:
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
                          hint=f"expected {_describe_expected(set(e.expected))}")
    if isinstance(e, UnexpectedToken):
        tok = e.token
        if tok.type == "$END" or tok.line is None:
            n = max(1, len(source.lines))
            line, col = n, len(source.line(n)) + 1
        elif tok.type in ("_NL",):
            # the newline token starts at the end of the offending line
            line, col = tok.line, tok.column
        expected = set(e.expected) if e.expected else set()
        span = Span(source, line, col, line, col + max(1, len(str(tok))) if tok.type not in ("_NL", "_INDENT", "_DEDENT", "$END") else None)
        hint = None
        if tok.type == "_INDENT":
            line, col = _indent_position(source, tok.line or 1)
            span = Span(source, line, col)
            msg = "unexpected indent"
            hint = "only a line ending in ':' opens an indented block"
        elif tok.type == "NAME" and str(tok) in KEYWORDS:
            msg = f"'{tok}' is a keyword and cannot be used here"
            hint = f"expected {_describe_expected(expected)}"
        elif tok.type in ("RPAR", "RSQB") and _unclosed_bracket(source, line, col) is None:
            msg = f"unmatched {_token_text(tok)}"
            hint = "remove it, or add the opening bracket it closes"
        else:
            msg = f"unexpected {_token_text(tok)}"
            hint = f"expected {_describe_expected(expected)}" if expected else None
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
