"""Code generation: registry-driven emission, injection safety (property tests), the module hierarchy.

* A new stateful op and a new stateless op, each defined by one ``register()`` call in this file, work
  through check, summary, compile (source) and build + forward: codegen keeps no second list of ops.
* No spec value can become code: arbitrary strings and numbers fed through every place a spec value reaches
  the generated source (string network parameters / ``--set`` values, the file name in the header, labels,
  network names, float and int parameters including huge and non-finite ones) leave the module's AST in the
  expected shape (the docstrings are single string constants holding exactly the text, the module has
  exactly the expected top-level statements, and no call goes anywhere but torch, the generated classes and
  a few builtins).
"""
from __future__ import annotations

import ast
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import archdsl
from archdsl.codegen.emit import class_name, generate
from archdsl.codegen.names import NN_MODULE_ATTRS, GenerationError, literal
from archdsl.lower.names import check_identifier
from archdsl.ops import MOD, OPS, EmitArgs, In, Lit, OpDef, has_trait, ops_with, register
from archdsl.pipeline import compile_graph

torch = pytest.importorskip("torch")

ALLOWED_CALL_NAMES = {"super", "getattr", "float", "print", "type", "sum", "isinstance", "tuple", "p", "v",
                      "ValueError", "str", "list", "len", "range"}   # the input guard's helper


# --------------------------------------------------------------------------------------------- registry
def _square_shape(shapes: list[tuple[int, ...]], a: dict[str, Any]) -> tuple[int, ...]:
    return shapes[0]


@pytest.fixture()
def new_ops() -> Iterator[None]:
    """Two ops defined here only: a stateful per-channel PReLU and a stateless 'square_plus(c)'."""
    register(OpDef(
        "prelu_c", "act", [], _square_shape, "PReLU with one slope per channel (test op).",
        params=lambda s, a: s[0][0], stateful=True,
        ctor=lambda e: ("nn.PReLU(", Lit(e.in_shapes[0][0], "num_parameters"), ")"),
        traits={"stateful-module", "channel-wise"}))
    register(OpDef(
        "square_plus", "act", [archdsl.ops.ArgSpec("c", "float", 0.0)], _square_shape,
        "x * x + c (test op).", emit=lambda e: (In(0), " * ", In(0), " + ", Lit(e.args["c"], "c")),
        traits={"channel-wise"}))
    try:
        yield
    finally:
        OPS.pop("prelu_c", None)
        OPS.pop("square_plus", None)


NEW_OPS_SPEC = """
block Unit(c):
    conv: conv2d(c, 3, padding=1)
    act: prelu_c
    square_plus(c=0.5)

network net(num_classes=3):
    input [3, 8, 8]
    body: [Unit(4), Unit(4)]
    adaptive_avgpool(1)
    flatten
    fc: linear(num_classes)
"""


def test_new_ops_work_everywhere_from_one_register_call(new_ops: None) -> None:
    g = archdsl.graph(NEW_OPS_SPEC)   # check: shapes and parameter counts from the OpDef
    assert g.total_params == (3 * 4 * 9 + 4 + 4) + (4 * 4 * 9 + 4 + 4) + (4 * 3 + 3)
    from archdsl.passes.summary import summary_rows
    rows = summary_rows(g)
    assert any("prelu_c" in str(r) for r in rows)
    src = archdsl.source(NEW_OPS_SPEC)
    assert "nn.PReLU(4)" in src and "x * x + 0.5" in src
    assert src.count("class Unit(nn.Module)") == 1
    model = archdsl.build(NEW_OPS_SPEC)
    assert "body.0.act.weight" in model.state_dict()
    assert isinstance(model.body[1].act, torch.nn.PReLU)
    x = torch.randn(2, 3, 8, 8)
    y = model(x)
    assert y.shape == (2, 3)
    # the same computation by hand
    with torch.no_grad():
        h = x
        for blk in model.body:
            h = blk.act(blk.conv(h))
            h = h * h + 0.5
        ref = model.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(h, 1), 1))
        assert torch.allclose(model(x), ref, atol=1e-6)


