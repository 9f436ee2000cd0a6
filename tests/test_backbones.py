"""Backbone forms: ResNet-50 and ConvNeXt-T returning their four stage outputs as named feature maps.

Each backbone's state_dict is the classification model's minus its head, so the reference's weights
load with strict=False leaving nothing of ours missing; the returned dict then equals the reference's
intermediate features (checked at 64x64, the smallest size that keeps every stage non-trivial).
"""
from __future__ import annotations

from typing import Any

import pytest

import archdsl
from helpers import make_reference, randomize_bn

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.xdist_group("backbones")

SMALL = (3, 64, 64)


def _resnet_stages(ref: Any, x: Any) -> dict[str, Any]:
    x = ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))
    out = {}
    for name, layer in zip(("c2", "c3", "c4", "c5"), (ref.layer1, ref.layer2, ref.layer3, ref.layer4)):
        x = layer(x)
        out[name] = x
    return out


def _convnext_stages(ref: Any, x: Any) -> dict[str, Any]:
    f = ref.features
    out = {}
    x = f[1](f[0](x))
    out["c2"] = x
    for name, (down, stage) in zip(("c3", "c4", "c5"), ((2, 3), (4, 5), (6, 7))):
        x = f[stage](f[down](x))
        out[name] = x
    return out


CASES = [
    ("specs/resnet.arch:resnet50_backbone", "torchvision.resnet50", _resnet_stages,
     {"c2": (256, 56, 56), "c3": (512, 28, 28), "c4": (1024, 14, 14), "c5": (2048, 7, 7)}, "fc."),
    ("specs/convnext.arch:convnext_tiny_backbone", "torchvision.convnext_tiny", _convnext_stages,
     {"c2": (96, 56, 56), "c3": (192, 28, 28), "c4": (384, 14, 14), "c5": (768, 7, 7)}, "classifier."),
]


@pytest.mark.parametrize("spec, ref_name, stages, shapes, head", CASES, ids=["resnet50", "convnext_tiny"])
def test_backbone_returns_the_reference_stage_features(spec: str, ref_name: str, stages: Any,
                                                       shapes: dict[str, tuple[int, ...]], head: str) -> None:
    # shapes at the default 224x224 input, from the graph alone
    g = archdsl.graph(spec)
    assert g.output_shapes == shapes
    assert g.reference is None  # not a classifier: the generic reference test must not pick it up

    ref = make_reference(ref_name)
    randomize_bn(ref, seed=4)
    ours = archdsl.build(spec, input_shape=SMALL)
    result = ours.load_state_dict(ref.state_dict(), strict=False)
    assert result.missing_keys == []
    assert result.unexpected_keys and all(k.startswith(head) for k in result.unexpected_keys)

    ours.eval()
    ref.eval()
    x = torch.randn(2, *SMALL, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = ours(x)
        want = stages(ref, x)
    assert list(got) == ["c2", "c3", "c4", "c5"]
    for name, small_shape in ours.arch_graph.output_shapes.items():
        assert tuple(got[name].shape) == (2, *small_shape)
        assert small_shape[0] == shapes[name][0]
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-4 * max(1.0, want[name].abs().max().item()))
