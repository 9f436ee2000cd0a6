"""Hostile specs against the evaluator and the name rule (issue 11: budgets, names).

* ``TestBudgets``: every evaluation bomb (a value that grows without bound, or a walk over one) stops
  with its exact located error, within 2 s of wall time and 300 MB of traced Python memory;
  non-finite numbers never reach an op; ``--set`` values are data with the same bounds.
* ``TestNames``: every name that would break the generated module silently (nn.Module attributes,
  ``__`` mangling, Unicode NFKC, control characters, a module inside a layer, class names that shadow
  the module's globals or are keywords) is a located error from ``archc check`` and ``archc compile``
  writes nothing; the frozen reserved list covers ``dir(torch.nn.Module())`` and the generated model.
* ``TestStructure``: the evaluator's and elaborator's dispatch tables are complete, and lowering does not
  import the passes.
"""
from __future__ import annotations

import ast
import os
import time
import tracemalloc
from pathlib import Path
from typing import get_args

import pytest
from typer.testing import CliRunner

from helpers import ROOT, run_archc

from archdsl import Limits
from archdsl.cli import app
from archdsl.errors import ArchError
from archdsl.lang import ast as A
from archdsl.lower.elaborate import BRANCH_HANDLERS, STMT_HANDLERS
from archdsl.lower.evaluate import EXPR_HANDLERS
from archdsl.lower.names import GENERATED_ATTRS, RESERVED_ATTRS, check_identifier, class_name
from archdsl.pipeline import compile_graph, parse_set

H = "network net():\n    input [3, 32, 32]\n"
SQUARES = "".join(f"    n{i + 1} = n{i} * n{i}\n" for i in range(40))
DOUBLES = "".join(f"    s{i + 1} = s{i} + s{i}\n" for i in range(40))
BIG_INT = "    n0 = 2 ** 64\n" + "".join(f"    n{i + 1} = n{i} * n{i}\n" for i in range(5))
MAX_SECONDS = 2.0
MAX_BYTES = 300 * 2**20

# name -> (spec text, first line of the first error, the limit its hint names or None)
BOMBS: dict[str, tuple[str, str, str | None]] = {
    "int_squaring": (H + "    n0 = 3\n" + SQUARES,
                     "<spec>:15:15: error: the product would have about 6,494 bits, more than the limit 4,096",
                     "max_int_bits"),
    "string_doubling": (H + '    s0 = "ab"\n' + DOUBLES,
                        "<spec>:19:15: error: the string would have 131,072 characters, more than the limit 100,000",
                        "max_value_size"),
    "str_of_nested_list": (H + "    q = str([[relu] * 10000] * 10000)\n",
                           "<spec>:3:9: error: str(...) would work through more than 100,000 items (list items "
                           "counted through nested lists, and string characters)", "max_value_size"),
    "eq_of_nested_lists": (H + "    q = [[1] * 10000] * 10000 == [[1] * 10000] * 10000\n",
                           "<spec>:3:9: error: '==' would work through more than 100,000 items (list items counted "
                           "through nested lists, and string characters)", "max_value_size"),
    "sum_flattening": (H + "    q = sum([[1] * 10000] * 10000, [])\n",
                       "<spec>:3:9: error: sum(..., []) would make a list of 100,000,000 items, more than the limit "
                       "10,000", "max_repeat"),
    "max_of_nested": (H + "    q = max([[[1] * 10000] * 10000, [[2]]])\n",
                      "<spec>:3:9: error: max(...) would work through more than 100,000 items (list items counted "
                      "through nested lists, and string characters)", "max_value_size"),
    "round_ndigits": (H + "    q = round(1, -100000000)\n",
                      "<spec>:3:9: error: round(...): 10 ** 100,000,000 would have about 332,190,000 bits, more than "
                      "the limit 4,096", "max_int_bits"),
    "comprehension_of_big_lists": (H + "    q = [[relu] * 10000 for i in range(10000)]\n",
                                   "<spec>:3:10: error: the spec takes more than 500,000 evaluation steps to expand",
                                   "max_steps"),
    "repeated_str_walks": (H + "    q = [str([[1] * 100] * 50) for i in range(10000)]\n",
                           "<spec>:3:10: error: the spec takes more than 500,000 evaluation steps to expand",
                           "max_steps"),
    "range_overflow": (H + "    q = range(10 ** 19)\n",
                       "<spec>:3:9: error: range(...) would make 10,000,000,000,000,000,000 items, more than the "
                       "limit 10,000", "max_repeat"),
    "int_of_long_string": (H + '    d = "' + "9" * 1000 + '"\n    q = int(d + d + d + d)\n',
                           "<spec>:4:9: error: the integer has 13,288 bits, more than the limit 4,096", "max_int_bits"),
    "float_overflow_to_op": (H + "    dropout(1e308 * 10)\n",
                             "<spec>:3:19: error: the value is not a finite number (inf)", None),
    "inf_literal_to_op": (H + "    dropout(1e999)\n", "<spec>:3:13: error: the value is not a finite number (inf)", None),
    "float_of_inf_string": (H + '    dropout(float("inf"))\n',
                            "<spec>:3:13: error: the value is not a finite number (inf)", None),
    "float_power_overflow": (H + "    q = 1048576.0 ** 64\n",
                             "<spec>:3:9: error: the result of '**' is too large for a number", None),
    "negative_base_power": (H + "    q = (-8) ** 0.5\n", "<spec>:3:9: error: (-8) ** 0.5 is not a real number", None),
    "division_overflow": (H + BIG_INT + "    q = n5 / 3\n",
                          "<spec>:9:12: error: the result of '/' is too large for a number", None),
    # the issue's own examples, kept as they were filed
    "nested_repeats_applied": (H + "    [relu * 10000] * 10000\n",
                               "<spec>:3:5: error: the network expands to more than 10,000 layers", "max_nodes"),
    "power": (H + "    n = 10 ** 100000\n", "<spec>:3:9: error: exponent too large", None),
}


