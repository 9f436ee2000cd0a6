"""timm's model API on library networks, checked against timm itself with the same weights: features_only
(FeatureInfo, list outputs, out_indices), forward_intermediates, group_matcher, set_grad_checkpointing,
reset_classifier, pretrained_cfg, and the checks of timm's own tests/test_models.py (written here) on one
network per family through ``timm.create_model``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import archdsl
from archdsl import hub
from archdsl.codegen.model_api import BlockMatcher, block_paths
from helpers import randomize_bn

timm = pytest.importorskip("timm")   # a test dependency (pyproject's test extra): installed on every run
from timm.models import group_parameters  # noqa: E402

SPECS = Path(__file__).resolve().parent.parent / "specs"

# spec -> timm model with the same module paths (the spec's reference), and a small input the spec takes
TIMM_REFERENCED = {
    "vit.arch:vit_tiny_patch16_224": ("vit_tiny_patch16_224", 224),
    "vit.arch:deit_tiny_distilled_patch16_224": ("deit_tiny_distilled_patch16_224", 224),
    "mobilevit.arch:mobilevit_s": ("mobilevit_s", 128),
    "convnext_v2.arch:convnextv2_atto": ("convnextv2_atto", 64),
    "senet.arch:seresnet50": ("seresnet50", 64),
    "mobilenet_v1.arch:mobilenetv1_100": ("mobilenetv1_100", 64),
    "ghostnet.arch:ghostnet_100": ("ghostnet_100", 64),
    "repvit.arch:repvit_m1_1": ("repvit_m1_1", 64),
    "repvgg.arch:repvgg_a0": ("repvgg_a0", 64),
    "fastvit.arch:fastvit_sa12": ("fastvit_sa12", 64),
}


def _spec(s: str) -> str:
    return str(SPECS / s)


def _pair(spec: str, seed: int = 0) -> tuple[Any, Any]:
    """(ours, timm's) with timm's weights (BatchNorm statistics randomized) in both, eval mode."""
    name, _ = TIMM_REFERENCED[spec]
    torch.manual_seed(seed)
    ref = timm.create_model(name, pretrained=False).eval()
    randomize_bn(ref, seed)
    ours = archdsl.build(_spec(spec)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref


def _x(size: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, b.abs().max().item())))


@pytest.mark.parametrize("spec", list(TIMM_REFERENCED))
def test_features_only_equals_timm(spec: str) -> None:
    """Levels, FeatureInfo and the maps of features_only equal timm's, for the same weights."""
    name, size = TIMM_REFERENCED[spec]
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False, features_only=True).eval()
    randomize_bn(ref)
    ours = hub.build_model(_spec(spec), features_only=True).eval()
    named = {k[len("model."):] if k.startswith("model.") else k: v for k, v in ref.state_dict().items()}
    if set(named) != set(ours.state_dict()):
        # timm's feature wrappers rename the modules they flatten ('stages_0.0...'), in the same order
        theirs = [v for k, v in named.items() if not k.endswith("num_batches_tracked")]
        keys = [k for k in ours.state_dict() if not k.endswith("num_batches_tracked")]
        assert len(keys) == len(theirs)
        named = dict(zip(keys, theirs))
    ours.load_state_dict(named, strict=False)
    assert ours.feature_info.channels() == ref.feature_info.channels()
    assert ours.feature_info.reduction() == ref.feature_info.reduction()
    assert tuple(ours.feature_info.out_indices) == tuple(ref.feature_info.out_indices)
    x = _x(size)
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert isinstance(a, list) and len(a) == len(b)
    for u, v in zip(a, b):
        assert _close(u, v), (u.shape, v.shape)


# all 10: DeiT's two prefix tokens and distilled head (the final map is the norm's tokens), GhostNet's pooled
# conv head (the final map is the blocks' output, before global_pool -> conv_head), as timm gives them
@pytest.mark.parametrize("spec", list(TIMM_REFERENCED))
def test_forward_intermediates_equals_timm(spec: str) -> None:
    ours, ref = _pair(spec)
    x = _x(TIMM_REFERENCED[spec][1])
    with torch.no_grad():
        fa, ia = ours.forward_intermediates(x)
        fb, ib = ref.forward_intermediates(x)
        assert _close(fa, fb)
        if hasattr(ours, "forward_features"):   # (RepViT's distilled head is no linear classifier: none)
            assert _close(fa, ours.forward_features(x))
            assert (ours.num_features, ours.head_hidden_size) == (ref.num_features, ref.head_hidden_size)
            if type(ours.get_classifier()) is torch.nn.Linear:   # (ConvNeXt's head container: its own input)
                assert _close(ours.forward_head(fa, pre_logits=True), ref.forward_head(fb, pre_logits=True))
        assert len(ia) == len(ib) and all(_close(u, v) for u, v in zip(ia, ib))
        only_a = ours.forward_intermediates(x, indices=[-2, -1], intermediates_only=True, output_fmt="NHWC")
        only_b = [t.permute(0, 2, 3, 1) for t in ref.forward_intermediates(x, indices=[-2, -1],
                                                                           intermediates_only=True)]
        assert len(only_a) == 2 and all(_close(u, v) for u, v in zip(only_a, only_b))


