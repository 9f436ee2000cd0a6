"""Tensor math, attention and free parameters (archdsl/ops/math.py; resampling: tests/test_ops_sampling.py).

For each op: the shape rule against what torch produces over a small grid, the values against the torch
function, parameters against the built module, MACs against fvcore where fvcore counts the op (matmul,
transposed conv; attention written as matmuls), and the errors (located, with a hint). Then two small
models written in the language: a ViT attention block against a hand-written torch module with the same
weights, and a U-Net-ish net (upsample, resize_as, conv_transpose2d) built once and run at two sizes.
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


# ---- element-wise ---------------------------------------------------------------------------------------
UNARY = {
    "sqrt": torch.sqrt, "rsqrt": torch.rsqrt, "exp": torch.exp, "log": torch.log, "abs": torch.abs,
    "neg": torch.neg, "sin": torch.sin, "cos": torch.cos, "pow(3)": lambda t: torch.pow(t, 3), "pow(0.5)": lambda t: torch.pow(t, 0.5),
    "clamp(min=0.3)": lambda t: torch.clamp(t, min=0.3), "clamp(max=0.5)": lambda t: torch.clamp(t, max=0.5),
    "clamp(0.2, 0.7)": lambda t: torch.clamp(t, 0.2, 0.7),
}


@GRID
@given(op=st.sampled_from(sorted(UNARY)), shape=st.one_of(shapes3, st.tuples(st.integers(1, 9))))
def test_elementwise_ops_match_torch(op: str, shape: tuple[int, ...]) -> None:
    x = torch.rand(2, *shape) + 0.05                     # positive: sqrt, log and rsqrt are defined
    g, _, y = compile_run(net(f"    {op}\n", list(shape)), x)
    assert g.output_shapes["out"] == shape and g.total_params == 0 and g.total_macs == 0
    torch.testing.assert_close(y, UNARY[op](x))


@GRID
@given(shape=shapes3)
def test_sub_div_and_tensor_operators_broadcast_like_torch(shape: tuple[int, int, int]) -> None:
    body = ("    m = x -> mean([2, 3], keepdim=true)\n"
            "    s = x -> sigmoid\n"
            "    a = sub(x, m)\n    b = x - m\n    c = div(a, s)\n    d = b / s\n"
            "    e = a * 0.5\n    f = c + d * s\n    g = 1 - (e + 2) / 4\n    h = 2 / (s + 1) - 0.5 * s\n"
            "    concat(a, b, c, d, e, f, g, h, dim=1)\n")
    x = torch.randn(2, *shape)
    g, _, y = compile_run(net(body, list(shape)), x)
    c = shape[0]
    assert g.output_shapes["out"] == (8 * c, *shape[1:]) and g.total_macs == 0
    m, s = x.mean((2, 3), keepdim=True), torch.sigmoid(x)
    a = x - m
    want = torch.cat([a, a, a / s, a / s, a * 0.5, a / s + a / s * s, 1 - (a * 0.5 + 2) / 4,
                      2 / (s + 1) - 0.5 * s], 1)
    torch.testing.assert_close(y, want)


def test_abs_on_numbers_is_still_the_builtin() -> None:
    g = archdsl.graph(net("    conv2d(abs(-3) + 1, 1)\n    abs\n", [2, 4, 4]))
    assert g.output_shapes["out"] == (4, 4, 4)


# ---- reductions ----------------------------------------------------------------------------------------
@GRID
@given(shape=shapes3, dims=st.sampled_from([1, [2, 3], [1, 3], -1, [-2, -1]]), keep=st.booleans(),
       ord_=st.sampled_from([1, 2, 3.5]))
def test_norm_amax_amin_match_torch(shape: tuple[int, int, int], dims: object, keep: bool, ord_: float) -> None:
    kd = "true" if keep else "false"
    body = (f"    n = x -> norm({dims}, ord={ord_}, keepdim={kd})\n"
            f"    hi = x -> amax({dims}, keepdim={kd})\n"
            f"    lo = x -> reduce_min({dims}, keepdim={kd})\n"
            "    output n, hi, lo\n")
    x = torch.randn(2, *shape)
    g, _, y = compile_run(net(body, list(shape)), x)
    d = tuple(dims) if isinstance(dims, list) else dims
    want = {"n": torch.linalg.vector_norm(x, ord_, d, keepdim=keep), "hi": x.amax(d, keepdim=keep),
            "lo": x.amin(d, keepdim=keep)}
    for k, w in want.items():
        assert g.output_shapes[k] == tuple(w.shape[1:])
        torch.testing.assert_close(y[k], w)


# ---- dims -------------------------------------------------------------------------------------------------
@GRID
@given(shape=shapes3, d0=st.sampled_from([1, 2, 3, -1, -2, -3]), d1=st.sampled_from([1, 2, 3, -1]))
def test_transpose_matches_torch(shape: tuple[int, int, int], d0: int, d1: int) -> None:
    x = torch.randn(2, *shape)
    g, _, y = compile_run(net(f"    transpose({d0}, {d1})\n", list(shape)), x)
    want = x.transpose(d0, d1)
    assert g.output_shapes["out"] == tuple(want.shape[1:])
    torch.testing.assert_close(y, want)


@GRID
@given(shape=shapes3, shifts=st.lists(st.integers(-4, 4), min_size=1, max_size=2), data=st.data())
def test_roll_matches_torch(shape: tuple[int, int, int], shifts: list[int], data: st.DataObject) -> None:
    dims = data.draw(st.lists(st.sampled_from([1, 2, 3, -1]), min_size=len(shifts), max_size=len(shifts),
                              unique_by=lambda d: d % 4))
    x = torch.randn(2, *shape)
    g, _, y = compile_run(net(f"    roll({shifts}, {dims})\n", list(shape)), x)
    assert g.output_shapes["out"] == shape
    torch.testing.assert_close(y, torch.roll(x, shifts, dims))


@GRID
@given(shape=shapes3, dim=st.sampled_from([1, 2, 3, -1]), start=st.integers(-3, 3),
       end=st.one_of(st.none(), st.integers(-3, 5)), step=st.integers(1, 3))
def test_slice_matches_python_slicing(shape: tuple[int, int, int], dim: int, start: int, end: int | None,
                                      step: int) -> None:
    x = torch.randn(2, *shape)
    want = x[(slice(None),) * (dim % 4) + (slice(start, end, step),)]
    src = net(f"    slice({dim}, {start}, {'none' if end is None else end}, {step})\n", list(shape))
    if 0 in want.shape:
        assert "is empty" in error_of(src)
        return
    g, _, y = compile_run(src, x)
    assert g.output_shapes["out"] == tuple(want.shape[1:])
    torch.testing.assert_close(y, want)


@GRID
@given(shape=shapes3, pads=st.lists(st.integers(-1, 3), min_size=2, max_size=6).filter(lambda p: len(p) % 2 == 0),
       mode=st.sampled_from(["constant", "replicate", "reflect", "circular"]))
def test_pad_matches_torch(shape: tuple[int, int, int], pads: list[int], mode: str) -> None:
    if mode != "constant":
        pads = [max(p, 0) for p in pads[:4]]
    x = torch.randn(2, *shape)
    value = ", value=1.5" if mode == "constant" else ""
    src = net(f'    pad({pads}, mode="{mode}"{value})\n', list(shape))
    try:
        want = F.pad(x, tuple(pads), mode=mode, value=1.5 if mode == "constant" else None)
    except (RuntimeError, NotImplementedError):
        want = None
    if want is None or 0 in want.shape:
        error_of(src)   # refused at compile time, like torch refuses it at run time
        return
    g, _, y = compile_run(src, x)
    assert g.output_shapes["out"] == tuple(want.shape[1:])
    torch.testing.assert_close(y, want)


def test_roll_shifts_are_reduced_modulo_the_size() -> None:
    src = net("    roll([10 ** 30, -7], [2, -1])\n", [3, 4, 5])
    x = torch.randn(2, 3, 4, 5)
    _, _, y = compile_run(src, x)
    torch.testing.assert_close(y, torch.roll(x, [10 ** 30 % 4, -7], [2, -1]))
    assert "torch.roll(x, (0, 3), (2, 3))" in archdsl.source(src)


# ---- matmul / attention ----------------------------------------------------------------------------------
def _two(a: tuple[int, ...], b: tuple[int, ...]) -> str:
    """A body splitting a vector input into two tensors a and b of the given per-sample shapes."""
    na, nb = math.prod(a), math.prod(b)
    return (f"    p, q = x -> split([{na}, {nb}])\n"
            f"    a = p -> reshape({list(a)})\n    b = q -> reshape({list(b)})\n")


@GRID
@given(h=st.integers(1, 3), n=st.integers(1, 5), k=st.integers(1, 5), m=st.integers(1, 5),
       bcast=st.booleans())
def test_matmul_matches_torch_and_fvcore(h: int, n: int, k: int, m: int, bcast: bool) -> None:
    sa, sb = (h, n, k), ((1 if bcast else h), k, m)
    x = torch.randn(1, math.prod(sa) + math.prod(sb))
    g, model, y = compile_run(net(_two(sa, sb) + "    matmul(a, b)\n", [x.shape[1]]), x)
    a, b = x[:, :math.prod(sa)].reshape(1, *sa), x[:, math.prod(sa):].reshape(1, *sb)
    assert g.output_shapes["out"] == (h, n, m)
    torch.testing.assert_close(y, a @ b)
    assert g.total_macs == h * n * k * m == fvcore_macs(model, x)


def test_matmul_of_a_4d_tensor_counts_every_leading_element() -> None:
    x = torch.randn(1, 2 * 3 * 4 * 5 + 3 * 5 * 6)
    g, model, _ = compile_run(net(_two((2, 3, 4, 5), (1, 3, 5, 6)) + "    matmul(a, b)\n", [x.shape[1]]), x)
    assert g.output_shapes["out"] == (2, 3, 4, 6)
    assert g.total_macs == 2 * 3 * 4 * 5 * 6 == fvcore_macs(model, x)


class _Attention(torch.nn.Module):
    """Attention written as matmuls (what fvcore counts; timm's non-fused path)."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, -1) @ v


@GRID
@given(h=st.integers(1, 3), n=st.integers(1, 6), s=st.integers(1, 6), d=st.integers(1, 5), dv=st.integers(1, 5),
       scale=st.sampled_from([None, 0.25]), causal=st.booleans())
def test_scaled_dot_product_attention_matches_torch(h: int, n: int, s: int, d: int, dv: int, scale: float | None,
                                                    causal: bool) -> None:
    sq, sk, sv = (h, n, d), (h, s, d), (h, s, dv)
    sizes = [math.prod(sq), math.prod(sk), math.prod(sv)]
    body = (f"    pq, pk, pv = x -> split({sizes})\n    q = pq -> reshape({list(sq)})\n"
            f"    k = pk -> reshape({list(sk)})\n    v = pv -> reshape({list(sv)})\n"
            f"    sdpa(q, k, v, is_causal={'true' if causal else 'false'}, scale={scale if scale else 'none'})\n")
    x = torch.randn(2, sum(sizes))
    g, _, y = compile_run(net(body, [sum(sizes)]), x)
    q, k, v = (t.reshape(2, *sh) for t, sh in zip(x.split(sizes, 1), (sq, sk, sv)))
    assert g.output_shapes["out"] == (h, n, dv)
    torch.testing.assert_close(y, F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale))
    # the two matmuls: q @ k^T and attn @ v
    assert g.total_macs == h * n * s * d + h * n * s * dv


