"""The error table: bad specs, each with the exact first diagnostic line, checked in-process and via the CLI.

Each case is a spec (or a small tree of files) and the first line ``archc check`` must print for it:
``file:line:col: error: message``. The real CLI is run on every case too (one process for the whole
table, so the suite stays fast): exit code 1, no traceback, the message present. Warnings, resource
limits, import safety and atomic outputs are tested below the table.
"""
from __future__ import annotations

import ast
import os
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import ROOT, run_archc

from archdsl import Limits
from archdsl.cli import app
from archdsl.errors import ArchError, Diagnostic
from archdsl.pipeline import check_paths, compile_graph

H = "network net():\n    input [3, 32, 32]\n"

CASES: list[tuple[str, str, str]] = [
    ('unclosed_paren', H + "    conv2d(16, 3\n",
     "3:11: error: '(' is never closed"),
    ('unmatched_paren', H + "    conv2d(16, 3))\n",
     "3:18: error: unmatched ')'"),
    ('wrong_bracket', H + "    conv2d(16, 3]\n",
     "3:17: error: unexpected ']'"),
    ('missing_colon', 'block B(c)\n    relu\n',
     '1:11: error: unexpected end of line'),
    ('unexpected_indent', H + "    relu\n        relu\n",
     '4:9: error: unexpected indent'),
    ('bad_dedent', H + "    add:\n        relu\n      relu\n",
     '5:1: error: unindent does not match any outer indentation level'),
    ('bad_char', H + "    conv2d(16, 3) $\n",
     "3:19: error: unexpected character '$'"),
    ('braces', 'network net() {\n    input [3, 32, 32]\n}\n',
     "1:15: error: unexpected character '{'"),
    ('unterminated_string', H + '    conv2d(16, 3, padding="same)\n',
     '3:27: error: unexpected character \'"\''),
    ('positional_after_kw', H + "    conv2d(16, kernel_size=3, 1)\n",
     '3:31: error: positional argument after a keyword argument'),
    ('keyword_as_value', H + "    x = if\n",
     "3:9: error: 'if' is a keyword, not a value"),
    ('defined_twice', 'block B():\n    relu\nblock B():\n    relu\nnetwork net():\n    input [3, 32, 32]\n',
     "3:7: error: 'B' is defined twice in this file"),
    ('eof_in_header', 'network net(',
     '1:13: error: unexpected end of file'),
    ('unknown_op', H + "    cnv2d(16, 3)\n",
     "3:5: error: unknown name 'cnv2d'"),
    ('unknown_block', 'block Bottleneck(c):\n    conv2d(c, 1)\nnetwork net():\n    input [3, 32, 32]\n    Botleneck(8)\n',
     "5:5: error: unknown name 'Botleneck'"),
    ('unknown_kwarg', H + "    conv2d(16, 3, strid=2)\n",
     "3:19: error: conv2d has no argument 'strid'"),
    ('unknown_block_param', 'block B(c, stride=1):\n    conv2d(c, 3, stride=stride)\nnetwork net():\n    input [3, 32, 32]\n    B(8, strde=2)\n',
     "5:10: error: block B has no parameter 'strde'"),
    ('python_true', H + "    conv2d(16, 3, bias=True)\n",
     "3:24: error: unknown name 'True'"),
    ('unknown_name_expr', H + "    conv2d(widht * 2, 3)\n",
     "3:12: error: unknown name 'widht'"),
    ('bad_attr', 'block B():\n    conv2d(in.chan, 1)\nnetwork net():\n    input [3, 32, 32]\n    B()\n',
     "2:12: error: a shape has no attribute 'chan'"),
    ('reassign_constant', H + "    true = 3\n",
     "3:5: error: 'true' is a constant and cannot be reassigned"),
    ('string_for_int', H + '    conv2d("64", 3)\n',
     '3:12: error: conv2d: \'out_channels\' must be an integer, got string "64"'),
    ('int_for_bool', H + "    conv2d(16, 3, bias=1)\n",
     "3:19: error: conv2d: 'bias' must be true or false, got int 1"),
    ('float_channels', H + "    conv2d(16.5, 3)\n",
     "3:12: error: conv2d: 'out_channels' must be an integer, got float 16.5"),
    ('too_many_args', H + '    conv2d(16, 3, 1, 1, 1, 1, true, "zeros", 9)\n',
     '3:46: error: conv2d takes 8 arguments, got 9'),
    ('missing_arg', H + "    conv2d(16)\n",
     "3:5: error: conv2d needs 'kernel_size'"),
    ('kwarg_twice', H + "    conv2d(16, 3, stride=2, stride=1)\n",
     "3:29: error: argument 'stride' given twice"),
    ('positional_and_kw', H + "    conv2d(16, 3, kernel_size=5)\n",
     "3:19: error: conv2d got 'kernel_size' twice (positionally and by keyword)"),
    ('bad_padding', H + '    conv2d(16, 3, padding="full")\n',
     '3:19: error: conv2d: \'padding\' must be an integer, a pair, "same" or "valid", got string "full"'),
    ('bad_choice', H + '    conv2d(16, 3, padding_mode="mirror")\n',
     '3:19: error: conv2d: \'padding_mode\' must be one of "zeros", "reflect", "replicate", "circular", got "mirror"'),
    ('act_with_args', H + "    relu(3)\n",
     '3:10: error: relu takes 0 arguments, got 1'),
    ('block_too_many_args', 'block B(c):\n    conv2d(c, 1)\nnetwork net():\n    input [3, 32, 32]\n    B(8, 2)\n',
     '5:10: error: block B takes 1 argument, got 2'),
    ('block_missing_param', 'block B(c, k):\n    conv2d(c, k)\nnetwork net():\n    input [3, 32, 32]\n    B(8)\n',
     "5:5: error: block B needs 'k'"),
    ('layer_called_twice', H + "    conv2d(16, 3)(2)\n",
     '3:5: error: conv2d(16, 3) already has its arguments'),
    ('number_as_layer', H + "    16\n",
     '3:5: error: expected a layer, got int 16'),
    ('add_channels', H + "    add:\n        conv2d(16, 1)\n        conv2d(8, 1)\n",
     '3:5: error: add: shapes [16, 32, 32], [8, 32, 32] do not match in C (16 vs 8)'),
    ('concat_spatial', H + "    concat:\n        conv2d(16, 1)\n        conv2d(8, 1, stride=2)\n",
     '3:5: error: concat: shapes [16, 32, 32], [8, 16, 16] differ outside dim 1'),
    ('groups_in', H + "    conv2d(16, 3, groups=2)\n",
     '3:19: error: conv2d: groups=2 does not divide the 3 input channels'),
    ('groups_out', H + "    conv2d(15, 1)\n    conv2d(16, 3, groups=3)\n",
     '4:19: error: conv2d: groups=3 does not divide out_channels=16'),
    ('kernel_too_big', H + "    conv2d(16, 7, stride=4)\n    conv2d(16, 11)\n",
     '4:16: error: conv2d: kernel 11x11 (dilation 1x1) is larger than the padded input 7x7'),
    ('pool_too_big', H + "    maxpool(2) * 5\n    maxpool(2)\n",
     '4:13: error: maxpool: pooling window 2x2 is larger than the padded input 1x1'),
    ('zero_channels', H + "    conv2d(0, 3)\n",
     '3:12: error: conv2d: out_channels must be positive, got 0'),
    ('negative_stride', H + "    conv2d(8, 3, stride=-1)\n",
     '3:18: error: conv2d: stride must be positive, got -1'),
    ('conv_on_vector', H + "    flatten\n    conv2d(8, 3)\n",
     '4:5: error: conv2d expects a feature map [C, H, W], got [3072]'),
    ('same_stride2', H + '    conv2d(8, 3, stride=2, padding="same")\n',
     "3:28: error: conv2d: padding='same' needs stride 1"),
    ('pool_padding', H + "    maxpool(3, padding=2)\n",
     '3:16: error: maxpool: padding 2x2 is more than half the kernel 3x3'),
    ('dropout_p', H + "    dropout(1.5)\n",
     '3:13: error: dropout probability must be between 0 and 1, got 1.5'),
    ('chunk_uneven', H + "    a, b = x -> chunk(2)\n",
     '3:17: error: chunk: 3 cannot be split into 2 equal parts'),
    ('split_sum', H + "    a, b = x -> split([1, 1])\n",
     '3:17: error: split: sizes [1, 1] must be positive and add up to 3'),
    ('names_parts', H + "    a, b = x -> chunk(3)\n",
     '3:5: error: 2 names but the value has 3 parts'),
    ('huge_channels', H + "    conv2d(2000000, 1)\n",
     '3:5: error: conv2d: output shape [2000000, 32, 32] exceeds the size limit 1,048,576'),
    ('ends_with_many', H + "    chunk(3)\n",
     "1:9: error: network 'net' ends with 3 tensors, not one"),
    ('no_input', 'network net():\n    conv2d(8, 3)\n',
     "2:5: error: network 'net' must start with its input shape"),
    ('input_rank', 'network net():\n    input [2, 1, 3, 32, 32]\n',
     '2:11: error: input shape must be [C, H, W], [C, T, H, W] (video or volume), [N, C] (tokens) or [F] (batch '
     'left out), got 5 dimensions'),
    ('input_zero', 'network net():\n    input [3, 0, 32]\n',
     '2:11: error: input shape [3, 0, 32] has a non-positive size'),
    ('input_scalar', 'network net():\n    input 224\n',
     '2:11: error: input shape must be a list of integers like [3, 224, 224], got 224'),
    ('input_twice', H + "    input [3, 32, 32]\n",
     "3:5: error: 'input' may only appear once, as the first line of a network"),
    ('param_no_default', 'network net(num_classes):\n    input [3, 32, 32]\n',
     "1:13: error: network parameter 'num_classes' has no default and was not given"),
    ('duplicate_label', H + "    a: conv2d(8, 1)\n    a: conv2d(8, 1)\n",
     "4:5: error: two layers would be named 'a'"),
    ('recursive_block', 'block B(c):\n    conv2d(c, 1)\n    B(c)\nnetwork net():\n    input [3, 32, 32]\n    B(8)\n',
     "3:5: error: blocks nest more than 64 deep (is 'B' recursive?)"),
    ('mutual_recursion', 'block A(c):\n    B(c)\nblock B(c):\n    A(c)\nnetwork net():\n    input [3, 32, 32]\n    A(8)\n',
     "4:5: error: blocks nest more than 64 deep (is 'A' recursive?)"),
    ('div_zero', H + "    k = 0\n    conv2d(8, 3 // k)\n",
     '4:17: error: division by zero'),
    ('index_range', H + "    ch = [8, 16]\n    conv2d(ch[2], 3)\n",
     '4:15: error: index 2 is out of range for a list of 2'),
    ('condition_type', H + '    if "yes":\n        relu\n',
     '3:8: error: a condition must be true or false, got string "yes"'),
    ('compare_types', H + "    if relu < 3:\n        relu\n",
     '3:8: error: cannot compare layer relu < int'),
    ('loop_over_int', H + "    [relu for i in 3]\n",
     '3:20: error: can only loop over a list or range(...), got int'),
    ('add_str_int', H + '    conv2d("a" + 1, 3)\n',
     "3:16: error: cannot apply '+' to string and int"),
    ('repeat_limit', H + "    relu * 100000\n",
     '3:5: error: repetition count 100,000 exceeds the limit 10,000'),
    ('range_limit', H + "    [relu for i in range(10 ** 9)]\n",
     '3:20: error: range(...) would make 1,000,000,000 items, more than the limit 10,000'),
    ('output_not_tensor', H + "    k = 3\n    output k\n",
     "4:12: error: output 'k' is not a named tensor"),
    ('param_hides_op_call', 'block B(c, dropout=0.1):\n    dropout(dropout)\nnetwork net():\n    input [3, 32, 32]\n'
     '    B(4)\n', "2:5: error: float is not callable"),
    ('param_hides_op', 'network net(relu=1):\n    input [3, 32, 32]\n    relu\n',
     "3:5: error: expected a layer, got int 1"),
]