def _overloaded() -> bool:
    """More runnable processes than cores: wall time then measures the neighbours, not archdsl."""
    return os.getloadavg()[0] > (os.cpu_count() or 1)


def _measure(text: str, **kw: object) -> tuple[ArchError, float, int]:
    """The ArchError ``compile_graph(text)`` raises, its time, and the traced peak (a second run).

    The time is wall time (``perf_counter``), or the process's CPU time when the machine is overloaded
    (a shared CI box running other jobs), where wall time would fail the test for someone else's work.
    """
    # the first compile of a process builds the LALR parser and imports the lowering (~0.7 s, more on a loaded
    # 2-core box): done on another text first, so the time is this text's own (the AST cache is keyed by text)
    compile_graph(H + "    relu\n")
    t, c = time.perf_counter(), time.process_time()
    with pytest.raises(ArchError) as ei:
        compile_graph(text, **kw)  # type: ignore[arg-type]
    seconds = time.process_time() - c if _overloaded() else time.perf_counter() - t
    tracemalloc.start()
    try:
        with pytest.raises(ArchError):
            compile_graph(text, **kw)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return ei.value, seconds, peak


class TestBudgets:
    @pytest.mark.parametrize("name", list(BOMBS))
    def test_bomb_stops_with_a_located_error_quickly(self, name: str) -> None:
        text, first_line, limit = BOMBS[name]
        compile_graph(H + "    relu\n")   # the grammar is loaded outside the measurement
        err, seconds, peak = _measure(text)
        d = err.errors[0]
        assert d.format().splitlines()[0] == first_line
        assert d.span is not None and "^" in d.format()          # the source line and a caret
        assert d.hint
        if limit is not None:
            assert f"Limits.{limit}" in d.hint and f"--limit {limit}=" in d.hint, d.hint
        assert seconds < MAX_SECONDS, f"{name} took {seconds:.2f} s"
        assert peak < MAX_BYTES, f"{name} peaked at {peak / 2**20:.0f} MiB"

    def test_a_100k_item_list_literal_is_refused_quickly(self) -> None:
        # the source budget (Limits.max_source_tokens) refuses it before evaluation; either way: fast and located
        err, seconds, peak = _measure(H + "    q = [" + ", ".join(["1"] * 100_000) + "]\n")
        d = err.errors[0]
        assert d.span is not None and d.span.line == 3 and "--limit" in (d.hint or "")
        assert seconds < MAX_SECONDS and peak < MAX_BYTES

    def test_a_12k_item_list_literal_hits_max_repeat(self) -> None:
        # most of the time here is parsing 24k tokens (about 1 s of CPU)
        text = H + "    q = [\n" + "\n".join("        " + "1, " * 1000 for _ in range(12)) + "\n    ]\n"
        err, seconds, peak = _measure(text)
        assert seconds < MAX_SECONDS and peak < MAX_BYTES
        d = err.errors[0]
        assert d.format().splitlines()[0] == "<spec>:3:9: error: the list has 12,000 items, more than the limit 10,000"
        assert d.hint == "the limit is Limits.max_repeat (raise it with --limit max_repeat=N)"

    def test_raising_a_limit_lets_the_value_through(self) -> None:
        text = H + '    s0 = "ab"\n' + "".join(f"    s{i + 1} = s{i} + s{i}\n" for i in range(16))
        with pytest.raises(ArchError, match="131,072 characters"):
            compile_graph(text)
        assert len(compile_graph(text, limits=Limits(max_value_size=200_000))) == 1
        with pytest.raises(ArchError, match="the list has 12 items, more than the limit 10"):
            compile_graph(H + "    q = [" + ", ".join(["1"] * 12) + "]\n", limits=Limits(max_repeat=10))

    def test_everyday_values_are_untouched(self) -> None:
        g = compile_graph(H + '    q = str([1, "a", true, none]) + str(2.5)\n'
                          '    r = sum([[1], [2, 3]], []) == [1, 2, 3] and round(2.567, 2) == 2.57\n'
                          '    named("b" + str(len(q)) + "-" + str(r), conv2d(8, 3))\n')
        assert [n.name for n in g.records()] == ["input", "b23-true"]

    def test_non_finite_never_reaches_an_op_through_set(self) -> None:
        spec = "network net(p=0.1):\n    input [3, 8, 8]\n    dropout(p)\n"
        for value in ("inf", "nan", "-inf", "[NaN]", "[1e999]", "Infinity"):
            with pytest.raises(ArchError) as ei:
                compile_graph(spec, parse_set([f"p={value}"]))
            assert ei.value.errors[0].format().startswith("error: --set p: "), value
        with pytest.raises(ArchError) as ei:       # the API is checked too (located at the network)
            compile_graph(spec, {"p": float("inf")})
        assert ei.value.errors[0].format().splitlines()[0] == \
            "<spec>:1:9: error: parameter 'p': the value is not a finite number (inf)"

    @pytest.mark.parametrize("value, message", [
        ("x" * 200_000, "<spec>:1:9: error: parameter 'p': the string has 200,000 characters, more than the limit "
                        "100,000"),
        (3 ** 5000, "<spec>:1:9: error: parameter 'p': the integer has 7,925 bits, more than the limit 4,096"),
        ([1] * 20_000, "<spec>:1:9: error: parameter 'p': a list of 20,000 items, more than the limit 10,000"),
        ({"a": 1}, "<spec>:1:9: error: parameter 'p': dict is not a spec value"),
    ])
    def test_parameter_values_from_outside_are_bounded(self, value: object, message: str) -> None:
        err, seconds, _ = _measure("network net(p=1):\n    input [3, 8, 8]\n    relu\n", params={"p": value})
        assert err.errors[0].format().splitlines()[0] == message
        assert seconds < MAX_SECONDS

    @pytest.mark.parametrize("item, message", [
        ("n=" + "9" * 5000, "error: --set n: the integer has 5,000 digits, too many"),
        ("n=" + "[" * 50_000, "error: --set n: cannot read the list '" + "[" * 80 + "...'"),
        ("n=[{}]", "error: --set n: the list holds an object"),
        ("n=\x1b[31mred", None),   # plain text is a string value, not an error
    ])
    def test_set_values_are_data(self, item: str, message: str | None) -> None:
        if message is None:
            assert parse_set([item]) == {"n": item[2:]}
            return
        with pytest.raises(ArchError) as ei:
            parse_set([item])
        assert ei.value.errors[0].format().splitlines()[0] == message


