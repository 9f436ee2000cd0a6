"""``archc summary`` rows are named as torchvision's feature extraction names the built module's steps: every
row name (flat, and the block tree at each depth) is an eval-mode node name of ``get_graph_node_names`` or a
module path, and ``create_feature_extractor(model, return_nodes=names)`` gives tensors of the row's shape.
The names come from the generated code without torch (:mod:`archdsl.codegen.fxnames`)."""
from __future__ import annotations

import json
from typing import Any

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from helpers import run_archc  # noqa: E402

import archdsl  # noqa: E402
from archdsl.codegen.fxnames import fx_node_names  # noqa: E402
from archdsl.passes.summary import summary_dict  # noqa: E402

BATCH = 2
# the six: torchvision's resnet18 / mobilenet_v3_large / convnext_tiny / swin_t / efficientnet_b0 and
# ViT-B/16 (the library's vit_base_patch16_224, timm's layout)
SPECS = ["resnet18", "mobilenet_v3_large", "convnext_tiny", "vit_base_patch16_224", "swin_t", "efficientnet_b0"]
# ops whose value carries a batch of one whatever the batch (Swin's attention bias broadcasts over the batch)
_BATCH_OF_ONE = {"swin_attention_bias"}


def _rows(g: Any) -> list[dict[str, Any]]:
    """The flat rows and the tree rows at depths 1 to 3, as archc summary names them."""
    names = fx_node_names(g)
    rows = list(summary_dict(g, batch=BATCH, names=names)["layers"])
    for depth in (1, 2, 3):
        rows += summary_dict(g, depth=depth, batch=BATCH, names=names)["tree"]
    return rows


def _traced_shapes(model: Any, x: Any) -> tuple[list[str], dict[str, list[int] | None]]:
    """The eval-mode trace torchvision's feature extraction makes (its NodePathTracer), run on ``x``: the
    node names in order and each one's output shape."""
    from torch.fx.passes.shape_prop import ShapeProp
    from torchvision.models.feature_extraction import NodePathTracer
    tracer = NodePathTracer()
    graph = tracer.trace(model)
    gm = torch.fx.GraphModule(tracer.root, graph)
    with torch.no_grad():
        ShapeProp(gm).propagate(x)
    shapes = {}
    for node, name in tracer.node_to_qualname.items():
        meta = node.meta.get("tensor_meta")
        shapes[name] = list(meta.shape) if hasattr(meta, "shape") else None
    return list(tracer.node_to_qualname.values()), shapes


@pytest.mark.parametrize("spec", SPECS)
def test_every_row_name_is_a_feature_extraction_node(spec: str) -> None:
    from torchvision.models.feature_extraction import (
        create_feature_extractor,
        get_graph_node_names,
    )
    g = archdsl.graph(spec)
    model = archdsl.build(spec).eval()
    nodes = get_graph_node_names(model)[1]
    modules = dict(model.named_modules())
    rows = _rows(g)
    x = torch.zeros(BATCH, *g.input_shape)
    order, shapes = _traced_shapes(model, x)
    assert order == nodes
    for r in rows:
        want = [1, *r["shape"]] if r["op"] in _BATCH_OF_ONE else r["output_size"]
        if r.get("kind") == "block":
            # a block is its module: create_feature_extractor returns the module's last node
            assert r["name"] in modules, (spec, r["name"])
            last = [n for n in order if n.startswith(r["name"] + ".")][-1]
            assert shapes[last] == want, (spec, r["name"], last)
        else:
            assert r["name"] in shapes, (spec, r["name"], r["op"])
            assert shapes[r["name"]] == want, (spec, r["name"], r["op"])
    # and the feature extractor takes them: the first rows and the depth-2 blocks, with the rows' shapes
    # (one extractor gets no block beside its own last step: torchvision gives each node to one name)
    picks = {r["name"]: r for r in rows[:40]}
    picks.update({r["name"]: r for r in summary_dict(g, depth=2, batch=BATCH)["tree"]
                  if r["kind"] == "block" and r["depth"] == 2 and r["name"] not in picks
                  and not any(p.startswith(r["name"] + ".") for p in picks)})
    assert len(picks) >= 40
    fe = create_feature_extractor(model, return_nodes=list(picks)).eval()
    with torch.no_grad():
        feats = fe(x)
    assert set(feats) == set(picks)
    for name, r in picks.items():
        want = [1, *r["shape"]] if r["op"] in _BATCH_OF_ONE else r["output_size"]
        assert list(feats[name].shape) == want, (spec, name)

