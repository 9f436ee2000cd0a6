"""Buffers as values: ``buffer(...)`` (index tables, masks, fixed filters, constants), values without the batch
axis, and Swin's relative position bias written with a buffer, gather_rows, reshape and permute.

Persistent buffers are state_dict keys under their name and load strictly; non-persistent ones are not keys and
still have their values; the values come from a fixed table of initializers or a bounded literal list.
"""
from __future__ import annotations

from typing import Any

import pytest
from helpers import assert_close, error_of, net

import archdsl
from archdsl.ops.buffers import relative_position_index

torch = pytest.importorskip("torch")


def _build(src: str) -> tuple[Any, Any]:
    return archdsl.graph(src), archdsl.build(src).eval()


# ---- Swin's relative position bias ---------------------------------------------------------------------------
def _doc_block(heading: str) -> str:
    """The first code block after ``heading`` in docs/language.md."""
    import re

    from helpers import ROOT
    m = re.search(re.escape(heading) + r".*?```\n(.*?)```", (ROOT / "docs" / "language.md").read_text(), re.DOTALL)
    assert m, f"no code block after {heading!r} in docs/language.md"
    return m.group(1)


# the language reference's example (docs/language.md, "Buffers and computation on parameters")
SWIN_BIAS = _doc_block("### Buffers and computation on parameters")


def test_swin_relative_position_bias_equals_torchvision() -> None:
    from torchvision.models.swin_transformer import ShiftedWindowAttention
    torch.manual_seed(0)
    ref = ShiftedWindowAttention(96, [7, 7], [0, 0], 3)
    g, model = _build(SWIN_BIAS)
    # torchvision's persistent buffer and the table load strictly under torchvision's keys
    state = {k: v for k, v in ref.state_dict().items() if k.startswith("relative_position")}
    assert set(model.r.state_dict()) == set(state)
    model.r.load_state_dict(state, strict=True)
    assert torch.equal(model.r.relative_position_index, ref.relative_position_index)
    x = torch.randn(2, 3, 49, 49)
    with torch.no_grad():
        assert torch.equal(model(x), x + ref.get_relative_position_bias())
    node = next(n for n in g.nodes() if n.op == "buffer")
    assert not node.batched and node.params == 0 and node.macs == 0
    assert g.total_params == 169 * 3 and g.total_macs == 0


def test_the_buffer_form_equals_swin_attention_bias() -> None:
    # specs/swin.arch's swin_attention_bias (an op holding the buffer) and the form written with values agree
    src = SWIN_BIAS.replace("    x + bias\n", "    old = relative_position_bias_table -> old_index: swin_attention_bias(window, 0, [7, 7])\n"
                                              "    y = x -> reshape([1, heads, n, n])\n"
                                              "    y + (bias - old)\n")
    g, model = _build(src)
    with torch.no_grad():
        model.r.relative_position_bias_table.normal_()
        x = torch.randn(2, 3, 49, 49)
        assert torch.equal(model(x), x[:, None])
    assert torch.equal(model.r.relative_position_index, model.r.old_index)


@pytest.mark.parametrize("h, w", [(3, 5), (4, 4), (1, 2)])
def test_relative_position_index_generators_equal_timm(h: int, w: int) -> None:
    from timm.models.beit import gen_relative_position_index
    from timm.models.swin_transformer import get_relative_position_index
    n = h * w
    src = net(f"    a = buffer([{n}, {n}], dtype=\"int64\", init=\"relative_position_index\", window=[{h}, {w}])\n"
              f"    b = buffer([{n + 1}, {n + 1}], dtype=\"int64\", init=\"relative_position_index_cls\", window=[{h}, {w}])\n"
              "    x\n", [3])
    _, model = _build(src)
    assert torch.equal(model.a, get_relative_position_index(h, w))
    assert torch.equal(model.b, gen_relative_position_index((h, w)))
    # the torch-free copy used for checks computes the same numbers
    assert model.a.flatten().tolist() == relative_position_index(h, w)
    assert model.b.flatten().tolist() == relative_position_index(h, w, cls_token=True)


# ---- persistence, values, initializers -----------------------------------------------------------------------
STATE = '''
network s():
    input [2, 4, 4]
    scale = buffer([2, 1, 1], init="loaded")
    shift = buffer([2, 1, 1], values=[0.5, -1.5], persistent=false)
    steps = buffer([2, 3], dtype="int64", init="arange")
    mask = buffer([4], dtype="bool", values=[true, false, true, true], persistent=false)
    y = x * scale
    y + shift
'''


