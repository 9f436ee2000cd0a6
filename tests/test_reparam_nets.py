"""The modern re-parameterized mobile nets (issue 15): MobileOne against timm, in train and deploy form.

Each spec loads timm's state_dict strictly, computes the same eval function (BatchNorm statistics
randomized so no branch hides behind an init value), deploys with `archdsl.deploy` to the same function,
and its deploy form has exactly the keys and shapes of timm's `reparameterize_model` output and loads
that state_dict strictly. `archc deploy --weights` converts a trained checkpoint through the CLI.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import archdsl
from helpers import (assert_close, assert_close_to_float64, assert_deploy_is_exact, assert_group_fuses_to_one_conv,
                     float64_error, randomize_bn, run_archc)

timm = pytest.importorskip("timm")
from timm.utils import reparameterize_model  # noqa: E402

NETS = [("mobileone.arch", "mobileone_s1"), ("mobileone.arch", "mobileone_s4")]
SIDE = 64   # every net here accepts 64x64 (stride 32); the weights do not depend on the input size


def _pair(spec: str, name: str, num_classes: int = 10) -> tuple[Any, Any]:
    ref = timm.create_model(name, pretrained=False, num_classes=num_classes)
    randomize_bn(ref, seed=5)
    ref.eval()
    ours = archdsl.build(f"specs/{spec}:{name}", input_shape=(3, SIDE, SIDE), num_classes=num_classes)
    ours.eval()
    return ours, ref


@pytest.mark.parametrize("spec,name", NETS)
def test_params_equal_timm(spec: str, name: str) -> None:
    g = archdsl.graph(f"specs/{spec}:{name}")
    ref = timm.create_model(name, pretrained=False)
    assert g.total_params == sum(p.numel() for p in ref.parameters())


@pytest.mark.parametrize("spec,name", NETS)
def test_train_form_loads_strictly_and_matches(spec: str, name: str) -> None:
    ours, ref = _pair(spec, name)
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == want
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert_close(ours(x), ref(x))


@pytest.mark.parametrize("spec,name", NETS)
def test_deploy_matches_train_form_and_timm_reparameterize(spec: str, name: str) -> None:
    ours, ref = _pair(spec, name)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))
    # A random MobileOne with random BatchNorm statistics amplifies float32 rounding (S4 at 64x64: its
    # activations' by up to ~3e-4 of the output scale; its fused weights' by up to 45% of it for some draws,
    # timm's reparameterize_model alike): the deploy is proven exact in float64, and every float32
    # comparison is judged against the rounding error of the forwards compared, not a fixed fraction.
    want, fp32_error = float64_error(ref, x)
    dep = archdsl.deploy(ours, memory_format="contiguous")
    g = archdsl.graph(f"specs/{spec}:{name}")
    assert dep.deploy_info["fused_groups"] == len(g.reparam_groups)
    weight_error = assert_deploy_is_exact(ours, dep, x)
    tdep = reparameterize_model(ref)
    theirs = {k: tuple(v.shape) for k, v in tdep.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in dep.state_dict().items()} == theirs
    with torch.no_grad():
        assert_close_to_float64(dep(x), want, max(fp32_error, weight_error))
        theirs_out, theirs_error = float64_error(tdep, x)
        dep.load_state_dict(tdep.state_dict(), strict=True)   # timm's fused weights run in our deploy form
        assert_close_to_float64(dep(x), theirs_out, theirs_error)


def test_cli_deploy_converts_a_trained_mobileone_checkpoint(tmp_path: Path) -> None:
    spec = "specs/mobileone.arch:mobileone_s1"
    ours, ref = _pair("mobileone.arch", "mobileone_s1")
    ours.load_state_dict(ref.state_dict(), strict=True)
    torch.save(ref.state_dict(), tmp_path / "train.pt")
    sets = ["--set", "num_classes=10"]
    r = run_archc("deploy", spec, *sets, "--weights", str(tmp_path / "train.pt"), "-o", str(tmp_path / "deploy.pt"))
    assert r.returncode == 0, r.stderr
    got = torch.load(tmp_path / "deploy.pt", weights_only=True)
    tdep = reparameterize_model(ref)
    assert {k: tuple(v.shape) for k, v in got.items()} == {k: tuple(v.shape) for k, v in tdep.state_dict().items()}
    tdep.load_state_dict(got, strict=True)   # our converted checkpoint runs in timm's inference form
    x = torch.randn(1, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert_close(tdep(x), ours(x))


# ------------------------------------------------------------------ per-channel scales inside reparam groups
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def scaled_groups(draw: Any) -> str:
    """A random group whose branches carry `scale` / `layer_scale` (before or after the conv), plus BNs."""
    c = draw(st.sampled_from([4, 6, 8]))
    G = draw(st.sampled_from([1, c]))
    branches: list[str] = []
    for k in draw(st.lists(st.sampled_from([1, 3, 5]), min_size=1, max_size=3)):
        pre = draw(st.sampled_from(["", "scale(0.5), ", "layer_scale(init=1.0), "]))
        post = draw(st.sampled_from(["", ", batchnorm", ", layer_scale(init=0.3)",
                                     ", batchnorm, layer_scale", ", scale(-1.5)"]))
        branches.append(f"[{pre}conv2d({c}, {k}, padding={k // 2}, groups={G}, bias=false){post}]")
    branches.append(draw(st.sampled_from(["", "identity", "[batchnorm, layer_scale(init=2.0)]",
                                          "layer_scale(init=0.7)"])))
    body = "\n".join("        " + b for b in branches if b)
    return f"network t():\n    input [{c}, 9, 9]\n    g: reparam add:\n{body}\n    relu\n"


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scaled_groups())
def test_scales_and_layer_scales_fuse_into_the_group(text: str) -> None:
    assert_group_fuses_to_one_conv(text)


REFUSED = {
    # the branch, the reason the refusal must name
    "[conv2d(8, 3, padding=1), gelu]": "applies gelu at g.1, which is not linear",
    "[conv2d(8, 3, padding=1), layernorm]": "applies layernorm at g.1, which is not linear",
    "[conv2d(8, 3, padding=1), linear(9)]": "a linear layer on the last axis (width)",
    "[conv2d(8, 3, padding=1), layer_scale(dim=-1)]": "not the channels of a [C, H, W] map",
    "[batchnorm, conv2d(8, 3, padding=1)]": "applies batchnorm before the padded conv2d",
}


@pytest.mark.parametrize("branch,reason", sorted(REFUSED.items()))
def test_refusals_name_the_real_reason(branch: str, reason: str) -> None:
    text = f"network t():\n    input [8, 9, 9]\n    g: reparam add:\n        {branch}\n        conv2d(8, 1)\n    relu\n"
    with pytest.raises(archdsl.ArchError) as e:
        archdsl.graph(text)
    msgs = [d.message for d in e.value.diagnostics if "cannot be fused" in d.message]
    assert msgs and reason in msgs[0], str(e.value)
    assert "layer_scale" not in msgs[0] or "not linear" not in msgs[0]


def test_scale_before_a_padded_conv_is_exact_but_a_shift_is_not() -> None:
    """A per-channel scale has no shift: zero padding scales to zero, so it may precede a padded conv."""
    ok = "network t():\n    input [4, 7, 7]\n    g: reparam add:\n        [layer_scale(init=0.5), conv2d(4, 3, padding=1)]\n        identity\n"
    model = archdsl.build(ok)
    with torch.no_grad():
        model.state_dict()["g.0"].copy_(torch.randn(4, 1, 1))
    model.eval()
    dep = archdsl.deploy(model, memory_format="contiguous")
    x = torch.randn(2, 4, 7, 7)
    with torch.no_grad():
        assert_close(dep(x), model(x))