def test_attention_macs_equal_fvcore_on_attention_written_as_matmuls() -> None:
    sq, sk = (3, 7, 4), (3, 5, 4)
    src = net("    pq, pk, pv = x -> split([84, 60, 60])\n    q = pq -> reshape([3, 7, 4])\n"
              "    k = pk -> reshape([3, 5, 4])\n    v = pv -> reshape([3, 5, 4])\n"
              "    scaled_dot_product_attention(q, k, v)\n", [204])
    g = archdsl.graph(src)
    q, k, v = torch.randn(1, *sq), torch.randn(1, *sk), torch.randn(1, *sk)
    from fvcore.nn import FlopCountAnalysis
    fca = FlopCountAnalysis(_Attention(), (q, k, v)).unsupported_ops_warnings(False)
    assert g.total_macs == fca.by_operator()["matmul"] == 3 * 7 * 5 * 4 * 2


def test_attention_with_an_additive_mask_parameter() -> None:
    src = net("    t = x -> reshape([2, 6, 4])\n    bias = parameter([2, 6, 6], init=\"normal\", std=1.0)\n"
              "    sdpa(t, t, t, bias)\n", [48])
    x = torch.randn(3, 48)
    g, model, y = compile_run(src, x)
    t = x.reshape(3, 2, 6, 4)
    assert model.state_dict()["bias"].shape == (1, 2, 6, 6)
    torch.testing.assert_close(y, F.scaled_dot_product_attention(t, t, t, attn_mask=model.bias))
    assert g.total_params == 72


