"""Families: ``scales NETWORK:`` tables, ``--scale`` / ``build(spec, scale=...)`` / ``file.arch:net:scale``,
``archc list`` and the timm registration of each variant, located errors; the library's EfficientNet family
equals torchvision's B0/B1/B3 (compound scaling, rounded as the reference rounds)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from typer.testing import CliRunner

import archdsl
from archdsl.cli import app
from archdsl.errors import ArchError
from archdsl.lang import astcache
from archdsl.pipeline import compile_graph, list_networks, resolve
from archdsl.source import Source
from helpers import assert_same_outputs, randomize_bn

runner = CliRunner()
FAMILY = """network net(width=16, num_classes=10):
    input [3, 32, 32]
    stem: conv2d(width, 3)
    adaptive_avgpool(1)
    flatten
    head: linear(num_classes)

scales net:
    s: width=8, num_classes=5
    m: width=16, input=[3, 64, 64], reference=torchvision.resnet18
"""


@pytest.fixture
def family(tmp_path: Path) -> Path:
    p = tmp_path / "fam.arch"
    p.write_text(FAMILY)
    return p


def test_scale_selects_the_row(family: Path) -> None:
    g = compile_graph(str(family), scale="s")
    assert g.scale == "s" and g.params_used["width"] == 8 and list(g.output_shapes.values()) == [(5,)]
    g = compile_graph(f"{family}:net:m")
    assert g.input_shape == (3, 64, 64) and g.reference == "torchvision.resnet18" and g.address.endswith(":net:m")
    # --set wins over the row; an explicit input shape wins over input=
    g = compile_graph(str(family), {"width": 4}, scale="m", input_shape=(3, 16, 16))
    assert g.params_used["width"] == 4 and g.input_shape == (3, 16, 16)
    m = archdsl.build(str(family), scale="s")
    assert m.stem.out_channels == 8 and m.head.out_features == 5
    assert "fam.arch:net:s" in archdsl.source(str(family), scale="s")


def test_scale_errors_are_clear(family: Path, tmp_path: Path) -> None:
    with pytest.raises(ArchError, match="has no scale 'xl'"):
        compile_graph(str(family), scale="xl")
    with pytest.raises(ArchError, match="did you mean 'm'"):
        compile_graph(f"{family}:net:mm")
    plain = tmp_path / "plain.arch"
    plain.write_text("network p:\n    input [3, 8, 8]\n    conv2d(4, 3)\n")
    with pytest.raises(ArchError, match="no scales table"):
        compile_graph(str(plain), scale="s")
    bad = tmp_path / "bad.arch"
    bad.write_text(FAMILY.replace("s: width=8", "s: widht=8").replace("input=[3, 64, 64]", "input=[3, 0]")
                   .replace("num_classes=5", "num_classes=n") + "\nscales other:\n    a: x=1\n")
    r = runner.invoke(app, ["check", str(bad)])
    assert r.exit_code == 1
    for needle in ("has no parameter 'widht'", "did you mean 'width'", "input= takes the input's sizes",
                   "must be a constant", "scales of an unknown network 'other'", "bad.arch:9:8"):
        assert needle in r.output, (needle, r.output)
    dup = tmp_path / "dup.arch"
    dup.write_text(FAMILY + "    s: width=4\n")
    r = runner.invoke(app, ["check", str(dup)])
    assert r.exit_code == 1 and "scale 's' is defined twice" in r.output


def test_scales_is_not_a_reserved_word(tmp_path: Path) -> None:
    p = tmp_path / "n.arch"
    p.write_text("network n(scales=2):\n    input [3, 8, 8]\n    scales2 = scales * 2\n    conv2d(scales2, 3)\n")
    assert compile_graph(str(p)).total_params == 4 * 27 + 4


def test_check_builds_every_variant_and_list_shows_them(family: Path) -> None:
    r = runner.invoke(app, ["check", str(family)])
    assert r.exit_code == 0 and "3 networks checked" in r.output
    r = runner.invoke(app, ["list", str(family), "--json"])
    nets = {n["spec"]: n for n in json.loads(r.output)}
    assert set(nets) == {f"{family}:net", f"{family}:net:s", f"{family}:net:m"}
    assert nets[f"{family}:net:m"]["input"] == [3, 64, 64] and nets[f"{family}:net:m"]["name"] == "net_m"
    assert nets[f"{family}:net:m"]["reference"] == "torchvision.resnet18"
    r = runner.invoke(app, ["summary", str(family), "--scale", "s", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["totals"]["params"] == 8 * 27 + 8 + 8 * 5 + 5


def test_the_scales_table_survives_the_parse_cache(family: Path) -> None:
    spec = resolve(str(family)).program.root
    again = astcache.decode(astcache.encode(spec), Source(FAMILY, str(family)))
    assert [r.name for r in again.scales["net"].rows] == ["s", "m"]


def test_efficientnet_family_equals_torchvision_b0_b1_b3() -> None:
    for scale, ref in (("b0", torchvision.models.efficientnet_b0), ("b1", torchvision.models.efficientnet_b1),
                       ("b3", torchvision.models.efficientnet_b3)):
        torch.manual_seed(0)
        reference = ref().eval()
        randomize_bn(reference)          # no branch hides behind the default BN statistics
        ours = archdsl.build("specs/efficientnet.arch:efficientnet", scale=scale).eval()
        ours.load_state_dict(reference.state_dict(), strict=True)
        same_as_network = archdsl.graph(f"specs/efficientnet.arch:efficientnet_{scale}")
        assert ours.arch_graph.total_params == same_as_network.total_params
        assert ours.arch_graph.total_macs == same_as_network.total_macs
        assert_same_outputs(ours, reference, (3, 64, 64))


def test_timm_registers_each_variant(family: Path) -> None:
    from archdsl.hub import register_timm
    names = register_timm([str(family)], library=False)
    assert {"archdsl_net", "archdsl_net_s", "archdsl_net_m"} <= set(names)
    import timm
    m = timm.create_model("archdsl_net_s")
    assert m.head.out_features == 5 and m.stem.out_channels == 8


def _library_variants_with_twins() -> list[tuple[str, str]]:
    out = []
    for f in sorted(Path("specs").glob("*.arch")):
        entries = list_networks(str(f))
        by_ref = {e["reference"]: e["spec"] for e in entries if not e.get("scale") and e.get("reference")}
        out += [(e["spec"], by_ref[e["reference"]]) for e in entries if e.get("scale") and e.get("reference") in by_ref]
    return out


LIBRARY_VARIANTS = _library_variants_with_twins()


def test_the_library_has_families() -> None:
    fams = {v.rsplit(":", 1)[0] for v, _ in LIBRARY_VARIANTS}
    assert {"specs/efficientnet.arch:efficientnet", "specs/convnext.arch:convnext",
            "specs/vit.arch:vit_patch16", "specs/resnet.arch:resnet"} <= fams


@pytest.mark.parametrize("variant,twin", LIBRARY_VARIANTS, ids=[v for v, _ in LIBRARY_VARIANTS])
def test_library_variant_equals_its_network(variant: str, twin: str) -> None:
    """A variant whose reference is also a network's is that network, node for node: the network's own
    weight-exactness proof (tests/test_reference_models.py) covers it."""
    a, b = compile_graph(variant), compile_graph(twin)
    ra, rb = a.records(), b.records()
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb):
        assert (x.op, x.name, x.module, tuple(x.shape), x.inputs) == (y.op, y.name, y.module, tuple(y.shape), y.inputs)
        assert x.args == y.args, (x.name, x.args, y.args)
    assert a.reference == b.reference and a.input_shape == b.input_shape


def test_a_variant_pickles_as_its_variant(family: Path) -> None:
    import pickle
    for model in (archdsl.build(f"{family}:net:s"), archdsl.build(str(family), scale="s")):
        again = pickle.loads(pickle.dumps(model))
        assert again.stem.out_channels == 8 and again.head.out_features == 5
        x = torch.randn(1, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(again.eval()(x), model.eval()(x))
