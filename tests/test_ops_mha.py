"""multihead_attention (archdsl/ops/mha.py) against nn.MultiheadAttention as self-attention.

The built module loads the torch module's state_dict strictly (in_proj_weight, in_proj_bias, out_proj.*)
and gives its attention output; parameters equal the module's, MACs equal fvcore's count of the module's own
forward (projections and the two attention bmms); errors located; the torch_form read from real modules.
"""
from __future__ import annotations

import pytest
import torch
from helpers import assert_close, error_of, fvcore_macs, net
from op_forms import call, form, op_call

import archdsl
from archdsl.ops import ShapeError
from archdsl.ops.core import TensorArg


class _Ref(torch.nn.Module):
    """nn.MultiheadAttention called as a transformer block calls it: attn(x, x, x)[0]."""

    def __init__(self, attn: torch.nn.MultiheadAttention) -> None:
        super().__init__()
        self.attn = attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.attn.batch_first:
            x = x.transpose(0, 1)
            return self.attn(x, x, x)[0].transpose(0, 1)
        return self.attn(x, x, x)[0]


def _check(spec: str, attn: torch.nn.MultiheadAttention, shape: tuple[int, int]) -> None:
    ref = _Ref(attn).eval()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    model = archdsl.build(spec).eval()
    assert list(model.state_dict()) == list(ref.state_dict())
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert_close(model(x), ref(x))
    gr = archdsl.graph(spec)
    assert gr.output_shapes["out"] == shape
    assert gr.total_params == sum(p.numel() for p in ref.parameters())
    assert gr.total_macs == fvcore_macs(ref, x[:1])


@pytest.mark.parametrize("spec_args, kw, shape", [
    ("4", {}, (10, 16)),
    ("2, bias=false", {"bias": False}, (7, 12)),
    ("1, dropout=0.1", {"dropout": 0.1}, (5, 8)),
    ("8", {}, (3, 32)),
])
def test_multihead_attention_equals_nn_multiheadattention(spec_args: str, kw: dict[str, object],
                                                         shape: tuple[int, int]) -> None:
    heads = int(spec_args.split(",")[0])
    attn = torch.nn.MultiheadAttention(shape[1], heads, batch_first=True, **kw)   # type: ignore[arg-type]
    _check(net(f"    attn: multihead_attention({spec_args})\n", list(shape)), attn, shape)


def test_multihead_attention_in_a_transformer_block() -> None:
    spec = ("block Block(heads):\n    y = x -> norm1: layernorm -> attn: mha(heads)\n    x = x + y\n"
            "    z = x -> norm2: layernorm -> fc1: linear(32) -> gelu -> fc2: linear(16)\n"
            "    x + z\n\nnetwork n():\n    input [9, 16]\n    blocks: Block(4) * 2\n")
    g = archdsl.graph(spec)
    model = archdsl.build(spec).eval()
    keys = [k for k in model.state_dict() if ".attn." in k]
    assert keys[:4] == ["blocks.0.attn.in_proj_weight", "blocks.0.attn.in_proj_bias", "blocks.0.attn.out_proj.weight",
                        "blocks.0.attn.out_proj.bias"]
    x = torch.randn(1, 9, 16)
    attention = 2 * 9 * 9 * 16    # the two attention matmuls of one block
    assert g.total_macs == 2 * (4 * 9 * 16 * 16 + attention + 2 * 9 * 16 * 32)
    # the generated call is need_weights=False: fused SDPA, which fvcore does not see (as timm's fused
    # attention); the count states the matmuls, as nn.MultiheadAttention's default call makes fvcore count them
    assert fvcore_macs(model, x) == g.total_macs - 2 * attention


