"""timm's head API (num_features, forward_head with pre_logits, reset_classifier) on the library networks that
do not end in one linear classifier of their own forward: a classifier inside a head container that pools or
normalizes first (RepVGG, MobileOne, FastViT, ConvNeXt), two heads averaged (DeiT-distilled, RepViT), a
convolutional classifier (SqueezeNet, NiN) and a network that is one container (LeNet). Checked against timm's
own model with the same weights where timm has it, else against what timm's rules give."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import archdsl
from archdsl import hub
from archdsl.passes.head import head_features
from helpers import randomize_bn

timm = pytest.importorskip("timm")   # a test dependency (pyproject's test extra): installed on every run

SPECS = Path(__file__).resolve().parent.parent / "specs"

# spec -> (timm's model with the same state_dict keys, a small input size the spec and timm take)
TIMM_PAIRS = {
    "repvgg.arch:repvgg_a0": ("repvgg_a0", 64),
    "mobileone.arch:mobileone_s1": ("mobileone_s1", 64),
    "fastvit.arch:fastvit_sa12": ("fastvit_sa12", 64),
    "convnext_v2.arch:convnextv2_atto": ("convnextv2_atto", 64),
    "repvit.arch:repvit_m1_1": ("repvit_m1_1", 64),
    "vit.arch:deit_tiny_distilled_patch16_224": ("deit_tiny_distilled_patch16_224", 224),
}


def _x(channels: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(seed))


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, b.abs().max().item())))


def _pair(spec: str) -> tuple[Any, Any]:
    name, _ = TIMM_PAIRS[spec]
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False).eval()
    randomize_bn(ref, 1)
    ours = archdsl.build(str(SPECS / spec)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


@pytest.mark.parametrize("spec", list(TIMM_PAIRS))
def test_head_api_equals_timm(spec: str) -> None:
    """num_features / head_hidden_size, forward_features, forward_head(pre_logits=True), then
    reset_classifier(0) (the pooled pre-logits, not the unpooled map: RepVGG's head keeps its pooling) and
    reset_classifier(5), each against timm's model with the same weights."""
    ours, ref = _pair(spec)
    x = _x(3, TIMM_PAIRS[spec][1])
    assert (ours.num_features, ours.head_hidden_size) == (ref.num_features, ref.head_hidden_size)
    with torch.no_grad():
        feats, ref_feats = ours.forward_features(x), ref.forward_features(x)
        assert _close(feats, ref_feats)
        pre = ours.forward_head(feats, pre_logits=True)
        assert _close(pre, ref.forward_head(ref_feats, pre_logits=True))
        assert _close(ours.forward_head(feats), ref(x)) and _close(ours(x), ref(x))
        ours.reset_classifier(0)
        ref.reset_classifier(0)
        assert ours.num_classes == 0 and _close(ours(x), ref(x)) and _close(ours(x), pre)
        ours.reset_classifier(5)
        ref.reset_classifier(5)
        assert ours.num_classes == 5 and ours(x).shape == ref(x).shape == (2, 5)
        ours.reset_classifier(0, "")
        assert ours(x).shape == feats.shape


# networks timm has no model of: timm's rules (num_features: the channels entering the classifier's unit,
# pre-logits == what reset_classifier(0) leaves), at a small input
OWN = {"lenet.arch:lenet": (1, 32, 16, 84), "squeezenet.arch:squeezenet1_0": (3, 64, 512, 512),
       "squeezenet.arch:squeezenet1_1": (3, 64, 512, 512), "nin.arch:nin": (1, 96, 384, 384),
       "convnext.arch:convnext_tiny": (3, 64, 768, 768)}


@pytest.mark.parametrize("spec", list(OWN))
def test_head_api_by_timms_rules(spec: str) -> None:
    channels, size, num_features, hidden = OWN[spec]
    torch.manual_seed(0)
    model = archdsl.build(str(SPECS / spec)).eval()
    randomize_bn(model, 1)
    x = _x(channels, size)
    assert (model.num_features, model.head_hidden_size) == (num_features, hidden)
    with torch.no_grad():
        y = model(x)
        feats = model.forward_features(x)
        kept = feats.clone()
        pre = model.forward_head(feats, pre_logits=True)
        assert torch.equal(feats, kept)   # the steps after a skipped classifier work on a copy, not in place
        assert feats.dim() == 4 and feats.shape[1] == num_features and pre.shape == (2, hidden)
        assert _close(model.forward_head(feats), y)
        scripted = torch.jit.script(model)
        assert _close(scripted(x), y) and _close(scripted.forward_head(feats, True), pre)
        if spec.startswith("convnext"):
            # timm's ConvNeXt head: pool -> norm -> flatten -> pre-logits (torchvision's classifier.0 is the norm)
            pooled = torch.nn.functional.adaptive_avg_pool2d(feats, 1).permute(0, 2, 3, 1)
            assert _close(pre, torch.flatten(getattr(model.classifier, "0")(pooled).permute(0, 3, 1, 2), 1))
        model.reset_classifier(0)
        assert model.num_classes == 0 and _close(model(x), pre)
        model.reset_classifier(5)
        assert model(x).shape == (2, 5)
        model.reset_classifier(0, "")
        assert model(x).shape == feats.shape
        model.reset_classifier(3)
        assert model(x).shape == (2, 3)


def test_head_facts_of_the_newer_forms() -> None:
    """Torch-free facts: the classifier cfg names the layers whose weights exist (timm's DeiT and RepViT name
    both heads), conv classifiers count the channels entering their unit."""
    sq = head_features(archdsl.graph(str(SPECS / "squeezenet.arch:squeezenet1_0")))
    assert sq is not None and sq["classifier"] == "classifier.1" and sq["layer_kind"] == "conv"
    assert sq["num_features"] == 512 and sq["feature_shape"] == (512, 13, 13) and sq["inline"] == "classifier"
    nin = head_features(archdsl.graph(str(SPECS / "nin.arch:nin")))
    assert nin is not None and nin["classifiers"] == ("7",) and nin["layers"] == ("7.4",)
    assert nin["feature_shape"] == (384, 5, 5)   # the last max-pool belongs to the features
    for spec, name in (("vit.arch:deit_tiny_distilled_patch16_224", "deit_tiny_distilled_patch16_224"),
                       ("repvit.arch:repvit_m1_1", "repvit_m1_1")):
        cfg = hub.pretrained_cfg(archdsl.graph(str(SPECS / spec)))
        assert cfg["classifier"] == timm.models.get_pretrained_cfg(name).to_dict()["classifier"]
    lenet = head_features(archdsl.graph(str(SPECS / "lenet.arch:lenet")))
    assert lenet is not None and lenet["feature_shape"] == (16, 5, 5) and lenet["head_hidden_size"] == 84