# ---------------------------------------------------------------------------------------------------
# names: (spec text, the first error line after 'main.arch:')
BAD_NAMES: dict[str, tuple[str, str]] = {
    "module_method": (H + "    forward: conv2d(8, 3)\n",
                      "3:5: error: the label 'forward' is an attribute of the generated nn.Module (it would shadow it "
                      "and break the model)"),
    "module_attribute_nested": (H + "    body:\n        training: conv2d(8, 1)\n",
                                "4:9: error: the label 'training' is an attribute of the generated nn.Module (it "
                                "would shadow it and break the model)"),
    "private_attribute": (H + '    named("_modules", conv2d(8, 3))\n',
                          "3:5: error: the label '_modules' is an attribute of the generated nn.Module (it would "
                          "shadow it and break the model)"),
    "generated_attribute": (H + "    input_shape: conv2d(8, 3)\n",
                            "3:5: error: the label 'input_shape' is an attribute of the generated nn.Module (it would "
                            "shadow it and break the model)"),
    "dunder_init": (H + '    "__init__": conv2d(8, 3)\n',
                    "3:5: error: the name '__init__' starts with '__', which Python mangles inside a class"),
    "mangled": (H + "    __stem: conv2d(8, 3)\n",
                "3:5: error: the name '__stem' starts with '__', which Python mangles inside a class"),
    "nfkc": (H + '    named("\ufb01", conv2d(8, 3))\n    fi: conv2d(8, 3)\n',
             "3:5: error: the name '\ufb01' is read by Python as 'fi' (Unicode NFKC form)"),
    "nul": (H + '    named("a\x00b", conv2d(8, 3))\n',
            "3:5: error: the name 'a\\x00b' contains the character '\\x00'"),
    "control": (H + '    named("a\x1bb", conv2d(8, 3))\n',
                "3:5: error: the name 'a\\x1bb' contains the character '\\x1b'"),
    "bidi": (H + '    named("\u202eab", conv2d(8, 3))\n',
             "3:5: error: the name '\\u202eab' contains the character '\\u202e'"),
    "module_inside_layer": (H + '    a: conv2d(8, 3)\n    "a.b": conv2d(8, 3)\n',
                            "4:5: error: 'a.b' would be a module inside the layer 'a'"),
    "layer_over_modules": (H + '    "a.b": conv2d(8, 3)\n    a: conv2d(8, 3)\n',
                           "4:5: error: the layer 'a' would also be the container of 'a.b'"),
    "fused_name": ("network n():\n    input [3, 8, 8]\n    reparam add(fused=\"state_dict\"):\n"
                   "        conv2d(3, 3, padding=1)\n        conv2d(3, 1)\n",
                   "3:17: error: the label 'state_dict' is an attribute of the generated nn.Module (it would shadow "
                   "it and break the model)"),
    "class_shadows_F": ("network f():\n    input [3, 8, 8]\n    relu\n",
                        "1:9: error: the network name 'f' becomes the class 'F': the class name 'F' would hide the "
                        "name 'F' the generated module uses"),
    "class_is_keyword": ("network none_():\n    input [3, 8, 8]\n    relu\n",
                         "1:9: error: the network name 'none_' becomes the class 'None': 'None' is a Python keyword"),
    "class_is_builtin": ("network value_error():\n    input [3, 8, 8]\n    relu\n",
                         "1:9: error: the network name 'value_error' becomes the class 'ValueError': the class name "
                         "'ValueError' would hide the name 'ValueError' the generated module uses"),
    # a Python keyword is a fine parameter name (tests/test_names_diagnostics.py builds one); a constant is not
    "parameter_constant": ("network n(none=1):\n    input [3, 8, 8]\n    relu\n",
                           "1:11: error: the parameter name 'none' cannot be used: 'none' is a constant"),
}


