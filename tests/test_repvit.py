"""RepViT-M1.1 against timm (issue 15), and the compiler features it needs.

`specs/repvit.arch:repvit_m1_1` is timm's `repvit_m1_1` key for key (with the distillation head); its
deploy form (`archdsl.deploy`, `archc deploy --weights`) has exactly the keys and shapes of timm's
`reparameterize_model` output and loads that state_dict strictly. BatchNorm statistics and the heads'
biases are randomized so no branch hides behind an init value.

The features: `fused="."` (the fused layer takes the path of the group's container, as timm's `fuse()`
replaces the module), per-channel maps after a group's sum folded into the fused layer (RepVggDw's
BatchNorm, the heads' 0.5), and groups over vectors [F] fused into one Linear (parallel BatchNorm1d +
Linear heads).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import archdsl
from helpers import assert_close, randomize_bn, run_archc

timm = pytest.importorskip("timm")
from timm.utils import reparameterize_model  # noqa: E402

SPEC = "specs/repvit.arch:repvit_m1_1"
SIDE = 64   # RepViT has stride 32 and a global pool: 64x64 runs every layer; the weights do not depend on it
CLASSES = 10


def _randomize(model: Any, seed: int) -> None:
    """Random BatchNorm statistics and affine params, and random head biases (timm initializes them to 0)."""
    randomize_bn(model, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("head.") and name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module")
def pair() -> tuple[Any, Any]:
    """Our train form and timm's, with the same (randomized) weights, in eval mode."""
    ref = timm.create_model("repvit_m1_1", pretrained=False, num_classes=CLASSES)
    _randomize(ref, seed=5)
    ref.eval()
    ours = archdsl.build(SPEC, input_shape=(3, SIDE, SIDE), num_classes=CLASSES)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    return ours, ref


def _x(seed: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))


def test_params_equal_timm() -> None:
    g = archdsl.graph(SPEC)
    ref = timm.create_model("repvit_m1_1", pretrained=False)
    assert g.total_params == sum(p.numel() for p in ref.parameters()) == 8_802_912


def test_train_form_keys_and_outputs_equal_timm(pair: tuple[Any, Any]) -> None:
    ours, ref = pair
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    x = _x(0)
    with torch.no_grad():
        assert_close(ours(x), ref(x))