def test_persistent_and_non_persistent_buffers() -> None:
    g, model = _build(STATE)
    sd = model.state_dict()
    assert sorted(sd) == ["scale", "steps"]           # non-persistent buffers are not keys
    assert sorted(n for n, _ in model.named_buffers()) == ["mask", "scale", "shift", "steps"]
    assert torch.equal(model.scale, torch.zeros(2, 1, 1))   # "loaded": zeros until a checkpoint fills it
    assert torch.equal(model.shift.flatten(), torch.tensor([0.5, -1.5]))
    assert torch.equal(model.steps, torch.arange(6).reshape(2, 3)) and model.steps.dtype == torch.int64
    assert model.mask.dtype == torch.bool and model.mask.tolist() == [True, False, True, True]
    state = {"scale": torch.tensor([2.0, 3.0]).view(2, 1, 1), "steps": torch.arange(6).reshape(2, 3) * 7}
    model.load_state_dict(state, strict=True)
    x = torch.randn(2, 2, 4, 4)
    with torch.no_grad():
        assert_close(model(x), x * state["scale"] + torch.tensor([0.5, -1.5]).view(2, 1, 1))
    with pytest.raises(RuntimeError, match="Missing key"):
        model.load_state_dict({"scale": state["scale"]}, strict=True)
    # counted as buffers (model.buffers()), never as parameters
    info = archdsl.summary(STATE)
    assert info.totals["buffers"] == sum(b.numel() for b in model.buffers()) == 2 + 2 + 6 + 4
    assert g.total_params == 0 == sum(p.numel() for p in model.parameters())


def test_fixed_filter_buffer_with_conv2d_fn() -> None:
    src = net("    k = buffer([1, 1, 3, 3], values=[[1, 2, 1], [2, 4, 2], [1, 2, 1]], persistent=false)\n"
              "    w = k * 0.0625\n    conv2d_fn(x, w, padding=1)\n", [1, 8, 8])
    g, model = _build(src)
    x = torch.randn(2, 1, 8, 8)
    kernel = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]).view(1, 1, 3, 3) / 16
    with torch.no_grad():
        assert_close(model(x), torch.nn.functional.conv2d(x, kernel, padding=1))
    assert model.state_dict() == {} and g.total_macs == 8 * 8 * 9


def test_gather_rows_of_batched_tables() -> None:
    # the table has the batch axis, the index (a buffer) not; and both with it (each sample its own rows)
    src = net("    idx = buffer([2, 3], dtype=\"int64\", values=[[4, 0, 1], [1, 1, 3]])\n"
              "    a = gather_rows(x, idx)\n    i = a -> zeros_like\n    j = buffer([3], dtype=\"int64\", values=[2, 0, 5])\n"
              "    b = gather_rows(x, j)\n    b\n", [6, 5])
    g, model = _build(src)
    x = torch.randn(2, 6, 5)
    with torch.no_grad():
        assert torch.equal(model(x), x[:, [2, 0, 5]])
    assert g.output_shapes["out"] == (3, 5)
    first = [n for n in g.nodes() if n.op == "gather_rows"][0]
    assert first.shape == (2, 3, 5) and first.batched


# ---- errors: located, with hints, and the limits --------------------------------------------------------------
@pytest.mark.parametrize("body, message, hint", [
    ("    b = buffer([2, 2], values=[1, 2, 3])\n    x\n", "values has 3 numbers but the shape [2, 2] holds 4",
     "row-major"),
    ("    b = buffer([2], values=[1, \"a\"])\n    x\n", "buffer values must be numbers, got 'a'", None),
    ("    b = buffer([2], dtype=\"int64\", values=[1, 2.5])\n    x\n", "must be integers, got 2.5", "float32"),
    ("    b = buffer([2], init=\"loaded\", persistent=false)\n    x\n", "must be persistent", "give its values"),
    ("    b = buffer([48], dtype=\"int64\", init=\"relative_position_index\", window=7)\n    x\n",
     "has shape [49, 49] or [2401], got [48]", None),
    ("    b = buffer([4, 4], dtype=\"float32\", init=\"relative_position_index\", window=2)\n    x\n",
     "dtype must be \"int64\"", None),
    ("    b = buffer([4], window=2)\n    x\n", "window= is read only by init=\"relative_position_index\"", None),
    ("    b = buffer([4], init=\"random\")\n    x\n", "random", None),
    ("    b = buffer([0, 3])\n    x\n", "positive integers", "relative_position_index"),
    ("    b = buffer([3])\n    concat(x, b, dim=1)\n", "concat combines tensors with the batch axis and tensors without",
     "expand it over the batch"),
    ("    b = buffer([3, 3, 3])\n    x + b\n", "has more dims than the batched [3]", "reshape it"),
    ("    x -> buffer([3])\n", "makes a tensor of its own", None),
])
def test_buffer_errors_are_located(body: str, message: str, hint: str | None) -> None:
    err = error_of(net(body, [3]))
    assert message in err and "^" in err and "<spec>:" in err, err
    if hint:
        assert hint in err, err


def test_an_output_needs_the_batch_axis() -> None:
    err = error_of(net("    b = buffer([3])\n    b\n", [3]))
    assert "the output 'out' has no batch axis" in err and "depend on the network's input" in err, err