IMPORT_CASES: list[tuple[str, dict[str, str], str]] = [
    ('import_missing', {'main.arch': 'import "blokcs.arch"\nnetwork net():\n    input [3, 32, 32]\n', 'blocks.arch': 'block B():\n    relu\n'},
     "main.arch:1:1: error: imported file 'blokcs.arch' not found"),
    ('import_outside', {'main.arch': 'import "../other.arch"\nnetwork net():\n    input [3, 32, 32]\n'},
     "main.arch:1:1: error: import '../other.arch' leaves the spec's directory"),
    ('import_absolute', {'main.arch': 'import "/etc/blocks.arch"\nnetwork net():\n    input [3, 32, 32]\n'},
     "main.arch:1:1: error: absolute import path '/etc/blocks.arch' is not allowed"),
    ('import_not_arch', {'main.arch': 'import "blocks.py"\nnetwork net():\n    input [3, 32, 32]\n'},
     "main.arch:1:1: error: can only import .arch files, not 'blocks.py'"),
    ('import_cycle', {'main.arch': 'import "a.arch"\nnetwork net():\n    input [3, 32, 32]\n', 'a.arch': 'import "b.arch"\nblock A():\n    relu\n', 'b.arch': 'import "a.arch"\nblock B():\n    relu\n'},
     'b.arch:1:1: error: import cycle: a.arch -> b.arch -> a.arch'),
    ('from_import_missing', {'main.arch': 'from "blocks.arch" import Bottlenek\nnetwork net():\n    input [3, 32, 32]\n', 'blocks.arch': 'block Bottleneck(c):\n    conv2d(c, 1)\n'},
     "main.arch:1:27: error: 'blocks.arch' defines no block 'Bottlenek'"),
    ('import_syntax_error', {'main.arch': 'import "blocks.arch"\nnetwork net():\n    input [3, 32, 32]\n', 'blocks.arch': 'block B(:\n    relu\n'},
     "blocks.arch:1:9: error: unexpected ':'"),
]


