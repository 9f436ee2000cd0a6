"""Fuzzing the front end: broken specs must fail with located ArchErrors, never crash or hang.

Two generators, both with hypothesis:

* mutations of every spec in ``specs/`` (delete / duplicate / swap lines, change numbers, insert
  random tokens, truncate), parsed as if they were the original file, so imports still resolve;
* random token streams from the language's vocabulary, bare or after a valid network header;
* hostile strings (quotes, triple quotes, line breaks, NUL, escapes, Unicode look-alikes, terminal
  escapes, very long text) as labels, network names, string parameters and ``--set`` values: whatever
  compiles must generate Python that ``ast.parse`` accepts.

Each case must either compile or raise :class:`ArchError` whose errors all point at a real
line:col of the file they name, within ``DEADLINE_MS`` of CPU time (wall-clock deadlines are flaky
on a busy machine). Sizes: the default run makes about 2,200 cases (60-90 s on a 2-core CI machine)
with fixed seeds. For a long run with fresh seeds set ``ARCHDSL_FUZZ_EXAMPLES`` (cases per test,
default 600/800/800), e.g. ``ARCHDSL_FUZZ_EXAMPLES=20000 pytest tests/test_fuzz.py``;
``ARCHDSL_FUZZ_DEADLINE_MS`` (default 2000) changes the per-case limit.
"""
from __future__ import annotations

import ast
import os
import re
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import ROOT

from archdsl.errors import ArchError
from archdsl.lang.loader import find_specs, load_program
from archdsl.lower import lower_network
from archdsl.passes.sizes import input_contract
from archdsl.source import Source

SPECS = [p for p in find_specs(ROOT / "specs")]
TEXTS = {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in SPECS}

_BASE = int(os.environ.get("ARCHDSL_FUZZ_EXAMPLES", "0"))
DEADLINE_MS = int(os.environ.get("ARCHDSL_FUZZ_DEADLINE_MS", "2000"))


def _settings(default: int) -> settings:
    # the time limit is checked on CPU time inside _check: wall-clock deadlines are flaky on busy CI
    return settings(max_examples=_BASE or default, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                    derandomize=not _BASE, database=None)


VOCAB = [
    # keywords and combinators
    "block", "network", "import", "from", "reference", "input", "output", "seq", "reparam", "add", "concat",
    "mul", "stack", "if", "elif", "else", "for", "in", "and", "or", "not", "true", "false", "none",
    # ops, builtins, names
    "conv2d", "linear", "batchnorm", "relu", "maxpool", "avgpool", "adaptive_avgpool", "flatten", "identity",
    "chunk", "split", "channel_shuffle", "dropout", "range", "len", "make_divisible", "x", "c", "B", "Block",
    "stride", "groups", "padding", "in.c", "in.h", "num_classes",
    # issue 14: spread branches, unpacking, number functions, token shapes
    "named", "zip", "enumerate", "log", "log2", "sqrt", "exp", "in.shape", "in.rank", "a, b", "*[",
    # sizes read at run time: reshape/view with in.h // k, -1, shapes of named tensors
    "reshape", "view", "permute", "in.w", "x.h", "x.shape", "upsample", "resize_as",
    # punctuation and operators
    "(", ")", "[", "]", ",", ":", "=", "->", ".", "+", "-", "*", "/", "//", "%", "**", "==", "!=", "<", ">=",
    # literals
    "0", "1", "2", "3", "7", "64", "-1", "0.5", "1e9", "99999999999", '"same"', '"x"', "'valid'",
    # layout and noise
    "\n", "\n    ", "\n        ", "\t", "#c", "\\\n", "$", "{", ";", "@", "'", '"', "é",
]
TOKENS = st.sampled_from(VOCAB)
HEADER = "network fuzz(num_classes=10):\n    input [3, 32, 32]\n"


