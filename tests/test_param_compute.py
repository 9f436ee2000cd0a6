"""Computation on parameters and buffers in forward: linear_fn / conv2d_fn with computed weights, BEiT's qkv-bias
concat and relative position bias, weight standardization, a parameter reshaped before use.

Each spec mirrors a timm module: its state_dict loads with ``strict=True`` and the eval outputs are equal
(1e-4 x max(1, max |reference|)); MACs equal fvcore's count of the same module.
"""
from __future__ import annotations

from typing import Any

import pytest
from helpers import assert_close, error_of, fvcore_macs, net

import archdsl

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")


def _build(src: str) -> tuple[Any, Any]:
    return archdsl.graph(src), archdsl.build(src).eval()


# ---- BEiT attention: qkv bias concat (q_bias, the k_bias buffer, v_bias), F.linear with qkv.weight, and the
# relative position bias with a class token gathered from its table --------------------------------------------
BEIT = '''
block Attention(heads, window, zeros_k=false):
    n = in.shape[0]
    c = in.shape[1]
    hd = c // heads
    q_bias = parameter([c], batch_dim=false)
    v_bias = parameter([c], batch_dim=false)
    if zeros_k:
        k_bias = v_bias -> zeros_like
    else:
        k_bias = buffer([c], persistent=false)
    w = "qkv.weight": parameter([3 * c, c], batch_dim=false)
    qkv_bias = concat(q_bias, k_bias, v_bias, dim=1)
    qkv = linear_fn(x, w, qkv_bias) -> reshape([n, 3, heads, hd]) -> permute([0, 2, 3, 1, 4])
    q, k, v = qkv -> chunk(3, dim=1)
    relative_position_bias_table = parameter([(2 * window - 1) ** 2 + 3, heads], batch_dim=false)
    relative_position_index = buffer([n, n], dtype="int64", init="relative_position_index_cls", window=window, persistent=false)
    flat = relative_position_index -> reshape([n * n])
    bias = gather_rows(relative_position_bias_table, flat) -> reshape([n, n, heads]) -> permute([0, 3, 1, 2])
    o = scaled_dot_product_attention(q, k, v, bias)
    o -> reshape([heads, n, hd]) -> transpose(1, 2) -> reshape([n, c]) -> proj: linear(c)

network beit_attn(zeros_k=false):
    input [17, 32]
    attn: Attention(4, 4, zeros_k)
'''


def _beit_ref() -> Any:
    from timm.models.beit import Attention
    torch.manual_seed(0)
    ref = Attention(32, num_heads=4, qkv_bias=True, window_size=(4, 4)).eval()
    with torch.no_grad():   # no constant init left: q/v biases and the table random
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape) * 0.3)
    return ref


@pytest.mark.parametrize("zeros_k", [False, True])
def test_beit_attention_equals_timm(zeros_k: bool) -> None:
    ref = _beit_ref()
    ref.fused_attn = False   # fvcore counts the attention's two matmuls, not F.scaled_dot_product_attention
    g, model = _build(BEIT.replace("network beit_attn(zeros_k=false)", f"network beit_attn(zeros_k={str(zeros_k).lower()})"))
    # the persistent keys are timm's: k_bias and relative_position_index are not saved (persistent=False)
    assert set(model.attn.state_dict()) == set(ref.state_dict())
    model.attn.load_state_dict(ref.state_dict(), strict=True)
    assert torch.equal(model.attn.relative_position_index, ref.relative_position_index)
    x = torch.randn(2, 17, 32)
    with torch.no_grad():
        assert_close(model(x), ref(x))
    # MACs: F.linear (qkv), the two attention matmuls, proj: fvcore's count
    assert g.total_macs == fvcore_macs(ref, x) // 2