def test_vit_intermediates_norm_and_token_levels() -> None:
    ours, ref = _pair("vit.arch:vit_tiny_patch16_224")
    x = _x(224)
    with torch.no_grad():
        a = ours.forward_intermediates(x, indices=3, norm=True, intermediates_only=True)
        b = ref.forward_intermediates(x, indices=3, norm=True, intermediates_only=True)
    assert [tuple(t.shape) for t in a] == [(1, 192, 14, 14)] * 3
    assert all(_close(u, v) for u, v in zip(a, b))
    feats = hub.build_model(_spec("vit.arch:vit_tiny_patch16_224"), features_only=True, out_indices=(-3, -2, -1))
    assert feats.feature_info.module_name() == ["blocks.9", "blocks.10", "blocks.11"]
    assert feats.feature_info.out_indices == (9, 10, 11)


def _groups(model: Any, matcher: Any) -> list[list[str]]:
    return [list(v) for v in group_parameters(model, matcher).values()]


@pytest.mark.parametrize("spec", ["vit.arch:vit_tiny_patch16_224", "mobilevit.arch:mobilevit_s",
                                  "senet.arch:seresnet50", "convnext_v2.arch:convnextv2_atto"])
def test_group_matcher_equals_timm(spec: str) -> None:
    ours, ref = _pair(spec)
    for coarse in (False, True):
        assert _groups(ours, ours.group_matcher(coarse)) == _groups(ref, ref.group_matcher(coarse))


@pytest.mark.parametrize("spec", ["vit.arch:vit_tiny_patch16_224", "mobilevit.arch:mobilevit_s"])
def test_derived_block_matcher_groups_as_timm(spec: str) -> None:
    """The matcher derived from the blocks alone (what specs without a timm reference get) groups as timm."""
    ours, ref = _pair(spec)
    assert _groups(ours, BlockMatcher(ours)) == _groups(ref, ref.group_matcher())


def test_resnet50_derived_matcher_equals_timm_resnet50() -> None:
    """resnet50 mirrors torchvision (no timm reference); timm's resnet50 has the same module paths."""
    ours = archdsl.build(_spec("resnet.arch:resnet50"))
    ref = timm.create_model("resnet50", pretrained=False)
    assert isinstance(ours.group_matcher(), BlockMatcher)
    for coarse in (False, True):
        assert _groups(ours, ours.group_matcher(coarse)) == _groups(ref, ref.group_matcher(coarse))
    assert block_paths(ours)[:4] == ["layer1.0", "layer1.1", "layer1.2", "layer2.0"]


@pytest.mark.parametrize("spec,size", [("resnet.arch:resnet18", 64), ("vit.arch:vit_tiny_patch16_224", 224),
                                       ("swin.arch:swin_t", 224)])
def test_grad_checkpointing_same_gradients_and_recomputes(spec: str, size: int) -> None:
    torch.manual_seed(0)
    model = archdsl.build(_spec(spec), num_classes=10).train()
    x, y = _x(size, batch=2), torch.tensor([1, 7])
    block = model.get_submodule(block_paths(model)[0])
    calls = []   # calls of a layer inside the first block: once per step, twice when checkpointed
    inner = next(m for m in block.modules() if m is not block and any(True for _ in m.parameters(recurse=False)))
    inner.register_forward_pre_hook(lambda m, a: calls.append(1))

    def step() -> dict[str, torch.Tensor]:
        model.zero_grad()
        torch.manual_seed(1)   # dropout / drop-path draws the same in both runs
        torch.nn.functional.cross_entropy(model(x), y).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = step()
    assert len(calls) == 1
    model.set_grad_checkpointing()
    calls.clear()
    ckpt = step()
    assert len(calls) == 2   # run again in backward: the block really is checkpointed
    assert plain.keys() == ckpt.keys()
    assert all(torch.allclose(plain[k], ckpt[k], rtol=1e-4, atol=1e-6) for k in plain)
    model.set_grad_checkpointing(False)
    calls.clear()
    step()
    assert len(calls) == 1


