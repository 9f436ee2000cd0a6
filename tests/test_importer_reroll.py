"""Re-rolled stages (archdsl/importer/reroll.py): runs of one block whose arguments step linearly with the
position are written as comprehensions, and the built model gets the source's values.

Stochastic-depth probabilities do not show in eval outputs, so besides the round trip (strict load, equal
outputs) every drop-path probability of the built model is compared with the source's, block by block.
"""
from __future__ import annotations

import sys
from typing import Any

import pytest
import torch

import archdsl
from archdsl.importer import import_model
from archdsl.importer.reroll import formula, reroll
from archdsl.lang.printer import print_expr
from archdsl.importer.astlit import callish, lit

torchvision = pytest.importorskip("torchvision")


def _source_probs(model: Any) -> dict[str, float]:
    """Module path of each drop-path module's parent -> its probability (torchvision StochasticDepth: ``p``;
    timm DropPath: ``drop_prob``) that the forward calls."""
    out: dict[str, list[float]] = {}
    mods = dict(model.named_modules())
    for path, m in mods.items():
        name = type(m).__name__
        # an EfficientNet block without its residual never calls its StochasticDepth: nothing to compare
        if name in ("StochasticDepth", "DropPath") and getattr(mods[path.rpartition(".")[0]], "use_res_connect", True):
            p = float(m.p if name == "StochasticDepth" else m.drop_prob)
            out.setdefault(path.rpartition(".")[0], []).append(p)
    for k, ps in out.items():
        assert len(set(ps)) == 1, (k, ps)      # timm's drop_path1/drop_path2 of one block share it
    return {k: ps[0] for k, ps in out.items()}


def _built(r: Any, tmp_path: Any) -> Any:
    """The model the imported spec builds (its plugin file, if any, loaded from tmp_path)."""
    plugins = []
    if r.plugin is not None:
        path = tmp_path / f"{r.name}_reroll_plugins.py"
        path.write_text(r.plugin)
        plugins.append(str(path))
    try:
        return archdsl.build(r.spec, plugins=plugins)
    finally:
        from archdsl.plugins import unregister_op
        for op in r.plugin_ops:
            try:
                unregister_op(op)
            except (KeyError, ValueError):
                pass
        sys.modules.pop(f"{r.name}_reroll_plugins", None)


def _check_probs(model: Any, built: Any, exact: bool) -> int:
    """Every source drop-path probability is an attribute of the built block at the same path (a block's
    drop_path(p) reads its parameter, kept as an attribute); returns how many blocks were compared."""
    src = _source_probs(model)
    mods = dict(built.named_modules())
    assert src
    for path, p in src.items():
        assert path in mods, path
        floats = [v for k, v in vars(mods[path]).items() if isinstance(v, float)]
        if exact:       # the formula gives torchvision's float64 value bit for bit
            assert p in floats, (path, p, floats)
        else:           # timm's schedule was rounded to float32
            assert any(v == pytest.approx(p, rel=1e-7, abs=0) for v in floats), (path, p, floats)
    return len(src)


def _import(model: Any, shape: tuple[int, ...], name: str, tmp_path: Any, blocks: int,
            exact: bool = True) -> tuple[str, Any]:
    torch.manual_seed(0)
    model = model.eval()
    r = import_model(model, shape, name=name)       # check=True: the round trip (strict load, outputs) passed
    assert r.max_diff is not None
    built = _built(r, tmp_path)
    built.load_state_dict(model.state_dict(), strict=True)
    assert _check_probs(model, built, exact) == blocks
    return r.spec, built


def test_convnext_tiny_stages_are_comprehensions(tmp_path: Any) -> None:
    model = torchvision.models.convnext_tiny(stochastic_depth_prob=0.1)
    spec, _ = _import(model, (3, 64, 64), "convnext_tiny", tmp_path, 18)
    assert '"1": [CNBlock(96, 0.1 * i / 17) for i in range(3)]' in spec, spec
    assert '"5": [CNBlock(384, 0.1 * (i + 6) / 17) for i in range(9)]' in spec, spec
    # torchvision's values, bit for bit: sd * (first + i) / (total - 1.0)
    assert 0.1 * (6 + 4) / 17 == 0.1 * 10 / 17.0


def test_efficientnet_b0_schedule(tmp_path: Any) -> None:
    model = torchvision.models.efficientnet_b0()
    spec, _ = _import(model, (3, 64, 64), "efficientnet_b0", tmp_path, 9)
    # torchvision: 0.2 * block / 16, bit for bit the shorter 0.0125 * block; a stage's first block (no
    # residual) differs in its other arguments
    assert "[MBConv(48, 192, 0.0125 * (i + 12)) for i in range(3)]" in spec, spec


