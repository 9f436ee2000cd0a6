"""The round-trip verifier (archdsl.importer.roundtrip) and the pure parts of bench/import_zoo.py.

A small torch module written here, a hand-written spec of it, and specs that are wrong in one way each: the
verifier must pass the right one and stop each wrong one at the right stage, with the reason. A branch behind
a zero-initialized layer scale is the case that shows why constant parameters are randomized first: without
it, a spec with the wrong activation in that branch would pass.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from helpers import ROOT

from archdsl.importer import STAGES, RoundTrip, randomize_constants, roundtrip

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


class Tiny(nn.Module):
    """stem conv + BN + ReLU, a residual branch scaled by a zero-initialized layer scale, pool, linear."""

    def __init__(self, c: int = 8, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.gamma = nn.Parameter(torch.zeros(c, 1, 1))   # layer scale, zero at init: the branch is hidden
        self.head = nn.Linear(c, num_classes)

    def forward(self, x: Any) -> Any:
        x = F.relu(self.bn(self.stem(x)))
        x = x + self.gamma * F.relu(self.conv(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def tiny_spec(stem_act: str = "relu", branch_act: str = "relu", bn: bool = True, name: str = "tiny") -> str:
    """The spec of :class:`Tiny` (``bn=False`` drops its BatchNorm; the activations can be swapped)."""
    return (f"network {name}(c=8, num_classes=5):\n"
            "    input [3, 16, 16]\n"
            "    stem: conv2d(c, 3, padding=1)\n"
            + ("    bn: batchnorm\n" if bn else "")
            + f"    {stem_act}\n"
            "    add:\n"
            "        seq:\n"
            "            conv: conv2d(c, 3, padding=1)\n"
            f"            {branch_act}\n"
            "            gamma: layer_scale(0.0)\n"
            "        identity\n"
            "    adaptive_avgpool(1)\n"
            "    flatten\n"
            "    head: linear(num_classes)\n")


def x16() -> Any:
    return torch.zeros(1, 3, 16, 16)


def test_roundtrip_of_a_hand_written_spec_is_ok() -> None:
    torch.manual_seed(0)
    r = roundtrip(Tiny(), tiny_spec(), x16())
    assert isinstance(r, RoundTrip)
    assert (r.stage, r.ok, r.error, r.network) == ("outputs", True, None, "tiny")
    assert r.max_diff is not None and r.tolerance is not None and r.max_diff <= r.tolerance
    assert r.tolerance >= 1e-4   # 1e-4 x max(1, max |ref|)
    assert r.randomized == 1     # the zero layer scale (the other parameters are not constant)
    assert list(r.times) == ["randomize", *STAGES] and r.total_time > 0
    assert r.summary().startswith("ok (max diff")


def test_roundtrip_picks_the_named_or_last_network() -> None:
    two = tiny_spec(name="first", stem_act="gelu") + "\n" + tiny_spec(name="second")
    torch.manual_seed(0)
    assert roundtrip(Tiny(), two, x16()).ok              # the last network, 'second', is the right one
    r = roundtrip(Tiny(), two, x16(), name="first")      # its GELU stem is wrong
    assert (r.network, r.stage, r.ok) == ("first", "outputs", False)
    r = roundtrip(Tiny(), two, x16(), name="third")
    assert (r.stage, r.ok) == ("check", False) and "no network 'third'" in (r.error or "")


def test_missing_layer_stops_at_load_naming_the_keys() -> None:
    torch.manual_seed(0)
    r = roundtrip(Tiny(), tiny_spec(bn=False), x16())
    assert (r.stage, r.ok, r.max_diff) == ("load", False, None)
    assert "the spec lacks 5 key(s) of the source model" in (r.error or "")
    for key in ("bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"):
        assert key in (r.error or "")
    assert "outputs" not in r.times   # it stopped there


def test_wrong_activation_stops_at_outputs_with_the_difference() -> None:
    torch.manual_seed(0)
    r = roundtrip(Tiny(), tiny_spec(stem_act="gelu"), x16())
    assert (r.stage, r.ok) == ("outputs", False)
    assert r.max_diff is not None and r.tolerance is not None and r.max_diff > r.tolerance
    assert f"max abs diff {r.max_diff:.3g} > tolerance {r.tolerance:.3g}" in (r.error or "")


def test_a_spec_error_is_reported_located_at_check() -> None:
    bad = tiny_spec().replace("conv: conv2d(c, 3, padding=1)", "conv: conv2d(c, 3, paddin=1)")
    r = roundtrip(Tiny(), bad, x16())
    assert (r.stage, r.ok) == ("check", False)
    err = r.error or ""
    assert "<spec>:8:" in err and "^" in err and "paddin" in err   # file:line:col, the line, a caret


def test_zero_layer_scale_would_hide_a_wrong_branch_without_randomizing() -> None:
    """The branch behind the zero layer scale has the wrong activation (GELU for ReLU): with the model as
    initialized the outputs agree exactly, so only randomizing the constant layer scale exposes it."""
    wrong_branch = tiny_spec(branch_act="gelu")
    torch.manual_seed(0)
    hidden = roundtrip(Tiny(), wrong_branch, x16(), randomize=False)
    assert hidden.ok and hidden.randomized == 0   # the mistake passes unnoticed ...
    torch.manual_seed(0)
    caught = roundtrip(Tiny(), wrong_branch, x16())
    assert (caught.stage, caught.ok, caught.randomized) == ("outputs", False, 1)   # ... and is caught here
    assert caught.max_diff is not None and caught.tolerance is not None
    assert caught.max_diff > 10 * caught.tolerance
    torch.manual_seed(0)
    assert roundtrip(Tiny(), tiny_spec(), x16()).ok   # the right spec still passes with it randomized


def test_randomize_constants_changes_only_constant_or_negligible_parameters() -> None:
    torch.manual_seed(0)
    m = Tiny()
    m.scale = nn.Parameter(torch.full((4,), 2.0))             # a constant >= 0.1: keeps sign and size
    m.token = nn.Parameter(torch.randn(1, 1, 8) * 1e-6)       # normal(std=1e-6): negligible
    m.ln = nn.LayerNorm(8)                                    # weight ones, bias zeros
    before = {k: v.clone() for k, v in m.state_dict().items()}
    changed = randomize_constants(m, seed=3)
    assert sorted(changed) == ["gamma", "ln.bias", "ln.weight", "scale", "token"]
    after = m.state_dict()
    for k in ("stem.weight", "stem.bias", "conv.weight", "head.weight", "head.bias"):
        assert torch.equal(before[k], after[k]), k             # random at init already: left alone
    for k in ("bn.running_mean", "bn.running_var", "bn.weight", "bn.bias", *changed):
        assert not torch.equal(before[k], after[k]), k
        assert after[k].unique().numel() == after[k].numel() > 1, k   # no longer constant
    assert ((after["scale"] >= 1.5) & (after["scale"] <= 2.5)).all()
    assert after["gamma"].abs().max() > 1e-2                    # big enough to matter against 1e-4
    again = Tiny()
    again.load_state_dict(before, strict=False)
    again.scale, again.token, again.ln = (nn.Parameter(before["scale"].clone()),
                                          nn.Parameter(before["token"].clone()), nn.LayerNorm(8))
    randomize_constants(again, seed=3)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in after.items())   # seeded: the same draws


def test_roundtrip_of_a_library_spec_against_its_reference() -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None)
    r = roundtrip(ref, "specs/resnet.arch", torch.zeros(1, 3, 32, 32), name="resnet18")
    assert r.ok, r.error
    assert (r.network, r.stage) == ("resnet18", "outputs")
    r = roundtrip(ref, "specs/resnet.arch", torch.zeros(1, 3, 32, 32), name="resnet34")
    assert r.stage == "load" and "layer1.2.conv1.weight" in (r.error or "")