# ---- free parameters ---------------------------------------------------------------------------------------
def test_class_token_and_position_embedding_come_out_like_timm() -> None:
    src = net("    t = x -> patch_embed: conv2d(8, 4, stride=4) -> flatten_hw: reshape([8, -1]) -> transpose(1, 2)\n"
              "    cls_token = parameter([1, 8])\n"
              '    pos_embed = parameter([5, 8], init="trunc_normal", std=0.02)\n'
              "    concat(cls_token, t, dim=1) + pos_embed\n", [3, 8, 8])
    x = torch.randn(2, 3, 8, 8)
    g, model, y = compile_run(src, x)
    sd = model.state_dict()
    assert list(sd)[:2] == ["cls_token", "pos_embed"]
    assert sd["cls_token"].shape == (1, 1, 8) and sd["pos_embed"].shape == (1, 5, 8)
    assert torch.all(sd["cls_token"] == 0) and 0 < sd["pos_embed"].std() < 0.05
    assert g.output_shapes["out"] == (5, 8) and g.total_params == 8 + 40 + 8 * 3 * 16 + 8
    with torch.no_grad():
        model.cls_token.normal_()
        y = model(x)
        patches = model.patch_embed(x).flatten(2).transpose(1, 2)
        want = torch.cat([model.cls_token.expand(2, -1, -1), patches], 1) + model.pos_embed
    torch.testing.assert_close(y, want)
    y.sum().backward() if y.requires_grad else model(x).sum().backward()
    assert model.cls_token.grad is not None and model.cls_token.grad.shape == (1, 1, 8)