def test_reset_classifier_any_number_of_times() -> None:
    model = archdsl.build(_spec("convnext.arch:convnext_tiny")).eval()
    x = _x(64)
    assert model.num_features == model.head_hidden_size == 768 and model.global_pool == "avg"
    with torch.no_grad():
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
        model.reset_classifier(0)
        assert model(x).shape == pre.shape == (1, 768) and model.num_classes == 0
        model.reset_classifier(5)
        assert model(x).shape == (1, 5) and model.num_classes == 5
        model.reset_classifier(0, "")
        assert model(x).shape == (1, 768, 2, 2)
        model.reset_classifier(3, "avg")
        assert model(x).shape == (1, 3)
    with pytest.raises(ValueError, match="only with num_classes=0"):
        model.reset_classifier(3, "")
    with pytest.raises(ValueError, match="global_pool must be"):
        model.reset_classifier(3, "max")


def test_a_layer_labelled_global_pool_stays_a_module() -> None:
    """timm's models have a `global_pool` child module: the generated class's pool-type string must not shadow
    (or clash with) a layer of that name, and the head API keeps working beside it."""
    from archdsl.importer import import_model
    spec = ("network gp:\n    input [3, 16, 16]\n    stem: conv2d(8, 3, padding=1)\n"
            "    global_pool: [adaptive_avgpool(1), flatten]\n    fc: linear(4)\n")
    model = archdsl.build(spec).eval()
    assert isinstance(model.global_pool, torch.nn.Module)
    with torch.no_grad():
        model.reset_classifier(0)
        assert model(_x(16)).shape == (1, 8) and isinstance(model.global_pool, torch.nn.Module)
    # timm's resnet18 imported: its state_dict loads strictly into the spec's build
    torch.manual_seed(0)
    ref = timm.create_model("resnet18", pretrained=False).eval()
    randomize_bn(ref, seed=1)
    text = import_model(ref, (3, 32, 32), name="r18").spec
    assert "global_pool: SelectAdaptivePool2d" in text
    ours = archdsl.build(text).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert isinstance(ours.global_pool, torch.nn.Module)
    x = _x(32, batch=2)
    with torch.no_grad():
        assert _close(ours(x), ref(x))
        assert _close(ours.forward_head(ours.forward_features(x)), ref(x))
        ours.reset_classifier(5)
        assert ours(x).shape == (2, 5) and isinstance(ours.global_pool, torch.nn.Module)


def test_feature_info_api_and_dict_outputs() -> None:
    m = hub.build_model(_spec("resnet.arch:resnet50"), features_only=True, out_indices=(-3, -2, -1))
    fi = m.feature_info
    assert fi.channels() == [512, 1024, 2048] and fi.reduction() == [8, 16, 32]
    assert fi.module_name() == ["layer2", "layer3", "layer4"] and fi.out_indices == (2, 3, 4)
    assert fi.channels(-1) == 2048 and fi.get_dicts(keys=["num_chs"], idx=[0]) == [{"num_chs": 512}]
    with torch.no_grad():
        feats = m(_x(64))
    assert isinstance(feats, list) and feats[-1].shape == (1, 2048, 2, 2)
    d = hub.build_model(_spec("resnet.arch:resnet50"), features_only=True, out_indices=(1, 2), feature_cls="dict")
    with torch.no_grad():
        out = d(_x(64))
    assert list(out) == ["layer1", "layer2"]


def test_pretrained_cfg_keys() -> None:
    vit = hub.pretrained_cfg(archdsl.graph(_spec("vit.arch:vit_tiny_patch16_224")))
    ref = timm.models.get_pretrained_cfg("vit_tiny_patch16_224").to_dict()
    for k in ("classifier", "first_conv", "num_classes", "input_size", "crop_pct", "interpolation", "mean",
              "std", "fixed_input_size"):
        assert vit[k] == (tuple(ref[k]) if isinstance(ref[k], list) else ref[k]), k
    r = hub.pretrained_cfg(archdsl.graph(_spec("resnet.arch:resnet50")))
    assert r["classifier"] == "fc" and r["first_conv"] == "conv1" and r["pool_size"] == (7, 7)
    assert r["fixed_input_size"] is False and r["source"] == "torchvision"
    # the unpooled grid at the cfg's input size (torchvision's 240 crop), not at the spec's declared 224
    b1 = hub.pretrained_cfg(archdsl.graph(_spec("efficientnet.arch:efficientnet_b1")))
    assert b1["input_size"] == (3, 240, 240) and b1["pool_size"] == (8, 8)
    swin = hub.pretrained_cfg(archdsl.graph(_spec("swin.arch:swin_t")))
    assert swin["fixed_input_size"] is True and swin["pool_size"] == (7, 7) and swin["classifier"] == "head"