def test_deploy_equals_train_form_and_timm_reparameterize(pair: tuple[Any, Any]) -> None:
    ours, ref = pair
    x = _x(1)
    with torch.no_grad():
        want = ref(x)
    dep = archdsl.deploy(ours, memory_format="contiguous")
    g = archdsl.graph(SPEC)
    # every ConvNorm (59), RepVggDw (18) and the distilled head is one group
    assert dep.deploy_info["fused_groups"] == len(g.reparam_groups) == 78
    assert dep.deploy_info["notes"] == []
    tdep = reparameterize_model(ref)
    theirs = {k: tuple(v.shape) for k, v in tdep.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in dep.state_dict().items()} == theirs
    assert theirs["head.weight"] == (CLASSES, 512) and "stem.conv1.bias" in theirs
    assert isinstance(dep.head, torch.nn.Linear)
    assert not [m for m in dep.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        assert_close(dep(x), want)
        assert_close(tdep(x), want)
        dep.load_state_dict(tdep.state_dict(), strict=True)   # timm's fused weights run in our deploy form
        assert_close(dep(x), want)


def test_deploy_keep_bn_is_the_same_form() -> None:
    """Every BatchNorm of RepViT is inside a group, so --keep-bn changes nothing: timm's keys either way."""
    g = archdsl.graph(SPEC, input_shape=(3, SIDE, SIDE), num_classes=CLASSES)
    from archdsl.passes.deploy import deploy_plan, state_shapes
    a = state_shapes(deploy_plan(g, fold_bn=True).graph)
    b = state_shapes(deploy_plan(g, fold_bn=False).graph)
    assert a == b and a is not None and "head.weight" in a


def test_cli_deploy_converts_a_trained_checkpoint(pair: tuple[Any, Any], tmp_path: Path) -> None:
    ours, ref = pair
    torch.save(ref.state_dict(), tmp_path / "train.pt")
    r = run_archc("deploy", SPEC, "--set", f"num_classes={CLASSES}", "--weights", str(tmp_path / "train.pt"),
                  "-o", str(tmp_path / "deploy.pt"))
    assert r.returncode == 0, r.stderr
    got = torch.load(tmp_path / "deploy.pt", weights_only=True)
    tdep = reparameterize_model(ref)
    assert {k: tuple(v.shape) for k, v in got.items()} == {k: tuple(v.shape) for k, v in tdep.state_dict().items()}
    tdep.load_state_dict(got, strict=True)   # our converted checkpoint runs in timm's inference form
    x = _x(2, batch=1)
    with torch.no_grad():
        assert_close(tdep(x), ours(x))


def _fvcore_macs(model: Any, shape: tuple[int, ...]) -> int:
    """fvcore's count restricted to conv / linear / matmul (what tests/data/reference-counts.json calls MACs)."""
    from fvcore.nn import FlopCountAnalysis
    model.eval()
    fca = FlopCountAnalysis(model, torch.randn(1, *shape))
    fca.unsupported_ops_warnings(False)
    fca.uncalled_modules_warnings(False)
    return sum(v for k, v in fca.by_operator().items() if k in ("conv", "linear", "addmm", "matmul", "bmm"))


def test_macs_match_fvcore_in_both_forms(pair: tuple[Any, Any]) -> None:
    ours, ref = pair
    shape = (3, SIDE, SIDE)
    g = archdsl.graph(SPEC, input_shape=shape, num_classes=CLASSES)
    assert g.total_macs == _fvcore_macs(ref, shape) == _fvcore_macs(ours, shape)
    from archdsl.passes.deploy import deploy_graph
    assert deploy_graph(g).total_macs == _fvcore_macs(reparameterize_model(ref), shape)


# ------------------------------------------------------------------ groups over vectors: one Linear
@st.composite
def vector_groups(draw: Any) -> str:
    """A random group of parallel heads on a vector: BatchNorm1d / scale before and after a linear, an
    optional identity-like branch, an optional per-feature map after the sum."""
    f = draw(st.sampled_from([4, 6]))
    same = draw(st.sampled_from(["", "identity", "batchnorm", "dropout(0.3)"]))   # needs out width == f
    o = f if same else draw(st.sampled_from([f, 3]))
    branches: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        pre = draw(st.sampled_from(["", "batchnorm, ", "scale(0.5), ", "layer_scale(init=0.7), "]))
        post = draw(st.sampled_from(["", ", batchnorm", ", scale(-2.0)"]))
        bias = draw(st.booleans())
        branches.append(f"[{pre}linear({o}, bias={'true' if bias else 'false'}){post}]")
    branches.append(same)
    after = draw(st.sampled_from(["", "scale(0.5)", "batchnorm", "dropout(0.2)"]))
    body = "\n".join("                " + b for b in branches if b)
    tail = f"\n            {after}" if after else ""
    return (f"network t():\n    input [{f}]\n    head: reparam add(fused=\".\"):\n        seq:\n"
            f"            add:\n{body}{tail}\n    relu\n")


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vector_groups())
def test_parallel_linear_heads_fuse_into_one_linear(text: str) -> None:
    model = archdsl.build(text)
    randomize_bn(model, seed=3)
    with torch.no_grad():   # random layer-scale values and biases, so no branch hides behind its init value
        for p in model.parameters():
            p.copy_(torch.randn(p.shape))
    model.eval()
    dep = archdsl.deploy(model, memory_format="contiguous")
    assert [type(m) for m in dep.modules() if not list(m.children())] == [torch.nn.Linear]
    assert sorted(dep.state_dict()) == ["head.bias", "head.weight"]
    x = torch.randn(5, *model.arch_graph.input_shape)
    with torch.no_grad():
        assert_close(dep(x), model(x))