# ---- weight standardization (timm StdConv2d): mean and variance of the weight per output channel -----------
STDCONV = '''
block StdConv2d(out, k, stride=1, eps=1e-6, bias=false):
    c = in.c
    weight = parameter([out, c, k, k], batch_dim=false)
    w = weight -> reshape([out, c * k * k])
    m = w -> mean(2, keepdim=true)
    d = w - m
    sq = d * d
    var = sq -> mean(2, keepdim=true)
    den = var + eps
    s = den -> rsqrt
    wn = d * s
    ws = wn -> reshape([out, c, k, k])
    if bias:
        b = "bias": parameter([out], batch_dim=false)   # the key "bias" (the name bias is the flag)
        y = conv2d_fn(x, ws, b, stride=stride, padding=k // 2)
    else:
        y = conv2d_fn(x, ws, stride=stride, padding=k // 2)
    y

network std(bias=false):
    input [6, 12, 12]
    conv: StdConv2d(8, 3, stride=2, bias=bias)
    bn: batchnorm
    relu
'''


@pytest.mark.parametrize("bias", [False, True])
def test_weight_standardization_equals_timm_stdconv2d(bias: bool) -> None:
    from timm.layers import StdConv2d
    torch.manual_seed(1)
    ref = StdConv2d(6, 8, 3, stride=2, padding=1, bias=bias).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape))
    g, model = _build(STDCONV.replace("network std(bias=false)", f"network std(bias={str(bias).lower()})"))
    model.conv.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 6, 12, 12)
    with torch.no_grad():
        got = model.conv(x)
        assert_close(got, ref(x))
    conv_macs = next(n.macs for n in g.nodes() if n.op == "conv2d_fn")
    assert conv_macs == fvcore_macs(ref, x) // 2 == 8 * 6 * 6 * 6 * 9
    # deploy leaves the computed weight alone (the batchnorm after it is not folded into a conv2d_fn) and is exact
    model.bn.running_mean.uniform_(-1, 1)
    model.bn.running_var.uniform_(0.5, 2)
    deployed = archdsl.deploy(model)
    with torch.no_grad():
        assert_close(deployed(x), model(x))


def test_parameter_reshaped_before_use_linear_fn() -> None:
    src = net("    y = x\n    w_flat = parameter([20 * 12], init=\"normal\", std=1.0, batch_dim=false)\n"
              "    w = w_flat -> reshape([20, 12])\n    b = bias: parameter([20], init=\"normal\", batch_dim=false)\n"
              "    linear_fn(y, w, b)\n", [5, 12])
    g, model = _build(src)
    sd = model.state_dict()
    assert sorted(sd) == ["bias", "w_flat"] and sd["w_flat"].shape == (240,)
    x = torch.randn(3, 5, 12)
    with torch.no_grad():
        ref = torch.nn.functional.linear(x, sd["w_flat"].view(20, 12), sd["bias"])
        assert_close(model(x), ref)
    assert g.output_shapes["out"] == (5, 20)
    assert g.total_params == 260
    assert g.total_macs == 5 * 12 * 20   # fvcore's aten::linear: the input's elements times out_features
    lin = torch.nn.Linear(12, 20)
    assert g.total_macs == fvcore_macs(lin, torch.randn(1, 5, 12))


