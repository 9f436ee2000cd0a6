"""groupnorm, rmsnorm and normalize (archdsl/ops/norms.py) against torch.

Each op in a spec, built, loaded with the torch module's weights (randomized, so no ones/zeros init hides a
wrong axis) and compared with it; parameters, state_dict keys and fvcore's MACs equal the torch module's;
errors located with a hint; each torch_form, fed a real module instance, gives args that rebuild the op.
"""
from __future__ import annotations

import pytest
import torch
from helpers import assert_close, compile_run, error_of, fvcore_macs, net
from op_forms import call, form, op_call

import archdsl

F = torch.nn.functional


def _randomize(m: torch.nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g))


class _Wrap(torch.nn.Module):
    """The reference: one torch module applied as the spec applies the op (channels-last around it when
    ``channels_last``), under the spec's label so the state_dicts line up."""

    def __init__(self, label: str, mod: torch.nn.Module, channels_last: bool = False) -> None:
        super().__init__()
        self.add_module(label, mod)
        self.label, self.channels_last = label, channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = getattr(self, self.label)
        if self.channels_last:
            return m(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return m(x)


def _check_against(spec: str, ref: torch.nn.Module, shape: tuple[int, ...]) -> archdsl.Graph:
    """The spec's model loads ``ref``'s state_dict strictly (equal keys) and computes the same, with the same
    parameter count and fvcore MACs."""
    _randomize(ref)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(3))
    g = archdsl.graph(spec)
    model = archdsl.build(spec).eval()
    assert list(model.state_dict()) == list(ref.state_dict())
    model.load_state_dict(ref.state_dict(), strict=True)
    with torch.no_grad():
        assert_close(model(x), ref.eval()(x))
    assert g.total_params == sum(p.numel() for p in ref.parameters())
    assert g.total_macs == fvcore_macs(ref, x[:1]) == fvcore_macs(model, x[:1])
    return g


# ---- groupnorm -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, groups, extra", [
    ((8, 5, 6), 4, ""), ((8, 5, 6), 1, ", eps=1e-3"), ((6, 7), 3, ", affine=false"), ((6,), 2, ""),
    ((8, 5, 6), 8, ""),
])
def test_groupnorm_equals_nn_groupnorm(shape: tuple[int, ...], groups: int, extra: str) -> None:
    spec = net(f"    gn: groupnorm({groups}{extra})\n", list(shape))
    affine = "affine=false" not in extra
    ref = _Wrap("gn", torch.nn.GroupNorm(groups, shape[0], eps=1e-3 if "eps" in extra else 1e-5, affine=affine))
    g = _check_against(spec, ref, shape)
    assert g.output_shapes["out"] == shape


def test_groupnorm_generated_code_names_the_torch_module() -> None:
    src = archdsl.source(net("    gn: groupnorm(2, eps=1e-6, affine=false)\n", [4, 3, 3]))
    assert "nn.GroupNorm(2, 4, eps=1e-06, affine=False)" in src


def test_timm_groupnorm1_is_groupnorm_1_with_the_same_keys() -> None:
    from timm.layers.norm import GroupNorm, GroupNorm1
    for mod, target in ((GroupNorm1(6), "timm.layers.norm.GroupNorm1"),
                        (GroupNorm(6, num_groups=3, eps=1e-6), "timm.layers.norm.GroupNorm")):
        args = form("groupnorm", "module", target).args(call([(6, 4, 5)], mod))
        assert args == {"num_groups": mod.num_groups, "eps": mod.eps, "affine": True}
        _check_against(net(f"    gn: {op_call('groupnorm', args)}\n", [6, 4, 5]), _Wrap("gn", mod), (6, 4, 5))


def test_groupnorm_torch_form_reproduces_the_module() -> None:
    mod = torch.nn.GroupNorm(3, 9, eps=1e-4, affine=False)
    args = form("groupnorm", "module", "torch.nn.GroupNorm").args(call([(9, 4)], mod))
    assert args == {"num_groups": 3, "eps": 1e-4, "affine": False}
    _check_against(net(f"    gn: {op_call('groupnorm', args)}\n", [9, 4]), _Wrap("gn", mod), (9, 4))
    with pytest.raises(archdsl.ops.ShapeError, match="batch"):   # a GroupNorm on a batch moved off dim 0
        form("groupnorm", "module", "torch.nn.GroupNorm").args(call([(9, 4)], mod, batch_axes=[1]))


# ---- rmsnorm ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, spec_args, eps, channels_last", [
    ((5, 8), "", None, False),                     # tokens [N, C]: the last dim
    ((4, 5, 8), "dim=-1, eps=1e-6", 1e-6, False),  # channels-last [H, W, C]
    ((8, 4, 5), "eps=1e-5", 1e-5, True),           # the channels of [C, H, W], through a permute
    ((8,), "affine=false", None, False),
])
def test_rmsnorm_equals_nn_rmsnorm(shape: tuple[int, ...], spec_args: str, eps: float | None,
                                   channels_last: bool) -> None:
    c = shape[0] if channels_last else shape[-1]
    ref = _Wrap("rn", torch.nn.RMSNorm(c, eps=eps, elementwise_affine="affine=false" not in spec_args),
                channels_last)
    g = _check_against(net(f"    rn: rmsnorm({spec_args})\n", list(shape)), ref, shape)
    assert g.output_shapes["out"] == shape


