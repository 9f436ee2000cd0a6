"""3-D inputs [C, T, H, W] and the 3-D ops (archdsl/ops/nn3d.py, batchnorm on clips): every op against torch on
the same weights over a small grid, parameters and MACs against torch and fvcore, state_dict keys against
torch's modules, the importer's ``torch_forms`` against real module instances and functional calls, shape
errors located with hints, the rank-4 input contract (guard, ``archc check``), summary/diagram labels,
feature taps, and deploy exactness (BatchNorm folded into conv3d).
"""
from __future__ import annotations

from typing import Any

import pytest
from helpers import (ROOT, assert_close_to_float64, assert_deploy_is_exact, assert_same_outputs, error_of,
                     fvcore_macs, net, randomize_bn, run_archc)
from hypothesis import given, settings
from hypothesis import strategies as st

import archdsl
from archdsl.ops import OPS
from archdsl.ops.core import TensorArg, TorchCall

torch = pytest.importorskip("torch")
F = torch.nn.functional

GRID = settings(max_examples=10, deadline=None)
triples = st.one_of(st.integers(1, 3), st.lists(st.integers(1, 3), min_size=3, max_size=3))


def _spec_value(v: Any) -> str:
    if v is None:
        return "none"
    return str(v).lower() if isinstance(v, bool) else (f'"{v}"' if isinstance(v, str) else str(v))


def _kwargs(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_spec_value(v)}" for k, v in args.items())


def _load_from(model: Any, label: str, ref: Any) -> None:
    """Copy ``ref``'s tensors into the module at ``label`` of ``model`` (strict: the keys must be equal)."""
    getattr(model, label).load_state_dict(ref.state_dict(), strict=True)


def _form(op: str, kind: str, target: str) -> Any:
    forms = [f for f in OPS[op].torch_forms if f.kind == kind and f.target == target]
    assert len(forms) == 1, (op, kind, target, OPS[op].torch_forms)
    return forms[0]


def _module_call(m: Any, shape: tuple[int, ...]) -> TorchCall:
    return TorchCall(module=m, args=(TensorArg(0),), kwargs={}, in_shapes=[shape], batch_axes=[0])


# ---- conv3d ------------------------------------------------------------------------------------------------
@GRID
@given(c=st.integers(1, 3), out=st.integers(1, 3), t=st.integers(3, 5), h=st.integers(3, 6), w=st.integers(3, 6),
       k=triples, s=triples, p=st.sampled_from([0, 1, [1, 0, 1]]), d=st.sampled_from([1, [1, 2, 1]]),
       groups=st.sampled_from([1, 2]), bias=st.booleans())
def test_conv3d_matches_torch_keys_params_and_fvcore(c: int, out: int, t: int, h: int, w: int, k: Any, s: Any,
                                                     p: Any, d: Any, groups: int, bias: bool) -> None:
    c, out = c * groups, out * groups
    args = dict(stride=s, padding=p, dilation=d, groups=groups, bias=bias)
    torch.manual_seed(0)
    ref = torch.nn.Conv3d(c, out, k, **args)   # type: ignore[arg-type]
    x = torch.randn(1, c, t, h, w)
    try:
        want = ref(x)
    except RuntimeError:   # torch refuses this size: so must archdsl, at the conv's line
        assert "conv3d" in error_of(net(f"    conv: conv3d({out}, {k}, {_kwargs(args)})\n", [c, t, h, w]))
        return
    src = net(f"    conv: conv3d({out}, {k}, {_kwargs(args)})\n", [c, t, h, w])
    g = archdsl.graph(src)
    model = archdsl.build(src).eval()
    assert set(model.state_dict()) == {f"conv.{key}" for key in ref.state_dict()}
    _load_from(model, "conv", ref)
    with torch.no_grad():
        torch.testing.assert_close(model(x), want)
    assert g.output_shapes["out"] == tuple(want.shape[1:])
    assert g.total_params == sum(q.numel() for q in ref.parameters())
    assert g.total_macs == fvcore_macs(ref, x)


