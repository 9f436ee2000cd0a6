"""Dense prediction at any input size: specs/segmentation.arch against torchvision, examples/unet.arch trains.

Each segmentation network is built ONCE (at its declared 224x224 input) and run at 224x224 and 320x256:
its logits return to the input's own size at run time (``resize_as``), so both runs must equal
torchvision's model holding the same weights (strict state_dict load, randomized BatchNorm statistics),
max abs diff <= 1e-4 x max(1, max|reference|). The aux heads are a network parameter (``aux=true`` adds
torchvision's ``aux_classifier`` and returns ``{out, aux}``); ``aux=false`` has exactly the keys of the
reference built without ``aux_loss``. Parameter counts from the graph (``archc summary``) equal the
reference's.

The ResNet-50 + FPN backbone equals torchvision's ``resnet_fpn_backbone("resnet50")`` (a
``BackboneWithFPN`` with FrozenBatchNorm2d, which in eval is BatchNorm with the same statistics).
"""
from __future__ import annotations

from typing import Any

import pytest
from helpers import randomize_bn

import archdsl

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

pytestmark = pytest.mark.xdist_group("segmentation")

SPEC = "specs/segmentation.arch"
UNET = "examples/unet.arch"
SIZES = [(224, 224), (320, 256)]
# torchvision's FPN output names are '0'..'3' and 'pool'; output names are identifiers in the language
FPN_NAMES = {"p2": "0", "p3": "1", "p4": "2", "p5": "3", "p6": "pool"}


def _reference(name: str, aux: bool) -> Any:
    builder = getattr(torchvision.models.segmentation, name)
    kwargs: dict[str, Any] = {"aux_loss": True} if aux else {}
    return builder(weights=None, weights_backbone=None, num_classes=21, **kwargs)


def _count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def _assert_close(got: Any, want: Any, what: str) -> None:
    assert tuple(got.shape) == tuple(want.shape), f"{what}: shape {tuple(got.shape)} vs {tuple(want.shape)}"
    diff = (got - want).abs().max().item()
    tol = 1e-4 * max(1.0, want.abs().max().item())
    assert diff <= tol, f"{what}: max abs diff {diff:.3g} > {tol:.3g}"


def _keys_and_shapes(module: Any) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


# (network, has an aux head in torchvision)
SEGMENTATION = [
    ("fcn_resnet50", True),
    ("deeplabv3_resnet50", True),
    ("deeplabv3_mobilenet_v3_large", True),
    ("lraspp_mobilenet_v3_large", False),
]


@pytest.mark.parametrize("name, has_aux", SEGMENTATION, ids=[n for n, _ in SEGMENTATION])
def test_segmentation_equals_torchvision_at_two_sizes(name: str, has_aux: bool) -> None:
    spec = f"{SPEC}:{name}"
    params = {"aux": True} if has_aux else {}
    ref = _reference(name, aux=has_aux)
    randomize_bn(ref, seed=3)

    g = archdsl.graph(spec, **params)
    assert g.total_params == _count(ref)
    assert g.reference is None   # dict outputs: not for the classification reference suite
    expected_outputs = {"out": (21, 224, 224), "aux": (21, 224, 224)} if has_aux else {"out": (21, 224, 224)}
    assert g.output_shapes == expected_outputs

    ours = archdsl.build(spec, **params)          # built once, for 224x224
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    ref.eval()
    gen = torch.Generator().manual_seed(0)
    for h, w in SIZES:
        x = torch.randn(1, 3, h, w, generator=gen)
        with torch.no_grad():
            got = ours(x)
            want = ref(x)
        if not isinstance(got, dict):
            got = {"out": got}
        assert list(got) == list(want), f"outputs {list(got)} vs torchvision's {list(want)}"
        for key in want:
            assert tuple(want[key].shape) == (1, 21, h, w)
            _assert_close(got[key], want[key], f"{name} {key} at {h}x{w}")