# ---- timm's own model tests (tests/test_models.py), written here, on one network per family -----------------
@pytest.fixture(scope="module")
def registered() -> list[str]:
    # these six files only: registering the whole shipped library too costs a minute per worker
    return hub.register_timm([_spec(s) for s in ("resnet.arch", "vit.arch", "convnext.arch", "swin.arch",
                                                 "ghostnet.arch", "mobilenet.arch")], library=False)


# (GhostNet: a head that pools before its own conv_head -- forward_features ends at the blocks, as timm's;
# MobileNetV3: torchvision's classifier Sequential, pre-logits what enters it)
FAMILIES = ["archdsl_resnet18", "archdsl_vit_tiny_patch16_224", "archdsl_convnext_tiny_backbone",
            "archdsl_swin_t", "archdsl_ghostnet_100", "archdsl_mobilenet_v3_small"]


def _size(name: str) -> tuple[int, ...]:
    cfg = timm.models.get_pretrained_cfg(name).to_dict()
    return tuple(cfg["input_size"]) if cfg.get("fixed_input_size") else (3, 64, 64)


@pytest.mark.parametrize("name", FAMILIES)
def test_timm_default_cfg_checks(registered: list[str], name: str) -> None:
    model = timm.create_model(name).eval()
    cfg = model.default_cfg
    assert model.num_features > 0 and model.head_hidden_size > 0 and model.num_classes >= 0
    x = torch.randn(1, *_size(name))
    fmt = model.output_fmt
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        c_axis = {"NCHW": 1, "NHWC": -1, "NLC": -1}[fmt]
        assert feats.shape[c_axis] == model.num_features and pre.shape[1] == model.head_hidden_size
        if fmt != "NLC" and x.shape[-1] == cfg["input_size"][-1]:
            assert tuple(feats.shape[2:] if fmt == "NCHW" else feats.shape[1:3]) == cfg["pool_size"]
        model.reset_classifier(0)
        assert model(x).shape == pre.shape and model.num_classes == 0
        model.reset_classifier(0, "")
        assert model(x).shape == feats.shape
        model = timm.create_model(name, num_classes=0, global_pool="").eval()
        assert model(x).shape == feats.shape
    sd = model.state_dict()
    assert cfg["first_conv"] + ".weight" in sd
    if cfg.get("num_classes"):
        assert cfg["classifier"] + ".weight" in timm.create_model(name).state_dict()


@pytest.mark.parametrize("name", FAMILIES)
def test_timm_backward_features_fx_torchscript(registered: list[str], name: str) -> None:
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names
    x = torch.randn(2, *_size(name))
    model = timm.create_model(name, num_classes=42).train()
    out = model(x)
    out.mean().backward()
    assert out.shape == (2, 42) and all(p.grad is not None for p in model.parameters())
    model = timm.create_model(name).eval()
    with torch.no_grad():
        y = model(x[:1])
        _, ev = get_graph_node_names(model)
        fx = create_feature_extractor(model, return_nodes=[ev[-1]])
        assert torch.equal(fx(x[:1])[ev[-1]], y)
        scripted = torch.jit.script(fx)
        assert torch.allclose(scripted(x[:1])[ev[-1]], y, atol=1e-5)
        assert torch.allclose(torch.jit.script(model)(x[:1]), y, atol=1e-5)
    feats = timm.create_model(name, features_only=True).eval()
    assert len(feats.feature_info.channels()) >= 3
    with torch.no_grad():
        maps = feats(x[:1])
    c_axis = -1 if feats.output_fmt == "NHWC" else 1
    assert [t.shape[c_axis] for t in maps] == feats.feature_info.channels()


def test_min_input_size_where_timm_test_sizes_are_refused() -> None:
    """MobileViT takes multiples of 64: its cfg has timm's min_input_size, so timm's tests (features at 96,
    which the spec refuses) run at the smallest size it takes; networks any test size fits have none."""
    from archdsl.passes.sizes import min_input_size
    assert min_input_size(archdsl.graph(_spec("mobilevit.arch:mobilevit_s"))) == (3, 64, 64)
    assert min_input_size(archdsl.graph(_spec("resnet.arch:resnet18"))) is None
    assert min_input_size(archdsl.graph(_spec("swin.arch:swin_t"))) is None
    hub.register_timm([_spec("mobilevit.arch")], library=False)
    assert timm.models.get_pretrained_cfg_value("archdsl_mobilevit_s", "min_input_size") == (3, 64, 64)
    feats = timm.create_model("archdsl_mobilevit_s", features_only=True).eval()
    assert feats.default_cfg["min_input_size"] == (3, 64, 64)   # (what timm's features test reads)
    with torch.no_grad():
        maps = feats(_x(64))
    assert [t.shape[1] for t in maps] == feats.feature_info.channels()