def test_linear_fn_on_a_buffer_coordinate_mlp() -> None:
    # a coordinate MLP (Swin V2's cpb_mlp): a linear layer applied to a constant table, once per forward
    src = net("    coords = buffer([9, 2], values=[[i // 3, i % 3] for i in range(9)], persistent=false)\n"
              "    h = coords -> fc1: linear(16) -> relu -> fc2: linear(4)\n"
              "    t = h -> reshape([9, 4]) -> permute([0, 2, 1])\n"
              "    x + t\n", [4, 9])
    g, model = _build(src)
    x = torch.randn(2, 4, 9)
    coords = torch.tensor([[i // 3, i % 3] for i in range(9)], dtype=torch.float32)
    with torch.no_grad():
        t = model.fc2(torch.relu(model.fc1(coords))).permute(1, 0)
        assert_close(model(x), x + t)
    assert not next(n for n in g.nodes() if n.name == "fc2").batched


@pytest.mark.parametrize("body, message, hint", [
    ("    w = parameter([20, 11], batch_dim=false)\n    linear_fn(x, w)\n",
     "linear_fn: the input's last dim 12 ([5, 12]) is not the weight's in_features 11", "nn.Linear's"),
    ("    w = parameter([20, 12], batch_dim=false)\n    b = parameter([7], batch_dim=false)\n    linear_fn(x, w, b)\n",
     "the bias has 7 values for 20 output features", None),
    ("    linear_fn(x, x)\n", "has the batch axis, but it is one tensor for the whole batch",
     "compute it from parameters"),
    ("    w = parameter([20, 3, 4], batch_dim=false)\n    linear_fn(x, w)\n", "must be a matrix", "reshape it"),
])
def test_linear_fn_errors_are_located(body: str, message: str, hint: str | None) -> None:
    err = error_of(net(body, [5, 12]))
    assert message in err and "^" in err, err
    if hint:
        assert hint in err, err


@pytest.mark.parametrize("body, message", [
    ("    w = parameter([8, 3, 3, 3], batch_dim=false)\n    conv2d_fn(x, w, padding=1)\n",
     "takes 3 channels per group but the input has 6 channels in 1 group(s)"),
    ("    w = parameter([8, 3, 3, 3], batch_dim=false)\n    conv2d_fn(x, w, groups=4)\n",
     "groups=4 does not divide the 6 input channels"),
    ("    w = parameter([8, 6, 3], batch_dim=false)\n    conv2d_fn(x, w)\n", "must be [out_channels"),
    ("    w = parameter([8, 6, 3, 3], batch_dim=false)\n    conv2d_fn(x, w, stride=0)\n", "stride must be positive"),
])
def test_conv2d_fn_errors_are_located(body: str, message: str) -> None:
    err = error_of(net(body, [6, 8, 8]))
    assert message in err and "^" in err and "error:" in err, err


def test_conv2d_fn_groups_and_dilation_equal_torch() -> None:
    src = net("    w = parameter([8, 3, 3, 3], init=\"normal\", std=1.0, batch_dim=false)\n"
              "    conv2d_fn(x, w, stride=2, padding=2, dilation=2, groups=2)\n", [6, 9, 9])
    g, model = _build(src)
    x = torch.randn(2, 6, 9, 9)
    with torch.no_grad():
        ref = torch.nn.functional.conv2d(x, model.w, None, 2, 2, 2, 2)
        assert_close(model(x), ref)
    conv = torch.nn.Conv2d(6, 8, 3, stride=2, padding=2, dilation=2, groups=2, bias=False)
    assert g.total_macs == fvcore_macs(conv, x[:1])


def test_torch_forms_of_the_functional_ops() -> None:
    # the importer's table: F.linear / F.conv2d calls with computed weights, table[index], zeros_like
    from archdsl.ops import OPS
    from archdsl.ops.core import TensorArg, TorchCall

    def call(*args: Any, **kwargs: Any) -> Any:
        return TorchCall(None, args, kwargs, [], [])

    t0, t1, t2 = TensorArg(0), TensorArg(1), TensorArg(2)
    lin = {f.target: f for f in OPS["linear_fn"].torch_forms}["torch.nn.functional.linear"]
    assert lin.args(call(t0, weight=t1, bias=t2)) == {} and lin.args(call(t0)) is None
    conv = {f.target: f for f in OPS["conv2d_fn"].torch_forms}["torch.nn.functional.conv2d"]
    assert conv.args(call(t0, t1, None, (2, 2), (1, 1), (1, 1), 4)) == {"stride": [2, 2], "padding": [1, 1],
                                                                     "dilation": [1, 1], "groups": 4}
    assert conv.args(call(t0, t1, bias=t2, padding="same")) == {"padding": "same"}
    gather = OPS["gather_rows"].torch_forms[0]
    assert (gather.kind, gather.target) == ("function", "operator.getitem")
    assert gather.args(call(t0, t1)) == {} and gather.args(call(t0, (slice(None), t1))) is None
