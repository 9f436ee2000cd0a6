"""select, unbind and repeat_interleave (archdsl/ops/layout.py, unbind lowered in archdsl/lower/layers.py).

Values against the torch methods, the attention idiom ``q, k, v = qkv -> unbind(1)``, located errors, and the
torch_forms of these ops and of chunk/split/unbind (``MULTI_OUTPUT_FORMS``) fed hand-made calls.
"""
from __future__ import annotations

import pytest
import torch
from helpers import compile_run, error_of, net
from op_forms import call, form, op_call

import archdsl
from archdsl.ops import MULTI_OUTPUT_FORMS, MULTI_OUTPUT_OPS, ShapeError, has_trait
from archdsl.ops.core import TensorArg


def test_unbind_gives_one_tensor_per_index() -> None:
    x = torch.randn(2, 3, 4, 5)
    body = ("    a, b, c = x -> unbind(1)\n    p, q, r, s = x -> unbind(dim=2)\n    u, v, w, y, z = x -> unbind(-1)\n"
            "    output a, c, q, s, z\n")
    g, _, out = compile_run(net(body, [3, 4, 5]), x)
    assert g.output_shapes == {"a": (4, 5), "c": (4, 5), "q": (3, 5), "s": (3, 5), "z": (3, 4)}
    for name, want in (("a", x[:, 0]), ("c", x[:, 2]), ("q", x[:, :, 1]), ("s", x[:, :, 3]), ("z", x[..., 4])):
        assert torch.equal(out[name], want), name
    assert has_trait("unbind", "multi-output") and "unbind" in MULTI_OUTPUT_OPS


def test_unbind_in_the_qkv_attention_idiom_matches_torch() -> None:
    # timm's Attention: qkv -> reshape(N, 3, heads, d) -> permute -> unbind, written per sample
    spec = ("network n():\n    input [6, 8]\n    t = x -> qkv: linear(24) -> reshape([6, 3, 2, 4]) -> "
            "permute([0, 2, 3, 1, 4])\n    q, k, v = t -> unbind(1)\n    scaled_dot_product_attention(q, k, v)\n")
    model = archdsl.build(spec).eval()
    x = torch.randn(2, 6, 8)
    with torch.no_grad():
        t = model.qkv(x).reshape(2, 6, 3, 2, 4).permute(2, 0, 3, 1, 4)
        q, k, v = t.unbind(0)
        torch.testing.assert_close(model(x), torch.nn.functional.scaled_dot_product_attention(q, k, v))
    assert archdsl.graph(spec).output_shapes["out"] == (2, 6, 4)


@pytest.mark.parametrize("spec_args, ref", [
    ("1, 0", lambda t: t[:, 0]), ("2, -1", lambda t: t.select(2, -1)), ("-1, 3", lambda t: t.select(-1, 3)),
])
def test_select_equals_torch(spec_args: str, ref: object) -> None:
    x = torch.randn(2, 3, 4, 5)
    g, _, y = compile_run(net(f"    select({spec_args})\n", [3, 4, 5]), x)
    want = ref(x)   # type: ignore[operator]
    assert torch.equal(y, want) and g.output_shapes["out"] == tuple(want.shape[1:])


@pytest.mark.parametrize("spec_args, kw", [("2, dim=1", (2, 1)), ("3, dim=-1", (3, -1)), ("1, dim=2", (1, 2))])
def test_repeat_interleave_equals_torch(spec_args: str, kw: tuple[int, int]) -> None:
    x = torch.randn(2, 3, 4)
    g, _, y = compile_run(net(f"    repeat_interleave({spec_args})\n", [3, 4]), x)
    want = x.repeat_interleave(kw[0], dim=kw[1])
    assert torch.equal(y, want) and g.output_shapes["out"] == tuple(want.shape[1:]) and g.total_macs == 0


@pytest.mark.parametrize("reps", [[1, 2, 3], [2, 1, 1], [1, 1, 1]])
def test_tile_equals_torch(reps: list[int]) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5)
    g, _, y = compile_run(net(f"    tile({reps})\n", [3, 4, 5]), x)
    want = x.tile((1, *reps))
    assert torch.equal(y, want) and g.output_shapes["out"] == tuple(want.shape[1:])
    assert g.total_macs == 0 and g.total_params == 0   # a copy: fvcore counts no MACs for it


def test_tile_of_a_parameter_without_the_batch_axis_equals_torch() -> None:
    torch.manual_seed(0)
    src = net("    w = parameter([1, 3, 2, 2], batch_dim=false)\n    t = w -> tile([1, 1, 2, 3])\n"
              "    add(x, t)\n", [1, 3, 4, 6])
    g, model, y = compile_run(src, torch.randn(2, 1, 3, 4, 6))
    w = dict(model.named_parameters())["w"]
    x = torch.randn(2, 1, 3, 4, 6)
    with torch.no_grad():
        torch.testing.assert_close(model(x), x + w.tile((2, 3)))