class TestNames:
    @pytest.mark.parametrize("name", list(BAD_NAMES))
    def test_bad_name_is_a_located_error_and_nothing_is_written(self, name: str, tmp_path: Path) -> None:
        text, first = BAD_NAMES[name]
        main = tmp_path / "main.arch"
        main.write_text(text, encoding="utf-8")
        runner = CliRunner()
        res = runner.invoke(app, ["check", str(main)])
        assert res.exit_code == 1, res.output
        assert f"{main}:{first}" in res.output, res.output
        assert "Traceback" not in res.output
        out = tmp_path / "model.py"
        res = runner.invoke(app, ["compile", str(main), "-o", str(out)])
        assert res.exit_code == 1 and f"{main}:{first}" in res.output
        assert sorted(p.name for p in tmp_path.iterdir()) == ["main.arch"]

    def test_the_cli_process_refuses_and_writes_nothing(self, tmp_path: Path) -> None:
        main = tmp_path / "main.arch"
        main.write_text(BAD_NAMES["module_method"][0], encoding="utf-8")
        out = tmp_path / "model.py"
        r = run_archc("compile", str(main), "-o", str(out))
        assert r.returncode == 1 and f"{main}:{BAD_NAMES['module_method'][1]}" in r.stderr
        assert "Traceback" not in r.stderr and not out.exists()
        main.write_text("network n(p=0.1):\n    input [3, 8, 8]\n    dropout(p)\n", encoding="utf-8")
        r = run_archc("check", str(main), "--set", "p=inf")
        assert r.returncode == 1 and "error: --set p: 'inf' is not a finite number" in r.stderr

    def test_good_names_still_work_end_to_end(self) -> None:
        import archdsl
        spec = (H.replace("net()", "net(match=8, type=2)") +
                '    named("block1-0", conv2d(match, 3))\n    named("é", conv2d(8, 1))\n    "convs.0": conv2d(8, 1)\n'
                "    _private: conv2d(8, 1)\n")
        model = archdsl.build(spec)
        assert {k.split(".")[0] for k in model.state_dict()} == {"block1-0", "é", "convs", "_private"}

    def test_reserved_names_cover_nn_module_and_the_generated_model(self) -> None:
        import torch

        import archdsl
        # '__' names are refused by the mangling rule whatever they are (torch adds private ones at run
        # time, e.g. '___needs_generation_tag_patch' once some subsystem is imported)
        public = {a for a in dir(torch.nn.Module()) if not a.startswith("__")}
        assert public <= RESERVED_ATTRS, public - RESERVED_ATTRS
        assert {a for a in dir(torch.nn.Sequential()) if not a.startswith("__")} <= RESERVED_ATTRS
        assert check_identifier("___needs_generation_tag_patch", "label") is not None
        model = archdsl.build(H + "    conv2d(8, 3)\n    stem: conv2d(8, 1)\n")
        own = set(dir(model)) - set(dir(torch.nn.Module())) - {"stem", "0"}
        assert own <= RESERVED_ATTRS, f"attributes of the generated model missing from names.py: {own - RESERVED_ATTRS}"
        assert "input_shape" in GENERATED_ATTRS

    @pytest.mark.parametrize("name, kind, ok", [
        ("conv1", "label", True), ("0", "label", True), ("block1-0", "label", True), ("match", "label", True),
        ("eval", "label", False), ("__x", "label", False), ("a.b", "label", False), ("", "label", False),
        ("a b", "label", False), ("\ufb01", "label", False), ("Resnet50", "class", True), ("F", "class", False),
        ("None", "class", False), ("Exception", "class", False), ("Ré", "class", False),
        ("num_classes", "param", True), ("match", "param", True), ("self", "param", True),
        ("class", "param", True), ("none", "param", False), ("x", "param", False), ("a-b", "param", False),
    ])
    def test_check_identifier(self, name: str, kind: str, ok: bool) -> None:
        assert (check_identifier(name, kind) is None) == ok  # type: ignore[arg-type]

    def test_class_name(self) -> None:
        assert [class_name(n) for n in ("resnet50", "vgg16_bn", "f", "3d")] == ["Resnet50", "Vgg16Bn", "F", "Net3d"]


# ---------------------------------------------------------------------------------------------------
class TestStructure:
    def test_dispatch_tables_cover_the_ast(self) -> None:
        assert set(EXPR_HANDLERS) == set(get_args(A.Expr))
        assert set(STMT_HANDLERS) == set(get_args(A.Stmt)) == set(BRANCH_HANDLERS)

    def test_lowering_imports_no_pass(self) -> None:
        for path in (ROOT / "archdsl" / "lower").glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom):
                    mod = "." * node.level + (node.module or "")
                    assert not mod.lstrip(".").startswith(("passes", "codegen", "render", "pipeline")), (path, mod)