@pytest.mark.parametrize("init,check", [("zeros", lambda p: torch.all(p == 0)), ("ones", lambda p: torch.all(p == 1)),
                                        ("normal", lambda p: 1.5 < p.std() < 2.5),
                                        ("trunc_normal", lambda p: p.abs().max() <= 2.0 + 1e-6)])
def test_parameter_inits(init: str, check: object) -> None:
    src = net(f'    w = parameter([40, 50], init="{init}", std=2.0)\n    y = x -> reshape([40, 50])\n    y + w\n',
              [2000])
    model = archdsl.build(src)
    assert model.state_dict()["w"].shape == (1, 40, 50)
    assert check(model.state_dict()["w"])  # type: ignore[operator]


def test_parameter_in_a_block_is_named_by_its_binding() -> None:
    src = """
block Grn(eps=1e-6):
    gamma = parameter([1, 1, in.shape[-1]], init="normal", std=1.0)
    beta = parameter([in.shape[-1]], init="normal", std=1.0, batch_dim=false)
    gx = x -> norm([1, 2], keepdim=true)
    gm = gx -> mean(-1, keepdim=true)
    nx = gx / (gm + eps)
    gamma * (x * nx) + beta + x

network n():
    input [6, 5, 4]
    permute([0, 2, 3, 1])
    grn: Grn()
"""
    g = archdsl.graph(src)
    model = archdsl.build(src).eval()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {"grn.gamma": (1, 1, 1, 6),
                                                                          "grn.beta": (6,)}
    assert g.total_params == 12
    x = torch.randn(2, 6, 5, 4)
    t = x.permute(0, 2, 3, 1)
    gx = torch.norm(t, p=2, dim=(1, 2), keepdim=True)
    nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.grn.gamma * (t * nx) + model.grn.beta + t)


