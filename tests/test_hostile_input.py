"""Hostile input to the front end (issue 11): caches, source budgets, paths, terminals.

Each case is what an attacker (or an unlucky user) can hand archc: a file planted in a cache
directory, a huge or deeply nested spec, a strange file name, escape sequences in a spec. Each asserts
the exact outcome: the message, the exit code, and that no traceback and no raw control character
reaches the terminal. Other hostile-input classes (injection into generated code, evaluation budgets,
deploy, checkpoints, names) have their own files.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import archdsl
from archdsl import ArchError
from archdsl.cachedir import cache_dir, check_private_dir, seal
from archdsl.cli import app
from archdsl.lang import astcache, parser
from archdsl.source import EXCERPT_WIDTH, Source, printable

ROOT = Path(__file__).resolve().parent.parent
H = "network n():\n    input [3, 8, 8]\n"
OK = H + "    c: conv2d(4, 3)\n"
# what a terminal would act on: C0 controls but tab and newline, DEL, C1 controls, bidi overrides
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def check(*args: str) -> tuple[int, str, str]:
    """``archc check ARGS`` in-process: (exit code, stdout, stderr); never a traceback."""
    res = CliRunner().invoke(app, ["check", *args])
    out = res.stdout + res.stderr
    assert "Traceback" not in out and "internal error" not in out, out
    assert not RAW_CONTROL.search(out), f"raw control character in the output: {out!r}"
    return res.exit_code, res.stdout, res.stderr


class _Plant:
    """A pickle that creates ``marker`` when it is unpickled: proof that a cache file ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


# ---------------------------------------------------------------------------------------------------
# caches

def _old_lark_cache_name(tmp: Path) -> str:
    """The file name the old parser (Lark ``cache=True``) read from the temp dir, made by Lark itself."""
    import tempfile

    from lark import Lark
    saved = tempfile.tempdir
    tempfile.tempdir = str(tmp)
    try:
        Lark(parser.grammar_path().read_text(encoding="utf-8"), parser="lalr", postlex=parser._ArchIndenter(),
             propagate_positions=True, maybe_placeholders=True, start="start", cache=True)
    finally:
        tempfile.tempdir = saved
    (made,) = [p.name for p in tmp.iterdir() if p.name.startswith(".lark_cache")]
    return made


def _old_ast_cache_key(text: str, path: str) -> str:
    """The key of the old pickled AST cache (``$ARCHDSL_CACHE_DIR/ast/<k[:2]>/<k>``)."""
    digest = hashlib.sha256(parser.grammar_path().read_bytes() + archdsl.__version__.encode()).hexdigest()
    h = hashlib.sha256(digest.encode())
    h.update(path.encode() + b"\0")
    h.update(text.encode())
    return h.hexdigest()


