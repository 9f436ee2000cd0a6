"""The round-trip verifier (archdsl.importer.roundtrip) and the pure parts of bench/import_zoo.py.

A small torch module written here, a hand-written spec of it, and specs that are wrong in one way each: the
verifier must pass the right one and stop each wrong one at the right stage, with the reason. A branch behind
a zero-initialized layer scale is the case that shows why constant parameters are randomized first: without
it, a spec with the wrong activation in that branch would pass.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from helpers import bench_script

from archdsl.importer import STAGES, RoundTrip, randomize_constants, roundtrip

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


class Tiny(nn.Module):
    """stem conv + BN + ReLU, a residual branch scaled by a zero-initialized layer scale, pool, linear."""

    def __init__(self, c: int = 8, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.gamma = nn.Parameter(torch.zeros(c, 1, 1))   # layer scale, zero at init: the branch is hidden
        self.head = nn.Linear(c, num_classes)

    def forward(self, x: Any) -> Any:
        x = F.relu(self.bn(self.stem(x)))
        x = x + self.gamma * F.relu(self.conv(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def tiny_spec(stem_act: str = "relu", branch_act: str = "relu", bn: bool = True, name: str = "tiny") -> str:
    """The spec of :class:`Tiny` (``bn=False`` drops its BatchNorm; the activations can be swapped)."""
    return (f"network {name}(c=8, num_classes=5):\n"
            "    input [3, 16, 16]\n"
            "    stem: conv2d(c, 3, padding=1)\n"
            + ("    bn: batchnorm\n" if bn else "")
            + f"    {stem_act}\n"
            "    add:\n"
            "        seq:\n"
            "            conv: conv2d(c, 3, padding=1)\n"
            f"            {branch_act}\n"
            "            gamma: layer_scale(0.0)\n"
            "        identity\n"
            "    adaptive_avgpool(1)\n"
            "    flatten\n"
            "    head: linear(num_classes)\n")


def x16() -> Any:
    return torch.zeros(1, 3, 16, 16)


def test_roundtrip_of_a_hand_written_spec_is_ok() -> None:
    torch.manual_seed(0)
    r = roundtrip(Tiny(), tiny_spec(), x16())
    assert isinstance(r, RoundTrip)
    assert (r.stage, r.ok, r.error, r.network) == ("outputs", True, None, "tiny")
    assert r.max_diff is not None and r.tolerance is not None and r.max_diff <= r.tolerance
    assert r.tolerance >= 1e-4   # 1e-4 x max(1, max |ref|)
    assert r.randomized == 1     # the zero layer scale (the other parameters are not constant)
    assert list(r.times) == ["randomize", *STAGES] and r.total_time > 0
    assert r.summary().startswith("ok (max diff")


def test_roundtrip_picks_the_named_or_last_network() -> None:
    two = tiny_spec(name="first", stem_act="gelu") + "\n" + tiny_spec(name="second")
    torch.manual_seed(0)
    assert roundtrip(Tiny(), two, x16()).ok              # the last network, 'second', is the right one
    r = roundtrip(Tiny(), two, x16(), name="first")      # its GELU stem is wrong
    assert (r.network, r.stage, r.ok) == ("first", "outputs", False)
    r = roundtrip(Tiny(), two, x16(), name="third")
    assert (r.stage, r.ok) == ("check", False) and "no network 'third'" in (r.error or "")


def test_missing_layer_stops_at_load_naming_the_keys() -> None:
    torch.manual_seed(0)
    r = roundtrip(Tiny(), tiny_spec(bn=False), x16())
    assert (r.stage, r.ok, r.max_diff) == ("load", False, None)
    assert "the spec lacks 5 key(s) of the source model" in (r.error or "")
    for key in ("bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"):
        assert key in (r.error or "")
    assert "outputs" not in r.times   # it stopped there


def test_wrong_activation_stops_at_outputs_with_the_difference() -> None:
    torch.manual_seed(0)
    r = roundtrip(Tiny(), tiny_spec(stem_act="gelu"), x16())
    assert (r.stage, r.ok) == ("outputs", False)
    assert r.max_diff is not None and r.tolerance is not None and r.max_diff > r.tolerance
    assert f"max abs diff {r.max_diff:.3g} > tolerance {r.tolerance:.3g}" in (r.error or "")


def test_a_spec_error_is_reported_located_at_check() -> None:
    bad = tiny_spec().replace("conv: conv2d(c, 3, padding=1)", "conv: conv2d(c, 3, paddin=1)")
    r = roundtrip(Tiny(), bad, x16())
    assert (r.stage, r.ok) == ("check", False)
    err = r.error or ""
    assert "<spec>:8:" in err and "^" in err and "paddin" in err   # file:line:col, the line, a caret


def test_zero_layer_scale_would_hide_a_wrong_branch_without_randomizing() -> None:
    """The branch behind the zero layer scale has the wrong activation (GELU for ReLU): with the model as
    initialized the outputs agree exactly, so only randomizing the constant layer scale exposes it."""
    wrong_branch = tiny_spec(branch_act="gelu")
    torch.manual_seed(0)
    hidden = roundtrip(Tiny(), wrong_branch, x16(), randomize=False)
    assert hidden.ok and hidden.randomized == 0   # the mistake passes unnoticed ...
    torch.manual_seed(0)
    caught = roundtrip(Tiny(), wrong_branch, x16())
    assert (caught.stage, caught.ok, caught.randomized) == ("outputs", False, 1)   # ... and is caught here
    assert caught.max_diff is not None and caught.tolerance is not None
    assert caught.max_diff > 10 * caught.tolerance
    torch.manual_seed(0)
    assert roundtrip(Tiny(), tiny_spec(), x16()).ok   # the right spec still passes with it randomized


def test_randomize_constants_changes_only_constant_or_negligible_parameters() -> None:
    torch.manual_seed(0)
    m = Tiny()
    m.scale = nn.Parameter(torch.full((4,), 2.0))             # a constant >= 0.1: keeps sign and size
    m.token = nn.Parameter(torch.randn(1, 1, 8) * 1e-6)       # normal(std=1e-6): negligible
    m.ln = nn.LayerNorm(8)                                    # weight ones, bias zeros
    before = {k: v.clone() for k, v in m.state_dict().items()}
    changed = randomize_constants(m, seed=3)
    assert sorted(changed) == ["gamma", "ln.bias", "ln.weight", "scale", "token"]
    after = m.state_dict()
    for k in ("stem.weight", "stem.bias", "conv.weight", "head.weight", "head.bias"):
        assert torch.equal(before[k], after[k]), k             # random at init already: left alone
    for k in ("bn.running_mean", "bn.running_var", "bn.weight", "bn.bias", *changed):
        assert not torch.equal(before[k], after[k]), k
        assert after[k].unique().numel() == after[k].numel() > 1, k   # no longer constant
    assert ((after["scale"] >= 1.5) & (after["scale"] <= 2.5)).all()
    assert after["gamma"].abs().max() > 1e-2                    # big enough to matter against 1e-4
    again = Tiny()
    again.load_state_dict(before, strict=False)
    again.scale, again.token, again.ln = (nn.Parameter(before["scale"].clone()),
                                          nn.Parameter(before["token"].clone()), nn.LayerNorm(8))
    randomize_constants(again, seed=3)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in after.items())   # seeded: the same draws


def test_roundtrip_of_a_library_spec_against_its_reference() -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None)
    r = roundtrip(ref, "specs/resnet.arch", torch.zeros(1, 3, 32, 32), name="resnet18")
    assert r.ok, r.error
    assert (r.network, r.stage) == ("resnet18", "outputs")
    r = roundtrip(ref, "specs/resnet.arch", torch.zeros(1, 3, 32, 32), name="resnet34")
    assert r.stage == "load" and "layer1.2.conv1.weight" in (r.error or "")


# ------------------------------------------------------------------ bench/import_zoo.py: its pure parts
def test_zoo_is_listed_from_the_real_registries() -> None:
    torchvision = pytest.importorskip("torchvision")
    timm = pytest.importorskip("timm")
    zoo = bench_script("import_zoo")
    tv, tm = zoo.torchvision_zoo(), zoo.timm_zoo()
    builders = torchvision.models.list_models(module=torchvision.models)
    assert [e["model"] for e in tv] == builders and len(builders) > 50
    for e in tv:   # the family is the module that defines the builder
        fam = torchvision.models.get_model_builder(e["model"]).__module__.rsplit(".", 1)[-1]
        assert e["family"] == f"torchvision/{fam}" and e["id"] == f"torchvision:{e['model']}"
    assert {"torchvision/resnet", "torchvision/vgg", "torchvision/vision_transformer"} <= {e["family"] for e in tv}
    # one entry per timm model file, its first registered model first among the candidates
    assert sorted(e["family"] for e in tm) == sorted(f"timm/{m}" for m in timm.list_modules())
    registered = list(timm.models._registry._model_entrypoints)
    for e in tm:
        in_file = set(timm.list_models(module=e["family"].removeprefix("timm/")))
        assert e["model"] == e["candidates"][0] and set(e["candidates"]) <= in_file
        assert registered.index(e["model"]) == min(registered.index(n) for n in in_file)
    families = {e["family"] for e in tv + tm}
    assert len(families) > 50 and len(tm) > 50
    everything = tv + tm
    assert [e["id"] for e in zoo.select(everything, "timm/resnet", None)] == [
        e["id"] for e in tm if e["family"].startswith("timm/resnet")]          # a substring
    assert [e["model"] for e in zoo.select(everything, "torchvision:vgg1[13]", None)] == ["vgg11", "vgg13"]
    assert len(zoo.select(everything, "*", 5)) == 5


def test_failure_classifier_on_real_messages() -> None:
    table = bench_script("import_zoo_table")

    class Branchy(nn.Module):
        def forward(self, x: Any) -> Any:
            return x if x.sum() > 0 else -x

    with pytest.raises(Exception) as ei:   # torch.fx's own words for data-dependent control flow
        torch.fx.symbolic_trace(Branchy())
    assert table.classify("import", str(ei.value), type(ei.value).__name__)[0] == "data-dependent control flow"
    torch.manual_seed(0)
    load = roundtrip(Tiny(), tiny_spec(bn=False), x16())
    assert table.classify(load.stage, load.error) == ("load mismatch", "bn.weight")
    outs = roundtrip(Tiny(), tiny_spec(stem_act="gelu"), x16())
    cat, detail = table.classify(outs.stage, outs.error)
    assert cat == "output mismatch" and detail.startswith("outputs differ: max abs diff")
    bad = roundtrip(Tiny(), tiny_spec().replace("linear(num_classes)", "lineer(num_classes)"), x16())
    assert table.classify(bad.stage, bad.error)[0] == "check error"
    cases = {
        ("import", "error: unsupported op 'torch.roll' in blocks.0.attn", "ArchError"): ("unsupported op",
                                                                                         "torch.roll"),
        ("import", "error: the buffer 'relative_position_index' is computed in forward", "ArchError"):
            ("buffer", "error: the buffer 'relative_position_index' is computed in forward"),
        ("import", "TraceError: Proxy object cannot be iterated", "TraceError"):
            ("data-dependent control flow", "TraceError: Proxy object cannot be iterated"),
        ("import", "TraceError: could not trace getattr on a meta tensor", "TraceError"):
            ("trace failure", "TraceError: could not trace getattr on a meta tensor"),
        ("import", "error: module 'cpe1' (timm.models.coat.ConvPosEnc) cannot be imported: module cpe1.proj is "
                   "called twice (shared weights) (at `%cpe1_proj_1 = call_module`) at coat.py:179", "ArchError"):
            ("shared weights", "module cpe1.proj is called twice (shared weights)"),
        ("import", "error: module 'attn' (m.Attn) cannot be imported: 'Proxy' object does not support item "
                   "assignment at mvitv2.py:196", "ArchError"):
            ("trace failure", "'Proxy' object does not support item assignment at mvitv2.py:196"),
        ("import", "error: the model (m.Eva) cannot be imported: non-persistent buffer pos_embed of 32768 values",
         "ArchError"): ("buffer", "non-persistent buffer pos_embed of 32768 values"),
        ("import", "error: module 'pe' (m.PE) cannot be imported: no op of the language is written as the "
                   "function torch.arange (at `%arange = ...`)", "ArchError"):
            ("unsupported op", "no op of the language is written as the function torch.arange"),
        ("import", "error: spec line 3: something else", "ArchError"): ("import error",
                                                                       "error: spec line 3: something else"),
        ("import", "KeyError: 'x'", "KeyError"): ("crash", "KeyError: 'x'"),
        ("build", "NameError: name 'foo' is not defined", None): ("build error",
                                                                  "NameError: name 'foo' is not defined"),
        ("outputs", "the built module fails on the input: RuntimeError: x", None):
            ("forward error", "the built module fails on the input: RuntimeError: x"),
        ("create", "RuntimeError: needs an extra package", None): ("model error",
                                                                   "RuntimeError: needs an extra package"),
        ("check", "RuntimeError: DefaultCPUAllocator: can't allocate memory: you tried", None):
            ("memory", "RuntimeError: DefaultCPUAllocator: can't allocate memory: you tried"),
        ("timeout", "no verdict within 300 s", None): ("timeout", "no verdict within 300 s"),
        ("crash", "the worker died (exit status -11)", None): ("crash", "the worker died (exit status -11)"),
    }
    for (stage, text, exc), want in cases.items():
        assert table.classify(stage, text, exc) == want, (stage, text)
    assert set(table.CATEGORIES) >= {c for c, _ in cases.values()}


def _record(id_: str, family: str, **kw: Any) -> dict[str, Any]:
    source, _, model = id_.partition(":")
    return {"id": id_, "source": source, "family": family, "model": model, "input": [3, 64, 64], **kw}


def test_table_writer_from_a_results_file(tmp_path: Path) -> None:
    table = bench_script("import_zoo_table")
    results = {r["id"]: r for r in [
        _record("torchvision:resnet18", "torchvision/resnet", stage="outputs", ok=True, imported=True,
                max_diff=0.0, import_s=1.25, roundtrip_s=0.5, total_s=2.0),
        _record("torchvision:resnet34", "torchvision/resnet", stage="load", ok=False, imported=True,
                category="load mismatch", detail="layer1.0.bn1.weight", import_s=1.0, total_s=3.0,
                reason="the source model's state_dict does not load strictly: a | b"),
        _record("timm:convnext_atto", "timm/convnext", stage="outputs", ok=True, imported=True, max_diff=3e-6,
                import_s=2.0, roundtrip_s=1.0, total_s=4.0, kept_modules=2,
                kept=["timm.models.convnext.ConvNeXtBlock"]),
        _record("timm:swin_tiny", "timm/swin_transformer", stage="import", ok=False, located=True,
                category="unsupported op", detail="torch.roll", reason="error: unsupported op 'torch.roll'"),
        _record("timm:eva02_tiny", "timm/eva", stage="check", ok=False, category="timeout",
                detail="no verdict within 300 s (it was at stage check)", imported=True),
    ]}
    path = tmp_path / "import_zoo.json"
    meta = {"torch": "2.x", "timm": "1.x", "machine": "test box",
            "runs": [{"date": "2026-01-01 00:00 UTC", "command": "python bench/import_zoo.py --limit 5"}]}
    path.write_text(json.dumps({"meta": meta, "results": results}))
    data = json.loads(path.read_text())
    md = table.write_table(data["results"], data["meta"], zoo_size=178)
    assert "families that round-trip weight-exact (every model of the family): **1/4 (25%)**" in md
    assert "models that round-trip weight-exact: **2/5 (40%)**" in md
    assert ("models imported without a crash (a spec written): **4/5 (80%)**; the rest: 1 with a located "
            "report, 0 crashed") in md
    assert "torchvision classification models that round-trip: **1/2 (50%)**" in md
    assert "timm model files whose model round-trips: **1/3 (33%)**" in md
    assert "coverage: 5 of the 178 models" in md
    assert "| unsupported op | 1 | 1 | torch.roll |" in md
    assert "| torchvision/resnet | 2 | no (1/2) | load mismatch |" in md
    assert "| timm/convnext | 1 | yes (1/1) | - |" in md
    assert ("| resnet18 | torchvision/resnet | 3x64x64 | outputs | yes | 0 | - | 1.2 | 0.5 | 2.0 |  |") in md
    # a round trip through plugin ops counts, but not as written wholly in the language
    assert "| convnext_atto | timm/convnext | 3x64x64 | outputs | yes | 3e-06 | 2: ConvNeXtBlock |" in md
    assert ("written wholly in the language (no class kept whole as a plugin op): **1/5 (20%)** of the "
            "models, **0/4 (0%)** of the families") in md
    assert "load mismatch: the source model's state_dict does not load strictly: a \\| b |" in md   # escaped
    assert "| eva02_tiny | timm/eva | 3x64x64 | check | no | - | - | - | - | - | timeout: no verdict" in md
    assert "- 2026-01-01 00:00 UTC: `python bench/import_zoo.py --limit 5`" in md and "- timm: 1.x" in md
    specs_md = table.write_table(data["results"], data["meta"], mode="specs")
    assert "spec files that round-trip weight-exact" in specs_md and "imported without a crash" not in specs_md


def test_zoo_run_without_the_importer_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import archdsl
    zoo = bench_script("import_zoo")
    monkeypatch.delattr(archdsl, "import_module", raising=False)
    monkeypatch.setattr(zoo, "zoo", lambda: [{"id": "torchvision:alexnet", "source": "torchvision",
                                              "family": "torchvision/alexnet", "model": "alexnet"}])
    assert zoo.main(["--limit", "1", "--results", str(tmp_path / "r.json")]) == 1
    err = capsys.readouterr().err
    assert "no importer (archdsl.import_module" in err and "--specs" in err
    assert not (tmp_path / "r.json").exists()


def test_zoo_builds_a_large_fixed_size_timm_model_for_a_small_input() -> None:
    pytest.importorskip("timm")
    zoo = bench_script("import_zoo")
    # SAM's ViT is fixed at 1024 px (its import allocated 1.6 GB per attention map); this one at 512
    name = "vit_pe_spatial_tiny_patch16_512"
    torch.manual_seed(0)
    model, got, default, fixed = zoo._create({"source": "timm", "model": name, "candidates": [name]}, None)
    assert got == name and fixed and default == (3, zoo.FIXED_SMALL, zoo.FIXED_SMALL)
    assert tuple(model.patch_embed.img_size) == (zoo.FIXED_SMALL, zoo.FIXED_SMALL)
    assert zoo._runs_at(model, default)
    # a fixed size of at most MAX_FIXED stays as timm gives it
    model, _, default, fixed = zoo._create({"source": "timm", "model": "deit_tiny_patch16_224",
                                            "candidates": ["deit_tiny_patch16_224"]}, None)
    assert fixed and default == (3, 224, 224)