def _check(text: str, path: str) -> None:
    """Compile every network in ``text`` (as the file ``path``); only located ArchErrors may escape."""
    src = Source(text, path)
    t0 = time.process_time()
    try:
        program = load_program(src)
        for net in list(program.root.networks.values())[:1]:  # one network: the cost is in expanding it
            g = lower_network(program, net)
            input_contract(g)   # the size contract of whatever lowered must be derivable without an error
    except ArchError as e:
        assert e.errors, "an ArchError must carry at least one error"
        for d in e.errors:
            assert d.span is not None, f"error without a location: {d.format()}"
            lines = d.span.source.lines
            assert 1 <= d.span.line <= max(1, len(lines)), d.format()
            assert 1 <= d.span.col <= len(d.span.source.line(d.span.line)) + 1, d.format()
            assert d.span.path in (path, *(str(p) for p in SPECS)) or Path(d.span.path).exists(), d.format()
            d.format()  # rendering the snippet must not fail either
    finally:
        spent = time.process_time() - t0
        assert spent < DEADLINE_MS / 1000, f"took {spent:.2f} s of CPU (limit {DEADLINE_MS} ms)"


_NUMBER = re.compile(r"\d+(\.\d+)?")


@st.composite
def mutated_spec(draw: st.DrawFn) -> tuple[str, str]:
    path = draw(st.sampled_from(sorted(TEXTS)))
    lines = TEXTS[path].split("\n")
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "duplicate", "swap", "number", "insert", "truncate", "indent"]))
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        if kind == "delete" and len(lines) > 1:
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "swap":
            j = draw(st.integers(0, max(0, len(lines) - 1)))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "number":
            nums = list(_NUMBER.finditer(lines[i]))
            if nums:
                m = draw(st.sampled_from(nums))
                new = draw(st.sampled_from(["0", "-1", "1", "3", "1000000", "99999999999", "0.5", "2 ** 40",
                                            "[1, 2]", '"a"', "none"]))
                lines[i] = lines[i][: m.start()] + new + lines[i][m.end():]
        elif kind == "insert":
            pos = draw(st.integers(0, len(lines[i])))
            tok = draw(TOKENS)
            lines[i] = lines[i][:pos] + " " + tok + " " + lines[i][pos:]
        elif kind == "truncate":
            text = "\n".join(lines)
            cut = draw(st.integers(0, len(text)))
            lines = text[:cut].split("\n")
        elif kind == "indent":
            lines[i] = draw(st.sampled_from(["  ", "    ", "\t", ""])) + lines[i].lstrip()
    return path, "\n".join(lines)


@pytest.mark.xdist_group("fuzz")
@_settings(600)
@given(mutated_spec())
def test_mutated_specs_fail_cleanly(case: tuple[str, str]) -> None:
    path, text = case
    _check(text, path)


@pytest.mark.xdist_group("fuzz")
@_settings(800)
@given(st.lists(TOKENS, max_size=40), st.booleans())
def test_random_token_streams_fail_cleanly(tokens: list[str], with_header: bool) -> None:
    text = (HEADER if with_header else "") + "    " + " ".join(tokens)
    _check(text, "fuzz.arch")


@pytest.mark.xdist_group("fuzz")
@_settings(800)
@given(st.lists(TOKENS, min_size=1, max_size=12).map(" ".join),
       st.sampled_from(["    conv2d({})", "    {}", "    y = x -> {}", "    add:\n        {}\n        identity",
                        "    relu * ({})", "    [relu for i in {}]", "    if {}:\n        relu",
                        "    add:\n        *[{}]\n        identity", "    add:\n        b: *{}",
                        "    conv2d(sum([a * b for a, b in {}]), 1)", "    reshape([{}])",
                        "    reshape([in.c, in.h // {}, -1])", "    y = x -> reshape([in.c * {}, -1])"]))
def test_random_expressions_in_a_network_fail_cleanly(expr: str, template: str) -> None:
    _check(HEADER + template.format(expr) + "\n", "fuzz.arch")


def test_fuzz_corpus_is_not_empty() -> None:
    assert len(TEXTS) >= 3


