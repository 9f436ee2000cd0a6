"""``archc fmt`` and the printer (archdsl.lang.printer): one canonical layout, the AST unchanged, comments kept.

* every spec of the library, the examples, the compatibility corpus and the docs' complete snippets:
  ``parse(format(x)) == parse(x)`` (spans aside), ``format(format(x)) == format(x)``, the same comments, and
  the printer alone (no comments) gives the same AST;
* hypothesis: mutations of the library's specs (the fuzz generator of tests/test_fuzz.py), random token
  streams in a network, and random expression trees built as ASTs (every precedence level and
  associativity: the minimal parentheses must parse back to the same tree);
* the ``# archc: ignore`` directives still silence the same warnings after formatting;
* a golden test: a messy hand-written spec and its expected formatted text;
* the CLI: in place, --check, --diff, stdin, syntax errors located with nothing written.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import ROOT, run_archc
from test_fuzz import HEADER, TOKENS, _settings, mutated_spec

from archdsl.errors import ArchError
from archdsl.lang import ast as A
from archdsl.lang.astcompare import ast_dump, ast_equal
from archdsl.lang.comments import CommentMap, comments_in
from archdsl.lang.fmt import format_text
from archdsl.lang.parser import parse
from archdsl.lang.printer import WIDTH, print_expr, print_spec
from archdsl.pipeline import check_paths
from archdsl.source import Source, Span

_FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _doc_snippets() -> dict[str, str]:
    """The fenced blocks of README.md and docs/*.md that are whole specs (define a network and parse)."""
    found: dict[str, str] = {}
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for k, m in enumerate(_FENCE.finditer(doc.read_text(encoding="utf-8"))):
            text = m.group(1)
            if not re.search(r"^network\s+\w+", text, re.MULTILINE):
                continue
            try:
                parse(Source(text, "snippet.arch"))
            except ArchError:
                continue   # a snippet that shows an error
            found[f"{doc.relative_to(ROOT)}#{k}"] = text
    return found


CORPUS: dict[str, str] = {
    str(p.relative_to(ROOT)): p.read_text(encoding="utf-8")
    for d in ("specs", "examples", "tests/compat") for p in sorted((ROOT / d).rglob("*.arch"))}
CORPUS.update(_doc_snippets())


def _roundtrip(text: str, path: str = "<spec>") -> str:
    """Format ``text``; assert the AST, the comments and idempotence; return the formatted text."""
    before = parse(Source(text, path))
    out = format_text(text, path)
    assert ast_equal(parse(Source(out, path)), before), out
    assert sorted(comments_in(out)) == sorted(c.strip() for c in comments_in(text))
    assert format_text(out, path) == out, "formatting is not idempotent"
    # the printer alone (no comments) gives the same AST too
    assert ast_equal(parse(Source(print_spec(before), path)), before)
    return out


def test_the_corpus_covers_the_library_examples_compat_and_docs() -> None:
    assert sum(k.startswith("specs/") for k in CORPUS) >= 30
    assert sum(k.startswith("examples/") for k in CORPUS) >= 10
    assert sum(k.startswith("tests/compat/") for k in CORPUS) >= 60
    assert sum("#" in k for k in CORPUS) >= 10   # doc snippets


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_every_known_spec_formats_to_the_same_ast(name: str) -> None:
    text = CORPUS[name]
    out = _roundtrip(text, name)
    assert out.endswith("\n") and not out.endswith("\n\n")
    assert "\t" not in out and all(line == line.rstrip() for line in out.splitlines())
    # comments that were on their statement's line stay there (a directive must)
    for line in text.splitlines():
        if "# archc:" in line:
            code = line[: line.index("# archc:")].strip()
            directive = line[line.index("# archc:"):].strip()
            assert any(o.rstrip().endswith(directive) and o.strip() != directive for o in out.splitlines()), \
                (code, directive)


# ---- hypothesis ---------------------------------------------------------------------------------------
def _fmt_or_error(text: str, path: str) -> None:
    try:
        parse(Source(text, path))
    except ArchError:
        with pytest.raises(ArchError):   # the formatter reports the same syntax error, never crashes
            format_text(text, path)
        return
    _roundtrip(text, path)


@_settings(60)
@given(mutated_spec())
def test_mutated_library_specs_format_or_fail_cleanly(case: tuple[str, str]) -> None:
    path, text = case
    _fmt_or_error(text, path)


@_settings(300)
@given(st.lists(TOKENS, min_size=1, max_size=12).map(" ".join),
       st.sampled_from(["    x = {e}\n", "    {e}\n", "    if {e}:\n        relu\n    a: {e}\n"]))
def test_random_expressions_in_a_network_format_or_fail_cleanly(expr: str, template: str) -> None:
    _fmt_or_error(HEADER + template.format(e=expr), "fuzz.arch")


LIBRARY = {k: v for k, v in CORPUS.items() if k.startswith(("specs/", "examples/"))}


@st.composite
def commented_spec(draw: st.DrawFn) -> tuple[str, str]:
    """A library spec with comments added anywhere: alone on a line (any indentation) or at a line's end."""
    path = draw(st.sampled_from(sorted(LIBRARY)))
    lines = LIBRARY[path].split("\n")
    for k in range(draw(st.integers(1, 8))):
        i = draw(st.integers(0, len(lines) - 1))
        if draw(st.booleans()):
            lines.insert(i, " " * draw(st.sampled_from([0, 2, 4, 8, 12, 16])) + f"# added {k}")
        elif lines[i].strip():
            lines[i] += f"  # added {k}"
        else:
            lines.insert(i, "")
    return path, "\n".join(lines)


@_settings(60)
@given(commented_spec())
def test_added_comments_are_kept_wherever_they_are(case: tuple[str, str]) -> None:
    path, text = case
    out = _roundtrip(text, path)
    assert sum(c.count("# added") for c in comments_in(out)) == text.count("# added")


_SPAN = Span(Source("", "<built>"), 1, 1)
_NAMES = st.sampled_from(["x", "c", "stride", "relu", "true", "none", "Block"])


def _exprs() -> st.SearchStrategy[A.Expr]:
    leaves = st.one_of(
        st.integers(0, 10 ** 12).map(lambda v: A.Num(_SPAN, v)),
        st.floats(0, 1e30, allow_nan=False, allow_infinity=False).map(lambda v: A.Num(_SPAN, v)),
        st.sampled_from(["same", "it's", 'say "hi"', ""]).map(lambda v: A.Str(_SPAN, v)),
        _NAMES.map(lambda v: A.Name(_SPAN, v)),
        st.just(A.InputRef(_SPAN)),
    )

    def grow(sub: st.SearchStrategy[A.Expr]) -> st.SearchStrategy[A.Expr]:
        kwargs = st.lists(st.builds(lambda n, v: A.Kwarg(_SPAN, n, v), st.sampled_from(["dim", "k"]), sub),
                          max_size=2)
        return st.one_of(
            st.builds(lambda op, a, b: A.BinOp(_SPAN, op, a, b, _SPAN),
                      st.sampled_from(["+", "-", "*", "/", "//", "%", "**"]), sub, sub),
            st.builds(lambda op, a: A.UnaryOp(_SPAN, op, a), st.sampled_from(["-", "+", "not"]), sub),
            st.builds(lambda a, rest: A.Compare(_SPAN, a, rest), sub,
                      st.lists(st.tuples(st.sampled_from(["<", "==", ">=", "!="]), sub), min_size=1, max_size=2)),
            st.builds(lambda op, vs: A.BoolOp(_SPAN, op, vs), st.sampled_from(["and", "or"]),
                      st.lists(sub, min_size=2, max_size=3)),
            st.builds(lambda a, b, c: A.Ternary(_SPAN, a, b, c), sub, sub, sub),
            st.builds(lambda a, b: A.OptionalExpr(_SPAN, a, b), sub, sub),
            st.builds(lambda f, a, k: A.Call(_SPAN, f, a, k), sub, st.lists(sub, max_size=3), kwargs),
            st.builds(lambda o, i: A.Index(_SPAN, o, i), sub, sub),
            st.builds(lambda o, n: A.Attr(_SPAN, o, n), sub, st.sampled_from(["c", "shape"])),
            st.builds(lambda items: A.ListExpr(_SPAN, items), st.lists(sub, max_size=4)),
            st.builds(lambda e, it, cond, unpack: A.ListComp(_SPAN, e, [A.CompFor(_SPAN, "i", unpack, it, cond)]),
                      sub, sub, st.none() | sub, st.sampled_from([[], ["j"]])),
            st.builds(lambda k, a, kw: A.CombinatorCall(_SPAN, k, a, kw), st.sampled_from(["add", "concat"]),
                      st.lists(sub, min_size=1, max_size=3), kwargs),
        )
    return st.recursive(leaves, grow, max_leaves=12)


def _spec_with(e: A.Expr) -> A.SpecFile:
    body: list[A.Stmt] = [A.LetStmt(_SPAN, [("y", _SPAN)], A.Pipeline(_SPAN, [A.PipeItem(_SPAN, None, None, e)])),
                          A.InputStmt(_SPAN, e)]
    net = A.NetworkDef(_SPAN, "n", [A.Param(_SPAN, "p", e)], body, _SPAN)
    return A.SpecFile("<built>", networks={"n": net})


@_settings(400)
@given(_exprs())
def test_printed_expressions_parse_back_to_the_same_tree(e: A.Expr) -> None:
    spec = _spec_with(e)
    text = print_spec(spec)
    assert ast_equal(parse(Source(text, "<built>")), spec), text
    assert print_spec(parse(Source(text, "<built>"))) == text


def test_minimal_parentheses() -> None:
    def expr(text: str) -> str:
        net = parse(Source(f"network n:\n    y = {text}\n", "t")).networks["n"]
        stmt = net.body[0]
        assert isinstance(stmt, A.LetStmt)
        return print_expr(stmt.value.items[0].expr)
    assert expr("(a + b) + c") == "a + b + c"
    assert expr("a + (b + c)") == "a + (b + c)"
    assert expr("(a * b) + (c * d)") == "a * b + c * d"
    assert expr("(a + b) * c") == "(a + b) * c"
    assert expr("(a ** b) ** c") == "(a ** b) ** c"
    assert expr("a ** (b ** c)") == "a ** b ** c"
    assert expr("(-a) ** 2") == "(-a) ** 2"
    assert expr("-(a ** 2)") == "-a ** 2"
    assert expr("not (a == b)") == "not a == b"
    assert expr("(not a) == b") == "(not a) == b"
    assert expr("(a or b) and c") == "(a or b) and c"
    assert expr("a or (b and c)") == "a or b and c"
    assert expr("(a if b else c) + 1") == "(a if b else c) + 1"
    assert expr("a if b else (c if d else e)") == "a if b else c if d else e"
    assert expr("(a if b else c) if d else e") == "(a if b else c) if d else e"
    assert expr("[x for x in (a if b else c)]") == "[x for x in (a if b else c)]"
    assert expr("(1).real") == "(1).real"
    assert expr("( f ) ( 1 ,2, k = 3 , )") == "f(1, 2, k=3)"
    assert expr("'a'") == '"a"'
    assert expr("'say \"hi\"'") == "'say \"hi\"'"
    assert expr("1e3 + .5 + 0.10") == "1000.0 + 0.5 + 0.1"


def test_ast_equal_ignores_positions_only() -> None:
    a = parse(Source("network n:\n    input [3, 8, 8]\n    conv2d(4, 3)\n", "a.arch"))
    b = parse(Source("\n\nnetwork n:\n        input [3,8,8]\n        conv2d( 4 , 3 )\n", "b.arch"))
    c = parse(Source("network n:\n    input [3, 8, 8]\n    conv2d(4, 3.0)\n", "a.arch"))
    assert ast_equal(a, b)
    assert not ast_equal(a, c)   # 3 and 3.0 differ
    assert ast_dump(a.networks["n"].body[1]) == ast_dump(b.networks["n"].body[1])


# ---- comments ------------------------------------------------------------------------------------------
def test_golden_messy_spec() -> None:
    messy = (ROOT / "tests/data/fmt/messy.arch.txt").read_text(encoding="utf-8")
    want = (ROOT / "tests/data/fmt/messy.formatted.txt").read_text(encoding="utf-8")
    assert format_text(messy, "messy.arch") == want
    assert format_text(want, "messy.arch") == want
    assert max(len(line) for line in want.splitlines() if "# archc:" not in line) <= WIDTH
    _roundtrip(messy, "messy.arch")


def test_comments_stay_with_their_statement() -> None:
    text = ("block B(c):\n"
            "    # above conv\n"
            "    conv: conv2d(c,\n"
            "                 3)  # on the conv\n"
            "    relu   # archc: ignore (why)\n"
            "        # deeper than the next statement: still above it\n"
            "    add:\n"
            "        identity\n"
            "        relu\n"
            "            # the end of the add body\n"
            "    # the end of B\n"
            "\n"
            "# above the network\n"
            "network n:\n"
            "    input [3, 8, 8]\n"
            "    B(4)\n")
    assert format_text(text) == (
        "block B(c):\n"
        "    # above conv\n"
        "    conv: conv2d(c, 3)  # on the conv\n"
        "    relu  # archc: ignore (why)\n"
        "    # deeper than the next statement: still above it\n"
        "    add:\n"
        "        identity\n"
        "        relu\n"
        "        # the end of the add body\n"
        "    # the end of B\n"
        "\n"
        "# above the network\n"
        "network n:\n"
        "    input [3, 8, 8]\n"
        "    B(4)\n")


def test_a_wrapped_statement_keeps_its_comment_on_its_first_line() -> None:
    long = "conv2d(c * 4, k, stride=1, padding=(k - 1) // 2, dilation=1, groups=c, bias=false, padding_mode=\"zeros\")"
    out = format_text(f"network n:\n    input [3, 8, 8]\n    very_long_label_name: {long}  # why\n    relu\n")
    assert out == ("network n:\n    input [3, 8, 8]\n    very_long_label_name: conv2d(  # why\n"
                   "        c * 4, k, stride=1, padding=(k - 1) // 2, dilation=1, groups=c, bias=false, "
                   "padding_mode=\"zeros\"\n    )\n    relu\n")
    assert format_text(out) == out


def test_a_directive_wins_the_line_of_a_multi_line_statement() -> None:
    text = ("network n:\n"
            "    input [3, 8, 8]\n"
            "    conv2d(4,  # the channels\n"
            "           3)  # archc: ignore (why)\n")
    out = format_text(text)
    assert "    conv2d(4, 3)  # archc: ignore (why)\n" in out
    assert "    # the channels\n    conv2d(4, 3)" in out


def test_a_built_ast_takes_comments_from_a_map() -> None:
    """How the importer names the source class of each block: a CommentMap filled by hand."""
    s = _SPAN
    block = A.BlockDef(s, "Bottleneck", [A.Param(s, "c", None)],
                       [A.LayerStmt(s, "conv1", s, A.Pipeline(s, [A.PipeItem(s, None, None, A.Call(
                           s, A.Name(s, "conv2d"), [A.Name(s, "c"), A.Num(s, 1)], []))]))], s)
    net = A.NetworkDef(s, "net", [], [A.InputStmt(s, A.ListExpr(s, [A.Num(s, 3), A.Num(s, 8), A.Num(s, 8)])),
                                      A.LayerStmt(s, None, None, A.Pipeline(s, [A.PipeItem(s, None, None, A.Call(
                                          s, A.Name(s, "Bottleneck"), [A.Num(s, 4)], []))]))], s)
    spec = A.SpecFile("<built>", blocks={"Bottleneck": block}, networks={"net": net})
    comments = CommentMap()
    comments.of(block).leading.append("# torchvision.models.resnet.Bottleneck")
    comments.of(block.body[0]).trailing = "# 1x1"
    comments.of(net).leading += ["# imported", "", "# from torchvision"]
    comments.of(spec).leading.append("end")   # the printer adds the '#'
    assert comments.count() == 5
    assert print_spec(spec, comments) == (
        "# torchvision.models.resnet.Bottleneck\n"
        "block Bottleneck(c):\n"
        "    conv1: conv2d(c, 1)  # 1x1\n"
        "\n"
        "# imported\n"
        "\n"
        "# from torchvision\n"
        "network net:\n"
        "    input [3, 8, 8]\n"
        "    Bottleneck(4)\n"
        "\n"
        "# end\n")


DIRECTIVE_SPECS = sorted(p.name for p in (ROOT / "specs").glob("*.arch") if "# archc: ignore" in p.read_text())


def test_directives_still_silence_the_same_warnings(tmp_path: Path) -> None:
    """The formatted library specs check with the same diagnostics; without their directives they warn."""
    assert len(DIRECTIVE_SPECS) >= 4
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    for name in DIRECTIVE_SPECS:
        f = tmp_path / "specs" / name
        original = f.read_text(encoding="utf-8")

        def diags() -> list[tuple[str, str]]:
            return sorted((d.severity, d.message) for d in check_paths([str(f)])[0])
        before = diags()
        f.write_text(format_text(original, str(f)), encoding="utf-8")
        assert diags() == before, name
        f.write_text(original.replace("# archc: ignore", "# archc- ignore"), encoding="utf-8")
        assert len(diags()) > len(before), f"{name}: its directives silence nothing, the test proves nothing"
        f.write_text(original, encoding="utf-8")


# ---- the CLI -------------------------------------------------------------------------------------------
MESSY_VALID = "network n( k = 3 ):\n  input [3,16,16]   # the input\n  conv2d( 8,k,padding = k//2 ) -> relu\n"


def test_cli_rewrites_in_place_and_leaves_formatted_files_alone(tmp_path: Path) -> None:
    f = tmp_path / "a.arch"
    f.write_text(MESSY_VALID)
    r = run_archc("fmt", str(f))
    assert r.returncode == 0, r.stderr
    assert f.read_text() == format_text(MESSY_VALID) == (
        "network n(k=3):\n    input [3, 16, 16]  # the input\n    conv2d(8, k, padding=k // 2) -> relu\n")
    assert "reformatted" in r.stderr and "1 file reformatted" in r.stderr
    mtime = f.stat().st_mtime_ns
    r = run_archc("fmt", str(tmp_path))   # a directory: every .arch below
    assert r.returncode == 0 and "0 files reformatted, 1 file left unchanged" in r.stderr, r.stderr
    assert f.stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == ["a.arch"]   # no temporary file left


def test_cli_in_place_follows_a_symlink_and_keeps_the_mode(tmp_path: Path) -> None:
    real = tmp_path / "real.arch"
    real.write_text(MESSY_VALID)
    real.chmod(0o640)
    link = tmp_path / "link.arch"
    link.symlink_to(real)
    r = run_archc("fmt", str(link))
    assert r.returncode == 0, r.stderr
    assert link.is_symlink() and real.read_text() == format_text(MESSY_VALID)
    assert real.stat().st_mode & 0o777 == 0o640


def test_cli_check_and_diff_write_nothing(tmp_path: Path) -> None:
    f = tmp_path / "a.arch"
    g = tmp_path / "b.arch"
    f.write_text(MESSY_VALID)
    g.write_text(format_text(MESSY_VALID))
    r = run_archc("fmt", "--check", str(f), str(g))
    assert r.returncode == 1
    assert f"would reformat {f}" in r.stderr and str(g) not in r.stderr
    assert f.read_text() == MESSY_VALID
    assert run_archc("fmt", "--check", str(g)).returncode == 0
    r = run_archc("fmt", "--diff", str(f), str(g))
    assert r.returncode == 0 and f.read_text() == MESSY_VALID
    assert r.stdout.startswith(f"--- {f}\n+++ {f} (formatted)\n")
    assert "\n-  conv2d( 8,k,padding = k//2 ) -> relu\n" in r.stdout
    assert "\n+    conv2d(8, k, padding=k // 2) -> relu\n" in r.stdout
    assert str(g) not in r.stdout
    r = run_archc("fmt", "--diff", "--check", str(f))
    assert r.returncode == 1 and r.stdout.startswith("---")


def test_cli_stdin_to_stdout() -> None:
    r = subprocess.run([sys.executable, "-m", "archdsl", "fmt", "-"], input=MESSY_VALID, capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == format_text(MESSY_VALID) and r.stderr == ""
    r = subprocess.run([sys.executable, "-m", "archdsl", "fmt", "--check", "-"], input=MESSY_VALID,
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 1 and r.stdout == "" and "would reformat <stdin>" in r.stderr


def test_cli_syntax_error_is_located_and_nothing_is_written(tmp_path: Path) -> None:
    good = tmp_path / "good.arch"
    bad = tmp_path / "bad.arch"
    good.write_text(MESSY_VALID)
    bad_text = "network n:\n  input [3,8,8\n  conv2d( 4,3 )\n"
    bad.write_text(bad_text)
    r = run_archc("fmt", str(good), str(bad))
    assert r.returncode == 1
    assert f"{bad}:2:9: error: '[' is never closed" in r.stderr
    assert "      input [3,8,8\n            ^\n" in r.stderr and "hint:" in r.stderr
    assert "Traceback" not in r.stderr
    assert good.read_text() == MESSY_VALID and bad.read_text() == bad_text
    r = run_archc("fmt", str(tmp_path / "missing.arch"))
    assert r.returncode == 1 and "no such file or directory" in r.stderr


def test_the_docs_example_is_what_fmt_writes() -> None:
    text = (ROOT / "docs/fmt.md").read_text(encoding="utf-8")
    layout = text[text.index("## The layout"):]
    blocks = [m.group(1) for m in _FENCE.finditer(layout)][:2]
    assert format_text(blocks[0], "docs/fmt.md") == blocks[1]
    assert blocks[0] != blocks[1]


@pytest.mark.parametrize("word", sorted(__import__("archdsl.lang.parser", fromlist=["KEYWORDS"]).KEYWORDS))
def test_a_keyword_label_is_quoted_where_it_must_be(word: str) -> None:
    """A label spelled like a keyword prints bare only where it reads back as a label in every position
    (after a dedent, ``block`` starts a definition: it stays quoted)."""
    text = (f'network n:\n    "{word}": relu\n    y = "{word}": relu\n    z = y -> "{word}": relu\n'
            f'    "{word}":\n        relu\n    "{word}": add:\n        relu\n        "{word}": *[relu]\n'
            f'    "{word}": relu\n')
    spec = parse(Source(text, "t.arch"))
    out = print_spec(spec)
    assert ast_equal(parse(Source(out, "t.arch")), spec), out
    assert format_text(text) == out


def test_a_long_list_of_literals_fills_its_lines() -> None:
    """An imported buffer table (hundreds of numbers) fills lines up to the width rather than one value per
    line (SwinV2's coordinate tables made a 6,543-line spec, over the source-line limit); the text reads
    back to the same tree, and a list of calls still breaks one item per line."""
    values = ", ".join(f"{(-1) ** k * k / 7:.6f}" for k in range(300))
    text = (f"network n:\n    input [3, 8, 8]\n    t = buffer([300], persistent=false, values=[{values}])\n"
            "    conv2d(8, 3)\n")
    out = _roundtrip(text, "n.arch")
    lines = out.splitlines()
    body = [ln for ln in lines if re.fullmatch(r"\s+-?[0-9].*", ln)]
    assert 300 // 12 <= len(body) <= 300 // 8, len(body)        # about 10 per line, not 300 lines
    assert all(len(ln) <= WIDTH for ln in lines)
    calls = "[" + ", ".join(f"conv2d({k}, 3, padding=1, bias=false)" for k in range(1, 12)) + "]"
    wide = format_text(f"network m:\n    input [3, 8, 8]\n    {calls}\n", "m.arch")
    assert sum("conv2d(" in ln for ln in wide.splitlines()) == 11      # one call per line