def _write(base: Path, files: dict[str, str]) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (base / name).write_text(text, encoding="utf-8")
    return base / "main.arch"


def _first_error(diags: list[Diagnostic], base: Path) -> str:
    """The first error's first line, with the temporary directory taken off the path."""
    errors = [d for d in diags if d.severity == "error"]
    assert errors, "expected an error, got none"
    line = errors[0].format().splitlines()[0]
    for prefix in (str(base.resolve()) + os.sep, str(base) + os.sep):
        line = line.replace(prefix, "")
    return line


def _check_located(diags: list[Diagnostic], base: Path) -> None:
    """Every error points at a real line and column of a real file."""
    for d in diags:
        if d.severity != "error" or d.span is None:
            continue
        text = Path(d.span.path).read_text(encoding="utf-8") if Path(d.span.path).exists() else d.span.source.text
        lines = text.splitlines()
        assert 1 <= d.span.line <= len(lines) + 1, d.format()
        assert 1 <= d.span.col <= len(d.span.source.line(d.span.line)) + 1, d.format()


ALL_CASES = [(cid, {"main.arch": text}, "main.arch:" + exp) for cid, text, exp in CASES] + IMPORT_CASES


def test_table_is_big_enough() -> None:
    assert len(ALL_CASES) >= 40
    assert len({cid for cid, _, _ in ALL_CASES}) == len(ALL_CASES)


