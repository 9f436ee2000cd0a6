"""The ConvNeXt-era ops (layernorm, permute, linear on any rank, layer_scale, drop_path) and the
computed labels used by the torchvision specs (named, str, ceil).

For each op: its shape rule against what torch actually produces over a small grid of shapes, its
parameter count against the built module, its MACs against fvcore's count, and its errors (an
ArchError with the op's line and column, a message and a hint). Everything runs on tiny inputs.
"""
from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import archdsl
from helpers import ROOT, error_of, net

torch = pytest.importorskip("torch")

# a small grid per op: every example compiles and execs a module, so keep the count low
GRID = settings(max_examples=12, deadline=None)



def run(model: torch.nn.Module, shape: tuple[int, ...], batch: int = 2) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(torch.randn(batch, *shape))


def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial values for every parameter (LayerNorm starts at weight 1 / bias 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fvcore_macs(model: torch.nn.Module, shape: tuple[int, ...]) -> int:
    """fvcore's conv/linear/matmul count for one sample: the definition reference-counts.json uses."""
    from fvcore.nn import FlopCountAnalysis
    fca = FlopCountAnalysis(model.eval(), torch.randn(1, *shape))
    fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return sum(v for k, v in fca.by_operator().items() if k in ("conv", "linear", "addmm", "matmul", "einsum"))



# ---- layernorm ---------------------------------------------------------------------------------------
@GRID
@given(c=st.integers(1, 12), h=st.integers(1, 6), w=st.integers(1, 6), eps=st.sampled_from([1e-5, 1e-6]))
def test_layernorm_over_channels_matches_torchvision_layernorm2d(c: int, h: int, w: int, eps: float) -> None:
    from torchvision.models.convnext import LayerNorm2d
    src = net(f"    norm: layernorm(eps={eps})\n", [c, h, w])
    g = archdsl.graph(src)
    assert g.output_shapes["out"] == (c, h, w)
    assert g.total_params == 2 * c and g.total_macs == 0
    ours = archdsl.build(src)
    randomize(ours)
    ref = LayerNorm2d(c, eps=eps)
    ref.load_state_dict({k.removeprefix("norm."): v for k, v in ours.state_dict().items()}, strict=True)
    assert list(ours.state_dict()) == ["norm.weight", "norm.bias"]
    assert n_params(ours) == g.total_params
    x = torch.randn(2, c, h, w)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), ref(x))


@GRID
@given(dims=st.lists(st.integers(1, 7), min_size=1, max_size=3), affine=st.booleans())
def test_layernorm_over_the_last_dim(dims: list[int], affine: bool) -> None:
    # rank 1 directly; rank 3 after a permute to channels-last (dim=-1 says which dim)
    if len(dims) == 3:
        body = f"    permute([0, 2, 3, 1])\n    ln: layernorm(affine={'true' if affine else 'false'}, dim=-1)\n"
        out = (dims[1], dims[2], dims[0])
    else:
        dims = dims[:1]
        body = f"    ln: layernorm(affine={'true' if affine else 'false'})\n"
        out = tuple(dims)
    g = archdsl.graph(net(body, dims))
    assert g.output_shapes["out"] == out
    assert g.total_params == (2 * out[-1] if affine else 0)
    ours = archdsl.build(net(body, dims))
    assert n_params(ours) == g.total_params
    x = torch.randn(2, *dims)
    ref_in = x.permute(0, 2, 3, 1) if len(dims) == 3 else x
    with torch.no_grad():
        expect = torch.nn.functional.layer_norm(ref_in, (out[-1],), ours.ln.weight if affine else None,
                                                ours.ln.bias if affine else None)
        torch.testing.assert_close(ours.eval()(x), expect)


def test_layernorm_errors_point_at_the_argument() -> None:
    msg = error_of(net("    layernorm(dim=2)\n", [4, 5, 6]))
    assert "<text>:3:15" in msg or ":3:15:" in msg, msg
    assert "layernorm normalizes the channels of [C, H, W] or the last dim" in msg
    assert "hint: permute the dim to the end first" in msg
    msg = error_of(net("    layernorm(dim=5)\n", [4, 5, 6]))
    assert "out of range for [4, 5, 6]" in msg and "hint:" in msg
    msg = error_of(net("    layernorm(eps=0.0)\n", [4, 5, 6]))
    assert "eps must be positive" in msg
    msg = error_of(net("    layernorm(dim=1.5)\n", [4, 5, 6]))
    assert "'dim' must be an integer or none" in msg


# ---- permute -----------------------------------------------------------------------------------------
@GRID
@given(shape=st.sampled_from([1, 3]).flatmap(lambda r: st.lists(st.integers(1, 5), min_size=r, max_size=r)),
       data=st.data())
def test_permute_shape_rule_matches_torch(shape: list[int], data: st.DataObject) -> None:
    rest = data.draw(st.permutations(list(range(1, len(shape) + 1))))
    dims = [0, *rest]
    src = net(f"    permute({dims})\n", shape)
    g = archdsl.graph(src)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        y = archdsl.build(src).eval()(x)
    assert tuple(y.shape[1:]) == g.output_shapes["out"]
    torch.testing.assert_close(y, x.permute(*dims))
    assert g.total_params == 0 and g.total_macs == 0