def test_names_of_steps_without_modules() -> None:
    """The fx spellings: an in-place add is ``add_``, a functional pool its function, a slice ``getitem_k``
    counted over the module's earlier getitems (every ``x.shape[i]`` included), a drop-path (no step in eval
    mode) the step whose value it passes on, and layer scale the multiply after its get_attr."""
    def by_node(spec: str) -> dict[str, str]:
        g = archdsl.graph(spec)
        names = fx_node_names(g)
        return {n.name: names[n.id] for n in g.nodes() if n.id in names}

    r18 = by_node("resnet18")
    assert r18["layer1.0.add"] == "layer1.0.add_" and r18["layer1.1.add"] == "layer1.1.add_"
    assert r18["layer1.0.2"] == "layer1.0.relu" and r18["layer1.0.6"] == "layer1.0.relu_1"
    eff = by_node("efficientnet_b0")
    assert eff["features.1.0.block.1.0"] == "features.1.0.block.1.adaptive_avg_pool2d"
    assert eff["features.1.0.block.0.2"] == "features.1.0.block.0.2"   # nn.SiLU in an nn.Sequential
    cnx = by_node("convnext_tiny")
    assert cnx["features.1.0.layer_scale"] == cnx["features.1.0.2"] == "features.1.0.mul"
    swin = by_node("swin_t")
    assert [swin[f"features.1.0.attn.8[{k}]"] for k in range(3)] == [
        "features.1.0.attn.getitem_18", "features.1.0.attn.getitem_19", "features.1.0.attn.getitem_20"]
    assert swin["features.1.0.attn.relative_position_bias_table"] == \
        "features.1.0.attn.features_1_0_attn_relative_position_bias_table"

def test_cli_summary_rows_are_fx_names() -> None:
    """archc summary (torch-free) prints the names: flat and with --depth."""
    from torchvision.models.feature_extraction import get_graph_node_names
    nodes = set(get_graph_node_names(archdsl.build("resnet18").eval())[1])
    r = run_archc("summary", "specs/resnet.arch:resnet18", "--json", "--depth", "3")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    layers = [row["name"] for row in data["layers"]]
    assert "layer1.0.add_" in layers and set(layers) <= nodes
    tree = [row for row in data["tree"] if row["kind"] == "layer"]
    assert len(tree) >= 60 and {row["name"] for row in tree} <= nodes
    assert {row["connected_to"][0] for row in data["layers"] if row["op"] == "add"} <= nodes | {
        row["name"] for row in data["tree"] if row["kind"] == "block"}


def test_code_the_replay_cannot_follow_is_named_by_its_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """A step the replay cannot evaluate makes its module's forward opaque: that step and the later ones of
    that forward are named by the module's path (its output, still a name the feature extractor takes);
    other modules keep their node names."""
    from archdsl.codegen import fxnames
    g = archdsl.graph("resnet18")
    before = fx_node_names(g)
    real = fxnames._Eval.expr

    def refuse(self: Any, e: Any) -> Any:
        if (self.rp.path == "layer2.0" and isinstance(e, fxnames.ast.Call)
                and isinstance(e.func, fxnames.ast.Attribute) and e.func.attr == "add_"):   # the residual add
            raise fxnames._Unsupported("test")
        return real(self, e)

    monkeypatch.setattr(fxnames._Eval, "expr", refuse)
    after = fx_node_names(g)
    by = {n.name: n.id for n in g.nodes()}
    assert after[by["layer2.0.conv2"]] == "layer2.0.conv2" and after[by["layer2.0.2"]] == "layer2.0.relu"
    assert after[by["layer2.0.add"]] == after[by["layer2.0.6"]] == "layer2.0"
    assert before[by["layer2.0.add"]] == "layer2.0.add_"
    assert after[by["layer2.1.add"]] == before[by["layer2.1.add"]] == "layer2.1.add_"
