"""Issue 20, diagnostics: one error per source location for a block used many times, negative dims everywhere a
dim is taken, and per-channel parameters (``parameter([C], dim=1)``) broadcast over the channels.

Every dim-taking op of the registry is listed in :data:`NEGATIVE` (a test checks that none is missing) and run
with negative dims against torch called with the same negative dims.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F

import archdsl
from archdsl.errors import ArchError, Diagnostic, merge_instances
from archdsl.ops import MULTI_OUTPUT_OPS, OPS
from archdsl.passes.sizes import input_contract
from archdsl.source import Source, Span
from helpers import ROOT, error_of, run_archc

SHAPE = (3, 4, 6)


def _x(seed: int = 0) -> torch.Tensor:
    return torch.randn((2, *SHAPE), generator=torch.Generator().manual_seed(seed))


def _spec(body: str) -> str:
    return f"network n():\n    input {list(SHAPE)}\n{body}"


# ------------------------------------------------------------------------------- one error per place
STAGES = """
block B(c):
    t = x -> conv2d(c, 3, paddin=1)
    y = x -> reshape([c, 5, -1])
    z = x -> chunk(3)

block Stage(c, n):
    blocks: B(c) * n

network n():
    input [8, 16, 16]
    stages: [Stage(8 * (i + 1), 8) for i in range(4)]