def test_rmsnorm_torch_forms_reproduce_the_modules() -> None:
    from timm.layers.norm import RmsNorm, RmsNorm2d
    mod = torch.nn.RMSNorm(8, eps=1e-4)
    args = form("rmsnorm", "module", "torch.nn.RMSNorm").args(call([(3, 4, 8)], mod))
    assert args == {"eps": 1e-4, "affine": True, "dim": 3}
    _check_against(net(f"    rn: {op_call('rmsnorm', args)}\n", [3, 4, 8]), _Wrap("rn", mod), (3, 4, 8))
    t = RmsNorm(8)
    args = form("rmsnorm", "module", "timm.layers.norm.RmsNorm").args(call([(5, 8)], t))
    _check_against(net(f"    rn: {op_call('rmsnorm', args)}\n", [5, 8]), _Wrap("rn", t), (5, 8))
    t2 = RmsNorm2d(6, eps=1e-5)
    args = form("rmsnorm", "module", "timm.layers.norm.RmsNorm2d").args(call([(6, 3, 4)], t2))
    assert args == {"eps": 1e-5, "affine": True, "dim": 1}
    _check_against(net(f"    rn: {op_call('rmsnorm', args)}\n", [6, 3, 4]), _Wrap("rn", t2), (6, 3, 4))
    with pytest.raises(archdsl.ops.ShapeError, match="2 last dims"):
        form("rmsnorm", "module", "torch.nn.RMSNorm").args(call([(4, 8)], torch.nn.RMSNorm([4, 8])))


# ---- normalize -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec_args, kw", [
    ("", {}), ("dim=-1", {"dim": -1}), ("p=1, dim=2, eps=0.5", {"p": 1.0, "dim": 2, "eps": 0.5}),
    ("p=3.5, dim=-3", {"p": 3.5, "dim": -3}),
])
def test_normalize_equals_f_normalize(spec_args: str, kw: dict[str, object]) -> None:
    x = torch.randn(2, 3, 4, 5) * 0.1
    g, _, y = compile_run(net(f"    normalize({spec_args})\n", [3, 4, 5]), x)
    assert g.output_shapes["out"] == (3, 4, 5) and g.total_params == 0 and g.total_macs == 0
    torch.testing.assert_close(y, F.normalize(x, **kw))   # type: ignore[arg-type]


def test_normalize_torch_form_reads_positional_and_keyword_args() -> None:
    f = form("normalize", "function", "torch.nn.functional.normalize")
    from archdsl.ops.core import TensorArg
    assert f.args(call([(3, 4, 5)], args=(TensorArg(0),))) == {"p": 2.0, "dim": 1, "eps": 1e-12}
    args = f.args(call([(3, 4, 5)], args=(TensorArg(0), 1), kwargs={"dim": -1}))
    assert args == {"p": 1.0, "dim": 3, "eps": 1e-12}
    x = torch.randn(2, 3, 4, 5)
    _, _, y = compile_run(net(f"    {op_call('normalize', args)}\n", [3, 4, 5]), x)
    torch.testing.assert_close(y, F.normalize(x, 1, -1))
    # a batch moved to dim 2: torch's dim 1 is per-sample dim 1, torch's dim 3 is per-sample dim 3
    assert f.args(call([(3, 4, 5)], args=(TensorArg(0),), kwargs={"dim": 3}, batch_axes=[2]))["dim"] == 3
    with pytest.raises(archdsl.ops.ShapeError, match="batch axis"):
        f.args(call([(3, 4, 5)], args=(TensorArg(0),), kwargs={"dim": 0}))


# ---- errors ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body, shape, message, hint", [
    ("    groupnorm(3)\n", [8, 4, 4], "groupnorm num_groups=3 does not divide the 8 channels", "divisors of 8"),
    ("    rmsnorm(dim=2)\n", [8, 4, 4], "rmsnorm normalizes the channels of [C, H, W] or the last dim",
     "permute the dim to the end"),
    ("    rmsnorm(dim=-4)\n", [8, 4, 4], "rmsnorm dim=-4 is out of range", "use dim=1"),
    ("    normalize(dim=0)\n", [8, 4, 4], "normalize over the batch dim (0) is not supported", "dims count"),
    ("    normalize(dim=5)\n", [8, 4, 4], "normalize dim=5 is out of range", "valid dims here"),
])
def test_norm_errors_are_located_with_hints(body: str, shape: list[int], message: str, hint: str) -> None:
    err = error_of(net(body, shape))
    assert message in err and "<spec>:3:" in err and hint in err, err


@pytest.mark.parametrize("written, meant", [
    ("gn(2)", "groupnorm"), ("batchnorm1d", "batchnorm"), ("l2normalize", "normalize"), ("im2col(2)", "unfold"),
    ("col2im([4, 4], 2)", "fold"), ("unstack", "unbind"),
])
def test_other_names_of_the_new_ops_point_to_them(written: str, meant: str) -> None:
    err = error_of(net(f"    {written}\n", [4, 6, 6]))
    assert "<spec>:3:5:" in err and f"did you mean '{meant}'?" in err, err
