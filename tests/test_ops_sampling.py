"""Resampling ops (archdsl/ops/sampling.py): upsample/interpolate, resize_as, conv_transpose2d,
pixel_shuffle/unshuffle — the shape rule against torch over a small grid and at every input size, values
against the torch function, MACs against fvcore where it counts the op (transposed conv).
"""
from __future__ import annotations

import math

import pytest
from helpers import compile_run, error_of, fvcore_macs, net
from hypothesis import given, settings
from hypothesis import strategies as st

import archdsl

torch = pytest.importorskip("torch")
F = torch.nn.functional

GRID = settings(max_examples=8, deadline=None)
shapes3 = st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5))


# ---- resampling -------------------------------------------------------------------------------------------
@GRID
@given(shape=shapes3, scale=st.sampled_from([2, 3, 0.5, 1.5]),
       how=st.sampled_from(['"nearest"', '"bilinear", align_corners=true', '"bilinear"', '"bicubic"']))
def test_upsample_matches_interpolate_at_every_input_size(shape: tuple[int, int, int], scale: float,
                                                           how: str) -> None:
    c, h, w = shape
    if math.floor(h * scale) < 1 or math.floor(w * scale) < 1:
        return
    src = net(f"    upsample({scale}, {how})\n", list(shape))
    mode = how.split(",")[0].strip('"')
    align = True if "align_corners" in how else None
    g = archdsl.graph(src)
    model = archdsl.build(src).eval()
    for hw in ((h, w), (h + 3, w + 1)):   # built once; the output follows the input
        x = torch.randn(2, c, *hw)
        want = F.interpolate(x, scale_factor=scale, mode=mode, align_corners=align)
        with torch.no_grad():
            torch.testing.assert_close(model(x), want)
        if hw == (h, w):
            assert g.output_shapes["out"] == tuple(want.shape[1:])
    assert g.total_params == g.total_macs == 0


def test_upsample_to_a_fixed_size_and_in_a_sequential() -> None:
    src = net("    up: [conv2d(4, 1), upsample(size=[7, 5], mode=\"bilinear\"), upsample(2)]\n", [3, 4, 4])
    g, _, y = compile_run(src, torch.randn(2, 3, 4, 4))
    assert g.output_shapes["out"] == (4, 14, 10) == tuple(y.shape[1:])


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_upsample_antialias_matches_interpolate_and_needs_a_filtering_mode(mode: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 12, 10)
    src = net(f'    upsample(size=[5, 4], mode="{mode}", antialias=true)\n', [3, 12, 10])
    g, _, y = compile_run(src, x)
    want = F.interpolate(x, size=(5, 4), mode=mode, antialias=True)
    torch.testing.assert_close(y, want)
    assert (y - F.interpolate(x, size=(5, 4), mode=mode)).abs().max() > 1e-3   # the filter changed the values
    assert g.output_shapes["out"] == (3, 5, 4)
    err = error_of(net('    upsample(size=[5, 4], mode="nearest", antialias=true)\n', [3, 12, 10]))
    assert "antialias applies only to mode" in err


@GRID
@given(c=st.integers(1, 4), h=st.integers(2, 9), w=st.integers(2, 9), mode=st.sampled_from(['"bilinear"', '"nearest"']))
def test_resize_as_follows_the_reference_tensor_at_run_time(c: int, h: int, w: int, mode: str) -> None:
    src = net(f"    low = x -> down: conv2d({c + 1}, 3, stride=2, padding=1)\n"
              f"    resize_as(low, x, mode={mode})\n", [c, h, w])
    g = archdsl.graph(src)
    assert g.output_shapes["out"] == (c + 1, h, w)
    model = archdsl.build(src).eval()
    for hw in ((h, w), (h + 5, w + 2)):
        x = torch.randn(2, c, *hw)
        with torch.no_grad():
            want = F.interpolate(model.down(x), size=hw, mode=mode.strip('"'))
            torch.testing.assert_close(model(x), want)


@GRID
@given(c=st.integers(1, 6), h=st.integers(1, 6), w=st.integers(1, 6), out=st.integers(1, 6),
       k=st.sampled_from([1, 2, 3, [2, 3]]), s=st.sampled_from([1, 2, 3]), p=st.integers(0, 1),
       op=st.integers(0, 1), groups=st.sampled_from([1, 2]), d=st.sampled_from([1, 2]), bias=st.booleans())
def test_conv_transpose2d_matches_torch_and_fvcore(c: int, h: int, w: int, out: int, k: object, s: int, p: int,
                                                   op: int, groups: int, d: int, bias: bool) -> None:
    c, out = c * groups, out * groups
    op = min(op, max(s, d) - 1)
    args = dict(stride=s, padding=p, output_padding=op, groups=groups, dilation=d, bias=bias)
    ref = torch.nn.ConvTranspose2d(c, out, k, **args)  # type: ignore[arg-type]
    x = torch.randn(1, c, h, w)
    kw = ", ".join(f"{n}={str(v).lower()}" for n, v in args.items())
    src = net(f"    up: conv_transpose2d({out}, {k}, {kw})\n", [c, h, w])
    try:
        want_shape = tuple(ref(x).shape[1:])
    except RuntimeError:   # torch: "Output size is too small"
        want_shape = (0,)
    if 0 in want_shape:    # an empty (or negative) output: the spec is refused before any tensor exists
        assert "leaves nothing of the" in error_of(src)
        return
    g, model, y = compile_run(src, x)
    assert g.output_shapes["out"] == want_shape == tuple(y.shape[1:])
    assert list(model.state_dict()) == (["up.weight", "up.bias"] if bias else ["up.weight"])
    model.load_state_dict({"up." + n: v for n, v in ref.state_dict().items()})
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))
    assert g.total_params == sum(t.numel() for t in ref.parameters())
    assert g.total_macs == fvcore_macs(model, x)


@GRID
@given(c=st.integers(1, 3), h=st.integers(1, 4), w=st.integers(1, 4), r=st.integers(1, 3))
def test_pixel_shuffle_and_unshuffle_match_torch(c: int, h: int, w: int, r: int) -> None:
    x = torch.randn(2, c * r * r, h, w)
    g, _, y = compile_run(net(f"    pixel_shuffle({r})\n    a: identity\n", [c * r * r, h, w]), x)
    assert g.output_shapes["out"] == (c, h * r, w * r)
    torch.testing.assert_close(y, F.pixel_shuffle(x, r))
    x = torch.randn(2, c, h * r, w * r)
    g, _, y = compile_run(net(f"    pixel_unshuffle({r})\n", [c, h * r, w * r]), x)
    assert g.output_shapes["out"] == (c * r * r, h, w)
    torch.testing.assert_close(y, F.pixel_unshuffle(x, r))