def test_planted_pickles_at_every_old_cache_location_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    payload = pickle.dumps(_Plant(marker))
    pickle.loads(payload)                              # the payload works: unpickling it makes the marker
    assert marker.exists()
    marker.unlink()
    scratch, tmp, home, shared = (tmp_path / d for d in ("scratch", "tmp", "home", "shared"))
    for d in (scratch, tmp, home, shared):
        d.mkdir()
    spec = tmp_path / "net.arch"
    spec.write_text(OK)
    (tmp / _old_lark_cache_name(scratch)).write_bytes(b"0" * 64 + b"\n" + payload + payload)
    for path_as_given in (str(spec), "net.arch"):
        key = _old_ast_cache_key(OK, path_as_given)
        for base in (shared, home / ".cache" / "archdsl"):   # $ARCHDSL_CACHE_DIR, and the old default
            entry = base / "ast" / key[:2] / key
            entry.parent.mkdir(parents=True, exist_ok=True)
            entry.write_bytes(payload)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARCHDSL_", "XDG_"))}
    for extra in ({"ARCHDSL_CACHE_DIR": str(shared)}, {}):      # a shared cache dir, then the defaults
        r = subprocess.run([sys.executable, "-m", "archdsl", "check", "net.arch"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120,
                           env={**env, "TMPDIR": str(tmp), "HOME": str(home), **extra})
        assert (r.returncode, r.stdout.split(" in ")[0], r.stderr) == (0, "ok: 1 network checked", "")
        assert not marker.exists(), "a planted cache file ran code"


def test_the_parser_is_built_without_lark_cache() -> None:
    assert parser._parser().options.cache is False


def test_cache_dir_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARCHDSL_NO_CACHE", raising=False)
    monkeypatch.setenv("ARCHDSL_CACHE_DIR", str(tmp_path / "explicit"))
    d = cache_dir("ast")
    assert d == tmp_path / "explicit" / "ast" and d.stat().st_mode & 0o777 == 0o700
    monkeypatch.delenv("ARCHDSL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert cache_dir("backends") == tmp_path / "xdg" / "archdsl" / "backends"
    monkeypatch.setenv("ARCHDSL_NO_CACHE", "1")
    assert cache_dir("ast") is None
    with pytest.raises(ValueError):
        cache_dir("../escape")


def test_a_cache_dir_others_can_write_or_do_not_own_is_never_used(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARCHDSL_NO_CACHE", raising=False)
    monkeypatch.setenv("ARCHDSL_CACHE_DIR", str(tmp_path / "c"))
    ast_dir = tmp_path / "c" / "ast"
    ast_dir.mkdir(parents=True)
    ast_dir.chmod(0o777)
    assert check_private_dir(ast_dir) == "it is writable by group or others (mode 777)"
    assert cache_dir("ast") is None
    astcache._MEMO.clear()
    src = Source(OK, "loose.arch")
    assert parser.parse(src).networks["n"].name == "n"            # parsing works, the cache is skipped
    assert list(ast_dir.iterdir()) == []
    ast_dir.chmod(0o700)
    real_uid = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: real_uid + 1)      # as if another user had created it
    assert check_private_dir(ast_dir) == f"it is owned by uid {real_uid}, not by the current user (uid {real_uid + 1})"
    assert cache_dir("ast") is None
    monkeypatch.undo()
    monkeypatch.delenv("ARCHDSL_NO_CACHE", raising=False)
    link = tmp_path / "link"
    link.symlink_to(ast_dir)
    assert check_private_dir(link) == "it is a symbolic link"
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("ARCHDSL_CACHE_DIR", str(blocker))      # unusable base: no cache, no crash
    assert cache_dir("ast") is None
    loose_parent = tmp_path / "loose"
    (loose_parent / "ast").mkdir(parents=True, mode=0o700)
    loose_parent.chmod(0o777)                                    # others could swap our dir for theirs
    assert check_private_dir(loose_parent / "ast").startswith("its parent is writable by group or others")


def test_a_planted_json_entry_is_only_ever_a_miss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARCHDSL_NO_CACHE", raising=False)
    monkeypatch.setenv("ARCHDSL_CACHE_DIR", str(tmp_path / "c"))
    astcache._MEMO.clear()
    src = Source(OK, "planted.arch")
    key = astcache.cache_key(src, parser._grammar_digest(), parser._bounds_salt(archdsl.Limits()))
    entry = cache_dir("ast") / key[:2] / key
    entry.parent.mkdir()
    for planted in (b'{"n": "SpecFile", "f": ["x", [], [], [{"n": "Popen", "f": []}]]}',
                    pickle.dumps(_Plant(tmp_path / "PWNED")), b"[" * 1_000_000, b"\xff\xfe"):
        entry.write_bytes(planted)
        astcache._MEMO.clear()
        spec = parser.parse(src)
        assert spec.networks["n"].body[1].label == "c"
    assert not (tmp_path / "PWNED").exists()


# ---------------------------------------------------------------------------------------------------
# budgets of source

def test_a_20000_line_spec_ends_fast_with_a_located_error(tmp_path: Path) -> None:
    f = tmp_path / "big.arch"
    f.write_text(H + "".join(f"    l{i}: conv2d(8, 3, padding=1)\n" for i in range(20_000)))
    t = time.process_time()                                       # CPU time: the machine may be shared
    code, _, err = check(str(f))
    assert time.process_time() - t < 2.0
    assert code == 1
    assert err.splitlines()[0] == f"{f}:7523:22: error: the file is longer than 262,144 bytes"
    short = tmp_path / "short.arch"                               # short lines: the line count stops it
    short.write_text(H + "    relu\n" * 20_000)
    t = time.process_time()
    code, _, err = check(str(short))
    assert time.process_time() - t < 2.0
    assert (code, err.splitlines()[0]) == (1, f"{short}:5001:1: error: the file has 20,002 lines, more than 5,000")


def test_tokens_are_budgeted_for_the_spec_and_its_imports_together(tmp_path: Path) -> None:
    many = "    x = [" + "\n".join("1+1+1+1+1+1+1+1+1+1," for _ in range(1600)) + "]\n"   # ~32,000 tokens
    f = tmp_path / "dense.arch"
    f.write_text(H + many)
    t = time.process_time()
    code, _, err = check(str(f))
    assert time.process_time() - t < 2.0
    assert code == 1 and re.match(rf"{re.escape(str(f))}:\d+:\d+: error: more than 30,000 tokens to parse$",
                                  err.splitlines()[0])
    # two files of ~1,000 tokens each: each is within a budget of 1,500, together they are not
    half = "    _x = [" + "\n".join("1+1+1+1+1+1+1+1+1+1," for _ in range(50)) + "]\n"
    (tmp_path / "a.arch").write_text("block A:\n" + half + "    relu\n")
    (tmp_path / "main.arch").write_text('import "a.arch"\n' + H + half + "    A\n")
    code, _, err = check("--limit", "max_source_tokens=1500", str(tmp_path / "a.arch"))
    assert code == 0
    code, _, err = check("--limit", "max_source_tokens=1500", str(tmp_path / "main.arch"))
    assert code == 1 and re.match(r".*a\.arch:\d+:\d+: error: more than 1,500 tokens to parse$", err.splitlines()[0])
    assert check("--limit", "max_source_tokens=3000", str(tmp_path / "main.arch"))[0] == 0


def test_the_excerpt_of_a_1mb_line_is_bounded(tmp_path: Path) -> None:
    f = tmp_path / "line.arch"
    f.write_text(H + '    x = "' + "a" * 1_000_000 + '" @\n')
    code, _, err = check(str(f))                                  # refused by size, located, excerpt bounded
    assert code == 1 and err.splitlines()[0] == f"{f}:3:262112: error: the file is longer than 262,144 bytes"
    assert len(err) < 3 * EXCERPT_WIDTH + 200
    code, _, err = check("--limit", "max_source_bytes=2000000", "--limit", "max_line_length=2000000", str(f))
    lines = err.splitlines()
    assert code == 1 and lines[0] == f"{f}:3:1000012: error: unexpected character '@'"
    assert lines[1] == "    ..." + "a" * (EXCERPT_WIDTH - 3) + '" @'     # the end of the line, cut in front
    assert lines[2] == " " * (len(lines[1]) - 1) + "^"                     # the caret still under the '@'
    assert len(err) < 3 * EXCERPT_WIDTH + 200


def test_a_long_line_is_cut_on_both_sides_of_the_caret() -> None:
    src = Source("x" * 500 + "@" + "y" * 500, "s.arch")
    shown, caret = archdsl.Diagnostic("m", archdsl.errors.Span(src, 1, 501)).format().splitlines()[1:3]
    assert shown.startswith("    ...x") and shown.endswith("y...") and len(shown) == 4 + 3 + EXCERPT_WIDTH + 3
    assert shown[caret.index("^")] == "@"


def test_number_literals_are_bounded(tmp_path: Path) -> None:
    f = tmp_path / "digits.arch"
    f.write_text(H + "    conv2d(" + "9" * 5000 + ", 1)\n")
    code, _, err = check(str(f))
    assert (code, err.splitlines()[0]) == (1, f"{f}:3:4001: error: line 3 has 5,015 characters, more than 4,000")
    f.write_text(H + "    conv2d(" + "9" * 1000 + ", 1)\n")
    code, _, err = check(str(f))
    assert (code, err.splitlines()[0]) == (1, f"{f}:3:12: error: number literal of 1,000 characters; the limit is 100")
    # even past Python's int-string limit (4,300 digits) when the limits are raised: an error, not a crash
    f.write_text(H + "    conv2d(" + "9" * 5000 + ", 1)\n")
    code, _, err = check("--limit", "max_line_length=9000", "--limit", "max_number_digits=9000", str(f))
    assert (code, err.splitlines()[0]) == (1, f"{f}:3:12: error: number literal too long to read")


def test_nesting_is_bounded(tmp_path: Path) -> None:
    f = tmp_path / "deep.arch"
    f.write_text(H + "    x = " + "[" * 70 + "]" * 70 + "\n")
    code, _, err = check(str(f))
    assert (code, err.splitlines()[0]) == (1, f"{f}:3:69: error: the expression nests too deeply")
    f.write_text("network n():\n" + "".join(" " * (i + 1) * 2 + "seq:\n" for i in range(40)) + " " * 82 + "relu\n")
    code, _, err = check(str(f))
    assert (code, err.splitlines()[0]) == (1, f"{f}:34:67: error: indented blocks nest more than 32 deep")
    # redundant parentheses add no depth
    assert len(archdsl.graph(H + "    n = " + "(" * 400 + "8" + ")" * 400 + "\n    conv2d(n, 1)\n")) == 2


def test_source_bounds_follow_limit_overrides(tmp_path: Path) -> None:
    f = tmp_path / "comments.arch"
    f.write_text(OK + "# a comment\n" * 5100)
    code, _, err = check(str(f))
    assert (code, err.splitlines()[0]) == (1, f"{f}:5001:1: error: the file has 5,103 lines, more than 5,000")
    assert check("--limit", "max_source_lines=6000", str(f))[0] == 0
    with pytest.raises(ArchError, match="more than 2 deep"):
        archdsl.graph("network n():\n  input [3, 8, 8]\n  a:\n    b:\n      c:\n        relu\n",
                      limits=archdsl.Limits(max_nesting=2))


# ---------------------------------------------------------------------------------------------------
# paths

def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    f = tmp_path / "bom.arch"
    f.write_bytes(b"\xef\xbb\xbf" + OK.encode())
    code, out, _ = check(str(f))
    assert code == 0 and out.startswith("ok: 1 network checked")
    assert archdsl.graph("\ufeff" + OK).total_params == archdsl.graph(OK).total_params


def test_a_nul_in_an_import_path_is_a_located_error(tmp_path: Path) -> None:
    f = tmp_path / "nul.arch"
    f.write_text('import "a\x00.arch"\n' + OK)
    code, _, err = check(str(f))
    assert code == 1
    assert err.splitlines()[:3] == [f"{f}:1:1: error: import path contains the control character '\\x00'",
                                    '    import "a\\x00.arch"', "    ^"]


def test_a_file_named_like_spec_text_is_read_as_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("#bad.arch", "network n.arch", "block b.arch", "import x.arch"):
        Path(name).write_text(OK)
        code, out, _ = check(name)
        assert code == 0 and out.startswith("ok: 1 network checked"), name
        assert archdsl.graph(name).address == f"{name}:n"
    assert archdsl.graph(OK).address == "<spec>:n"                    # text: it has a line break
    code, _, err = check("#missing.arch")
    assert (code, err.splitlines()[0]) == (1, "error: no such file or directory: '#missing.arch'")
    with pytest.raises(ArchError, match=re.escape("spec file 'network x():' does not exist")):
        archdsl.graph("network x():")                                # one line is never spec text


def test_a_missing_import_never_suggests_the_importing_file(tmp_path: Path) -> None:
    (tmp_path / "main.arch").write_text('import "mian.arch"\n' + OK)
    (tmp_path / "blocks.arch").write_text("block B:\n    relu\n")
    (tmp_path / "other.arch").write_text('import "block.arch"\n' + OK)
    code, _, err = check(str(tmp_path / "main.arch"))
    assert code == 1 and "imported file 'mian.arch' not found" in err and "hint" not in err
    code, _, err = check(str(tmp_path / "other.arch"))
    assert code == 1 and "  hint: did you mean 'blocks.arch'?" in err.splitlines()


def test_unreadable_inputs_are_one_line_errors(tmp_path: Path) -> None:
    f = tmp_path / "latin.arch"
    f.write_bytes(b"network \xe9():\n")
    code, _, err = check(str(f))
    assert (code, err.splitlines()[0]) == (1, f"error: '{f}' is not a UTF-8 text file (byte 9)")
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "pipe.arch"
        os.mkfifo(fifo)                                            # reading it would block forever
        with pytest.raises(ArchError) as e:
            archdsl.graph(str(fifo))
        assert e.value.format() == (f"error: '{fifo}' is a FIFO, not a regular file\n"
                                    "  hint: give a .arch file (a device, FIFO or socket is never read)")


def test_list_reports_broken_files_and_lists_the_rest(tmp_path: Path) -> None:
    (tmp_path / "good.arch").write_text(OK)
    (tmp_path / "#broken.arch").write_text("network x(:\n    relu\n")
    res = CliRunner().invoke(app, ["list", str(tmp_path)])
    assert res.exit_code == 1
    assert res.stdout.splitlines() == [f"{tmp_path}/#broken.arch\terror\t-", f"{tmp_path}/good.arch:n\t[3, 8, 8]\t-"]
    assert res.stderr.splitlines() == [f"{tmp_path}/#broken.arch:1:11: error: unexpected ':'"]
    res = CliRunner().invoke(app, ["list", str(tmp_path), "--json"])
    assert res.exit_code == 1 and '"name": null' in res.stdout and f'"spec": "{tmp_path}/good.arch:n"' in res.stdout


def test_list_never_truncates_addresses_when_piped(tmp_path: Path) -> None:
    deep = tmp_path / ("a_very_long_directory_name_" * 4)
    deep.mkdir()
    (deep / "net.arch").write_text(OK)
    res = CliRunner().invoke(app, ["list", str(tmp_path)])
    assert res.exit_code == 0 and res.stdout == f"{deep}/net.arch:n\t[3, 8, 8]\t-\n"


# ---------------------------------------------------------------------------------------------------
# terminals

def test_printable_escapes_every_terminal_control() -> None:
    assert printable("\x1b[31mred\x1b[0m") == "\\x1b[31mred\\x1b[0m"
    assert printable("\x1b]0;title\x07") == "\\x1b]0;title\\x07"
    assert printable("a\rb\x00c\x9bd\u202ee\tf") == "a\\x0db\\x00c\\x9bd\\u202ee\tf"
    assert printable("two\nlines") == "two\\x0alines" and printable("two\nlines", keep_newlines=True) == "two\nlines"
    assert printable("ünïcode ✓ 中文") == "ünïcode ✓ 中文"


@pytest.mark.parametrize("body, first_line", [
    ('    "\x1b[31mred": relu\n',
     'x.arch:3:5: error: a quoted label must be a dotted module path, got "\\x1b[31mred"'),
    ('    conv2d(4, 3, padding="\x1b]0;pwned\x07")\n',
     "x.arch:3:18: error: conv2d: 'padding' must be an integer, a pair, \"same\" or \"valid\", "
     'got string "\\x1b]0;pwned\\x07"'),
    ("    relu \x1b[2J\n", "x.arch:3:10: error: unexpected character '\\x1b'"),
    ("    relu\r    conv2d(4, 3)\n", None),
    ('    conv2d(4, 3, padding=":smile: [red]x[/red]")\n',               # no emoji codes, no rich markup
     "x.arch:3:18: error: conv2d: 'padding' must be an integer, a pair, \"same\" or \"valid\", "
     'got string ":smile: [red]x[/red]"'),
])
def test_escape_sequences_in_a_spec_are_never_echoed_raw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         body: str, first_line: str | None) -> None:
    monkeypatch.chdir(tmp_path)
    Path("x.arch").write_bytes((H + body).encode())
    code, out, err = check("x.arch")                               # check() asserts: no raw control character
    if first_line is None:
        assert code in (0, 1)
    else:
        assert (code, err.splitlines()[0]) == (1, first_line)


def test_escape_sequences_in_a_file_name_are_never_echoed_raw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    name = "ev\x1b[2Jil\x1b]0;t\x07.arch"
    Path(name).write_text(H + "    relu(\n")
    code, _, err = check(name)
    assert (code, err.splitlines()[0]) == (1, "ev\\x1b[2Jil\\x1b]0;t\\x07.arch:3:9: error: '(' is never closed")
    res = CliRunner().invoke(app, ["list", "."])
    assert res.exit_code == 1 and "\x1b" not in res.output and "ev\\x1b[2Jil" in res.output


_names = st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1,
                 max_size=40).map(lambda s: s + ".arch")