@pytest.mark.parametrize("body, shape, message, hint", [
    ("    tile([2, 2])\n", [3, 4, 5], "tile reps [2, 2] need one count per dim of the input [3, 4, 5]", "write 1"),
    ("    tile([1, 0, 1])\n", [3, 4, 5], "tile reps [1, 0, 1] must be positive", ""),
    ("    a, b = x -> unbind(1)\n    a\n", [3, 4], "2 names but the value has 3 parts", ""),
    ("    a, b, c = x -> unbind(0)\n    a\n", [3, 4], "unbind: dim=0 is out of range for [3, 4]", "valid dims"),
    ("    a = x -> unbind(1)\n    a\n", [3], "unbind: [3] has one dim", "chunk(n)"),
    ("    select(1, 3)\n", [3, 4], "select index 3 is out of range for dim 1 of size 3", "valid indices"),
    ("    select(0, 0)\n", [3, 4], "select over the batch dim (0) is not supported", "dims count"),
    ("    select(1, 0)\n", [3], "select on [3] would leave only the batch", "slice"),
    ("    repeat_interleave(0, dim=1)\n", [3, 4], "repeat_interleave repeats=0 must be positive", ""),
    ("    repeat_interleave(2, dim=3)\n", [3, 4], "repeat_interleave dim=3 is out of range", "valid dims"),
])
def test_layout_errors_are_located(body: str, shape: list[int], message: str, hint: str) -> None:
    err = error_of(net(body, shape))
    assert message in err and "<spec>:3:" in err and hint in err, err


def test_torch_forms_of_select_repeat_interleave_and_the_multi_output_ops() -> None:
    t = TensorArg(0)
    sel = form("select", "method", "select").args(call([(3, 4, 5)], args=(t, 2, 1)))
    assert sel == {"dim": 2, "index": 1}
    assert form("select", "function", "torch.select").args(call([(3, 4, 5)], args=(t, -1, 0))) == \
        {"dim": 3, "index": 0}
    x = torch.randn(2, 3, 4, 5)
    _, _, y = compile_run(net(f"    {op_call('select', sel)}\n", [3, 4, 5]), x)
    assert torch.equal(y, x.select(2, 1))
    ri = form("repeat_interleave", "function", "torch.repeat_interleave").args(
        call([(3, 4, 5)], args=(t, 2), kwargs={"dim": -2}))
    assert ri == {"repeats": 2, "dim": 2}
    for bad in ({"repeats": 2}, {"repeats": TensorArg(1), "dim": 1}):   # flattens the batch; per-element counts
        with pytest.raises(ShapeError):
            form("repeat_interleave", "method", "repeat_interleave").args(call([(3, 4, 5)], args=(t,), kwargs=bad))

    tile = form("tile", "method", "tile")
    assert tile.args(call([(3, 4, 5)], args=(t, (2, 3)))) == {"reps": [1, 2, 3]}          # torch prepends 1s
    assert tile.args(call([(1, 3, 4, 5)], args=(t, (2, 3)), batch_axes=[-1])) == {"reps": [1, 1, 2, 3]}
    assert form("tile", "method", "repeat").args(call([(3, 4)], args=(t, 1, 2, 1))) == {"reps": [2, 1]}
    assert form("tile", "function", "torch.tile").args(call([(3, 4)], args=(t,), kwargs={"dims": (1, 2)})) == \
        {"reps": [1, 2]}
    with pytest.raises(ShapeError, match="tile repeats the batch axis"):
        tile.args(call([(3, 4)], args=(t, (2, 1, 1))))

    def multi(op: str, kind: str, target: str, c: object) -> dict[str, object]:
        forms = [f for f in MULTI_OUTPUT_FORMS[op] if (f.kind, f.target) == (kind, target)]
        assert len(forms) == 1
        return forms[0].args(c)   # type: ignore[arg-type, return-value]
    # the batch moved to dim 2 by a permute (timm's qkv.permute(2, 0, 3, 1, 4)): torch's unbind(0) is the
    # first per-sample dim
    assert multi("unbind", "method", "unbind", call([(3, 2, 6, 4)], args=(t, 0), batch_axes=[1])) == {"dim": 1}
    assert multi("unbind", "function", "torch.unbind", call([(3, 4)], args=(t,), kwargs={"dim": -1})) == {"dim": 2}
    with pytest.raises(ShapeError, match="batch axis"):
        multi("unbind", "method", "unbind", call([(3, 4)], args=(t,)))
    assert multi("chunk", "method", "chunk", call([(6, 4)], args=(t, 3), kwargs={"dim": 1})) == \
        {"chunks": 3, "dim": 1}
    assert multi("split", "function", "torch.split", call([(7, 4)], args=(t, 3, 1))) == \
        {"sizes": [3, 3, 1], "dim": 1}
    assert multi("split", "method", "split", call([(7, 4)], args=(t, [2, 5]), kwargs={"dim": -2})) == \
        {"sizes": [2, 5], "dim": 1}
    assert multi("split", "function", "torch.functional.split", call([(7, 4)], args=(t, 2), kwargs={"dim": 2})) == \
        {"sizes": [2, 2], "dim": 2}


NEW_OPS = ("groupnorm", "rmsnorm", "normalize", "conv1d", "maxpool1d", "avgpool1d", "adaptive_avgpool1d",
           "adaptive_maxpool1d", "batchnorm", "select", "repeat_interleave", "unfold", "fold", "einsum",
           "multihead_attention", "tile")


def test_every_torch_form_of_the_new_ops_names_a_real_torch_object() -> None:
    import importlib

    from archdsl.ops import OPS
    forms = [f for op in NEW_OPS for f in OPS[op].torch_forms] + [f for fs in MULTI_OUTPUT_FORMS.values() for f in fs]
    assert all(OPS[op].torch_forms for op in NEW_OPS)
    for f in forms:
        if f.kind == "method":
            assert callable(getattr(torch.Tensor, f.target)), f
            continue
        assert f.kind in ("module", "function"), f
        mod, _, name = f.target.rpartition(".")
        obj = getattr(importlib.import_module(mod), name)
        assert isinstance(obj, type) and issubclass(obj, torch.nn.Module) if f.kind == "module" else callable(obj), f