def test_literal_values_are_bounded() -> None:
    big = net("    b = buffer([5000], values=[0.0] * 5000)\n    x\n", [3])
    err = error_of(big)
    assert "values= holds more than 4,096 values" in err and "max_literal_values" in err and "^" in err, err
    g = archdsl.graph(big, limits=archdsl.Limits(max_literal_values=5000))
    assert sum(n.args.get("shape", (0,))[0] for n in g.nodes() if n.op == "buffer") == 5000
    nested = net("    b = buffer([70, 70], values=[[1] * 70] * 70)\n    x\n", [3])
    assert "max_literal_values" in error_of(nested)


def test_no_spec_text_reaches_the_generated_code() -> None:
    # values are repr literals of validated numbers, initializers a fixed table: a string cannot get through
    src = net("    b = buffer([1], init=\"zeros); import os\")\n    x\n", [3])
    err = error_of(src)
    assert "init" in err and "zeros); import os" in err, err


# ---- deploy --------------------------------------------------------------------------------------------------
def test_deploy_keeps_buffers_and_computation_exact() -> None:
    src = '''
block Block():
    c = in.c
    gain = buffer([c, 1, 1], init="loaded")
    w = parameter([c, c, 3, 3], init="normal", std=0.2, batch_dim=false)
    m = w -> mean([2, 3, 4], keepdim=true)
    y = conv2d_fn(x, w - m, padding=1) -> bn: batchnorm -> relu
    y * gain

network d():
    input [4, 6, 6]
    stem: conv2d(4, 1)
    b: Block()
'''
    _, model = _build(src)
    torch.manual_seed(3)
    with torch.no_grad():
        model.b.gain.copy_(torch.rand(4, 1, 1) + 0.5)
        model.b.bn.running_mean.uniform_(-1, 1)
        model.b.bn.running_var.uniform_(0.5, 2)
    deployed = archdsl.deploy(model)
    assert torch.equal(deployed.b.gain, model.b.gain)   # a loaded buffer keeps its checkpoint values
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        assert_close(deployed(x), model(x))


def test_deploy_gives_non_persistent_buffers_their_computed_values() -> None:
    # no state_dict key fills them: the deployed model (built on the meta device) takes the built model's
    src = net("    s = \"table.shift\": buffer([16], values=[0.5, -1.5] * 8, persistent=false)\n"
              "    r = buffer([4, 16], persistent=false, init=\"rotary_sin_cos\", window=[2, 2])\n"
              "    k = buffer([16], persistent=false, init=\"ones\")\n"
              "    y = x + s + k\n    y * r\n", [4, 16])
    _, model = _build(src)
    deployed = archdsl.deploy(model, memory_format="contiguous")
    for name, buf in model.named_buffers():
        got = deployed.get_buffer(name)
        assert not got.is_meta and torch.equal(got, buf), name
    assert deployed.state_dict() == {}                  # still no keys
    x = torch.randn(2, 4, 16)
    with torch.no_grad():
        assert torch.equal(deployed(x), model(x))


def test_values_without_the_batch_axis_exist_once_in_memory() -> None:
    # the bias computed from the table and the index is one tensor whatever the batch: at batch 4 the
    # activations are 4x those of batch 1 less 3x the unbatched values' bytes
    from archdsl.passes.summary import activation_memory
    g = archdsl.graph(SWIN_BIAS)
    one, four = activation_memory(g, 1)["activations"], activation_memory(g, 4)["activations"]
    saved = 4 * one - four
    assert saved > 0 and saved % 3 == 0 and saved // 3 >= 49 * 49 * 3 * 4


def test_archc_check_locates_a_buffer_mistake(tmp_path: Any) -> None:
    from helpers import run_archc
    spec = tmp_path / "b.arch"
    spec.write_text(net("    b = buffer([2, 2], dtype=\"int64\", values=[1, 2, 3, 4.5])\n    x\n", [3]))
    r = run_archc("check", str(spec))
    assert r.returncode == 1, r.stderr
    assert "b.arch:3:" in r.stderr and "must be integers, got 4.5" in r.stderr and "Traceback" not in r.stderr


def test_a_block_applied_to_a_buffer() -> None:
    # a block's body runs on a value without the batch axis as on any other; its own parameter needs
    # batch_dim=false there (there is no batch to expand over)
    body = '''
block Mix(batched=false):
    p = parameter([4], init="normal", std=1.0, batch_dim=batched)
    x * p

network n(batched=false):
    input [3, 4]
    t = buffer([3, 4], init="arange") -> mix: Mix(batched)
    x + t
'''
    g, model = _build(body)
    x = torch.randn(2, 3, 4)
    with torch.no_grad():
        assert_close(model(x), x + torch.arange(12.0).view(3, 4) * model.mix.p)
    err = error_of(body.replace("network n(batched=false)", "network n(batched=true)"))
    assert "takes its batch size from the block's input, which has none here" in err and "batch_dim=false" in err, err
