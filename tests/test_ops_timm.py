"""The tensor-arithmetic ops the timm specs need: softmax, mean, reduce_sum, reshape/view, scale.

For each op: its shape rule against the shape torch actually produces over a small grid (and the values
against the torch function it stands for), that it owns no parameters and counts no MACs (the reference
counts include only conv/linear/matmul), and its errors: an ArchError at the op's line and column with
a message and a hint. Everything runs on tiny inputs.
"""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import archdsl
from helpers import error_of, net

torch = pytest.importorskip("torch")

# every example compiles and execs a module, so keep the count low
GRID = settings(max_examples=10, deadline=None)



def forward(src: str, x: Any) -> Any:
    model = archdsl.build(src)
    model.eval()
    with torch.no_grad():
        return model(x)


def check_op(src: str, shape: list[int], expected: Any) -> None:
    """Graph shape == torch shape, values == ``expected(x)``, no params, no MACs."""
    g = archdsl.graph(src)
    assert g.total_params == 0 and g.total_macs == 0
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    y = forward(src, x)
    assert tuple(y.shape[1:]) == g.output_shapes["out"]
    want = expected(x)
    assert y.shape == want.shape
    torch.testing.assert_close(y, want)



shapes3 = st.lists(st.integers(1, 5), min_size=3, max_size=3)


# ---- softmax -----------------------------------------------------------------------------------------
@GRID
@given(shape=shapes3, dim=st.sampled_from([1, 2, 3, -1, -3]))
def test_softmax_matches_torch(shape: list[int], dim: int) -> None:
    check_op(net(f"    softmax({dim})\n", shape), shape, lambda x: torch.softmax(x, dim))


def test_softmax_errors() -> None:
    msg = error_of(net("    softmax(4)\n", [3, 4, 4]))
    assert "<spec>:3:13: error: softmax dim=4 is out of range: a sample has 3 dims" in msg
    assert "hint: valid dims here: 1..3 or -3..-1" in msg
    msg = error_of(net("    softmax(0)\n", [3, 4, 4]))
    assert "over the batch dim (0) is not supported" in msg and "hint:" in msg
    msg = error_of(net("    softmax(1.5)\n", [3, 4, 4]))
    assert "'dim' must be an integer, got float 1.5" in msg


# ---- mean / reduce_sum -------------------------------------------------------------------------------
@GRID
@given(shape=shapes3, dims=st.sampled_from([1, 2, [2, 3], [1, 3], -1, [-2, -1]]), keepdim=st.booleans(),
       op=st.sampled_from(["mean", "reduce_sum"]))
def test_reductions_match_torch(shape: list[int], dims: Any, keepdim: bool, op: str) -> None:
    src = net(f"    {op}({dims}, keepdim={'true' if keepdim else 'false'})\n", shape)
    tdims = tuple(dims) if isinstance(dims, list) else dims
    fn = torch.mean if op == "mean" else torch.sum
    check_op(src, shape, lambda x: fn(x, tdims, keepdim=keepdim))


def test_reductions_on_a_stack_of_branches() -> None:
    """SK attention's pattern: stack two branches [2, C, H, W], sum them back to [C, H, W]."""
    src = net("    stack:\n        identity\n        relu\n    reduce_sum(1)\n    mean([2, 3], keepdim=true)\n",
              [4, 3, 3])
    assert archdsl.graph(src).output_shapes["out"] == (4, 1, 1)
    check_op(src, [4, 3, 3], lambda x: (x + torch.relu(x)).mean((2, 3), keepdim=True))


