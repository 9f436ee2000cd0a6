"""The rotary position embedding buffer inits (``rotary_sin_cos``, ``rotary_sin``, ``rotary_cos``) against timm's
own RotaryEmbeddingCat / RotaryEmbedding tables, their argument checks, and the importer naming a non-persistent
table by them (whole models: tests/test_importer_rope.py)."""
from __future__ import annotations

from typing import Any

import pytest
from helpers import error_of, net

import archdsl
from archdsl.importer.tables import rotary_table

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

# (timm constructor arguments, the spec's buffer arguments after window=) : every option the inits read
CASES: list[tuple[dict[str, Any], str]] = [
    (dict(dim=64, feat_shape=[16, 16], ref_feat_shape=[16, 16]), "ref_window=[16, 16]"),
    (dict(dim=64, feat_shape=[4, 6], ref_feat_shape=[16, 16], grid_indexing="xy"),
     "ref_window=[16, 16], indexing=\"xy\""),
    (dict(dim=88, feat_shape=[7, 9], rotate_half=True, grid_offset=0.5, temperature=100.0),
     "rotate_half=true, offset=0.5, temperature=100.0"),
    (dict(dim=32, feat_shape=[5, 5]), ""),
]


def _timm(cls_name: str, kw: dict[str, Any]) -> Any:
    from timm.layers import pos_embed_sincos
    return getattr(pos_embed_sincos, cls_name)(in_pixels=False, **kw)


@pytest.mark.parametrize("kw, extra", CASES)
def test_rotary_inits_equal_timm_bit_for_bit(kw: dict[str, Any], extra: str) -> None:
    cat, sep = _timm("RotaryEmbeddingCat", kw), _timm("RotaryEmbedding", kw)
    h, w = kw["feat_shape"]
    n, bands = h * w, kw["dim"] // 4
    win = f"window=[{h}, {w}]" + (f", {extra}" if extra else "")
    src = net(f"    a = buffer([{n}, {8 * bands}], persistent=false, init=\"rotary_sin_cos\", {win})\n"
              f"    s = buffer([{n}, {4 * bands}], persistent=false, init=\"rotary_sin\", {win})\n"
              f"    c = buffer([{n}, {4 * bands}], persistent=false, init=\"rotary_cos\", {win})\n"
              "    x\n", [3])
    model = archdsl.build(src)
    assert torch.equal(model.a, cat.pos_embed)
    assert torch.equal(model.s, sep.pos_embed_sin) and torch.equal(model.c, sep.pos_embed_cos)
    assert model.state_dict() == {}                       # non-persistent: computed when built, no keys
    # the importer's copy (the same helper text) computes the same table
    ref = tuple(kw["ref_feat_shape"]) if "ref_feat_shape" in kw else None
    table = rotary_table(h, w, bands, kw.get("temperature", 10000.0), ref, kw.get("grid_offset", 0.0),
                             kw.get("grid_indexing", "ij"), kw.get("rotate_half", False))
    assert torch.equal(table, cat.pos_embed)
    # the generated code defines the helper once and calls it with literals
    code = archdsl.source(src)
    assert code.count("def _rotary_embedding(") == 1 and code.count("_rotary_embedding(") == 4, code
    # a network without a rotary buffer does not carry the helper
    assert "_rotary_embedding" not in archdsl.source(net("    b = buffer([4], persistent=false)\n    x\n", [3]))


@pytest.mark.parametrize("args, message", [
    ("[16, 64], init=\"rotary_sin_cos\"", "needs window=[h, w]"),
    ("[16, 60], init=\"rotary_sin_cos\", window=4", "has shape [16, 8 * bands], got [16, 60]"),
    ("[15, 64], init=\"rotary_sin\", window=4", "has shape [16, 4 * bands], got [15, 64]"),
    ("[16, 64], dtype=\"int64\", init=\"rotary_cos\", window=4", "dtype must be \"float32\""),
    ("[16, 64], init=\"rotary_cos\", window=4, temperature=0", "temperature=0 must be a positive finite number"),
    ("[16, 64], init=\"rotary_cos\", window=4, ref_window=[0, 4]", "ref_window=[0, 4] must be positive"),
    ("[16, 64], init=\"rotary_cos\", window=4, indexing=\"yx\"", "yx"),
    ("[4], temperature=100", "temperature= is read only by the rotary inits"),
    ("[4], rotate_half=true", "rotate_half= is read only by the rotary inits"),
])
def test_rotary_argument_errors_are_located(args: str, message: str) -> None:
    err = error_of(net(f"    b = buffer({args}, persistent=false)\n    x\n", [3]))
    assert message in err and "^" in err and "<spec>:" in err, err


def test_importer_names_a_rotary_table_by_its_init() -> None:
    from archdsl.importer.tables import buffer_args
    from archdsl.importer.trace import ImportFailure
    kw, _ = CASES[1]
    m = _timm("RotaryEmbeddingCat", kw)
    args = buffer_args(m, "pos_embed", m.pos_embed)
    assert args == {"shape": [24, 128], "dtype": "float32", "persistent": False, "init": "rotary_sin_cos",
                    "window": [4, 6], "ref_window": [16, 16], "indexing": "xy"}
    sep = _timm("RotaryEmbedding", kw)
    assert buffer_args(sep, "pos_embed_cos", sep.pos_embed_cos)["init"] == "rotary_cos"
    # a table the attributes do not describe (one value moved by more than the tolerance) is no generator's:
    # a small one is written as a literal list, a large one cannot be imported
    changed = m.pos_embed.clone()
    changed[3, 5] += 1e-4
    small = buffer_args(m, "pos_embed", changed)
    assert "init" not in small and small["values"][3 * 128 + 5] == changed[3, 5].item()
    big = _timm("RotaryEmbeddingCat", CASES[0][0])
    assert buffer_args(big, "pos_embed", big.pos_embed)["init"] == "rotary_sin_cos"
    moved = big.pos_embed.clone()
    moved[100, 7] += 1e-4
    with pytest.raises(ImportFailure, match="equal no known generator"):
        buffer_args(big, "pos_embed", moved)
    # attributes that lie are only candidates: the values decide (timm's defaults on a square grid still match)
    sq = _timm("RotaryEmbeddingCat", dict(dim=32, feat_shape=[5, 5]))
    sq.feat_shape, sq.temperature = [25, 1], 3.0
    assert buffer_args(sq, "pos_embed", sq.pos_embed)["window"] == [5, 5]