def test_permute_errors() -> None:
    msg = error_of(net("    permute([0, 2, 1])\n", [4, 5, 6]))
    assert "not a permutation of 0..3 for [4, 5, 6]" in msg and "hint: e.g. permute([0, 2, 3, 1])" in msg
    assert ":3:13:" in msg
    msg = error_of(net("    permute([1, 0, 2, 3])\n", [4, 5, 6]))
    assert "must keep the batch dim first" in msg and "hint: start the list with 0" in msg
    msg = error_of(net("    permute(3)\n", [4, 5, 6]))
    assert "'dims' must be a list" in msg


# ---- linear on any rank --------------------------------------------------------------------------------
@GRID
@given(c=st.integers(1, 8), h=st.integers(1, 5), w=st.integers(1, 5), out=st.integers(1, 9),
       bias=st.booleans())
def test_linear_on_channels_last_maps(c: int, h: int, w: int, out: int, bias: bool) -> None:
    src = net(f"    permute([0, 2, 3, 1])\n    fc: linear({out}, bias={'true' if bias else 'false'})\n",
              [c, h, w])
    g = archdsl.graph(src)
    assert g.output_shapes["out"] == (h, w, out)
    model = archdsl.build(src)
    assert tuple(run(model, (c, h, w)).shape[1:]) == (h, w, out)
    assert g.total_params == n_params(model) == c * out + (out if bias else 0)
    # fvcore counts a Linear on [H, W, C] as H * W * C * out
    assert g.total_macs == fvcore_macs(model, (c, h, w)) == h * w * c * out


def test_linear_on_vectors_is_unchanged() -> None:
    src = net("    fc: linear(7)\n", [12])
    g = archdsl.graph(src)
    assert g.output_shapes["out"] == (7,) and g.total_params == 12 * 7 + 7 and g.total_macs == 84
    assert run(archdsl.build(src), (12,)).shape == (2, 7)


def test_linear_errors() -> None:
    msg = error_of(net("    linear(0)\n", [12]))
    assert "out_features must be positive, got 0" in msg and ":3:12:" in msg


# ---- layer_scale ---------------------------------------------------------------------------------------
@GRID
@given(c=st.integers(1, 10), h=st.integers(1, 4), w=st.integers(1, 4), init=st.sampled_from([1e-6, 0.5, 2.0]))
def test_layer_scale_is_a_parameter_named_by_its_label(c: int, h: int, w: int, init: float) -> None:
    src = f"""
block B():
    conv: conv2d(in.c, 1)
    layer_scale: layer_scale({init})

network n():
    input [{c}, {h}, {w}]
    blocks: [B(), B()]
"""
    g = archdsl.graph(src)
    assert g.output_shapes["out"] == (c, h, w)
    model = archdsl.build(src)
    sd = model.state_dict()
    # stored directly under the label, shaped like torchvision ConvNeXt's (C, 1, 1)
    assert sd["blocks.0.layer_scale"].shape == (c, 1, 1)
    assert torch.all(sd["blocks.1.layer_scale"] == init)
    assert g.total_params == n_params(model) == 2 * (c * c + c + c)
    assert g.total_macs == fvcore_macs(model, (c, h, w))
    randomize(model)
    x = torch.randn(2, c, h, w)
    with torch.no_grad():
        y = x
        for i in range(2):
            blk = model.blocks[i]
            y = blk.layer_scale * blk.conv(y)
        torch.testing.assert_close(model.eval()(x), y)


def test_layer_scale_over_the_last_dim_and_unlabelled() -> None:
    src = net("    permute([0, 2, 3, 1])\n    layer_scale(0.1, dim=-1)\n    s: layer_scale\n", [6, 3, 4])
    g = archdsl.graph(src)
    assert g.output_shapes["out"] == (3, 4, 6) and g.total_params == 6 + 3
    model = archdsl.build(src)
    sd = model.state_dict()
    assert sd["1"].shape == (6,) and sd["s"].shape == (3, 1, 1)  # (C, 1, 1) of a rank-3 shape by default
    assert torch.allclose(sd["1"], torch.full((6,), 0.1))


def test_layer_scale_errors() -> None:
    msg = error_of(net("    layer_scale(dim=4)\n", [4, 5, 6]))
    assert "layer_scale dim=4 is out of range for [4, 5, 6]" in msg and ":3:17:" in msg and "hint:" in msg
    msg = error_of(net("    layer_scale(init=true)\n", [4, 5, 6]))
    assert "'init' must be a number" in msg


# ---- drop_path -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["row", "batch"])
@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_drop_path_matches_torchvision_stochastic_depth(mode: str, p: float) -> None:
    from torchvision.ops import stochastic_depth
    src = net(f'    drop_path({p}, mode="{mode}")\n', [3, 4, 4])
    g = archdsl.graph(src)
    assert g.output_shapes["out"] == (3, 4, 4) and g.total_params == 0 and g.total_macs == 0
    model = archdsl.build(src)
    assert list(model.state_dict()) == []
    x = torch.randn(8, 3, 4, 4)
    torch.testing.assert_close(model.eval()(x), x)  # identity in eval
    model.train()
    torch.manual_seed(5)
    ours = model(x)
    torch.manual_seed(5)
    ref = stochastic_depth(x, p, mode, training=True)
    torch.testing.assert_close(ours, ref)