def test_conv3d_same_padding_and_padding_mode() -> None:
    ref = torch.nn.Conv3d(2, 4, [3, 5, 1], padding="same", dilation=[2, 1, 1], padding_mode="replicate")
    src = net('    conv: conv3d(4, [3, 5, 1], padding="same", dilation=[2, 1, 1], padding_mode="replicate")\n',
              [2, 5, 6, 4])
    model = archdsl.build(src).eval()
    _load_from(model, "conv", ref)
    x = torch.randn(2, 2, 5, 6, 4)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))
    assert archdsl.graph(src).output_shapes["out"] == (4, 5, 6, 4)


# ---- conv_transpose3d ------------------------------------------------------------------------------------
@GRID
@given(c=st.integers(1, 3), out=st.integers(1, 3), t=st.integers(1, 4), h=st.integers(1, 4), k=triples,
       s=st.sampled_from([1, 2, [1, 2, 2]]), p=st.sampled_from([0, 1]), op=st.integers(0, 1),
       groups=st.sampled_from([1, 2]), bias=st.booleans())
def test_conv_transpose3d_matches_torch_and_fvcore(c: int, out: int, t: int, h: int, k: Any, s: Any, p: int, op: int,
                                                   groups: int, bias: bool) -> None:
    c, out = c * groups, out * groups
    if op and s == 1:
        op = 0
    args = dict(stride=s, padding=p, output_padding=[0, op, op] if s == [1, 2, 2] else op, groups=groups, bias=bias)
    torch.manual_seed(1)
    ref = torch.nn.ConvTranspose3d(c, out, k, **args)   # type: ignore[arg-type]
    x = torch.randn(1, c, t, h, h + 1)
    src = net(f"    up: conv_transpose3d({out}, {k}, {_kwargs(args)})\n", [c, t, h, h + 1])
    try:
        want = ref(x)
    except RuntimeError:
        assert "conv_transpose3d" in error_of(src)
        return
    g = archdsl.graph(src)
    model = archdsl.build(src).eval()
    _load_from(model, "up", ref)
    with torch.no_grad():
        torch.testing.assert_close(model(x), want)
    assert g.output_shapes["out"] == tuple(want.shape[1:])
    assert g.total_params == sum(q.numel() for q in ref.parameters())
    assert g.total_macs == fvcore_macs(ref, x)


# ---- pools -------------------------------------------------------------------------------------------------
@GRID
@given(c=st.integers(1, 3), t=st.integers(2, 6), h=st.integers(2, 7), k=st.sampled_from([2, 3, [1, 2, 3]]),
       s=st.sampled_from([None, 1, 2, [1, 2, 2]]), p=st.sampled_from([0, 1]), ceil=st.booleans(),
       d=st.sampled_from([1, 2]))
def test_maxpool3d_and_avgpool3d_match_torch(c: int, t: int, h: int, k: Any, s: Any, p: int, ceil: bool,
                                             d: int) -> None:
    kmin = min(k) if isinstance(k, list) else k
    if p > kmin // 2:
        p = 0
    x = torch.randn(2, c, t, h, h + 1)
    for op, fn, extra in (("maxpool3d", F.max_pool3d, {"dilation": d}),
                          ("avgpool3d", F.avg_pool3d, {"count_include_pad": d == 1})):
        args = {"stride": s, "padding": p, "ceil_mode": ceil, **extra}
        src = net(f"    {op}({k}, {_kwargs({n: v for n, v in args.items() if v is not None})})\n", [c, t, h, h + 1])
        try:
            want = fn(x, k, **args)
        except RuntimeError:
            assert op in error_of(src)
            continue
        g = archdsl.graph(src)
        model = archdsl.build(src).eval()
        with torch.no_grad():
            torch.testing.assert_close(model(x), want)
        assert g.output_shapes["out"] == tuple(want.shape[1:])
        assert g.total_params == g.total_macs == 0


@pytest.mark.parametrize("op,fn", [("adaptive_avgpool3d", F.adaptive_avg_pool3d),
                                   ("adaptive_maxpool3d", F.adaptive_max_pool3d)])