# ---- errors ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body,shape,where,text,hint", [
    ("    matmul(a, b)\n", None, ":6:5:", "the last dim of a (3) is not the second-to-last of b (4)",
     "transpose(-2, -1)"),
    ("    sub(a, x)\n", None, ":6:5:", "sub: shapes [2, 3], [26] do not match", None),
    ('    a - "s"\n', None, ":6:7:", "cannot apply '-' to a tensor and str", "'t * k' is scale(k)"),
    ("    matmul(a, 3)\n", None, ":6:5:", "takes named tensors, then keyword arguments", "pass the op's other"),
    ("    sdpa(a, b)\n", None, ":6:5:", "takes 3 tensors (q, k, v)", "scaled_dot_product_attention(q, k, v)"),
    ("    transpose(0, 1)\n", [3, 4, 4], ":3:15:", "transpose over the batch dim (0) is not supported",
     "dims count the batch as 0"),
    ("    roll([1, 2], 1)\n", [3, 4, 4], ":3:10:", "roll has 2 shifts for 1 dims", "one shift per dim"),
    ("    norm(4)\n", [3, 4, 4], ":3:10:", "norm dim=4 is out of range", "valid dims here: 1..3"),
    ("    clamp\n", [3, 4, 4], ":3:5:", "clamp needs min=, max= or both", "clamp(min=1e-6)"),
    ("    clamp(min=2, max=1)\n", [3, 4, 4], ":3:11:", "clamp min=2 is larger than max=1", None),
    ("    p = parameter([0, 3])\n", [3, 4, 4], ":3:19:", "parameter shape [0, 3]: sizes must be positive", None),
    ('    p = parameter([2], init="uniform")\n', [3, 4, 4], ":3:24:", "'init' must be one of", None),
    ("    parameter([2])\n", [3, 4, 4], ":3:5:", "'parameter' makes a tensor of its own", "bind it to a name"),
    ('    upsample(2, "nearest", align_corners=true)\n', [3, 4, 4], ":3:28:",
     "upsample align_corners applies only to mode \"bilinear\"", "leave align_corners out"),
    ("    upsample\n", [3, 4, 4], ":3:5:", "upsample takes scale_factor= or size=, exactly one", "resize_as(a, ref)"),
    ("    upsample(0.1)\n", [3, 4, 4], ":3:14:", "makes the 4x4 input empty", "the input here is [3, 4, 4]"),
    ('    upsample(2, "linear")\n', [3, 4, 4], ":3:17:", "'mode' must be one of", None),
    ("    conv_transpose2d(4, 3, stride=2, output_padding=2)\n", [3, 4, 4], ":3:38:",
     "output_padding 2 must be smaller than the stride (2) or the dilation (1)", "output_padding picks"),
    ("    conv_transpose2d(4, 3, groups=2)\n", [3, 4, 4], ":3:28:", "groups=2 does not divide the 3 input", None),
    ("    pixel_shuffle(2)\n", [3, 4, 4], ":3:19:", "pixel_shuffle needs channels that are a multiple of upscale_factor**2 = 4, got 3",
     "the input here is [3, 4, 4]"),
    ("    pixel_unshuffle(3)\n", [3, 4, 4], ":3:21:", "pixel_unshuffle needs H and W divisible by downscale_factor=3, got 4x4", None),
    ("    resize_as(x)\n", [3, 4, 4], ":3:5:", "resize_as takes 2 tensors (a, ref), got 1", None),
    ("    x / 0\n", [3, 4, 4], ":3:9:", "division of a tensor by zero", None),
    ("    roll([1, 2], [2, -2])\n", [3, 4, 4], ":3:18:", "roll dims [2, -2] name the same dim twice", None),
    ("    slice(1, 5)\n", [3, 4, 4], ":3:14:", "slice 5::1 of dim 1 (size 3) is empty", "the input here is"),
    ("    slice(0, 1)\n", [3, 4, 4], ":3:11:", "slice over the batch dim (0) is not supported", None),
    ("    pad([1, 2, 3])\n", [3, 4, 4], ":3:9:", "pad needs an even-length list", "last dim first"),
    ('    pad([1, 1, 1, 1, 1, 1], mode="reflect")\n', [3, 4, 4], ":3:29:", "pads the H and W of a [C, H, W]",
     None),
    ("    m = x -> mean([2, 3])\n    sub(x, m)\n", [3, 4, 3], ":4:5:", "sub: [3] has fewer dims than [3, 4, 3]",
     "keepdim=true"),
    ("    m = x -> mean([2, 3])\n    x * m\n", [3, 4, 3], ":4:5:", "mul: [3] has fewer dims", "keepdim=true"),
])
def test_errors_are_located_with_hints(body: str, shape: list[int] | None, where: str, text: str,
                                       hint: str | None) -> None:
    if shape is None:   # a [2, 3] and b [4, 5] from a vector input of 26
        src = net("    p, q = x -> split([6, 20])\n    a = p -> reshape([2, 3])\n    b = q -> reshape([4, 5])\n"
                  + body, [26]).replace("network n():", "network n():  # two tensors")
    else:
        src = net(body, shape)
    msg = error_of(src)
    assert where in msg and text in msg, msg
    if hint is not None:
        assert "hint:" in msg and hint in msg, msg