@pytest.mark.parametrize("cid,files,expected", ALL_CASES, ids=[c[0] for c in ALL_CASES])
def test_error_table(tmp_path: Path, cid: str, files: dict[str, str], expected: str) -> None:
    base = tmp_path / "proj"
    main = _write(base, files)
    diags, _ = check_paths([str(main)])
    assert _first_error(diags, base) == expected
    _check_located(diags, base)


def test_cli_on_every_case(tmp_path: Path) -> None:
    """The real CLI, one process over the whole table: exit 1, no traceback, every message printed."""
    mains = []
    for cid, files, _ in ALL_CASES:
        mains.append(str(_write(tmp_path / cid / "proj", files)))
    r = run_archc("check", *mains, cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 1
    assert "Traceback" not in out
    for cid, files, expected in ALL_CASES:
        where, _, message = expected.partition(": error: ")
        assert f"{cid}/proj/{where}: error: {message}" in out, cid


@pytest.mark.parametrize("cid,files,expected", ALL_CASES[::6], ids=[c[0] for c in ALL_CASES[::6]])
def test_cli_exit_code_per_case(tmp_path: Path, cid: str, files: dict[str, str], expected: str) -> None:
    """One case at a time through the typer app (in-process): exit code 1 and the message."""
    main = _write(tmp_path / "proj", files)
    res = CliRunner().invoke(app, ["check", str(main)])
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    assert expected.partition(": error: ")[2] in res.output


def test_three_independent_errors_are_all_reported(tmp_path: Path) -> None:
    main = _write(tmp_path, {"main.arch": H + "    conv2d(16, 3, strid=2)\n    relu\n"
                                          "    conv2d(8, 3, bias=1)\n    maxpool(2)\n    cnv2d(4, 1)\n"})
    diags, _ = check_paths([str(main)])
    errors = [d for d in diags if d.severity == "error"]
    assert [(d.span.line, d.span.col) for d in errors] == [(3, 19), (5, 18), (7, 5)]
    r = run_archc("check", str(main), cwd=tmp_path)
    assert r.returncode == 1 and "3 errors generated." in r.stderr and "Traceback" not in r.stderr


def test_syntax_errors_on_several_lines_are_all_reported() -> None:
    with pytest.raises(ArchError) as ei:
        compile_graph(H + "    conv2d(16, 3 +)\n    relu\n    maxpool(2 2)\n")
    assert [(d.span.line, d.span.col) for d in ei.value.errors] == [(3, 19), (5, 15)]


# ---------------------------------------------------------------------------------------------------
# warnings

def _warnings(text: str) -> list[str]:
    return [d.format().splitlines()[0] for d in compile_graph(text).warnings]


def test_warning_unused_name() -> None:
    assert _warnings(H + "    y = x -> relu\n    relu\n") == [
        "<spec>:3:5: warning: 'y' is assigned but never used"]
    # a name read only in a branch that is not taken is still used by the block
    assert _warnings("block B(s):\n    w = 8\n    if s == 2:\n        conv2d(w, 1)\n" + H + "    B(1)\n") == []
    assert _warnings(H + "    _spare = 3\n") == []


def test_warning_dead_layer() -> None:
    text = H + "    a = x -> conv2d(8, 3, padding=1)\n    conv2d(4, 1)\n    output a\n"
    assert _warnings(text) == ["<spec>:4:5: warning: the output of conv2d '1' is never used"]


def test_warning_dropped_pixels() -> None:
    assert _warnings("network net():\n    input [3, 7, 7]\n    maxpool(2)\n") == [
        "<spec>:3:5: warning: maxpool: the last 1 row and column of the 7x7 input are never read "
        "((7 + 2*0 - 2) % 2 = 1)"]
    # stride larger than the kernel skips pixels by design; padding that is skipped loses nothing
    assert _warnings("network net():\n    input [3, 7, 7]\n    conv2d(8, 1, stride=2)\n") == []
    assert _warnings("network net():\n    input [3, 224, 224]\n    conv2d(8, 7, stride=2, padding=3)\n") == []
    assert _warnings("network net():\n    input [3, 7, 7]\n    maxpool(2, ceil_mode=true)\n") == []


def test_warning_linear_on_feature_map() -> None:
    assert _warnings(H + "    conv2d(8, 3)\n    linear(10)\n") == [
        "<spec>:4:5: warning: linear on the feature map [8, 30, 30] acts on its last dimension (width)"]


def test_warning_can_be_silenced_on_its_line() -> None:
    assert _warnings("network net():\n    input [3, 7, 7]\n    maxpool(2)   # archc: ignore\n") == []


def test_no_warnings_for_a_clean_spec() -> None:
    assert _warnings("specs/resnet.arch:resnet50") == []


def test_warnings_do_not_fail_check_unless_strict(tmp_path: Path) -> None:
    main = _write(tmp_path, {"main.arch": H + "    y = x -> relu\n    relu\n"})
    runner = CliRunner()
    ok = runner.invoke(app, ["check", str(main)])
    assert ok.exit_code == 0 and "warning: 'y' is assigned but never used" in ok.output
    for flags in (["--strict"], ["-W", "error"]):
        res = runner.invoke(app, ["check", *flags, str(main)])
        assert res.exit_code == 1, flags
        assert "error: 'y' is assigned but never used [-W error]" in res.output
    bad = runner.invoke(app, ["check", "-W", "all", str(main)])
    assert bad.exit_code == 1 and "-W expects 'error', got 'all'" in bad.output


# ---------------------------------------------------------------------------------------------------
# resource limits: each runaway spec stops with a clear error, quickly, before any weight exists

RUNAWAY = {
    "max_repeat": (H + "    relu * 1000000000\n", "repetition count 1,000,000,000 exceeds the limit 10,000"),
    "max_depth": ("block B(c):\n    B(c)\n" + H + "    B(1)\n", "blocks nest more than 64 deep"),
    "max_nodes": ("block B():\n    conv2d(8, 1) * 10000\nnetwork net():\n    input [3, 8, 8]\n    B() * 10000\n",
                  "the network expands to more than 10,000 layers"),
    "nested_repeat": (H + "    [relu * 10000] * 10000\n", "the network expands to more than 10,000 layers"),
    "max_channels": (H + "    conv2d(1048576, 1)\n    conv2d(1048576, 1)\n",
                     "the network exceeds 20,000,000,000 parameters"),
    "max_channels_shape": (H + "    conv2d(4194304, 1)\n", "exceeds the size limit 1,048,576"),
    "max_steps": (H + "    q = [i for i in range(9000) for j in range(9000) if false]\n",
                  "the spec takes more than 500,000 evaluation steps to expand"),
    "range": (H + "    n = len(range(10 ** 12))\n", "range(...) would make 1,000,000,000,000 items"),
    "power": (H + "    n = 10 ** 100000\n", "exponent too large"),
}


@pytest.mark.parametrize("src", [
    'block B(c, dropout=0.1):\n    dropout(dropout)\nnetwork net():\n    input [3, 32, 32]\n    B(4)\n',
    'network net(relu=1):\n    input [3, 32, 32]\n    relu\n',
    'block B(c):\n    relu = c * 2\n    conv2d(relu, 1)\n    relu\nnetwork net():\n    input [3, 32, 32]\n    B(4)\n'])
def test_parameter_hiding_an_op_says_so(src: str) -> None:
    with pytest.raises(ArchError) as ei:
        compile_graph(src)
    hint = ei.value.errors[0].hint or ""
    assert "is a parameter or named value of this block that hides the op" in hint and "rename it" in hint


@pytest.mark.parametrize("name", list(RUNAWAY))
def test_runaway_specs_stop_early(name: str) -> None:
    text, message = RUNAWAY[name]
    t = time.process_time()
    with pytest.raises(ArchError) as ei:
        compile_graph(text)
    # CPU time, with a margin: wall time on a shared CI machine says little (bench/limits.py has figures)
    assert time.process_time() - t < 4
    assert message in ei.value.errors[0].message
    assert ei.value.errors[0].hint


def test_import_cycle_stops(tmp_path: Path) -> None:
    main = _write(tmp_path, {"main.arch": 'import "main.arch"\n' + H + "    relu\n"})
    diags, _ = check_paths([str(main)])
    assert [d.message for d in diags] == ["import cycle: main.arch -> main.arch"]


def test_too_many_imported_files(tmp_path: Path) -> None:
    files = {f"f{i}.arch": f'import "f{i + 1}.arch"\nblock B{i}():\n    relu\n' for i in range(6)}
    files["f6.arch"] = "block B6():\n    relu\n"
    files["main.arch"] = 'import "f0.arch"\n' + H + "    B0()\n"
    main = _write(tmp_path, files)
    assert check_paths([str(main)])[0] == []
    diags, _ = check_paths([str(main)], limits=Limits(max_files=4))
    assert diags[0].message == "more than 4 files imported"


def test_limits_from_the_api() -> None:
    text = H + "    relu * 50\n"
    compile_graph(text)
    with pytest.raises(ArchError, match="repetition count 50 exceeds the limit 10"):
        compile_graph(text, limits=Limits(max_repeat=10))
    with pytest.raises(ArchError, match="more than 20 layers"):
        compile_graph(text, limits=Limits(max_nodes=20))
    # raising a bound lets a spec through that the default refuses
    deep = "block B(n):\n    relu\n    B(n - 1) if n > 0\n" + H + "    B(80)\n"
    with pytest.raises(ArchError, match="blocks nest more than 64 deep"):
        compile_graph(deep)
    assert len(compile_graph(deep, limits=Limits(max_depth=100))) == 82


def test_limits_from_the_cli(tmp_path: Path) -> None:
    main = _write(tmp_path, {"main.arch": H + "    relu * 50\n"})
    runner = CliRunner()
    assert runner.invoke(app, ["check", str(main)]).exit_code == 0
    res = runner.invoke(app, ["check", "--limit", "max_repeat=10", str(main)])
    assert res.exit_code == 1 and "repetition count 50 exceeds the limit 10" in res.output
    res = runner.invoke(app, ["summary", "--limit", "max_nodes=5", str(main)])
    assert res.exit_code == 1 and "more than 5 layers" in res.output
    res = runner.invoke(app, ["check", "--limit", "max_nodez=5", str(main)])
    assert res.exit_code == 1 and "unknown limit 'max_nodez'" in res.output and "did you mean 'max_nodes'" in res.output
    res = runner.invoke(app, ["check", "--limit", "max_nodes=-1", str(main)])
    assert res.exit_code == 1 and "--limit max_nodes expects a positive integer, got -1" in res.output


def test_limits_override_validation() -> None:
    assert Limits().with_overrides(["max_nodes=5", "max_depth = 3"]) == Limits(max_nodes=5, max_depth=3)
    for bad in ("max_nodes", "max_nodes=x", "nope=3"):
        with pytest.raises(ArchError):
            Limits().with_overrides([bad])


def test_deep_expression_nesting_is_an_error_not_a_crash() -> None:
    # redundant parentheses add no depth
    assert len(compile_graph(H + "    n = " + "(" * 400 + "8" + ")" * 400 + "\n" + "    conv2d(n, 1)\n")) == 2
    with pytest.raises(ArchError) as ei:
        compile_graph(H + "    n = " + "-" * 3000 + "1\n")
    assert ei.value.errors[0].message == "the expression nests too deeply"
    assert ei.value.errors[0].span.line == 3


# ---------------------------------------------------------------------------------------------------
# safety

def test_no_python_eval_in_the_compiler() -> None:
    """No eval/exec/compile/__import__ on spec text anywhere; torch_build runs only generated code."""
    for path in sorted((ROOT / "archdsl").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                    node.func.id in ("eval", "exec", "compile", "__import__"):
                assert path.name == "torch_build.py", f"{path.name}:{node.lineno} calls {node.func.id}"


def test_strings_cannot_break_out_of_generated_code() -> None:
    from archdsl.codegen.emit import generate
    g = compile_graph(H + "    conv2d(8, 3, padding_mode=\"zeros')\\nimport os\")\n") if False else None
    assert g is None  # such a string cannot even be written: the grammar forbids quotes and newlines in it
    with pytest.raises(ArchError):
        compile_graph(H + "    conv2d(8, 3, padding_mode=\"zeros\\\"); import os; (\\\"\")\n")
    src = generate(compile_graph(H + "    conv2d(8, 3, padding_mode=\"reflect\")\n"))
    ast.parse(src)  # the generated module is plain Python with the string as a literal
    assert "'reflect'" in src or '"reflect"' in src


def test_imports_outside_need_allow_outside(tmp_path: Path) -> None:
    (tmp_path / "shared.arch").write_text("block S():\n    relu\n")
    main = _write(tmp_path / "proj", {"main.arch": 'import "../shared.arch"\n' + H + "    S()\n"})
    diags, _ = check_paths([str(main)])
    assert diags[0].message == "import '../shared.arch' leaves the spec's directory"
    assert "--allow-outside" in (diags[0].hint or "")
    assert check_paths([str(main)], allow_outside=True) == ([], 1)
    runner = CliRunner()
    assert runner.invoke(app, ["check", str(main)]).exit_code == 1
    assert runner.invoke(app, ["check", "--allow-outside", str(main)]).exit_code == 0


def test_absolute_imports_are_refused_even_when_outside_is_allowed(tmp_path: Path) -> None:
    (tmp_path / "shared.arch").write_text("block S():\n    relu\n")
    main = _write(tmp_path / "proj", {"main.arch": f'import "{tmp_path / "shared.arch"}"\n' + H + "    S()\n"})
    for allow in (False, True):
        diags, _ = check_paths([str(main)], allow_outside=allow)
        assert diags[0].message.startswith("absolute import path")


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks")
def test_symlink_cannot_smuggle_a_file_from_outside(tmp_path: Path) -> None:
    (tmp_path / "secret.arch").write_text("block S():\n    relu\n")
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "link.arch").symlink_to(tmp_path / "secret.arch")
    main = _write(proj, {"main.arch": 'import "link.arch"\n' + H + "    S()\n"})
    diags, _ = check_paths([str(main)])
    assert diags[0].message == "import 'link.arch' leaves the spec's directory"


def test_check_never_imports_torch(tmp_path: Path) -> None:
    main = _write(tmp_path, {"main.arch": H + "    conv2d(8, 3)\n"})
    code = ("import sys\nfrom archdsl.cli import main\ntry:\n    main(['check', '-q', sys.argv[1]])\n"
            "except SystemExit:\n    pass\nprint('torch' in sys.modules)\n")
    import subprocess
    r = subprocess.run([sys.executable, "-c", code, str(main)], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.stdout.strip() == "False", r.stderr


# ---------------------------------------------------------------------------------------------------
# atomic outputs

def test_failed_compile_writes_nothing(tmp_path: Path) -> None:
    bad = _write(tmp_path, {"main.arch": H + "    conv2d(16, 3, groups=2)\n"})
    out = tmp_path / "out" / "model.py"
    res = CliRunner().invoke(app, ["compile", str(bad), "-o", str(out)])
    assert res.exit_code == 1
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_failed_compile_keeps_the_previous_output(tmp_path: Path) -> None:
    good = _write(tmp_path / "good", {"main.arch": H + "    conv2d(16, 3)\n"})
    bad = _write(tmp_path / "bad", {"main.arch": H + "    conv2d(16, 3, groups=2)\n"})
    out = tmp_path / "model.py"
    runner = CliRunner()
    assert runner.invoke(app, ["compile", str(good), "-o", str(out)]).exit_code == 0
    before = out.read_text()
    assert runner.invoke(app, ["compile", str(bad), "-o", str(out)]).exit_code == 1
    assert out.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "good", "model.py"]


def test_atomic_write_leaves_no_temp_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from archdsl import pipeline
    target = tmp_path / "model.py"
    target.write_text("old")

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pipeline.os, "replace", boom)
    with pytest.raises(OSError):
        pipeline.atomic_write(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.py"]


def test_unwritable_output_is_a_user_error(tmp_path: Path) -> None:
    good = _write(tmp_path / "spec", {"main.arch": H + "    conv2d(16, 3)\n"})
    runner = CliRunner()
    res = runner.invoke(app, ["compile", str(good), "-o", str(tmp_path)])
    assert res.exit_code == 1 and f"output '{tmp_path}' is a directory" in res.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    res = runner.invoke(app, ["compile", str(good), "-o", str(blocker / "model.py")])
    assert res.exit_code == 1 and "cannot write" in res.stderr and "internal error" not in res.stderr