"""


def test_a_wrong_line_in_a_block_used_32_times_is_one_error_naming_the_instances() -> None:
    with pytest.raises(ArchError) as ei:
        archdsl.graph(STAGES)
    errs = ei.value.errors
    # three wrong lines, each found by 32 instances (four stages of different widths, so 96 differing messages)
    assert [(d.span.line, d.span.col) for d in errs if d.span] == [(3, 27), (4, 22), (5, 14)]
    paths = [f"stages.{i}.blocks.{j}" for i in range(4) for j in range(8)]
    for d in errs:
        assert list(d.instances) == paths
        assert d.headline().endswith("(in 32 instances: stages.0.blocks.0, stages.0.blocks.1, stages.0.blocks.2, ...)")
    assert errs[1].message.startswith("reshape [8, 5, -1]:")   # the first instance's message (its sizes)


def test_instances_are_named_in_expansion_order_when_messages_differ() -> None:
    # each block gets its own width (so its own message) and the stages repeat the widths: the instances are
    # still listed as they expand, not grouped by message
    src = ("block B(c):\n    y = x -> reshape([c, 7, -1])\n    relu\n\nblock S():\n"
           "    blocks: [B(8 + 4 * i) for i in range(3)]\n\nnetwork n():\n    input [8, 16, 16]\n"
           "    stages: [S() for i in range(2)]\n")
    with pytest.raises(ArchError) as ei:
        archdsl.graph(src)
    (err,) = ei.value.errors
    assert err.instances == tuple(f"stages.{i}.blocks.{j}" for i in range(2) for j in range(3))
    assert err.message.startswith("reshape [8, 7, -1]: [8, 16, 16] has 2048 elements")


def test_the_cli_prints_one_error_per_place(tmp_path: Path) -> None:
    spec = tmp_path / "stages.arch"
    spec.write_text(STAGES, encoding="utf-8")
    r = run_archc("check", str(spec))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.count(" error: ") == 3 and r.stderr.rstrip().endswith("3 errors generated.")
    assert f"{spec}:3:27: error: conv2d has no argument 'paddin' (in 32 instances: stages.0.blocks.0, " \
           "stages.0.blocks.1, stages.0.blocks.2, ...)" in r.stderr


def test_a_reparam_group_error_in_many_instances_is_one_error() -> None:
    src = ("block B(c):\n    reparam add:\n        conv2d(c, 3, padding=1)\n        seq:\n            conv2d(c, 1)\n"
           "            relu\n\nnetwork n():\n    input [8, 8, 8]\n    body: [B(8) for i in range(5)]\n")
    with pytest.raises(ArchError) as ei:
        archdsl.graph(src)
    (err,) = ei.value.errors
    assert err.span is not None and (err.span.line, err.span.col) == (2, 5)
    assert err.instances == tuple(f"body.{i}" for i in range(5))
    assert "(in 5 instances: body.0, body.1, body.2, ...)" in err.format()


def test_many_instances_do_not_use_up_the_error_limit() -> None:
    # 150 instances of two wrong lines: two errors, not "too many errors (100); stopping"
    src = "block B():\n    t = x -> conv2d(4, 3, paddin=1)\n    u = x -> conv2d(4, 3, strid=1)\n" \
          "network n():\n    input [4, 8, 8]\n    body: [B() for i in range(150)]\n"
    with pytest.raises(ArchError) as ei:
        archdsl.graph(src)
    assert [d.severity for d in ei.value.diagnostics] == ["error", "error"]
    assert all(len(d.instances) == 150 for d in ei.value.errors)


def test_errors_outside_blocks_and_in_one_instance_are_unchanged() -> None:
    err = error_of(_spec("    conv2d(4, 3, paddin=1)\n    t = x -> conv2d(4, 3, strid=1)\n"))
    assert "instances" not in err and err.count("error:") == 2
    one = error_of("block B():\n    t = x -> conv2d(4, 3, paddin=1)\nnetwork n():\n    input [4, 8, 8]\n    b: B()\n")
    assert "instances" not in one


def _d(msg: str, line: int, inst: tuple[str, ...] = (), col: int = 5) -> Diagnostic:
    return Diagnostic(msg, Span(Source("x\n" * 10, "f.arch"), line, col), instances=inst)


def test_merge_instances_keeps_several_problems_of_one_place_and_is_idempotent() -> None:
    diags = [_d("a in b.0", 2, ("b.0",)), _d("second problem", 2, ("b.0",)), _d("a in b.1", 2, ("b.1",)),
             _d("other in b.1", 2, ("b.1",)), _d("net level", 2), _d("net level again", 2),
             _d("a in b.2", 2, ("b.2",)), _d("elsewhere", 3, ("b.2",))]
    out = merge_instances(diags)
    assert [(d.message, d.instances) for d in out] == [
        ("a in b.0", ("b.0", "b.1", "b.2")), ("second problem", ("b.0", "b.1", "b.2")), ("net level", ()),
        ("net level again", ()), ("elsewhere", ("b.2",))]
    assert merge_instances(out) == out
    # already merged diagnostics meeting new instances: the union, in order
    again = merge_instances([*out, _d("a in b.3", 2, ("b.3",))])
    assert again[0].instances == ("b.0", "b.1", "b.2", "b.3") and len(again) == len(out)
    assert again[0].to_json()["instances"] == ["b.0", "b.1", "b.2", "b.3"]


# ------------------------------------------------------------------------------------- negative dims
def _ln_last(x: torch.Tensor, sd: dict[str, torch.Tensor]) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), sd["ln.weight"], sd["ln.bias"])


# op -> (spec body, the same computation in torch with the same negative dims); x is [2, 3, 4, 6]
NEGATIVE: dict[str, list[tuple[str, Callable[[torch.Tensor, dict[str, torch.Tensor]], Any]]]] = {
    "concat": [("    concat(x, x * 2.0, dim=-1)\n", lambda x, sd: torch.cat([x, x * 2.0], -1)),
               ("    concat(dim=-2):\n        identity\n        scale(3.0)\n", lambda x, sd: torch.cat([x, x * 3.0], -2))],
    "stack": [("    stack(x, x * 2.0, dim=-1)\n", lambda x, sd: torch.stack([x, x * 2.0], -1)),
              ("    stack(dim=-3):\n        identity\n        scale(3.0)\n", lambda x, sd: torch.stack([x, x * 3.0], -3)),
              ("    stack(x, x * 2.0, dim=3)\n", lambda x, sd: torch.stack([x, x * 2.0], 3))],
    "chunk": [("    a, b = x -> chunk(2, dim=-1)\n    concat(b, a, dim=1)\n",
               lambda x, sd: torch.cat(x.chunk(2, -1)[::-1], 1)),
              ("    a, b = x -> chunk(2, dim=-2)\n    b\n", lambda x, sd: x.chunk(2, -2)[1])],
    "split": [("    a, b, c = x -> split([1, 2, 3], dim=-1)\n    concat(c, a, b, dim=-1)\n",
               lambda x, sd: torch.cat([x[..., 3:], x[..., :1], x[..., 1:3]], -1)),
              ("    a, b = x -> split([2, 1], dim=-3)\n    b\n", lambda x, sd: x.split([2, 1], -3)[1])],
    "permute": [("    permute([0, -1, -3, -2])\n", lambda x, sd: x.permute(0, -1, -3, -2)),
                ("    permute([-4, 2, -1, 1])\n", lambda x, sd: x.permute(-4, 2, -1, 1))],
    "softmax": [("    softmax(-1)\n", lambda x, sd: torch.softmax(x, -1))],
    "mean": [("    mean([-1, -2], keepdim=true)\n", lambda x, sd: x.mean((-1, -2), keepdim=True))],
    "reduce_sum": [("    reduce_sum(-2)\n", lambda x, sd: x.sum(-2))],
    "amax": [("    amax(-1)\n", lambda x, sd: x.amax(-1))],
    "amin": [("    amin([-3, -1])\n", lambda x, sd: x.amin((-3, -1)))],
    "norm": [("    norm(-1, keepdim=true)\n", lambda x, sd: torch.linalg.vector_norm(x, 2, -1, keepdim=True))],
    "transpose": [("    transpose(-2, -1)\n", lambda x, sd: x.transpose(-2, -1))],
    "roll": [("    roll([1, -2], [-1, -2])\n", lambda x, sd: torch.roll(x, (1, -2), (-1, -2)))],
    "slice": [("    slice(-1, 1, 5, 2)\n", lambda x, sd: x[..., 1:5:2])],
    "layernorm": [("    ln: layernorm(dim=-1)\n", _ln_last)],
    "layer_scale": [("    ls: layer_scale(0.5, dim=-1)\n", lambda x, sd: sd["ls"] * x),
                    ("    ls: layer_scale(0.5, dim=-3)\n", lambda x, sd: sd["ls"] * x)],
    "parameter": [("    p = parameter([3], init=\"normal\", std=1.0, dim=-3)\n    x * p\n",
                   lambda x, sd: x * sd["p"].view(3, 1, 1)),
                  ("    p = parameter([4, 6], init=\"normal\", std=1.0, dim=-2)\n    x + p\n",
                   lambda x, sd: x + sd["p"])],
    "rmsnorm": [("    rn: rmsnorm(dim=-1)\n", lambda x, sd: F.rms_norm(x, (x.shape[-1],), sd["rn.weight"]))],
    "normalize": [("    normalize(dim=-2)\n", lambda x, sd: F.normalize(x, dim=-2))],
    "select": [("    select(-1, -2)\n", lambda x, sd: x.select(-1, -2))],
    "repeat_interleave": [("    repeat_interleave(2, dim=-2)\n", lambda x, sd: x.repeat_interleave(2, dim=-2))],
    "unbind": [("    a, b, c, d = x -> unbind(-2)\n    concat(d, a, dim=-1)\n",
                lambda x, sd: torch.cat([x.unbind(-2)[3], x.unbind(-2)[0]], -1))],
}
CASES = [(op, k) for op, cases in NEGATIVE.items() for k in range(len(cases))]


@pytest.mark.parametrize("op, k", CASES)
def test_negative_dims_equal_torch(op: str, k: int) -> None:
    body, ref = NEGATIVE[op][k]
    model = archdsl.build(_spec(body)).eval()
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in model.parameters():   # no default init (ones, zeros) hides a wrong axis
            p.copy_(torch.randn(p.shape, generator=g))
    x = _x()
    with torch.no_grad():
        got = model(x)
        want = ref(x, model.state_dict())
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert archdsl.graph(_spec(body)).output_shapes["out"] == tuple(want.shape[1:])


def test_every_dim_taking_op_is_tested_with_negative_dims() -> None:
    dim_args = {"dim", "dims", "dim0", "dim1"}
    builtin = {name for name, op in OPS.items() if op.shape.__module__.startswith("archdsl.ops") and op.name == name}
    taking = {name for name in builtin if any(a.name in dim_args for a in OPS[name].args)}
    taking |= {name for name, args in MULTI_OUTPUT_OPS.items() if any(a.name in dim_args for a in args)}
    taking.discard("narrow")   # made by chunk/split, never written
    assert taking <= set(NEGATIVE), sorted(taking - set(NEGATIVE))


@pytest.mark.parametrize("body, message", [
    ("    concat(x, x, dim=-5)\n", "concat dim=-5 is out of range: a sample has 3 dims"),
    ("    concat(x, x, dim=-4)\n", "concat over the batch dim (0) is not supported"),
    ("    stack(x, x, dim=-6)\n", "stack dim=-6 is out of range: a sample has 4 dims"),
    ("    a, b = x -> chunk(2, dim=-4)\n    a\n", "chunk: dim=-4 is out of range for [3, 4, 6] (batch is dim 0)"),
    ("    a, b = x -> split([3, 3], dim=4)\n    a\n", "split: dim=4 is out of range for [3, 4, 6] (batch is dim 0)"),
    ("    permute([0, -1, -1, 1])\n", "permute dims [0, -1, -1, 1] are not a permutation of 0..3"),
    ("    p = parameter([3], dim=0)\n    x * p\n", "parameter over the batch dim (0) is not supported"),
    ("    p = parameter([4, 6], dim=-1)\n    x * p\n",
     "parameter [4, 6] from dim=-1 would reach past the last dim of the block input [3, 4, 6]"),
])
def test_dims_out_of_range_are_located_errors(body: str, message: str) -> None:
    err = error_of(_spec(body))
    assert message in err and "<spec>:3:" in err and "hint:" in err, err


# ------------------------------------------------------------------------------ per-channel parameters
def _doc_block(heading: str) -> str:
    m = re.search(re.escape(heading) + r".*?```\n(.*?)```", (ROOT / "docs" / "language.md").read_text(), re.DOTALL)
    assert m, f"no code block after {heading!r} in docs/language.md"
    return m.group(1)


def test_the_documented_per_channel_affine_is_torch_s_without_permutes() -> None:
    src = _doc_block("**Per-channel parameters.**")
    model = archdsl.build(src).eval()
    sd = model.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == {"norm.weight": (8,), "norm.bias": (8,)}
    g = torch.Generator().manual_seed(5)
    weight, bias = torch.randn(8, generator=g), torch.randn(8, generator=g)
    model.load_state_dict({"norm.weight": weight, "norm.bias": bias}, strict=True)
    x = torch.randn(2, 8, 16, 16, generator=g)
    with torch.no_grad():
        got = model(x)
    # torch's own per-channel affine: what the spec once needed two permutes for
    want = (x.permute(0, 2, 3, 1) * weight + bias).permute(0, 3, 1, 2)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got, F.batch_norm(x, torch.zeros(8), torch.ones(8), weight, bias, eps=0.0))
    text = archdsl.source(src)
    assert "self.weight = nn.Parameter(torch.ones((8,)))" in text and "self.weight.view(8, 1, 1)" in text
    assert "permute" not in text


def test_per_channel_parameters_keep_their_shape_rule_in_blocks_of_any_width() -> None:
    src = """
