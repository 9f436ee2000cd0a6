"""``Graph.to_networkx()`` (the documented node record), ``repr`` of graphs and ``archdsl.show``."""
from __future__ import annotations

import networkx as nx
import pytest

import archdsl
from archdsl import ArchError

from helpers import ROOT


def test_to_networkx_has_the_documented_record() -> None:
    g = archdsl.graph("specs/resnet.arch:resnet18")
    d = g.to_networkx()
    assert isinstance(d, nx.DiGraph) and d is not g.g and d.number_of_nodes() == len(g)
    assert d.graph["name"] == "resnet18" and d.graph["outputs"] == dict(g.outputs) and d.graph["inputs"] == g.inputs
    documented = {"op", "name", "module", "label", "args", "shape", "in_shapes", "params", "macs", "scope",
                  "reparam", "batched", "loc", "rec"}
    doc = (ROOT / "docs" / "api.md").read_text()
    for key in documented:   # the schema table lists every attribute
        assert f"| `{key}` |" in doc, key
    for nid, data in d.nodes(data=True):
        assert set(data) == documented
        rec = g.node(nid)
        assert data["rec"] is rec and data["op"] == rec.op and data["shape"] == tuple(rec.shape)
        assert [u for u, _ in sorted(d.in_edges(nid), key=lambda e: d.edges[e]["index"])] == rec.inputs
    conv1 = d.nodes[next(n for n, a in d.nodes(data=True) if a["name"] == "conv1")]
    assert conv1["module"] == "conv1" and conv1["params"] == 9408 and conv1["loc"].endswith(":57:5")
    block = next(a for _, a in d.nodes(data=True) if a["name"] == "layer2.0.conv1")
    assert block["scope"][:2] == ["layer2", "layer2.0"]   # then the combinator it sits in (add)
    assert sum(a["params"] for _, a in d.nodes(data=True)) == g.total_params
    assert nx.is_directed_acyclic_graph(d)
    d.remove_node(0)             # a copy: the graph keeps its nodes
    assert len(g) == d.number_of_nodes() + 1 and g.g.has_node(0)


def test_graph_repr_is_one_line() -> None:
    g = archdsl.graph("specs/resnet.arch:resnet18")
    assert repr(g) == ("<Graph resnet18: input [3, 224, 224] -> [1000], 75 nodes, 11,689,512 params, "
                       "1,814,073,344 MACs>")


def test_show_depth_svg_and_text() -> None:
    shallow = archdsl.show("specs/resnet.arch:resnet18", depth=1)
    deep = archdsl.show("specs/resnet.arch:resnet18", depth=None)
    svg1, svg2 = shallow._repr_svg_(), deep._repr_svg_()
    assert svg1 and svg1.lstrip().startswith(("<?xml", "<svg")) and svg2
    assert "layer4.1.conv2" not in svg1 and "layer4.1.conv2" in svg2   # collapsed at depth 1
    text = repr(shallow).splitlines()
    assert text[0] == repr(archdsl.graph("specs/resnet.arch:resnet18"))
    assert "  layer4: ResLayer -> [512, 7, 7]" in text and "  fc: linear -> [1000]" in text
    model = archdsl.build("specs/resnet.arch:resnet18", num_classes=10)
    assert "-> [10]" in repr(archdsl.show(model, depth=2)).splitlines()[0]
    with pytest.raises(ArchError, match="show takes a spec"):
        archdsl.show(object())