def test_adaptive_pool3d_matches_torch_at_every_input_size(op: str, fn: Any) -> None:
    src = net(f"    {op}([1, 2, 3])\n", [3, 4, 6, 7])
    model = archdsl.build(src).eval()
    assert archdsl.graph(src).output_shapes["out"] == (3, 1, 2, 3)
    for size in ((4, 6, 7), (1, 2, 3), (5, 9, 4)):   # built once; adaptive pooling follows the input
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            torch.testing.assert_close(model(x), fn(x, [1, 2, 3]))
    glob = net(f"    {op}(1)\n    flatten\n", [3, 4, 6, 7])
    assert archdsl.graph(glob).output_shapes["out"] == (3,)


# ---- batchnorm on [C, T, H, W] ---------------------------------------------------------------------------
def test_batchnorm_on_a_clip_is_batchnorm3d_and_images_keep_batchnorm2d() -> None:
    src = net("    bn: batchnorm(eps=0.001, momentum=0.01)\n", [4, 3, 5, 5])
    model = archdsl.build(src)
    assert isinstance(model.bn, torch.nn.BatchNorm3d)
    ref = torch.nn.BatchNorm3d(4, eps=0.001, momentum=0.01)
    randomize_bn(ref, seed=4)
    assert set(model.bn.state_dict()) == set(ref.state_dict())
    _load_from(model, "bn", ref)
    x = torch.randn(2, 4, 3, 5, 5)
    model.eval()
    ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))
    g = archdsl.graph(src)
    assert g.total_params == 8 and g.total_macs == 0
    # training mode updates the same running statistics as torch
    model.train()
    ref.train()
    model(x)
    ref(x)
    torch.testing.assert_close(model.bn.running_mean, ref.running_mean)
    # the image and vector forms are unchanged
    assert "nn.BatchNorm2d(4)" in archdsl.source(net("    bn: batchnorm\n", [4, 5, 5]))
    assert "nn.BatchNorm1d(4)" in archdsl.source(net("    bn: batchnorm\n", [4]))
    assert "nn.BatchNorm3d(4)" in archdsl.source(net("    bn: batchnorm\n", [4, 2, 5, 5]))


# ---- torch_forms: the importer's table reproduces each op from real torch calls ---------------------------
def _spec_from_form(op: str, form: Any, call: TorchCall, shape: tuple[int, ...], label: str = "m") -> str:
    args = form.args(call)
    assert args is not None
    return net(f"    {label}: {op}({_kwargs(args)})\n", list(shape))


@pytest.mark.parametrize("make", [
    lambda: torch.nn.Conv3d(4, 6, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False),
    lambda: torch.nn.Conv3d(4, 4, 3, padding="same", groups=2, padding_mode="circular"),
    lambda: torch.nn.Conv3d(4, 8, (3, 1, 1), dilation=(2, 1, 1)),
])
def test_conv3d_torch_form_rebuilds_the_module(make: Any) -> None:
    torch.manual_seed(2)
    m = make().eval()
    shape = (4, 5, 6, 6)
    src = _spec_from_form("conv3d", _form("conv3d", "module", "torch.nn.Conv3d"), _module_call(m, shape), shape)
    model = archdsl.build(src).eval()
    _load_from(model, "m", m)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        torch.testing.assert_close(model(x), m(x))


def test_conv_transpose3d_torch_form_rebuilds_the_module() -> None:
    torch.manual_seed(3)
    m = torch.nn.ConvTranspose3d(4, 2, (2, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), output_padding=(0, 1, 1))
    shape = (4, 3, 4, 4)
    form = _form("conv_transpose3d", "module", "torch.nn.ConvTranspose3d")
    model = archdsl.build(_spec_from_form("conv_transpose3d", form, _module_call(m, shape), shape)).eval()
    _load_from(model, "m", m)
    x = torch.randn(1, *shape)
    with torch.no_grad():
        torch.testing.assert_close(model(x), m(x))


