"""Stages written as a block whose body is a sequence are ``nn.Sequential`` subclasses, as torchvision's are:
``model.layer4[-1]`` (Grad-CAM's target layer), ``len``, iteration and slicing behave like the reference's."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

import archdsl  # noqa: E402

from helpers import make_reference, randomize_bn  # noqa: E402


def _pair(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    ref = make_reference(f"torchvision.{name}").eval()
    randomize_bn(ref)
    ours = archdsl.build(f"specs/resnet.arch:{name}").eval()
    ours.load_state_dict(ref.state_dict(), strict=True)   # same keys, same weights
    return ours, ref


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_layer4_last_block_hooks_equal_torchvision(name: str) -> None:
    ours, ref = _pair(name)
    got: dict[str, torch.Tensor] = {}
    hooks = [m.layer4[-1].register_forward_hook(lambda mod, i, o, k=k: got.__setitem__(k, o.detach()))
             for k, m in (("ours", ours), ("ref", ref))]
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours(x)
        ref(x)
    for h in hooks:
        h.remove()
    assert got["ours"].shape == got["ref"].shape == (2, 512 * (4 if name == "resnet50" else 1), 3, 3)
    torch.testing.assert_close(got["ours"], got["ref"], rtol=1e-4, atol=1e-4)
    assert type(ours.layer4[-1]).__name__ == type(ref.layer4[-1]).__name__


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
def test_reslayer_is_a_sequential(name: str) -> None:
    ours, ref = _pair(name)
    for k in range(1, 5):
        stage, rstage = getattr(ours, f"layer{k}"), getattr(ref, f"layer{k}")
        assert isinstance(stage, torch.nn.Sequential) and type(stage).__name__.startswith("ResLayer")
        assert len(stage) == len(rstage)
        assert [type(b).__name__ for b in stage] == [type(b).__name__ for b in rstage]
        assert stage[0] is next(iter(stage)) and stage[-1] is list(stage)[-1]
    # a slice is a plain nn.Sequential of the same modules, and runs like the reference's slice
    sl = ours.layer3[1:]
    assert type(sl) is torch.nn.Sequential and len(sl) == len(ref.layer3) - 1 and sl[0] is ours.layer3[1]
    x = torch.randn(1, 256, 6, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(sl(x), ref.layer3[1:](x), rtol=1e-4, atol=1e-4)
        # the stage's forward is nn.Sequential's: the blocks in order
        y = torch.randn(1, 128, 12, 12, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(ours.layer3(y), ref.layer3(y), rtol=1e-4, atol=1e-4)


def test_sequential_stage_scripts_and_traces() -> None:
    ours, _ = _pair("resnet18")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = ours(x)
        torch.testing.assert_close(torch.jit.script(ours)(x), want)
        torch.testing.assert_close(torch.fx.symbolic_trace(ours)(x), want)


def test_generated_source_subclasses_sequential() -> None:
    src = archdsl.source("specs/resnet.arch:resnet18")
    assert "class ResLayer(nn.Sequential):" in src
    # its forward is nn.Sequential's own: the class writes none
    cls = src[src.index("class ResLayer(nn.Sequential):"):]
    cls = cls[:cls.index("\nclass ")]
    assert "def forward" not in cls


@pytest.mark.parametrize("spec, ref", [
    ("specs/vgg.arch:vgg11", "torchvision.vgg11"),
    ("specs/mobilenet.arch:mobilenet_v2", "torchvision.mobilenet_v2"),
    ("specs/squeezenet.arch:squeezenet1_0", "torchvision.squeezenet1_0"),
    ("specs/shufflenet.arch:shufflenet_v2_x0_5", "torchvision.shufflenet_v2_x0_5"),
])
def test_containers_are_sequential_where_the_reference_has_one(spec: str, ref: str) -> None:
    """Every reference Sequential/ModuleList has a Sequential/ModuleList at the same path, with the same
    children names (labelled parameter-free steps such as ``features.0.2``, a ReLU, become child modules)."""
    torch.manual_seed(0)
    r = make_reference(ref).eval()
    ours = archdsl.build(spec).eval()
    ours.load_state_dict(r.state_dict(), strict=True)
    mods = dict(ours.named_modules())
    checked = 0
    for name, m in r.named_modules():
        # (an empty reference Sequential, ShuffleNet's stride-1 ``branch1``, holds nothing to mirror)
        if isinstance(m, (torch.nn.Sequential, torch.nn.ModuleList)) and name and len(m):
            o = mods[name]
            assert isinstance(o, (torch.nn.Sequential, torch.nn.ModuleList)), (name, type(o).__name__)
            assert len(o) == len(m), name
            assert [k for k, _ in o.named_children()] == [k for k, _ in m.named_children()], name
            checked += 1
    assert checked >= 2
