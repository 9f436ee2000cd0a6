"""archdsl.build's timm-like options: features_only / out_indices / feature_labels, weights=PATH."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.models._utils import IntermediateLayerGetter

import archdsl
from archdsl import ArchError

SPEC = "specs/resnet.arch:resnet50"


@pytest.fixture(scope="module")
def tv() -> torch.nn.Module:
    torch.manual_seed(0)
    m = torchvision.models.resnet50().eval()
    for mod in m.modules():  # randomized statistics: no branch hides behind an identity BatchNorm
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    return m


def test_features_only_equals_torchvision_stages(tv: torch.nn.Module) -> None:
    model = archdsl.build(SPEC, features_only=True, out_indices=[1, 2, 3, 4]).eval()
    assert [f["module"] for f in model.feature_info] == ["layer1", "layer2", "layer3", "layer4"]
    assert [f["num_chs"] for f in model.feature_info] == [256, 512, 1024, 2048]
    assert [f["reduction"] for f in model.feature_info] == [4, 8, 16, 32]
    model.load_state_dict({k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}, strict=True)
    ref = IntermediateLayerGetter(tv, {f"layer{i}": f"layer{i}" for i in range(1, 5)}).eval()
    x = torch.randn(2, 3, 160, 192)
    with torch.no_grad():
        ours, theirs = model(x), ref(x)
    assert list(ours) == list(theirs)
    for k in ours:
        assert torch.equal(ours[k], theirs[k]), k


def test_feature_labels_pick_named_nodes() -> None:
    model = archdsl.build(SPEC, features_only=True, feature_labels=["layer2", "layer4"])
    assert [f["module"] for f in model.feature_info] == ["layer2", "layer4"]
    out = model.eval()(torch.randn(1, 3, 224, 224))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"layer2": (1, 512, 28, 28), "layer4": (1, 2048, 7, 7)}


def test_out_indices_need_features_only() -> None:
    with pytest.raises(ArchError, match="features_only=True"):
        archdsl.build(SPEC, out_indices=[1])


def test_weights_path_loads_and_reports_mismatches(tv: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "r50.pt"
    torch.save(tv.state_dict(), path)
    model = archdsl.build(SPEC, weights=str(path)).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), tv(x))
    # ResNet-50's 102 MB are more than a ResNet-18 checkpoint can hold: refused before anything is read
    with pytest.raises(ArchError, match=r"r50.pt' is [\d,]+ bytes; a state_dict of this network takes at most"):
        archdsl.build("specs/resnet.arch:resnet18", weights=str(path))
    # within the size bound, the keys are compared: all mismatches in one error
    with pytest.raises(ArchError, match="mis-shaped keys"):
        archdsl.build("specs/resnet.arch:resnet18", weights=str(path), num_classes=50_000)


@pytest.mark.parametrize("spec,ref,feat_shape,pre", [
    ("specs/resnet.arch:resnet18", "resnet18", (512, 7, 7), 512),
    ("specs/mobilenet.arch:mobilenet_v3_large", "mobilenet_v3_large", (960, 7, 7), 960),
])
def test_timm_model_api(spec: str, ref: str, feat_shape: tuple[int, ...], pre: int) -> None:
    """forward_features / forward_head(pre_logits) / get_classifier / reset_classifier / num_features,
    with the reference's weights: forward_head(forward_features(x)) is the reference's output."""
    torch.manual_seed(0)
    tvm = getattr(torchvision.models, ref)().eval()
    model = archdsl.build(spec).eval()
    model.load_state_dict(tvm.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        f = model.forward_features(x)
        assert tuple(f.shape[1:]) == feat_shape
        assert torch.allclose(model.forward_head(f), tvm(x), atol=1e-5)
        assert tuple(model.forward_head(f, pre_logits=True).shape) == (2, pre) and model.num_features == pre
    assert model.num_classes == 1000
    assert isinstance(model.get_classifier(), torch.nn.Module)
    model.reset_classifier(10)
    assert model.num_classes == 10 and model(x).shape == (2, 10)
    model.reset_classifier(0)
    assert model(x).shape[1] == model.forward_head(model.forward_features(x), pre_logits=True).shape[1]
    scripted = torch.jit.script(archdsl.build(spec).eval())
    assert scripted(x).shape == (2, 1000)


def test_num_classes_is_a_constructor_argument() -> None:
    model = archdsl.build("specs/resnet.arch:resnet50")
    other = type(model)(num_classes=10)
    assert other.num_classes == 10 and other.num_features == 2048
    assert other.get_classifier().out_features == 10