_texts = st.one_of(st.text(max_size=300),
                   st.lists(st.sampled_from([H, "    relu\n", "    conv2d(4, 3)\n", '    "\x1b[1m": relu\n',
                                             "\x1b]8;;http://x\x07", "\r", "\ufeff", "\u202e", "(", "[", "\t"]),
                            max_size=12).map("".join))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=_names, text=_texts)
def test_any_file_name_and_text_give_a_clean_result(tmp_path: Path, name: str, text: str) -> None:
    """Whatever the name and content: exit 0 or 1, no traceback, no raw control character, quickly."""
    d = tmp_path / "h"
    d.mkdir(exist_ok=True)
    try:
        f = d / name
        f.write_text(text, encoding="utf-8", errors="surrogatepass")
    except (OSError, UnicodeError):
        return                                                     # the OS refuses such a name: nothing to test
    t = time.process_time()
    code, _, _ = check(str(f))
    assert code in (0, 1) and time.process_time() - t < 2.0
    f.unlink()


def test_odd_line_separators_do_not_shift_the_excerpt(tmp_path: Path) -> None:
    """Lines end at \\n only, as the parser counts them: a form feed or U+2028 in a comment or string
    must not make the excerpt show another line than the one the location names."""
    f = tmp_path / "sep.arch"
    f.write_text(H + "    # a\x0cb\u2028c\x1cd\n" + '    _s = "x\u2029y"\n' + "    relu(\n", encoding="utf-8")
    code, _, err = check(str(f))
    assert code == 1
    assert err.splitlines()[:3] == [f"{f}:5:9: error: '(' is never closed", "        relu(", "            ^"]
    g = tmp_path / "crlf.arch"
    g.write_bytes((H + "    relu(\n").replace("\n", "\r\n").encode())
    code, _, err = check(str(g))
    assert code == 1 and err.splitlines()[:2] == [f"{g}:3:9: error: '(' is never closed", "        relu("]


def test_a_cached_ast_passes_the_same_depth_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry that decodes to a well-typed but too deep AST (planted, or cached under laxer limits)
    is refused like a fresh parse, before anything walks it recursively."""
    monkeypatch.delenv("ARCHDSL_NO_CACHE", raising=False)
    monkeypatch.setenv("ARCHDSL_CACHE_DIR", str(tmp_path / "c"))
    astcache._MEMO.clear()
    src = Source(OK, "deep.arch")
    deep = parser._parse_uncached(Source(H + "    x = " + "[" * 70 + "]" * 70 + "\n", "deep.arch"),
                                  archdsl.Limits(max_nesting=100))
    key = astcache.cache_key(src, parser._grammar_digest(), parser._bounds_salt(archdsl.Limits()))
    entry = cache_dir("ast") / key[:2] / key
    entry.parent.mkdir()
    entry.write_bytes(seal(cache_dir("ast"), key, astcache.encode(deep).encode()) or b"")  # authentic, not trusted
    with pytest.raises(ArchError) as e:
        parser.parse(src)
    assert e.value.errors[0].message == "the expression nests too deeply"