block Affine():
    weight = parameter([in.c], init="normal", std=1.0, dim=1)
    rows = parameter([in.h], init="normal", std=1.0, dim=2)
    x * weight * rows

network n():
    input [3, 8, 5]
    a: Affine()
    conv: conv2d(6, 1)
    b: Affine()
"""
    g = archdsl.graph(src)
    shapes = {n.name: tuple(n.shape) for n in g.records() if n.op == "parameter"}
    assert shapes == {"a.weight": (3, 1, 1), "a.rows": (8, 1), "b.weight": (6, 1, 1), "b.rows": (8, 1)}
    assert input_contract(g).describe() == "[3, 8, W] with H exactly 8; W any size"   # the row parameter fixes H
    model = archdsl.build(src).eval()
    sd = model.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items() if not k.startswith("conv")} == {
        "a.weight": (3,), "a.rows": (8,), "b.weight": (6,), "b.rows": (8,)}
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    x = torch.randn(2, 3, 8, 5)
    h = x * sd["a.weight"][:, None, None] * sd["a.rows"][:, None]
    h = F.conv2d(h, sd["conv.weight"], sd["conv.bias"])
    want = h * sd["b.weight"][:, None, None] * sd["b.rows"][:, None]
    with torch.no_grad():
        torch.testing.assert_close(model(x), want)