def test_reduction_errors() -> None:
    msg = error_of(net("    mean([1, 2, 3])\n", [3, 4, 4]))
    assert "<spec>:3:10: error: mean: reducing every dim of [3, 4, 4] leaves only the batch" in msg
    assert "hint: use keepdim=true" in msg
    msg = error_of(net("    reduce_sum([2, -2])\n", [3, 4, 4]))
    assert "<spec>:3:16: error: reduce_sum dims [2, -2] name the same dim twice" in msg
    msg = error_of(net("    mean(5)\n", [3, 4, 4]))
    assert "mean dim=5 is out of range" in msg and "hint: valid dims here" in msg
    msg = error_of(net("    mean([2, \"h\"])\n", [3, 4, 4]))
    assert "'dim' must be an integer or a list of integers" in msg
    msg = error_of(net("    mean([])\n", [3, 4, 4]))
    assert "'dim' must be an integer or a list of integers, got list []" in msg
    # `sum` stays the built-in over a list of numbers
    assert archdsl.graph(net("    c = sum([1, 2])\n    conv2d(c, 1)\n", [3, 4, 4])).output_shapes["out"][0] == 3


# ---- reshape / view ----------------------------------------------------------------------------------
@GRID
@given(c=st.integers(1, 4), h=st.integers(1, 4), w=st.integers(1, 4),
       form=st.sampled_from(["flat", "split_c", "merge_hw", "infer_first"]), op=st.sampled_from(["reshape", "view"]))
def test_reshape_matches_torch(c: int, h: int, w: int, form: str, op: str) -> None:
    target = {"flat": [-1], "split_c": [c, 1, h, w], "merge_hw": [c, -1], "infer_first": [-1, w]}[form]
    src = net(f"    {op}({target})\n", [c, h, w])
    check_op(src, [c, h, w], lambda x: x.reshape(x.shape[0], *target))


def test_reshape_keeps_the_inferred_dim_at_run_time() -> None:
    """The generated code keeps the spec's -1, so the module also runs at another input size."""
    src = net("    view([4, -1])\n", [4, 6, 6])
    assert archdsl.graph(src).output_shapes["out"] == (4, 36)
    assert ".reshape(x.shape[0], 4, -1)" in archdsl.source(src) or "reshape(x_in.shape[0], 4, -1)" in archdsl.source(src)
    y = forward(src, torch.randn(2, 4, 3, 3))
    assert tuple(y.shape) == (2, 4, 9)


def test_reshape_errors() -> None:
    msg = error_of(net("    reshape([-1, -1])\n", [4, 2, 2]))
    assert "<spec>:3:13: error: reshape [-1, -1] has more than one -1" in msg
    assert "hint: only one dim can be inferred" in msg
    msg = error_of(net("    reshape([3, -1])\n", [4, 2, 2]))
    assert "has 16 elements per sample, not a multiple of 3" in msg
    msg = error_of(net("    reshape([4, 5])\n", [4, 2, 2]))
    assert "reshape [4, 5] holds 20 elements per sample but [4, 2, 2] has 16" in msg
    assert "hint: use -1 for the dim to infer" in msg
    msg = error_of(net("    reshape([4, 0, 4])\n", [4, 2, 2]))
    assert "sizes must be positive" in msg
    msg = error_of(net("    reshape(16)\n", [4, 2, 2]))
    assert "'shape' must be a list, got int 16" in msg


# ---- scale -------------------------------------------------------------------------------------------
@GRID
@given(shape=shapes3, factor=st.sampled_from([0.17, 0.1, 2, -1.5]))
def test_scale_matches_torch(shape: list[int], factor: float) -> None:
    check_op(net(f"    scale({factor})\n", shape), shape, lambda x: x * factor)


def test_scaled_residual_like_inception_resnet() -> None:
    src = net("    add:\n        seq:\n            proj: conv2d(in.c, 1)\n            scale(0.2)\n"
              "        identity\n    relu\n", [3, 4, 4])
    model = archdsl.build(src).eval()
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        want = torch.relu(model.proj(x) * 0.2 + x)
        torch.testing.assert_close(model(x), want)


def test_scale_errors() -> None:
    msg = error_of(net("    scale(\"big\")\n", [3, 4, 4]))
    assert "<spec>:3:11: error: scale: 'factor' must be a number, got string \"big\"" in msg
    msg = error_of(net("    scale(true)\n", [3, 4, 4]))
    assert "'factor' must be a number, got bool true" in msg
    msg = error_of(net("    scale\n", [3, 4, 4]))
    assert "scale needs 'factor'" in msg and "hint: scale(factor)" in msg