# ---- a ViT attention block and a U-Net, written in the language -------------------------------------------
VIT_BLOCK = """
block Attention(heads):
    dim = in.shape[-1]
    n = in.shape[0]
    qkv = x -> qkv: linear(dim * 3) -> reshape([n, 3, heads, dim // heads]) -> permute([0, 2, 3, 1, 4])
    q, k, v = qkv -> chunk(3, dim=1)
    o = scaled_dot_product_attention(q, k, v)
    o -> reshape([heads, n, dim // heads]) -> transpose(1, 2) -> reshape([n, dim]) -> proj: linear(dim)

block ManualAttention(heads):
    dim = in.shape[-1]
    n = in.shape[0]
    qkv = x -> qkv: linear(dim * 3) -> reshape([n, 3, heads, dim // heads]) -> permute([0, 2, 3, 1, 4])
    q, k, v = qkv -> chunk(3, dim=1)
    kt = k -> transpose(-2, -1)
    attn = matmul(q * (dim // heads) ** -0.5, kt) -> softmax(-1)
    matmul(attn, v) -> reshape([heads, n, dim // heads]) -> transpose(1, 2) -> reshape([n, dim]) -> proj: linear(dim)

network vit_block(heads=3, manual=false):
    input [24, 4, 4]
    t = x -> reshape([24, 16]) -> transpose(1, 2)
    cls_token = parameter([1, 24])
    pos_embed = parameter([17, 24], init="trunc_normal")
    concat(cls_token, t, dim=1) + pos_embed
    add:
        identity
        seq:
            norm1: layernorm
            attn: ManualAttention(heads) if manual else Attention(heads)
"""


