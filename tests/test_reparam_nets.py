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
from helpers import randomize_bn, run_archc

timm = pytest.importorskip("timm")
from timm.utils import reparameterize_model  # noqa: E402

SIDE = 64   # every net here accepts 64x64 (stride 32); the weights do not depend on the input size


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    """The issue's tolerance: max abs diff <= 1e-4 x max(1, max |reference|)."""
    scale = max(1.0, b.abs().max().item())
    assert (a - b).abs().max().item() <= 1e-4 * scale, ((a - b).abs().max().item(), scale)


def _pair(spec: str, name: str, num_classes: int = 10) -> tuple[Any, Any]:
    ref = timm.create_model(name, pretrained=False, num_classes=num_classes)
    randomize_bn(ref, seed=5)
    ref.eval()
    ours = archdsl.build(f"specs/{spec}:{name}", input_shape=(3, SIDE, SIDE), num_classes=num_classes)
    ours.eval()
    return ours, ref


@pytest.mark.parametrize("spec,name", [("mobileone.arch", "mobileone_s1")])
def test_params_equal_timm(spec: str, name: str) -> None:
    g = archdsl.graph(f"specs/{spec}:{name}")
    ref = timm.create_model(name, pretrained=False)
    assert g.total_params == sum(p.numel() for p in ref.parameters())


@pytest.mark.parametrize("spec,name", [("mobileone.arch", "mobileone_s1")])
def test_train_form_loads_strictly_and_matches(spec: str, name: str) -> None:
    ours, ref = _pair(spec, name)
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == want
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _close(ours(x), ref(x))


@pytest.mark.parametrize("spec,name", [("mobileone.arch", "mobileone_s1")])
def test_deploy_matches_train_form_and_timm_reparameterize(spec: str, name: str) -> None:
    ours, ref = _pair(spec, name)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = ref(x)
    dep = archdsl.deploy(ours, memory_format="contiguous")
    g = archdsl.graph(f"specs/{spec}:{name}")
    assert dep.deploy_info["fused_groups"] == len(g.reparam_groups)
    tdep = reparameterize_model(ref)
    theirs = {k: tuple(v.shape) for k, v in tdep.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in dep.state_dict().items()} == theirs
    with torch.no_grad():
        _close(dep(x), want)
        _close(tdep(x), want)
        dep.load_state_dict(tdep.state_dict(), strict=True)   # timm's fused weights run in our deploy form
        _close(dep(x), want)


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
        _close(tdep(x), ours(x))