def test_multihead_attention_torch_form_reproduces_the_module() -> None:
    f = form("multihead_attention", "module", "torch.nn.MultiheadAttention")
    t = TensorArg(0)
    for attn, axes in ((torch.nn.MultiheadAttention(12, 3, bias=False, batch_first=True), 0),
                       (torch.nn.MultiheadAttention(12, 4, dropout=0.2), 1)):
        args = f.args(call([(6, 12)], attn, args=(t, t, t), batch_axes=[axes]))
        assert args == {"num_heads": attn.num_heads, "bias": attn.in_proj_bias is not None, "dropout": attn.dropout}
        _check(net(f"    attn: {op_call('multihead_attention', args)}\n", [6, 12]), attn, (6, 12))
    attn = torch.nn.MultiheadAttention(12, 3, batch_first=True)
    # cross-attention and masked calls are not this op; a batch on the wrong axis or add_bias_kv cannot be
    assert f.args(call([(6, 12), (5, 12)], attn, args=(t, TensorArg(1), TensorArg(1)))) is None
    assert f.args(call([(6, 12), (6, 6)], attn, args=(t, t, t), kwargs={"attn_mask": TensorArg(1)})) is None
    with pytest.raises(ShapeError, match="batch axis"):
        f.args(call([(6, 12)], attn, args=(t, t, t), batch_axes=[1]))
    with pytest.raises(ShapeError, match="add_bias_kv"):
        f.args(call([(6, 12)], torch.nn.MultiheadAttention(12, 3, add_bias_kv=True, batch_first=True),
                    args=(t, t, t)))


@pytest.mark.parametrize("body, shape, message, hint", [
    ("    multihead_attention(5)\n", [4, 16], "num_heads=5 does not divide the embedding dim 16 of [4, 16]",
     "divisors of the embedding dim: 1, 2, 4, 8, 16"),
    ("    multihead_attention(4)\n", [16, 4, 4], "multihead_attention expects tokens [N, E], got [16, 4, 4]",
     "flatten"),
    ("    multihead_attention(2, dropout=1.5)\n", [4, 16], "dropout must be in [0, 1), got 1.5", ""),
])
def test_multihead_attention_errors_are_located(body: str, shape: list[int], message: str, hint: str) -> None:
    err = error_of(net(body, shape))
    assert message in err and "<spec>:3:" in err and hint in err, err


def test_language_doc_example_of_the_sequence_ops_is_what_torch_computes() -> None:
    import re

    from helpers import ROOT
    text = (ROOT / "docs" / "language.md").read_text()
    m = re.search(r"### Sequences, more norms, einsum and nn\.MultiheadAttention.*?```\n(.*?)```", text, re.S)
    assert m, "the example is gone from docs/language.md"
    spec = m.group(1)
    g = archdsl.graph(spec)
    model = archdsl.build(spec).eval()
    assert g.output_shapes["out"] == (16, 16)
    assert [k for k in model.state_dict() if "attn" in k] == [
        "mixer.attn.in_proj_weight", "mixer.attn.in_proj_bias", "mixer.attn.out_proj.weight",
        "mixer.attn.out_proj.bias"]
    x = torch.randn(2, 4, 64)
    F = torch.nn.functional
    with torch.no_grad():
        h = F.max_pool1d(F.relu(model.bn(model.stem(x))), 3, 2, 1).transpose(1, 2)
        n = model.mixer.norm(h)
        h = h + model.mixer.attn(n, n, n)[0]
        e = F.normalize(h, dim=-1)
        assert_close(model(x), e @ e.transpose(1, 2))
    assert g.total_params == sum(p.numel() for p in model.parameters())


def test_deploy_and_tracing_keep_the_nested_attention_weights() -> None:
    # nn.MultiheadAttention's out_proj is a submodule: the deploy form copies every key under the op's path
    spec = net("    attn: multihead_attention(2)\n    fc: linear(4)\n", [5, 8])
    model = archdsl.build(spec).eval()
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    dep = archdsl.deploy(model)
    assert list(dep.state_dict()) == list(model.state_dict())
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        assert_close(dep(x), model(x))
        assert_close(torch.fx.symbolic_trace(model)(x), model(x))