class _TorchAttention(torch.nn.Module):
    """timm's ViT Attention (fused and unfused paths), by hand."""

    def __init__(self, dim: int, heads: int, fused: bool) -> None:
        super().__init__()
        self.heads, self.fused = heads, fused
        self.qkv = torch.nn.Linear(dim, dim * 3)
        self.proj = torch.nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.fused:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            x = ((q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1) @ v
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


@pytest.mark.parametrize("manual", [False, True])
def test_vit_attention_block_matches_a_hand_written_module(manual: bool) -> None:
    spec = VIT_BLOCK
    g = archdsl.graph(spec, manual=manual)
    model = archdsl.build(spec, manual=manual).eval()
    sd = model.state_dict()
    assert [k for k in sd if not k.startswith("norm1")] == ["cls_token", "pos_embed", "attn.qkv.weight",
                                                            "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias"]
    ref = _TorchAttention(24, 3, fused=not manual)
    ref.load_state_dict({k.removeprefix("attn."): v for k, v in sd.items() if k.startswith("attn.")})
    with torch.no_grad():
        model.cls_token.normal_()
        x = torch.randn(2, 24, 4, 4)
        tok = torch.cat([model.cls_token.expand(2, -1, -1), x.reshape(2, 24, 16).transpose(1, 2)], 1)
        tok = tok + model.pos_embed
        want = tok + ref(model.norm1(tok))
        torch.testing.assert_close(model(x), want, rtol=1e-5, atol=1e-5)
    # MACs: qkv and proj linears plus the two attention matmuls, as fvcore counts the unfused module
    linear = 17 * 24 * 72 + 17 * 24 * 24
    assert g.total_macs == linear + 2 * 3 * 17 * 17 * 8
    if manual:
        assert g.total_macs == fvcore_macs(model, torch.randn(1, 24, 4, 4))


UNET = """
block Down(c):
    conv: conv2d(c, 3, stride=2, padding=1)
    relu

network tiny_unet(transposed=true):
    input [3, 16, 16]
    e1 = x -> stem: [conv2d(8, 3, padding=1), relu]
    e2 = e1 -> down1: Down(16)
    e3 = e2 -> down2: Down(32)
    u2 = e3 -> up2: conv_transpose2d(16, 2, stride=2) if transposed else e3 -> upsample(2, "bilinear") -> up2: conv2d(16, 1)
    d2 = concat(u2, e2) -> dec2: [conv2d(16, 3, padding=1), relu]
    d1 = d2 -> upsample(2, mode="nearest")
    d = concat(d1, e1) -> dec1: conv2d(4, 1)
    head = e3 -> aux: conv2d(4, 1)
    out = resize_as(head, x, mode="bilinear", align_corners=false)
    add(d, out)
"""


@pytest.mark.parametrize("transposed", [True, False])
def test_a_tiny_unet_is_built_once_and_runs_at_two_sizes(transposed: bool) -> None:
    spec = UNET
    if not transposed:
        spec = spec.replace("    u2 = e3 -> up2: conv_transpose2d(16, 2, stride=2) if transposed else e3 -> "
                            "upsample(2, \"bilinear\") -> up2: conv2d(16, 1)\n",
                            "    u2 = e3 -> upsample(2, \"bilinear\") -> up2: conv2d(16, 1)\n")
    else:
        spec = spec.replace(" if transposed else e3 -> upsample(2, \"bilinear\") -> up2: conv2d(16, 1)", "")
    g = archdsl.graph(spec)
    assert g.output_shapes["out"] == (4, 16, 16)
    model = archdsl.build(spec)
    m = model
    for hw in ((16, 16), (24, 40)):
        x = torch.randn(2, 3, *hw)
        model.eval()
        with torch.no_grad():
            e1 = m.stem(x)
            e2 = m.down1(e1)
            e3 = m.down2(e2)
            u2 = m.up2(e3) if transposed else m.up2(F.interpolate(e3, scale_factor=2, mode="bilinear"))
            d2 = m.dec2(torch.cat([u2, e2], 1))
            d = m.dec1(torch.cat([F.interpolate(d2, scale_factor=2), e1], 1))
            want = d + F.interpolate(m.aux(e3), size=hw, mode="bilinear", align_corners=False)
            torch.testing.assert_close(model(x), want)
        # and it trains a step at this size
        model.train()
        model(x).square().mean().backward()
        assert all(p.grad is not None for p in model.parameters())
        model.zero_grad()
    convt = 16 * 32 * 2 * 2 * 4 * 4 if transposed else 16 * 32 * 8 * 8
    assert g.total_macs == fvcore_macs(model, torch.randn(1, 3, 16, 16))
    assert convt <= g.total_macs


# ---- the language reference's examples (docs/language.md section 12) -------------------------------------
def _doc_block(heading: str) -> str:
    import re

    from helpers import ROOT
    m = re.search(re.escape(heading) + r".*?```\n(.*?)```", (ROOT / "docs" / "language.md").read_text(), re.DOTALL)
    assert m, f"no code block after {heading!r} in docs/language.md"
    return m.group(1)


def test_language_reference_vit_is_timms_vision_transformer() -> None:
    timm_vit = pytest.importorskip("timm.models.vision_transformer")
    src = _doc_block("### A ViT encoder, key for key")
    ref = timm_vit.VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3,
                                     num_classes=10).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.2)   # no zero-initialised token or bias hides a wrong wiring
    ours = archdsl.build(src).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)
    g = archdsl.graph(src)
    assert g.total_params == sum(p.numel() for p in ref.parameters())
    for m in ref.modules():   # fvcore counts attention only when it is written as matmuls
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    assert g.total_macs == fvcore_macs(ref, torch.randn(1, 3, 32, 32))