def test_batchnorm_torch_forms_cover_1d_2d_3d() -> None:
    for cls, shape in ((torch.nn.BatchNorm3d, (4, 2, 3, 3)), (torch.nn.BatchNorm2d, (4, 3, 3)),
                       (torch.nn.BatchNorm1d, (4,)), (torch.nn.BatchNorm1d, (4, 7))):
        m = cls(4, eps=1e-3, momentum=0.03)
        randomize_bn(m, seed=5)
        m.eval()
        form = _form("batchnorm", "module", f"torch.nn.{cls.__name__}")
        model = archdsl.build(_spec_from_form("batchnorm", form, _module_call(m, shape), shape)).eval()
        _load_from(model, "m", m)
        x = torch.randn(3, *shape)
        with torch.no_grad():
            torch.testing.assert_close(model(x), m(x))
    # a form names one rank: a BatchNorm2d seen on a clip is not its form
    form = _form("batchnorm", "module", "torch.nn.BatchNorm2d")
    assert form.args(_module_call(torch.nn.BatchNorm2d(4), (4, 2, 3, 3))) is None


@pytest.mark.parametrize("op,module,call", [
    ("maxpool3d", lambda: torch.nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)), None),
    ("maxpool3d", lambda: torch.nn.MaxPool3d(2, ceil_mode=True, dilation=1), None),
    ("avgpool3d", lambda: torch.nn.AvgPool3d((2, 3, 3), stride=1, padding=(1, 1, 1), count_include_pad=False), None),
    ("adaptive_avgpool3d", lambda: torch.nn.AdaptiveAvgPool3d((1, 2, 2)), None),
    ("adaptive_maxpool3d", lambda: torch.nn.AdaptiveMaxPool3d(1), None),
    ("maxpool3d", None, (F.max_pool3d, (TensorArg(0), 3, 2, 1), {})),
    ("maxpool3d", None, (F.max_pool3d, (TensorArg(0), [1, 2, 2]), {"ceil_mode": True})),
    ("avgpool3d", None, (F.avg_pool3d, (TensorArg(0), 2), {"stride": [1, 2, 2], "count_include_pad": False})),
    ("adaptive_avgpool3d", None, (F.adaptive_avg_pool3d, (TensorArg(0), (1, 3, 3)), {})),
    ("adaptive_maxpool3d", None, (F.adaptive_max_pool3d, (TensorArg(0),), {"output_size": 2})),
])
def test_pool3d_torch_forms_reproduce_modules_and_functions(op: str, module: Any, call: Any) -> None:
    shape = (3, 5, 7, 7)
    x = torch.randn(2, *shape)
    if module is not None:
        m = module()
        c = _module_call(m, shape)
        form = _form(op, "module", f"torch.nn.{type(m).__name__}")
        want = m(x)
    else:
        fn, args, kwargs = call
        c = TorchCall(module=None, args=args, kwargs=kwargs, in_shapes=[shape], batch_axes=[0])
        form = _form(op, "function", f"torch.nn.functional.{fn.__name__}")
        want = fn(x, *args[1:], **kwargs)
    model = archdsl.build(_spec_from_form(op, form, c, shape)).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), want)


def test_torch_forms_refuse_what_the_ops_cannot_express() -> None:
    shape = (3, 4, 4, 4)
    assert _form("maxpool3d", "module", "torch.nn.MaxPool3d").args(
        _module_call(torch.nn.MaxPool3d(2, return_indices=True), shape)) is None
    assert _form("avgpool3d", "module", "torch.nn.AvgPool3d").args(
        _module_call(torch.nn.AvgPool3d(2, divisor_override=3), shape)) is None
    assert _form("adaptive_avgpool3d", "module", "torch.nn.AdaptiveAvgPool3d").args(
        _module_call(torch.nn.AdaptiveAvgPool3d((None, 1, 1)), shape)) is None


