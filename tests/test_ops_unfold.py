"""unfold / fold (archdsl/ops/patches.py) against nn.Unfold / nn.Fold.

Output shapes over a grid against torch (or a located error where torch refuses), values, the fold of an
unfold, no params or MACs (fvcore counts none), located errors, and the torch_forms fed real modules and calls.
"""
from __future__ import annotations

import pytest
import torch
from helpers import compile_run, error_of, fvcore_macs, net
from hypothesis import given, settings
from hypothesis import strategies as st
from op_forms import call, form, op_call

import archdsl
from archdsl.ops.core import TensorArg

F = torch.nn.functional
GRID = settings(max_examples=15, deadline=None)


@pytest.mark.parametrize("spec_args, kw", [
    ("3", {"kernel_size": 3}),
    ("3, padding=1, stride=2", {"kernel_size": 3, "padding": 1, "stride": 2}),
    ("[2, 3], dilation=[1, 2]", {"kernel_size": (2, 3), "dilation": (1, 2)}),
    ("4, stride=4", {"kernel_size": 4, "stride": 4}),   # non-overlapping patches
])
def test_unfold_and_fold_equal_torch(spec_args: str, kw: dict[str, object]) -> None:
    x = torch.randn(2, 3, 8, 9)
    size = "[8, 9]"
    body = f"    u = x -> unfold({spec_args})\n    f = u -> fold({size}, {spec_args})\n    output u, f\n"
    g, model, y = compile_run(net(body, [3, 8, 9]), x)
    u = F.unfold(x, **kw)   # type: ignore[arg-type]
    torch.testing.assert_close(y["u"], u)
    torch.testing.assert_close(y["f"], F.fold(u, (8, 9), **kw))   # type: ignore[arg-type]
    assert g.output_shapes["u"] == tuple(u.shape[1:]) and g.output_shapes["f"] == (3, 8, 9)
    assert g.total_params == 0 and g.total_macs == 0 == fvcore_macs(model, x[:1])


@GRID
@given(h=st.integers(1, 9), w=st.integers(1, 9), k=st.integers(1, 4), s=st.integers(1, 3), p=st.integers(0, 2),
       d=st.integers(1, 2))
def test_unfold_shape_is_torch_or_a_located_error(h: int, w: int, k: int, s: int, p: int, d: int) -> None:
    spec = net(f"    unfold({k}, dilation={d}, padding={p}, stride={s})\n", [2, h, w])
    try:
        want = F.unfold(torch.zeros(1, 2, h, w), k, dilation=d, padding=p, stride=s).shape[1:]
    except RuntimeError:
        assert "does not fit the padded input" in error_of(spec)
        return
    if want[1] == 0:   # torch returns no columns; the language refuses an empty tensor
        assert "does not fit the padded input" in error_of(spec)
        return
    assert archdsl.graph(spec).output_shapes["out"] == tuple(want)


def test_unfold_makes_vit_patches() -> None:
    # unfold(16, stride=16) then transpose is ViT's patch embedding input, [N, C*16*16]
    x = torch.randn(1, 3, 32, 48)
    g, _, y = compile_run(net("    unfold(16, stride=16)\n    transpose(1, 2)\n", [3, 32, 48]), x)
    assert g.output_shapes["out"] == (6, 768)
    torch.testing.assert_close(y[0, 1], x[0, :, 0:16, 16:32].reshape(-1))


@pytest.mark.parametrize("body, shape, message, hint", [
    ("    unfold(5)\n", [3, 4, 4], "unfold block 5x5 does not fit the padded input 4x4", "the input here"),
    ("    unfold(2)\n", [3, 8], "unfold expects a feature map [C, H, W], got [3, 8]", "[C, 1, L]"),
    ("    fold([4, 4], 2)\n", [6, 9], "error: fold needs rows that are a multiple of the block size 2x2 = 4; [6, 9] "
     "has 6", "C * kh * kw"),
    ("    fold([4, 4], 2)\n", [8, 8], "error: fold output_size [4, 4] holds 3x3 = 9 blocks, but [8, 8] has L = 8 "
     "columns", "those of the unfold"),
    ("    fold([4, 4], 2, stride=0)\n", [8, 9], "stride must be positive", ""),
])
def test_unfold_fold_errors_are_located_with_hints(body: str, shape: list[int], message: str, hint: str) -> None:
    err = error_of(net(body, shape))
    assert message in err and "<spec>:3:" in err and hint in err, err


def test_unfold_fold_torch_forms_reproduce_modules_and_calls() -> None:
    x = torch.randn(2, 4, 7, 6)
    mod = torch.nn.Unfold((2, 3), dilation=(2, 1), padding=1, stride=(1, 2))
    args = form("unfold", "module", "torch.nn.Unfold").args(call([(4, 7, 6)], mod))
    assert args == {"kernel_size": [2, 3], "dilation": [2, 1], "padding": 1, "stride": [1, 2]}
    _, _, y = compile_run(net(f"    {op_call('unfold', args)}\n", [4, 7, 6]), x)
    torch.testing.assert_close(y, mod(x))
    cols = y.shape[1:]
    fmod = torch.nn.Fold((7, 6), (2, 3), dilation=(2, 1), padding=1, stride=(1, 2))
    fargs = form("fold", "module", "torch.nn.Fold").args(call([tuple(cols)], fmod))
    assert fargs["output_size"] == [7, 6]
    _, _, z = compile_run(net(f"    {op_call('fold', fargs)}\n", list(cols)), y)
    torch.testing.assert_close(z, fmod(y))
    # functional calls: positional and keyword arguments
    fu = form("unfold", "function", "torch.nn.functional.unfold")
    assert fu.args(call([(4, 7, 6)], args=(TensorArg(0), 3), kwargs={"stride": 2})) == \
        {"kernel_size": 3, "dilation": 1, "padding": 0, "stride": 2}
    ff = form("fold", "function", "torch.nn.functional.fold")
    assert ff.args(call([(36, 9)], args=(TensorArg(0), (7, 6), 2, 1, 0, 2))) == \
        {"output_size": [7, 6], "kernel_size": 2, "dilation": 1, "padding": 0, "stride": 2}
    with pytest.raises(archdsl.ops.ShapeError, match="batch"):
        fu.args(call([(4, 7, 6)], args=(TensorArg(0), 3), batch_axes=[1]))