def test_swin_t_schedule(tmp_path: Any) -> None:
    from archdsl.importer.plugin import recording_inits
    with recording_inits():     # the attention is kept whole as a plugin op: its arguments recorded
        model = torchvision.models.swin_t()
    spec, _ = _import(model, (3, 64, 64), "swin_t", tmp_path, 12)
    # shifted windows on every other block: a ternary of the index, the default [0, 0] written out
    assert "0.2 * (i + 4) / 11, shift_size=[0, 0] if i % 2 == 0 else [3, 3]" in spec, spec
    assert ") for i in range(6)" in spec, spec


def test_timm_vit_float32_schedule(tmp_path: Any) -> None:
    timm = pytest.importorskip("timm")
    model = timm.create_model("vit_tiny_patch16_224", drop_path_rate=0.1, img_size=64, pretrained=False)
    spec, _ = _import(model, (3, 64, 64), "vit_tiny", tmp_path, 11, exact=False)
    # block 0 has no drop path (timm writes nn.Identity for 0): the other 11 are one comprehension
    assert "(0.1 * (i + 1) / 11) for i in range(11)]" in spec, spec


def test_formula_forms() -> None:
    def text(vals: list[Any]) -> str | None:
        f = formula(vals)
        return None if f is None else print_expr(f("i"))
    assert text([0.1 * k / 17.0 for k in range(3, 6)]) == "0.1 * (i + 3) / 17"
    # float32 linspace (timm): within 1e-7 relative, the short formula
    vals = [torch.linspace(0, 0.1, 12)[k].item() for k in range(12)]
    assert vals[5] != 0.1 * 5 / 11 and text(vals) == "0.1 * i / 11"
    assert text([3, 5, 7]) == "3 + 2 * i"
    assert text([4, 5, 6]) == "i + 4"
    assert text([2, 4, 6]) == "2 * (i + 1)"
    assert text([9, 6, 3]) == "-3 * (i - 3)"
    assert text([0.3, 0.5, 0.8]) is None            # not linear
    assert text([1, 2.0, 3]) is None                # an int and a float: the type would change
    assert text([0.1, 0.2 + 1e-5, 0.3]) is None      # off the line by more than float32 rounding
    # float64 values (not float32-rounded) are matched bit for bit: no 7-digit approximation of them
    assert text([0.123456789, 0.223456789, 0.323456789]) is None
    assert text([0.125, 0.25, 0.375]) == "0.125 * (i + 1)"


def test_reroll_runs() -> None:
    def call(*args: Any) -> Any:
        return callish("B", [lit(a) for a in args], [])
    items = [(call(8, 0.0), False), (call(8, 0.5), False), (call(8, 1.0), False), (call(8, 2.0), False)]
    out = [print_expr(e) for e in reroll(items)]
    assert out == ["[B(8, 0.5 * i) for i in range(3)]", "B(8, 2.0)"]
    # a named item is never folded in; equal items stay `* n`; two differing items stay as they are
    items = [(call(8, 0.0), False), (call(8, 0.5), True), (call(4, 1), False), (call(4, 1), False),
             (call(2, 0.1), False), (call(2, 0.2), False)]
    out = [print_expr(e) for e in reroll(items)]
    assert out == ["B(8, 0.0)", "B(8, 0.5)", "B(4, 1) * 2", "B(2, 0.1)", "B(2, 0.2)"]


def test_a_plugin_op_takes_only_bit_exact_formulas() -> None:
    """A plugin op's arguments rebuild the user's class and key the shapes traced at import: a float32
    schedule that only a 7-digit formula approximates stays literal for it (timm Swin's kept blocks), while a
    block of the language takes the formula."""
    vals = [torch.linspace(0, 0.1, 12)[k].item() for k in range(3, 9)]
    assert formula(vals, exact=True) is None and formula(vals) is not None
    items = [(callish("P", [lit(v)], []), False) for v in vals]
    kept = [print_expr(e) for e in reroll(items, exact=lambda callee: callee == "P")]
    assert kept == [print_expr(e) for e, _ in items]
    block = [(callish("B", [lit(v)], []), False) for v in vals]
    assert [print_expr(e) for e in reroll(block, exact=lambda callee: callee == "P")] == [
        "[B(0.1 * (i + 3) / 11) for i in range(6)]"]
