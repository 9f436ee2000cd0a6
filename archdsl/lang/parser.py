"""Stage 1: text -> AST. Lark (LALR) with an indentation post-lexer; syntax errors become diagnostics.

:func:`parse` is the entry point: it checks the source bounds (:mod:`.bounds`), looks in the parse
cache (:mod:`.astcache`, JSON), parses with recovery (:mod:`.syntax_errors`) and transforms Lark's tree
into the dataclasses of :mod:`.ast`.

The Lark parser is built from the grammar once per process, at the first parse (about 0.1 s), and
never loaded from a cache file: Lark's own cache option writes a pickle in the shared temporary directory
(issue 11).
"""
from __future__ import annotations

import builtins

import contextlib
import functools
import gc
import hashlib
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import VisitError
from lark.indenter import Indenter

from . import ast as A
from . import astcache
from .bounds import check_ast_depth, check_source
from .syntax_errors import parse_tree, too_deep
from ..errors import ArchError, Diagnostic
from ..limits import Limits
from ..source import Source, Span

__all__ = ["parse", "grammar_path", "KEYWORDS"]


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
    # Lark's cache option stays off: it would pickle the tables into the world-writable temp dir and unpickle them later
    return Lark(grammar_path().read_text(encoding="utf-8"), parser="lalr", postlex=_ArchIndenter(),
                propagate_positions=True, maybe_placeholders=True, start="start")


# a regex terminal that is a keyword: `word(?![A-Za-z0-9_])` or `(w1|w2|...)(?![A-Za-z0-9_])`
_KEYWORD_RE = re.compile(r"\(?([a-z]+(?:\|[a-z]+)*)\)?\(\?!\[A-Za-z0-9_\]\)")


def _keywords(grammar: str) -> frozenset[str]:
    """The reserved words, read from the grammar's literals and keyword-shaped regex terminals.

    Read from the text so that importing archdsl does not build the parser (that waits for the first
    parse); a test checks the result against the terminals of the built Lark parser.
    """
    words: set[str] = set()
    for line in grammar.splitlines():
        code = line.strip()
        if code.startswith("//"):
            continue
        words.update(w for w in re.findall(r'"([^"\\]*)"', code) if w.isidentifier())
        for rx in re.findall(r"/((?:[^/\\]|\\.)+)/", re.sub(r'"[^"\\]*"', '""', code)):
            m = _KEYWORD_RE.fullmatch(rx)
            if m:
                words.update(m.group(1).split("|"))
    return frozenset(words)


KEYWORDS: frozenset[str] = _keywords(grammar_path().read_text(encoding="utf-8"))