def test_language_reference_segmentation_net_runs_at_any_size() -> None:
    src = _doc_block("### Upsampling at any input size")
    assert archdsl.graph(src).output_shapes["out"] == (5, 64, 64)
    model = archdsl.build(src).eval()
    sd = model.state_dict()

    def conv(t: torch.Tensor, name: str, **kw: int) -> torch.Tensor:
        return F.conv2d(t, sd[name + ".weight"], sd.get(name + ".bias"), **kw)

    for hw in ((64, 64), (96, 80)):
        x = torch.randn(2, 3, *hw)
        with torch.no_grad():
            f = F.relu(conv(F.relu(conv(x, "backbone.0", stride=2, padding=1)), "backbone.2", stride=2, padding=1))
            c = conv(f, "classifier.0", padding=1)
            c = F.batch_norm(c, sd["classifier.1.running_mean"], sd["classifier.1.running_var"],
                             sd["classifier.1.weight"], sd["classifier.1.bias"])
            logits = conv(F.relu(c), "classifier.3")
            fine = F.conv_transpose2d(F.interpolate(logits, scale_factor=2, mode="bilinear"), sd["refine.weight"],
                                      sd["refine.bias"], stride=2)
            want = F.interpolate(logits, size=hw, mode="bilinear", align_corners=False) + fine
            torch.testing.assert_close(model(x), want)


def test_parameters_in_repeated_blocks_and_checking_without_torch() -> None:
    import subprocess
    import sys

    from helpers import ROOT
    src = ("block B():\n    gamma = parameter([in.shape[-1]], init=\"ones\", batch_dim=false)\n    x * gamma\n\n"
           "network n():\n    input [12]\n    reshape([3, 4])\n    blocks: [B(), B()]\n")
    model = archdsl.build(src)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {"blocks.0.gamma": (4,),
                                                                          "blocks.1.gamma": (4,)}
    code = ("import sys, archdsl; archdsl.graph(" + repr(src) + "); archdsl.source(" + repr(src) + "); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