def test_fused_conv_group_folds_the_batchnorm_after_its_sum() -> None:
    """RepVggDw's form on a random input: bn(conv_bn(x) + conv1(x) + x) -> one depthwise conv at the block."""
    text = ("block Dw(c):\n    reparam add(fused=\".\"):\n        seq:\n            add:\n"
            "                conv: [conv2d(c, 3, padding=1, groups=c, bias=false), batchnorm]\n"
            "                conv1: conv2d(c, 1, groups=c)\n                identity\n            bn: batchnorm\n"
            "network t():\n    input [6, 9, 9]\n    mixer: Dw(6)\n    relu\n")
    model = archdsl.build(text)
    randomize_bn(model, seed=4)
    model.eval()
    dep = archdsl.deploy(model, memory_format="contiguous")
    assert {k: tuple(v.shape) for k, v in dep.state_dict().items()} == {"mixer.weight": (6, 1, 3, 3),
                                                                         "mixer.bias": (6,)}
    x = torch.randn(2, 6, 9, 9)
    with torch.no_grad():
        assert_close(dep(x), model(x))


REFUSED = {
    # the group text (inside `network t(): input [8]` or a block), the reason the refusal must name
    "    head: reparam add(fused=\".\"):\n        [linear(4), relu]\n        linear(4)\n":
        "applies relu at head.1, which is not linear",
    "    head: reparam add(fused=\".\"):\n        seq:\n            add:\n                linear(8)\n"
    "                identity\n            batchnorm(track_running_stats=false)\n":
        "has track_running_stats=false",
    "    reparam add(fused=\".\"):\n        linear(8)\n        identity\n":
        "this group has none",
}


@pytest.mark.parametrize("body,reason", list(REFUSED.items()))
def test_vector_group_refusals_name_the_real_reason(body: str, reason: str) -> None:
    text = f"network t():\n    input [8]\n{body}"
    with pytest.raises(archdsl.ArchError) as e:
        archdsl.graph(text)
    assert reason in str(e.value), str(e.value)


def test_fused_container_keeps_the_layers_after_the_group() -> None:
    """A layer after a labelled fused="." group is outside its container: it stays, beside the fused linear."""
    text = "network t():\n    input [8]\n    head: reparam add(fused=\".\"):\n        linear(8)\n        identity\n" \
           "    out: linear(3)\n"
    model = archdsl.build(text)
    model.eval()
    dep = archdsl.deploy(model, memory_format="contiguous")
    assert {k: tuple(v.shape) for k, v in dep.state_dict().items()} == {
        "head.weight": (8, 8), "head.bias": (8,), "out.weight": (3, 8), "out.bias": (3,)}
    x = torch.randn(3, 8)
    with torch.no_grad():
        assert_close(dep(x), model(x))


def test_fused_container_refuses_other_layers_in_the_container() -> None:
    """fused="." puts the fused layer at the block's path: a layer of the block outside the group is named."""
    text = ("block B(c):\n    reparam add(fused=\".\"):\n        conv2d(c, 3, padding=1)\n        identity\n"
            "    act: conv2d(c, 1)\n"
            "network t():\n    input [4, 8, 8]\n    b: B(4)\n")
    with pytest.raises(archdsl.ArchError) as e:
        archdsl.graph(text)
    msg = str(e.value)
    assert "makes the fused layer the container 'b' itself, but b.act (conv2d) is in that container" in msg, msg


def test_conv_group_still_refuses_a_linear_on_the_width() -> None:
    """A linear inside a conv group acts on the width: the refusal says so (vectors fuse, maps do not)."""
    text = "network t():\n    input [8, 9, 9]\n    g: reparam add:\n        [conv2d(8, 3, padding=1), linear(9)]\n" \
           "        conv2d(8, 1)\n"
    with pytest.raises(archdsl.ArchError) as e:
        archdsl.graph(text)
    assert "a linear layer on the last axis (width)" in str(e.value)