def test_traits_replace_op_name_lists() -> None:
    assert ops_with("eval-identity") == {"identity", "dropout", "drop_path"}
    assert {"conv2d", "linear", "batchnorm", "avgpool"} <= ops_with("fusable-linear")
    assert has_trait("chunk", "multi-output") and has_trait("stack", "merge")
    assert not has_trait("linear", "channel-wise") and has_trait("batchnorm", "channel-wise")
    assert has_trait("layer_scale", "parameter") and has_trait("conv2d", "stateful-module")
    with pytest.raises(KeyError):
        has_trait("conv2d", "no-such-trait")
    for d in OPS.values():   # every stateful op can be constructed, every op can be emitted
        assert (d.ctor is not None) == d.stateful


def test_nn_module_attribute_list_matches_torch() -> None:
    # names starting with '__' are refused by the mangling rule whatever they are (torch may add private
    # ones at run time, e.g. '___needs_generation_tag_patch' once some subsystem is imported)
    attrs = {a for a in set(dir(torch.nn.Module())) | set(vars(torch.nn.Module())) if not a.startswith("__")}
    assert attrs <= NN_MODULE_ATTRS | {"_compiled_call_impl"}
    assert check_identifier("___needs_generation_tag_patch", "label") is not None


# --------------------------------------------------------------------------------------------- safety
def _check_ast(src: str, note: str, doc_part: str | None = None) -> ast.Module:
    tree = ast.parse(src)
    body = tree.body
    assert isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
    assert body[0].value.value == f"Generated by archc from {note}."
    kinds = [type(s).__name__ for s in body[1:]]
    if kinds[0] == "ImportFrom":   # from collections import OrderedDict
        kinds = kinds[1:]
    assert kinds[:3] == ["Import", "Import", "ImportFrom"]
    rest = kinds[3:]
    if rest[:2] == ["FunctionDef", "Expr"]:   # the input guard's helper, wrapped for torch.fx
        at = len(body) - len(rest)
        assert ast.unparse(body[at + 1]) == "torch.fx.wrap('_check_input')" and body[at].name == "_check_input"
        rest = rest[2:]
    assert rest[-1] == "If" and set(rest[:-1]) <= {"FunctionDef", "ClassDef"}
    classes = {s.name for s in body if isinstance(s, ast.ClassDef)}
    funcs = {s.name for s in body if isinstance(s, ast.FunctionDef)}
    for cls in (s for s in body if isinstance(s, ast.ClassDef)):
        assert isinstance(cls.body[0], ast.Expr) and isinstance(cls.body[0].value, ast.Constant)
        assert isinstance(cls.body[0].value.value, str)
    if doc_part is not None:
        docs = [s.body[0].value.value for s in body if isinstance(s, ast.ClassDef)]  # type: ignore[attr-defined]
        assert any(doc_part in d for d in docs)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            while isinstance(f, (ast.Attribute, ast.Subscript, ast.Call)):
                f = f.value if not isinstance(f, ast.Call) else f.func
            assert isinstance(f, ast.Name), ast.dump(node)
            assert (f.id in ALLOWED_CALL_NAMES | classes | funcs | {"torch", "nn", "F", "self", "OrderedDict"}
                    or f.id.startswith(("x", "_model", "_out"))), f.id
        assert not isinstance(node, (ast.Lambda, ast.Global, ast.Nonlocal, ast.Delete)) or isinstance(
            node, ast.Delete)
    return tree


SPEC = """
network net(s="a", n=3, f=1.5):
    input [3, 8, 8]
    conv: conv2d(4, 3, padding=1)
    scale(f)
    relu
"""