@pytest.mark.parametrize("name", ["fcn_resnet50", "deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large"])
def test_without_aux_the_keys_are_torchvisions_without_aux_loss(name: str) -> None:
    # on the meta device: keys and shapes only, no weights initialised
    with torch.device("meta"):
        ref = _reference(name, aux=False)
        ours = archdsl.build(f"{SPEC}:{name}")
    assert _keys_and_shapes(ours) == _keys_and_shapes(ref)
    assert archdsl.graph(f"{SPEC}:{name}").total_params == _count(ref)
    assert not any(k.startswith("aux_classifier.") for k in ours.state_dict())


def _randomize_frozen_bn(model: Any, seed: int) -> None:
    """FrozenBatchNorm2d is not a _BatchNorm: give its buffers non-trivial values the same way."""
    from torchvision.ops.misc import FrozenBatchNorm2d
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 0.5 + 0.75)
            m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 0.5 + 0.75)
            m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)


def test_resnet50_fpn_equals_torchvision_backbone_with_fpn_at_two_sizes() -> None:
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    ref = resnet_fpn_backbone(backbone_name="resnet50", weights=None, trainable_layers=5)
    _randomize_frozen_bn(ref, seed=5)
    spec = f"{SPEC}:resnet50_fpn"

    g = archdsl.graph(spec)
    # FrozenBatchNorm2d keeps its affine weight and bias as buffers; our BatchNorm counts them as parameters
    frozen_affine = sum(m.weight.numel() + m.bias.numel() for m in ref.modules()
                        if type(m).__name__ == "FrozenBatchNorm2d")
    assert frozen_affine > 0
    assert g.total_params == _count(ref) + frozen_affine
    assert g.output_shapes == {"p2": (256, 56, 56), "p3": (256, 28, 28), "p4": (256, 14, 14),
                               "p5": (256, 7, 7), "p6": (256, 4, 4)}

    ours = archdsl.build(spec)
    # FrozenBatchNorm2d has no num_batches_tracked; BatchNorm's loader accepts its absence (old checkpoints)
    assert {k for k in ours.state_dict() if not k.endswith(".num_batches_tracked")} == set(ref.state_dict())
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    ref.eval()
    gen = torch.Generator().manual_seed(1)
    for h, w in SIZES:
        x = torch.randn(1, 3, h, w, generator=gen)
        with torch.no_grad():
            got = ours(x)
            want = ref(x)
        assert list(want) == list(FPN_NAMES.values())
        assert list(got) == list(FPN_NAMES)
        for ours_name, ref_name in FPN_NAMES.items():
            _assert_close(got[ours_name], want[ref_name], f"fpn {ours_name} ({ref_name}) at {h}x{w}")


@pytest.mark.parametrize("bilinear", [True, False], ids=["bilinear", "transposed"])
def test_unet_example_runs_and_trains_a_step_at_two_sizes(bilinear: bool) -> None:
    g = archdsl.graph(UNET, bilinear=bilinear)
    assert list(g.output_shapes.values()) == [(2, 256, 256)]
    kinds = {n.op for n in g.records()}
    # the two variants differ exactly in how they upsample
    assert ("upsample" in kinds, "conv_transpose2d" in kinds) == (bilinear, not bilinear)

    torch.manual_seed(0)
    model = archdsl.build(UNET, base=8, bilinear=bilinear)   # built once, for 256x256
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for h, w in [(64, 64), (96, 80)]:
        model.train()
        x = torch.randn(2, 3, h, w)
        target = torch.randint(0, 2, (2, h, w))
        opt.zero_grad()
        logits = model(x)
        assert tuple(logits.shape) == (2, 2, h, w)
        loss = torch.nn.functional.cross_entropy(logits, target)
        assert torch.isfinite(loss)
        loss.backward()
        for key, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), key
            assert p.grad.abs().sum() > 0, f"{key}: zero gradient"
        before = {k: p.detach().clone() for k, p in model.named_parameters()}
        opt.step()
        assert all(not torch.equal(before[k], p) for k, p in model.named_parameters())
        model.eval()
        with torch.no_grad():
            after = torch.nn.functional.cross_entropy(model(x), target)
        assert torch.isfinite(after)