# ---------------------------------------------------------------------------------------------------
# Hostile strings (issue 11): quotes, triple quotes, line breaks, NUL, escapes, Unicode look-alikes,
# terminal escapes and very long text, used wherever a spec or a user puts a name or a string: labels
# (bare, quoted and computed), network names, string parameters and --set values. Every case must end in
# success or a located ArchError (a --set error is a one-line error without a location), never another
# exception; and whatever compiles must generate Python that parses.

HOSTILE_PIECES = ['"', "'", '"""', "'''", "\n", "\r", "\r\n", "\x00", "\x1b[31m", "\x07", "\\", "\\n", "\\x00",
                  "\\u0000", "#", "\t", " ", ".", ":", "(", ")", "{", "}", "%s", "é", "\ufb01", "\u202e", "\ufeff",
                  "\U0001d523", "\U0010ffff", "__", "_", "0", "a", "x", "forward", "self", "none_", "f", "in",
                  "import os", "__import__('os')", "conv2d(8, 3)"]
HOSTILE = st.one_of(
    st.lists(st.sampled_from(HOSTILE_PIECES), min_size=1, max_size=10).map("".join),
    st.text(min_size=1, max_size=20),
    st.sampled_from(HOSTILE_PIECES).map(lambda s: s * 3000),   # very long
)
_BODY = "    input [3, 8, 8]\n    conv2d(4, 3)\n"


def _hostile_case(text: str, params: dict[str, object] | None = None) -> None:
    """``text`` (with ``params``) compiles and generates parseable Python, or fails with a located error."""
    from archdsl.pipeline import compile_graph, generate_source
    t0 = time.process_time()
    try:
        g = compile_graph(text, params)
    except ArchError as e:
        assert e.errors, "an ArchError must carry at least one error"
        for d in e.errors:
            assert d.span is not None, f"error without a location: {d.format()}"
            assert 1 <= d.span.line <= max(1, len(d.span.source.lines)), d.format()
            d.format()
        return
    finally:
        assert time.process_time() - t0 < DEADLINE_MS / 1000
    ast.parse(generate_source(g))


def _arch_string(s: str) -> str:
    return '"' + s + '"'


@pytest.mark.xdist_group("fuzz")
@_settings(300)
@given(HOSTILE, st.sampled_from(["bare", "quoted", "named", "fused"]))
def test_hostile_labels_fail_cleanly(s: str, where: str) -> None:
    line = {"bare": f"    {s}: conv2d(4, 1)\n", "quoted": f"    {_arch_string(s)}: conv2d(4, 1)\n",
            "named": f"    named({_arch_string(s)}, conv2d(4, 1))\n",
            "fused": f"    reparam add(fused={_arch_string(s)}):\n        conv2d(4, 3, padding=1)\n"
                     "        conv2d(4, 1)\n"}[where]
    _hostile_case("network n():\n" + _BODY + line)


@pytest.mark.xdist_group("fuzz")
@_settings(200)
@given(HOSTILE)
def test_hostile_network_names_fail_cleanly(s: str) -> None:
    _hostile_case(f"network {s}():\n" + _BODY)


@pytest.mark.xdist_group("fuzz")
@_settings(300)
@given(HOSTILE, st.booleans())
def test_hostile_string_parameters_fail_cleanly(s: str, as_label: bool) -> None:
    use = "    named(p, relu)\n" if as_label else ""
    _hostile_case(f"network n(p={_arch_string(s)}):\n" + _BODY + use)


@pytest.mark.xdist_group("fuzz")
@_settings(300)
@given(HOSTILE, st.booleans())
def test_hostile_set_values_fail_cleanly(s: str, as_label: bool) -> None:
    from archdsl.pipeline import parse_set
    try:
        params = parse_set([f"p={s}"])
    except ArchError as e:   # a --set error is one clean line, without a location
        assert len(e.errors) == 1 and e.errors[0].message.startswith("--set")
        assert "\n" not in e.errors[0].message and "\x1b" not in e.errors[0].message
        return
    use = "    named(p, relu)\n" if as_label else ""
    _hostile_case('network n(p="x"):\n' + _BODY + use, params)
