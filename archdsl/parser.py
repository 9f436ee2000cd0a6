"""Stage 1: text -> AST. Lark (LALR) with an indentation post-lexer; syntax errors become diagnostics."""
from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError
from lark.indenter import Indenter

from . import ast as A
from .errors import ArchError, Diagnostic
from .source import Source, Span

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
    return Path(__file__).resolve().parent.parent / "grammar" / "arch.lark"


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
        return c[0]

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
    """Parse one source into an AST. Raises :class:`ArchError` with every syntax error found."""
    diags: list[Diagnostic] = []
    lines_with_errors: set[int] = set()

    def record(e: UnexpectedInput) -> bool:
        diag = _syntax_diag(source, e)
        if diag.span is None or diag.span.line not in lines_with_errors:
            diags.append(diag)
            if diag.span is not None:
                lines_with_errors.add(diag.span.line)
        # Keep going only on ordinary token errors: indentation errors cascade.
        return isinstance(e, UnexpectedToken) and len(diags) < 20 and \
            e.token.type not in ("_INDENT", "_DEDENT", "$END")

    text = source.text if source.text.endswith("\n") else source.text + "\n"
    try:
        tree = _parser().parse(text, on_error=record)
    except UnexpectedInput as e:
        if not diags or _syntax_diag(source, e).span != diags[-1].span:
            record(e)
        raise ArchError(diags) from None
    except Exception as e:  # lark's indenter raises DedentError (a plain Exception subclass)
        if diags:  # error recovery lost its footing after a real error: report what we have
            raise ArchError(diags) from None
        if type(e).__name__ == "DedentError":
            line = _dedent_line(text)
            diags.append(Diagnostic("unindent does not match any outer indentation level",
                                    Span(source, line, 1), hint="indent with the same spaces as an enclosing block"))
            raise ArchError(diags) from None
        raise
    if diags:
        raise ArchError(diags)
    try:
        return _ToAst(source).transform(tree)
    except VisitError as e:
        if isinstance(e.orig_exc, ArchError):
            raise e.orig_exc from None
        raise


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


def _syntax_diag(source: Source, e: UnexpectedInput) -> Diagnostic:
    line = getattr(e, "line", None) or 1
    col = getattr(e, "column", None) or 1
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
            msg = "unexpected indent"
            hint = "only a line ending in ':' opens an indented block"
        elif tok.type == "NAME" and str(tok) in KEYWORDS:
            msg = f"'{tok}' is a keyword and cannot be used here"
            hint = f"expected {_describe_expected(expected)}"
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
