"""The timm half of the seed library, beyond reference equivalence (tests/test_reference_models.py).

* ShuffleNet v1 (g=3, 1x) has no reference implementation: its size is checked against the published
  figures (1.87M parameters; the paper's Table 1 gives 137 MFLOPs, i.e. multiply-adds, for g=3), and
  one small forward pass checks that it builds and runs.
* Quoted dotted labels ("convs.0": ...), which Res2Net and SKNet use to name layers inside timm's
  ModuleLists, and comment lines inside indented bodies and bracketed lists.
"""
from __future__ import annotations

import pytest

import archdsl
from archdsl import ArchError

SHUFFLENET = "specs/shufflenet_v1.arch:shufflenet_v1_g3"


def test_shufflenet_v1_matches_the_published_size() -> None:
    g = archdsl.graph(SHUFFLENET)
    # 1.87M as published for ShuffleNet 1x (g=3), rounded to 10k parameters
    assert round(g.total_params / 1e6, 2) == 1.87
    # Table 1 of the paper: 137 MFLOPs (multiply-adds) for g=3 at 224x224
    assert abs(g.total_macs / 1e6 - 137) < 1.0
    assert g.output_shapes["out"] == (1000,)
    assert archdsl.graph(SHUFFLENET, num_classes=10).output_shapes["out"] == (10,)


def test_shufflenet_v1_runs() -> None:
    torch = pytest.importorskip("torch")
    model = archdsl.build(SHUFFLENET, input_shape=(3, 64, 64), num_classes=10).eval()
    with torch.no_grad():
        y = model(torch.randn(2, 3, 64, 64))
    assert tuple(y.shape) == (2, 10)
    assert sum(p.numel() for p in model.parameters()) == archdsl.graph(SHUFFLENET, num_classes=10).total_params
    # the stride-2 units concatenate the pooled input: stage 2 starts at 24 channels and ends at 240
    keys = model.state_dict()
    assert tuple(keys["stage2.0.branch.6.weight"].shape) == (216, 20, 1, 1)   # 240 - 24 outputs, groups of 3
    assert tuple(keys["stage2.0.branch.0.weight"].shape) == (60, 24, 1, 1)    # first 1x1 conv is dense


QUOTED = """network n():
    input [4, 6, 6]
    # a comment line inside a body
    a, b = x -> chunk(2)
    y0 = a -> "convs.0": conv2d(2, 3, padding=1) -> "bns.0": batchnorm
    y1 = b -> "convs.1": conv2d(2, 3, padding=1) -> "bns.1": batchnorm
    concat(y0, y1)
    head: [conv2d(4, 1),   # a comment inside a bracketed list
           relu]
"""


def test_quoted_labels_name_layers_inside_a_numbered_container() -> None:
    torch = pytest.importorskip("torch")
    model = archdsl.build(QUOTED)
    keys = [k for k in model.state_dict() if k.endswith("weight")]
    assert sorted(keys) == ["bns.0.weight", "bns.1.weight", "convs.0.weight", "convs.1.weight", "head.0.weight"]
    # a numbered holder without a forward of its own: an nn.ModuleList, as timm writes Res2Net's convs/bns
    assert isinstance(model.convs, torch.nn.ModuleList) and len(model.convs) == 2


def test_quoted_label_errors() -> None:
    with pytest.raises(ArchError) as ei:
        archdsl.graph(QUOTED.replace('"convs.1"', '"convs..1"'))
    msg = str(ei.value)
    assert "<spec>:6:15: error: a quoted label must be a dotted module path, got \"convs..1\"" in msg
    assert 'hint: parts are names or numbers separated by dots, e.g. "convs.0"' in msg
    with pytest.raises(ArchError) as ei:
        archdsl.graph(QUOTED.replace('"bns.1"', '"bns.0"'))
    assert "two layers would be named 'bns.0'" in str(ei.value)
