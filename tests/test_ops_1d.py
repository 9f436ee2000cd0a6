"""Ops on sequences [C, L] (archdsl/ops/seq.py: conv1d and the 1-D pools; batchnorm on [C, L]) against torch.

Values against the torch modules with the same weights, output lengths over a grid against what torch
produces, parameters / MACs against the module and fvcore, state_dict keys, located errors, and each
torch_form fed a real module (or a functional call) rebuilds the op.
"""
from __future__ import annotations

import pytest
import torch
from helpers import assert_close, error_of, fvcore_macs, net, randomize_bn
from hypothesis import given, settings
from hypothesis import strategies as st
from op_forms import call, form, op_call

import archdsl
from archdsl.ops.core import TensorArg
from archdsl.passes.summary import buffer_count

F = torch.nn.functional
GRID = settings(max_examples=10, deadline=None)


def _same_as(spec: str, ref: torch.nn.Module, shape: tuple[int, ...]) -> torch.nn.Module:
    """The spec's model has ``ref``'s state_dict keys, loads it strictly and computes the same; its params and
    MACs equal the module's and fvcore's."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    randomize_bn(ref)
    model = archdsl.build(spec).eval()
    assert list(model.state_dict()) == list(ref.state_dict())
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert_close(model(x), ref.eval()(x))
    gr = archdsl.graph(spec)
    assert gr.total_params == sum(p.numel() for p in ref.parameters())
    assert gr.total_macs == fvcore_macs(model, x[:1])
    if not any(isinstance(getattr(m, "padding", 0), str) for m in ref.modules()):
        # fvcore sees no aten::_convolution in a conv with padding="same"/"valid" (a string): it counts 0
        assert gr.total_macs == fvcore_macs(ref, x[:1])
    return model


def _seq(*mods: tuple[str, torch.nn.Module]) -> torch.nn.Sequential:
    from collections import OrderedDict
    return torch.nn.Sequential(OrderedDict(mods))


# ---- conv1d --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec_args, kw", [
    ("8, 3", {}),
    ("8, 3, padding=\"same\", groups=2, bias=false", {"padding": "same", "groups": 2, "bias": False}),
    ("4, 5, stride=2, padding=2, dilation=2", {"stride": 2, "padding": 2, "dilation": 2}),
    ("6, 3, padding=1, padding_mode=\"reflect\"", {"padding": 1, "padding_mode": "reflect"}),
    ("6, 1, padding=\"valid\"", {"padding": "valid"}),
    ("6, 3, groups=6", {"groups": 6}),
])
def test_conv1d_equals_nn_conv1d(spec_args: str, kw: dict[str, object]) -> None:
    out, k = (int(v) for v in spec_args.split(",")[:2])
    spec = net(f"    conv: conv1d({spec_args})\n    bn: batchnorm\n", [6, 17])
    ref = _seq(("conv", torch.nn.Conv1d(6, out, k, **kw)), ("bn", torch.nn.BatchNorm1d(out)))  # type: ignore[arg-type]
    model = _same_as(spec, ref, (6, 17))
    assert type(model.bn) is torch.nn.BatchNorm1d and type(model.conv) is torch.nn.Conv1d


@GRID
@given(length=st.integers(1, 30), k=st.integers(1, 5), s=st.integers(1, 3), p=st.integers(0, 2),
       d=st.integers(1, 2))
def test_conv1d_output_length_is_torch_or_a_located_error(length: int, k: int, s: int, p: int, d: int) -> None:
    spec = net(f"    conv1d(2, {k}, stride={s}, padding={p}, dilation={d})\n", [2, length])
    try:
        want = torch.nn.Conv1d(2, 2, k, s, p, d)(torch.zeros(1, 2, length)).shape[1:]
    except RuntimeError:
        assert "is longer than the padded input" in error_of(spec)
        return
    assert archdsl.graph(spec).output_shapes["out"] == tuple(want)


def test_conv1d_torch_form_reproduces_the_module() -> None:
    for mod in (torch.nn.Conv1d(4, 8, 3, stride=2, padding=1, groups=2, bias=False),
                torch.nn.Conv1d(4, 6, 5, padding="same", dilation=2, padding_mode="circular")):
        args = form("conv1d", "module", "torch.nn.Conv1d").args(call([(4, 20)], mod))
        assert args["out_channels"] == mod.out_channels and args["bias"] == (mod.bias is not None)
        _same_as(net(f"    conv: {op_call('conv1d', args)}\n", [4, 20]), _seq(("conv", mod)), (4, 20))
    with pytest.raises(archdsl.ops.ShapeError, match="batch"):
        form("conv1d", "module", "torch.nn.Conv1d").args(call([(4, 20)], mod, batch_axes=[1]))


# ---- batchnorm on [C, L] and [F] -------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(6, 9), (6,)])
def test_batchnorm_on_sequences_and_features_is_batchnorm1d(shape: tuple[int, ...]) -> None:
    spec = net("    bn: batchnorm(eps=1e-3, momentum=0.2)\n", list(shape))
    model = _same_as(spec, _seq(("bn", torch.nn.BatchNorm1d(6, eps=1e-3, momentum=0.2))), shape)
    assert type(model.bn) is torch.nn.BatchNorm1d
    g = archdsl.graph(spec)
    assert sum(buffer_count(n) for n in g.records()) == 2 * 6 + 1 == sum(b.numel() for b in model.buffers())
    # deploy: nothing to fold a BN on [C, L] into: kept, same function
    dep = archdsl.deploy(model)
    x = torch.randn(3, *shape)
    with torch.no_grad():
        assert_close(dep(x), model(x))


def test_batchnorm_on_maps_is_still_batchnorm2d() -> None:
    src = archdsl.source(net("    conv2d(4, 3)\n    batchnorm\n", [3, 8, 8]))
    assert "nn.BatchNorm2d(4)" in src and "BatchNorm1d" not in src


def test_batchnorm_torch_forms() -> None:
    bn = torch.nn.BatchNorm1d(6, eps=1e-3, momentum=0.05, affine=False)
    args = form("batchnorm", "module", "torch.nn.BatchNorm1d").args(call([(6, 9)], bn))
    assert args == {"eps": 1e-3, "momentum": 0.05, "affine": False, "track_running_stats": True}
    _same_as(net(f"    bn: {op_call('batchnorm', args)}\n", [6, 9]), _seq(("bn", bn)), (6, 9))
    bn2 = torch.nn.BatchNorm2d(3)
    assert form("batchnorm", "module", "torch.nn.BatchNorm2d").args(call([(3, 4, 4)], bn2))["eps"] == 1e-5
    with pytest.raises(archdsl.ops.ShapeError, match="momentum=None"):
        form("batchnorm", "module", "torch.nn.BatchNorm1d").args(call([(6,)], torch.nn.BatchNorm1d(6, momentum=None)))


# ---- pools -----------------------------------------------------------------------------------------------
POOLS = [
    ("maxpool1d(3)", lambda x: F.max_pool1d(x, 3)),
    ("maxpool1d(3, stride=2, padding=1, dilation=2, ceil_mode=true)",
     lambda x: F.max_pool1d(x, 3, 2, 1, dilation=2, ceil_mode=True)),
    ("avgpool1d(2)", lambda x: F.avg_pool1d(x, 2)),
    ("avgpool1d(3, stride=2, padding=1, ceil_mode=true, count_include_pad=false)",
     lambda x: F.avg_pool1d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False)),
    ("adaptive_avgpool1d(4)", lambda x: F.adaptive_avg_pool1d(x, 4)),
    ("adaptive_maxpool1d(5)", lambda x: F.adaptive_max_pool1d(x, 5)),
]


@pytest.mark.parametrize("op, ref", POOLS)
@pytest.mark.parametrize("length", [11, 16])
def test_pools_1d_equal_torch(op: str, ref: object, length: int) -> None:
    x = torch.randn(2, 3, length)
    spec = net(f"    {op}\n", [3, length])
    g = archdsl.graph(spec)
    with torch.no_grad():
        y = archdsl.build(spec).eval()(x)
    want = ref(x)   # type: ignore[operator]
    assert g.output_shapes["out"] == tuple(want.shape[1:]) and g.total_macs == 0 and g.total_params == 0
    torch.testing.assert_close(y, want)


def test_pool_torch_forms_reproduce_modules_and_calls() -> None:
    x = torch.randn(2, 3, 13)
    cases = [
        ("maxpool1d", form("maxpool1d", "module", "torch.nn.MaxPool1d"),
         call([(3, 13)], torch.nn.MaxPool1d(3, 2, 1, dilation=2, ceil_mode=True)),
         lambda t: F.max_pool1d(t, 3, 2, 1, dilation=2, ceil_mode=True)),
        ("avgpool1d", form("avgpool1d", "module", "torch.nn.AvgPool1d"),
         call([(3, 13)], torch.nn.AvgPool1d(4, 3, 2, count_include_pad=False)),
         lambda t: F.avg_pool1d(t, 4, 3, 2, count_include_pad=False)),
        ("maxpool1d", form("maxpool1d", "function", "torch.nn.functional.max_pool1d"),
         call([(3, 13)], args=(TensorArg(0), 2), kwargs={"ceil_mode": True}),
         lambda t: F.max_pool1d(t, 2, ceil_mode=True)),
        ("avgpool1d", form("avgpool1d", "function", "torch.nn.functional.avg_pool1d"),
         call([(3, 13)], args=(TensorArg(0), 3, 1, 1)), lambda t: F.avg_pool1d(t, 3, 1, 1)),
        ("adaptive_avgpool1d", form("adaptive_avgpool1d", "module", "torch.nn.AdaptiveAvgPool1d"),
         call([(3, 13)], torch.nn.AdaptiveAvgPool1d(5)), lambda t: F.adaptive_avg_pool1d(t, 5)),
        ("adaptive_maxpool1d", form("adaptive_maxpool1d", "function", "torch.nn.functional.adaptive_max_pool1d"),
         call([(3, 13)], args=(TensorArg(0), 4)), lambda t: F.adaptive_max_pool1d(t, 4)),
        ("adaptive_maxpool1d", form("adaptive_maxpool1d", "module", "torch.nn.AdaptiveMaxPool1d"),
         call([(3, 13)], torch.nn.AdaptiveMaxPool1d(6)), lambda t: F.adaptive_max_pool1d(t, 6)),
        # F.avg_pool1d and F.adaptive_avg_pool1d are torch builtins: a trace names them torch.*
        ("avgpool1d", form("avgpool1d", "function", "torch.avg_pool1d"),
         call([(3, 13)], args=(TensorArg(0), 2), kwargs={"ceil_mode": True}),
         lambda t: F.avg_pool1d(t, 2, ceil_mode=True)),
        ("adaptive_avgpool1d", form("adaptive_avgpool1d", "function", "torch.adaptive_avg_pool1d"),
         call([(3, 13)], args=(TensorArg(0), (3,))), lambda t: F.adaptive_avg_pool1d(t, 3)),
    ]
    for op, f, c, ref in cases:
        args = f.args(c)
        assert args is not None
        with torch.no_grad():
            y = archdsl.build(net(f"    {op_call(op, args)}\n", [3, 13])).eval()(x)
        torch.testing.assert_close(y, ref(x))
    # a pool returning its indices is not the op
    assert form("maxpool1d", "module", "torch.nn.MaxPool1d").args(
        call([(3, 13)], torch.nn.MaxPool1d(2, return_indices=True))) is None


def test_a_1d_network_counts_like_fvcore() -> None:
    spec = net("    conv1d(16, 7, stride=2, padding=3, bias=false)\n    batchnorm\n    relu\n    maxpool1d(3, 2, 1)\n"
               "    conv1d(32, 3, padding=\"same\", groups=4)\n    adaptive_avgpool1d(1)\n    flatten\n    linear(5)\n",
               [4, 64])
    g = archdsl.graph(spec)
    model = archdsl.build(spec).eval()
    x = torch.randn(1, 4, 64)
    assert g.total_macs == fvcore_macs(model, x) > 0
    assert g.total_params == sum(p.numel() for p in model.parameters())
    assert g.output_shapes["out"] == (5,)


# ---- errors ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body, shape, message, hint", [
    ("    conv1d(8, 3)\n", [3, 8, 8], "conv1d expects a sequence [C, L], got [3, 8, 8]", "conv2d"),
    ("    conv1d(8, 3, groups=4)\n", [6, 10], "groups=4 does not divide the 6 input channels", "divisors of 6"),
    ("    conv1d(8, 9)\n", [6, 5], "kernel 9 (dilation 1) is longer than the padded input 5", "smaller kernel"),
    ("    conv1d(8, 4, padding=\"same\")\n", [6, 10], "padding='same' with an even effective kernel",
     "odd kernel size"),
    ("    conv1d(8, [3, 3])\n", [6, 10], "conv1d: 'kernel_size' must be an integer, got list [3, 3]", "conv1d("),
    ("    maxpool1d(2, padding=2)\n", [6, 10], "padding 2 is more than half the kernel 2", "pad <= kernel_size // 2"),
    ("    avgpool1d(12)\n", [6, 10], "pooling window 12 is longer than the padded input 10", "the input here"),
    ("    adaptive_avgpool1d(4)\n", [6], "adaptive pooling expects a sequence [C, L], got [6]", "reshape"),
])
def test_1d_errors_are_located_with_hints(body: str, shape: list[int], message: str, hint: str) -> None:
    err = error_of(net(body, shape))
    assert message in err and "<spec>:3:" in err and hint in err, err