# ---- shape errors, located with hints ------------------------------------------------------------------
@pytest.mark.parametrize("body,shape,where,message,hint", [
    ("    conv2d(8, 3)\n", [1, 3, 32, 32], "3:5", "conv2d expects a feature map [C, H, W], got [1, 3, 32, 32]",
     "takes the 3-D op (conv3d"),
    ("    conv3d(8, 3)\n", [3, 32, 32], "3:5", "conv3d expects a video or volume [C, T, H, W], got [3, 32, 32]",
     "use the 2-D op for [C, H, W]"),
    ("    maxpool(2)\n", [3, 4, 8, 8], "3:5", "maxpool expects a feature map [C, H, W]", "maxpool3d"),
    ("    conv3d(8, [3, 3])\n", [3, 4, 8, 8], "3:15", "'kernel_size' must be an integer or a triple [t, h, w]",
     "conv3d(out_channels, kernel_size"),
    ("    conv3d(8, 5)\n", [3, 4, 8, 8], "3:15", "kernel 5x5x5 (dilation 1x1x1) is larger than the padded input "
     "4x8x8 (TxHxW)", "the input here is [3, 4, 8, 8]"),
    ("    conv3d(8, 3, groups=2)\n", [3, 4, 8, 8], "3:18", "groups=2 does not divide the 3 input channels",
     "divisors of 3: 1, 3"),
    ("    conv3d(8, 3, stride=2, padding=\"same\")\n", [3, 4, 8, 8], "3:28", "padding='same' needs stride 1",
     "padding=k // 2"),
    ("    maxpool3d(2, padding=[0, 2, 0])\n", [3, 4, 8, 8], "3:18", "padding 0x2x0 is more than half the kernel 2x2x2",
     "pad <= kernel_size // 2"),
    ("    avgpool3d([5, 2, 2])\n", [3, 4, 8, 8], "3:15", "pooling window 5x2x2 is larger than the padded input 4x8x8",
     "the input here is [3, 4, 8, 8]"),
    ("    conv_transpose3d(4, 2, stride=2, output_padding=2)\n", [3, 4, 8, 8], "3:38",
     "output_padding 2 must be smaller than the stride (2) or the dilation (1)", "output_padding picks"),
    ("    adaptive_avgpool3d([1, 1])\n", [3, 4, 8, 8], "3:24", "'output_size' must be an integer or a triple",
     "adaptive_avgpool3d(output_size)"),
])
def test_3d_shape_errors_are_located_with_hints(body: str, shape: list[int], where: str, message: str,
                                                hint: str) -> None:
    err = error_of(net(body, shape))
    assert err.startswith(f"<spec>:{where}: error:"), err
    assert message in err, err
    assert "hint:" in err and hint in err.split("hint:", 1)[1], err


def test_input_rank_5_is_refused_and_t_reads_the_frames() -> None:
    err = error_of("network n():\n    input [2, 3, 4, 8, 8]\n")
    assert ":2:11: error: input shape must be [C, H, W], [C, T, H, W] (video or volume)" in err
    g = archdsl.graph(net("    conv3d(in.t * 2, 1)\n    conv3d(in.h, 1)\n", [3, 4, 8, 6]))
    assert g.output_shapes["out"] == (8, 4, 8, 6)
    err = error_of(net("    conv2d(in.t, 1)\n", [3, 8, 8]))
    assert "shape [3, 8, 8] has no 't'" in err and "t exists only for videos and volumes" in err


# ---- the input contract of a rank-4 input ---------------------------------------------------------------
_CLIP = """network clip(num_classes=5):
    input [3, 8, 16, 16]
    conv3d(8, [1, 3, 3], stride=[1, 2, 2], padding=[0, 1, 1])
    maxpool3d(2)
    conv3d(8, 3, padding=1)
    flatten
    linear(num_classes)
"""