def test_drop_path_errors() -> None:
    msg = error_of(net("    drop_path(1.5)\n", [3, 4, 4]))
    assert "drop_path probability must be between 0 and 1, got 1.5" in msg and ":3:15:" in msg
    msg = error_of(net('    drop_path(0.1, mode="rows")\n', [3, 4, 4]))
    assert "'mode' must be one of \"row\", \"batch\"" in msg


# ---- computed labels and the builtins the specs use ------------------------------------------------------
def test_named_gives_computed_module_names() -> None:
    src = """
block B(c):
    conv: conv2d(c, 1)

network n():
    input [3, 4, 4]
    stages: [named("block" + str(k + 1), [named("block" + str(k + 1) + "-" + str(i), B(4)) for i in range(2)][0])
             for k in range(ceil(1.5))]
    tail: named("ignored", B(4))
"""
    model = archdsl.build(src)
    assert list(model.state_dict()) == ["stages.block1.conv.weight", "stages.block1.conv.bias",
                                        "stages.block2.conv.weight", "stages.block2.conv.bias",
                                        "tail.conv.weight", "tail.conv.bias"]  # an explicit label wins
    assert run(model, (3, 4, 4)).shape == (2, 4, 4, 4)


def test_named_with_characters_python_names_cannot_have() -> None:
    src = net('    s: [named("block1-0", conv2d(4, 1)), named("block1-1", conv2d(4, 1))]\n', [3, 4, 4])
    model = archdsl.build(src)
    assert list(model.state_dict())[:2] == ["s.block1-0.weight", "s.block1-0.bias"]
    assert run(model, (3, 4, 4)).shape == (2, 4, 4, 4)


def test_named_errors() -> None:
    msg = error_of(net('    named("a.b", conv2d(4, 1))\n', [3, 4, 4]))
    assert "may not contain '.'" in msg and ":3:5:" in msg
    msg = error_of(net("    named(3, conv2d(4, 1))\n", [3, 4, 4]))
    assert "the label must be a non-empty string, got int 3" in msg
    msg = error_of(net('    named("a", 3)\n', [3, 4, 4]))
    assert "the second argument must be a layer, got int" in msg


def test_checking_these_specs_does_not_import_torch() -> None:
    code = ("import sys, archdsl; archdsl.graph('specs/convnext.arch:convnext_tiny'); "
            "archdsl.graph('specs/regnet.arch'); archdsl.source('specs/efficientnet.arch:efficientnet_b0'); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_convnext_block_trains_like_torchvision_cnblock() -> None:
    """layer_scale + drop_path in train mode: same parameters, same random draws, same output."""
    from torchvision.models.convnext import CNBlock
    src = """from "specs/convnext.arch" import CNBlock
network n():
    input [8, 6, 6]
    blk: CNBlock(8, sd_prob=0.5, layer_scale_init=0.5)
"""
    ours = archdsl.build(src)
    ref = CNBlock(8, 0.5, 0.5)
    randomize(ref, seed=3)
    ours.load_state_dict({"blk." + k: v for k, v in ref.state_dict().items()}, strict=True)
    x = torch.randn(16, 8, 6, 6)
    ours.train()
    ref.train()
    torch.manual_seed(11)
    got = ours(x)
    torch.manual_seed(11)
    want = ref(x)
    torch.testing.assert_close(got, want)
    assert not torch.equal(got, x + ref.layer_scale * ref.block(x))  # some rows were really dropped


def test_inline_expands_a_block_without_a_module_level() -> None:
    src = """
block Head(n):
    fc1: linear(8)
    relu
    linear(n)

network n():
    input [3, 4, 4]
    conv: conv2d(4, 1)
    flatten
    inline(Head(5))
"""
    g = archdsl.graph(src)
    assert g.output_shapes["out"] == (5,)
    # numbering goes on in the caller: conv, flatten (1), then Head's fc1, relu (3) and linear (4)
    model = archdsl.build(src)
    assert [k for k in model.state_dict() if k.endswith("weight")] == ["conv.weight", "fc1.weight", "4.weight"]
    assert run(model, (3, 4, 4)).shape == (2, 5)
    # a second copy names its fc1 in the same place: the ordinary duplicate-name error
    msg = error_of(src + "    inline(Head(2))\n")
    assert "two layers would be named 'fc1'" in msg


def test_inline_errors() -> None:
    msg = error_of("block B():\n    relu\n\nnetwork n():\n    input [3, 4, 4]\n    head: inline(B())\n")
    assert "cannot be named 'head'" in msg and ":6:5:" in msg and "hint: drop the label" in msg
    msg = error_of(net("    inline(conv2d(4, 1))\n", [3, 4, 4]))
    assert "inline(...) takes a block call, got layer conv2d(4, 1)" in msg