class _ToAst(Transformer):
    """Parse tree -> AST nodes with spans."""

    def __init__(self, source: Source, limits: Limits) -> None:
        super().__init__()
        self.src = source
        self.limits = limits

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
            elif isinstance(it, A.ScalesDef):
                other = spec.scales.get(it.network)
                if other is not None:
                    raise ArchError(Diagnostic(f"network '{it.network}' has two scales tables", it.name_span,
                                               notes=[("the first is here", other.name_span)],
                                               hint="put every variant in one table"))
                spec.scales[it.network] = it
        return spec

    def _add_def(self, spec: A.SpecFile, d: A.BlockDef) -> None:
        other = spec.blocks.get(d.name) or spec.networks.get(d.name)
        if other is not None:
            raise ArchError(Diagnostic(f"'{d.name}' is defined twice in this file", d.name_span,
                                       notes=[("first defined here", other.name_span)],
                                       hint="rename one of them"))
        d.path = self.src.path
        if isinstance(d, A.NetworkDef):
            spec.networks[d.name] = d
        else:
            spec.blocks[d.name] = d

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
    def scales_def(self, meta: Any, c: list[Any]) -> A.ScalesDef:
        name, *rows = c
        seen: dict[str, A.ScaleRow] = {}
        for r in rows:
            if r.name in seen:
                raise ArchError(Diagnostic(f"scale '{r.name}' is defined twice", r.name_span,
                                           notes=[("first defined here", seen[r.name].name_span)],
                                           hint="rename one of them"))
            seen[r.name] = r
        return A.ScalesDef(self._meta(meta), str(name), rows, self._tok(name))

    @v_args(meta=True)
    def scale_row(self, meta: Any, c: list[Any]) -> A.ScaleRow:
        name, args = c
        pos, kws = args if args else ([], [])
        if pos:
            raise ArchError(Diagnostic(f"scale '{name}': every value is named (name=value)", pos[0].span,
                                       hint=f"{name}: width_mult=1.0, depth_mult=1.1"))
        return A.ScaleRow(self._meta(meta), str(name), kws, self._tok(name))

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
    def spread_stmt(self, meta: Any, c: list[Any]) -> A.SpreadStmt:
        label, value = c
        return A.SpreadStmt(self._meta(meta), str(label) if label else None, self._tok(label) if label else None,
                            value)

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
        if len(text) > self.limits.max_number_digits:
            # int() of thousands of digits is slow (and refused past 4,300 digits): stop at the literal
            raise ArchError(Diagnostic(f"number literal of {len(text):,} characters; the limit is "
                                       f"{self.limits.max_number_digits}", self._tok(t),
                                       hint="the limit is Limits.max_number_digits "
                                            "(raise it with --limit max_number_digits=N)"))
        is_float = any(ch in text for ch in ".eE")
        try:
            return A.Num(self._tok(t), float(text) if is_float else int(text))
        except ValueError:  # past sys.get_int_max_str_digits() when the limit was raised that far
            raise ArchError(Diagnostic("number literal too long to read", self._tok(t))) from None

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
    def listcomp(self, meta: Any, c: builtins.list[Any]) -> A.ListComp:
        return A.ListComp(self._meta(meta), c[0], c[1:])

    @v_args(meta=True)
    def comp_for(self, meta: Any, c: builtins.list[Any]) -> A.CompFor:
        *names, _in, it, cond = c
        return A.CompFor(self._meta(meta), str(names[0]), [str(n) for n in names[1:]], it, cond)


def _unquote(tok: Any) -> str:
    return str(tok)[1:-1]


def parse(source: Source, limits: Limits | None = None) -> A.SpecFile:
    """Parse one source into an AST. Raises :class:`ArchError` with every syntax error found.

    The source is first checked against the bounds of ``limits`` (size, lines, line length, nesting:
    see :mod:`archdsl.lang.bounds`). Successful parses are cached as JSON (:mod:`archdsl.lang.astcache`),
    keyed by the grammar, the archdsl version, the bounds, the file name and the exact text; each call
    returns a fresh AST. ``ARCHDSL_CACHE_DIR`` moves the disk cache (see :mod:`archdsl.cachedir`);
    ``ARCHDSL_NO_CACHE=1`` turns it off.
    """
    limits = limits or Limits()
    check_source(source, limits)
    key = astcache.cache_key(source, _grammar_digest(), _bounds_salt(limits))
    spec = astcache.get(key, source)
    if spec is None:
        spec = _parse_uncached(source, limits)
        astcache.put(key, spec)
    else:  # a cached AST passes the same depth check as a fresh one (the cache is data, not trust)
        check_ast_depth(spec, source, limits)
    return spec


@functools.lru_cache(maxsize=1)
def _grammar_digest() -> str:
    from .._version import __version__
    return hashlib.sha256(grammar_path().read_bytes() + __version__.encode()).hexdigest()


def _bounds_salt(limits: Limits) -> str:
    """The limits a parse depends on: a cached AST is reused only under the same ones."""
    return f"{limits.max_nesting}/{limits.max_number_digits}"


def _parse_uncached(source: Source, limits: Limits | None = None) -> A.SpecFile:
    """Parse (with recovery), transform to the AST, check its depth. Raises :class:`ArchError`."""
    limits = limits or Limits()
    with _gc_paused():
        tree = parse_tree(source, _parser(), KEYWORDS)
        try:
            spec = _ToAst(source, limits).transform(tree)
        except VisitError as e:
            if isinstance(e.orig_exc, ArchError):
                raise e.orig_exc from None
            if isinstance(e.orig_exc, RecursionError):
                raise ArchError(too_deep(source)) from None
            raise
        except RecursionError:
            raise ArchError(too_deep(source)) from None
    check_ast_depth(spec, source, limits)
    return spec


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while parsing: the parse makes ~30 objects a token and no cycles, and
    the collector's passes over a growing heap cost a third of the time of a large file (measured)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