def test_rank4_input_contract_guard_and_check() -> None:
    from archdsl.passes.sizes import input_contract
    g = archdsl.graph(_CLIP)
    c = input_contract(g)
    # flatten into a linear fixes the flattened size: 15..18 all stride down to the same 4 rows; T is kept
    # to its declared 8 (9 would floor to 4 too, but no lattice of T fits: the contract claims less, never more)
    assert c.describe() == "[3, 8, H, W] with T exactly 8; H and W from 15 to 18"
    fixed = archdsl.build(_CLIP).eval()
    with torch.no_grad():
        assert fixed(torch.randn(1, 3, 8, 15, 18)).shape == (1, 5)
    for shape in ((3, 8, 14, 16), (3, 8, 16, 19), (3, 7, 16, 16)):
        assert not c.accepts(shape)
        with pytest.raises(ValueError, match=r"Clip takes a batch of \[3, 8, H, W\]"):
            fixed(torch.randn(1, *shape))
    free = archdsl.graph(_CLIP.replace("    flatten\n", "    adaptive_avgpool3d(1)\n    flatten\n"))
    fc = input_contract(free)
    # maxpool3d(2) needs T >= 2 and H, W >= 3 (the strided conv halves them first)
    assert fc.describe() == "[3, T, H, W] with T at least 2; H and W at least 3"
    model = archdsl.build(_CLIP.replace("    flatten\n", "    adaptive_avgpool3d(1)\n    flatten\n")).eval()
    for shape in ((3, 2, 3, 3), (3, 5, 9, 4), (3, 8, 16, 16)):
        assert fc.accepts(shape)
        with torch.no_grad():
            assert model(torch.randn(1, *shape)).shape == (1, 5)
    for shape in ((3, 1, 8, 8), (3, 4, 2, 8)):
        assert not fc.accepts(shape)
        with pytest.raises(ValueError, match=r"Clip takes a batch of \[3, T, H, W\] with T at least 2"):
            model(torch.randn(1, *shape))
        with pytest.raises(RuntimeError):   # and torch itself refuses it: the contract is not too strict
            F.max_pool3d(torch.randn(1, 8, shape[1], (shape[2] + 1) // 2, (shape[3] + 1) // 2), 2)
    with pytest.raises(ValueError, match=r"got \[1, 3, 16, 16\]"):   # an image into a clip model
        model(torch.randn(1, 3, 16, 16))


def test_archc_check_and_summary_of_the_video_spec() -> None:
    r = run_archc("check", "specs/video_resnet.arch:r3d_18")
    assert r.returncode == 0, r.stderr
    assert "input sizes: [3, T, H, W], any size" in r.stdout
    r = run_archc("summary", "specs/video_resnet.arch:r3d_18", "--json")
    assert r.returncode == 0, r.stderr
    import json
    data = json.loads(r.stdout)
    rows = {row["name"]: row for row in data["layers"]}
    assert data["input"] == [3, 16, 112, 112]
    assert rows["stem.0"]["kernel"] == [3, 7, 7] and rows["stem.0"]["shape"] == [64, 16, 56, 56]
    assert rows["layer4.0.conv1.0"]["shape"] == [512, 2, 7, 7]
    assert rows["stem.0"]["rf"] == [7, 7]                  # spatial: H and W in input pixels
    assert data["receptive_field"]["stride"] == 16


def test_diagram_labels_show_clip_sizes_and_3d_kernels() -> None:
    from archdsl.render.style import key_args
    g = archdsl.graph(_CLIP)
    pool = next(n for n in g.records() if n.op == "maxpool3d")
    conv = next(n for n in g.records() if n.op == "conv3d")
    assert key_args(pool) == "2\u00d72\u00d72"
    assert key_args(conv) == "k=1\u00d73\u00d73 s=1\u00d72\u00d72"
    from archdsl.render.dot import to_dot
    from archdsl.render.view import build_view
    dot = to_dot(build_view(g))
    assert 'label="3\u00d78\u00d716\u00d716"' in dot and 'label="8\u00d78\u00d78\u00d78"' in dot


def test_feature_taps_of_a_video_network_are_its_stages() -> None:
    from archdsl.hub import build_model
    m = build_model("specs/video_resnet.arch:r3d_18", features_only=True, input_shape=(3, 4, 32, 32))
    assert m.output_fmt == "NCTHW"
    assert [(i["module"], i["num_chs"], i["reduction"]) for i in m.feature_info] == [
        ("layer1", 64, 2), ("layer2", 128, 4), ("layer3", 256, 8), ("layer4", 512, 16)]
    with torch.no_grad():
        outs = m(torch.randn(1, 3, 4, 32, 32))
    assert [tuple(o.shape) for o in outs] == [(1, 64, 4, 16, 16), (1, 128, 2, 8, 8), (1, 256, 1, 4, 4),
                                             (1, 512, 1, 2, 2)]


# ---- deploy: BatchNorm folded into conv3d, exactly ------------------------------------------------------
_DEPLOY = """network v():
    input [4, 5, 9, 9]
    a: conv3d(8, 3, padding=1, bias=false)
    batchnorm
    relu
    b: batchnorm
    c: conv3d(6, 1)
    d: conv3d(6, 3, stride=[1, 2, 2], groups=2, padding_mode="reflect", padding=1)
    batchnorm
    relu
    e: batchnorm
    up: conv_transpose3d(3, 2, stride=2)
    adaptive_avgpool3d(1)
    flatten
    linear(3)
"""


def test_deploy_folds_batchnorm_into_conv3d_exactly() -> None:
    model = archdsl.build(_DEPLOY)
    randomize_bn(model, seed=6)
    model.eval()
    dep = archdsl.deploy(model, memory_format="contiguous")
    x = torch.randn(2, 4, 5, 9, 9, generator=torch.Generator().manual_seed(1))
    err = assert_deploy_is_exact(model, dep, x)
    with torch.no_grad():
        assert_close_to_float64(dep(x), model(x), err)
    kinds = [type(m).__name__ for m in dep.modules() if not list(m.children())]
    # after a conv3d (a), before a 1x1x1 conv3d (b -> c), after a grouped reflect-padded conv3d (d); the BN
    # before a transposed conv (e) is kept, a BatchNorm3d
    assert kinds == ["Conv3d", "Conv3d", "Conv3d", "BatchNorm3d", "ConvTranspose3d", "Linear"], kinds
    assert dep.deploy_info["folded_bn"] == 3 and dep.deploy_info["memory_format"] == "contiguous"
    assert archdsl.deploy(model).deploy_info["memory_format"] == "contiguous"   # auto: no 5-D channels_last
    with pytest.raises(ValueError, match="channels_last"):
        archdsl.deploy(model, memory_format="channels_last")


def test_a_padded_conv3d_after_a_batchnorm_keeps_it() -> None:
    """A BN before a padded conv is not folded into it (the padding would see the BN's shift)."""
    src = net("    a: conv3d(4, 1)\n    relu\n    b: batchnorm\n    c: conv3d(4, 3, padding=1)\n", [2, 3, 4, 4])
    model = archdsl.build(src)
    randomize_bn(model, seed=7)
    model.eval()
    dep = archdsl.deploy(model, memory_format="contiguous")
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in dep.modules())
    x = torch.randn(2, 2, 3, 4, 4)
    err = assert_deploy_is_exact(model, dep, x)
    with torch.no_grad():
        assert_close_to_float64(dep(x), model(x), err)


# ---- r3d_18 -------------------------------------------------------------------------------------------------
def test_r3d_18_loads_torchvision_weights_and_gives_its_outputs() -> None:
    from torchvision.models.video import r3d_18
    torch.manual_seed(0)
    ref = r3d_18(weights=None, num_classes=7)
    randomize_bn(ref, seed=1)
    ours = archdsl.build("specs/video_resnet.arch:r3d_18", num_classes=7, input_shape=(3, 4, 32, 32))
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert_same_outputs(ours, ref, (3, 4, 32, 32), batch=2)
    g = archdsl.graph("specs/video_resnet.arch:r3d_18", num_classes=7, input_shape=(3, 4, 32, 32))
    assert g.total_params == sum(p.numel() for p in ref.parameters())
    assert g.total_macs == fvcore_macs(ref, torch.randn(1, 3, 4, 32, 32))
    assert (ROOT / "specs" / "video_resnet.arch").is_file()


def test_pretrained_cfg_of_the_video_reference_is_torchvisions_video_preset() -> None:
    from torchvision.models.video import R3D_18_Weights

    from archdsl import hub
    cfg = hub.pretrained_cfg(archdsl.graph("specs/video_resnet.arch:r3d_18"))
    t = R3D_18_Weights.DEFAULT.transforms()
    assert cfg["input_size"] == (3, 16, 112, 112) and cfg["source"] == "torchvision"
    assert cfg["mean"] == tuple(t.mean) and cfg["std"] == tuple(t.std)      # Kinetics' statistics, not ImageNet's
    assert cfg["crop_pct"] == round(t.crop_size[0] / t.resize_size[0], 4)
    assert cfg["num_classes"] == 400 and cfg["first_conv"] == "stem.0" and cfg["pool_size"] == (2, 7, 7)