hostile = st.text(min_size=0, max_size=40) | st.sampled_from([
    '""";__import__("os").system("echo pwned");"""', "'''", "\r__import__('os')", "\x00", "\u2028x=1",
    "\\", "#", "\n\nimport os", "{}", "%s", "\x1b]0;title\x07"])
numbers = st.integers(min_value=-(10 ** 80), max_value=10 ** 80) | st.floats(allow_nan=True, allow_infinity=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(s=hostile, note=hostile)
def test_strings_never_become_code(s: str, note: str) -> None:
    g = compile_graph(SPEC, {"s": s})
    src = generate(g, source_note=note)
    _check_ast(src, note or g.name, doc_part=literal(s) if s else None)


@settings(max_examples=60, deadline=None)
@given(f=numbers)
def test_numbers_render_exactly(f: Any) -> None:
    g = compile_graph(SPEC, {"f": 1.0})
    for n in g.records():
        if n.op == "scale":
            n.args["factor"] = f
    src = generate(g)
    _check_ast(src, g.name)
    ns: dict[str, Any] = {}
    tree = ast.parse(src)
    vals = [c.value for c in ast.walk(tree) if isinstance(c, ast.Constant)]
    if isinstance(f, float) and not math.isfinite(f):
        assert "float(" in src
    elif isinstance(f, float):
        assert f in vals or -f in vals
    exec(compile(src, "<gen>", "exec"), ns)  # noqa: S102  (our own generated text)


@settings(max_examples=60, deadline=None)
@given(label=hostile, net=hostile)
def test_labels_and_network_names_are_data(label: str, net: str) -> None:
    g = compile_graph(SPEC)
    g.name = net
    label = label.replace(".", "_")   # a dot nests modules (a path, not a name): see test_module_name_checks
    for n in g.records():
        if n.module == "conv":
            n.module = n.name = label
    try:
        src = generate(g)
    except GenerationError:
        assert check_identifier(label, "label") is not None or label in ("input_shape", "reference")
        return
    assert check_identifier(label, "label") is None
    tree = _check_ast(src, net or "")
    cname = class_name(net)
    assert cname.isidentifier() and cname.isascii()
    ns: dict[str, Any] = {}
    exec(compile(tree, "<gen>", "exec"), ns)   # noqa: S102
    model = ns[cname]()
    assert label in dict(model.named_children())
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 4, 8, 8)


def test_issue_example_payload_is_inert(tmp_path: Any) -> None:
    payload = '""";__import__("os").system("touch ' + str(tmp_path / "pwned") + '");"""'
    model = archdsl.build(SPEC, s=payload)
    assert not (tmp_path / "pwned").exists()
    assert payload in type(model).__doc__
    src = type(model).__archdsl_source__
    assert " at 0x" not in src   # no memory addresses: the output is deterministic
    assert src == archdsl.build(SPEC, s=payload).__archdsl_source__


def test_module_name_checks() -> None:
    g = compile_graph(SPEC)
    for bad in ("forward", "training", "state_dict", "_modules", "input_shape", "a..b"):
        for n in g.records():
            if n.op == "conv2d":
                n.module = n.name = bad
        with pytest.raises(GenerationError):
            generate(g)
    assert class_name("f") != "F" and class_name("none_").isidentifier() and class_name("none_") != "None"


def test_generated_code_uses_registry_emit_only() -> None:
    """Every op in the registry emits through its OpDef (no codegen if-chain): check one emission per op."""
    for name, d in OPS.items():
        if name != d.name:
            continue
        assert callable(d.emit)
        if d.stateful:
            assert d.emit is not None and d.ctor is not None
    e = EmitArgs({"p": 0.1, "mode": "row"}, [(4, 8, 8)], (4, 8, 8))
    assert OPS["drop_path"].emit(e)[0] == "_stochastic_depth("
    assert OPS["conv2d"].emit(EmitArgs({}, [(3, 8, 8)], (4, 8, 8))) == (MOD, "(", In(0), ")")
