"""The compatibility corpus (tests/compat/, docs/compat.md): specs written against earlier versions keep
building, with the same state_dict keys and shapes and the same outputs, at every later commit.

Each corpus network is rebuilt and compared with its entry in tests/compat/manifest.json (recorded when it
entered the corpus; see tests/compat_corpus.py for the fingerprint). The seven specs users wrote from an
earlier version's docs (tests/compat/users/) are also checked against the library they mirror: a strict load
of the reference's state_dict and equal outputs, deploy equal to the train form for the reparameterized nets,
and one training step of the U-Net.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import compat_corpus as C
import pytest
import torch
from helpers import (
    ROOT,
    assert_close,
    assert_close_to_float64,
    assert_deploy_is_exact,
    float64_error,
    make_reference,
    randomize_bn,
)

NETWORKS = C.corpus_networks()
MANIFEST = C.load_manifest()["networks"]

def test_the_corpus_holds_every_shipped_spec_and_never_shrinks() -> None:
    """Every spec file and example has a frozen copy (tests/compat/freeze.py adds new ones), every recorded
    network is still in the corpus, and every corpus network has a recorded entry (scripts/compat_manifest.py
    records new ones)."""
    frozen = {p.relative_to(C.CORPUS).as_posix() for p in C.CORPUS.rglob("*.arch")}
    shipped = {("specs/" + p.relative_to(ROOT / "specs").as_posix()) for p in (ROOT / "specs").rglob("*.arch")}
    shipped |= {f"examples/{p.name}" for p in (ROOT / "examples").glob("*.arch")}
    assert not shipped - frozen, f"not frozen yet (run python tests/compat/freeze.py): {sorted(shipped - frozen)}"
    assert not set(MANIFEST) - set(NETWORKS), f"corpus networks removed: {sorted(set(MANIFEST) - set(NETWORKS))}"
    missing = set(NETWORKS) - set(MANIFEST)
    assert not missing, f"no manifest entry (run python scripts/compat_manifest.py): {sorted(missing)}"
    assert len(NETWORKS) >= 100 and sum(a.startswith("users/") for a in NETWORKS) == 7


@pytest.mark.parametrize("address", NETWORKS)
def test_network_keeps_its_state_dict_and_outputs(address: str) -> None:
    want = MANIFEST[address]
    if C.plugins_of(address):
        # a plugin is a module loaded once per process under its file name (the repository's own copy may
        # already be loaded by the plugin tests): build this network in a process of its own
        r = subprocess.run([sys.executable, str(ROOT / "tests" / "compat_corpus.py"), "compare", address],
                           capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        problems = json.loads(r.stdout)
    else:
        problems = C.compare(address, want)
    assert not problems, f"{address} changed:\n  " + "\n  ".join(problems)


def test_the_fingerprint_sees_a_changed_function_and_a_changed_key(tmp_path: Path) -> None:
    """The comparison is not vacuous: the same network with one activation swapped (same keys) or one
    layer renamed (a checkpoint would no longer load) is reported."""
    base = "network t():\n    input [3, 16, 16]\n    c1: conv2d(8, 3, padding=1)\n    batchnorm\n    {act}\n" \
           "    adaptive_avgpool(1)\n    flatten\n    {fc}: linear(4)\n"
    spec = tmp_path / "t.arch"
    spec.write_text(base.format(act="relu", fc="fc"))
    address = f"{spec}:t"   # an absolute path stays itself under tests/compat
    want = C.fingerprint(address)
    assert C.compare(address, want) == []
    spec.write_text(base.format(act="gelu", fc="fc"))
    assert any("output 0" in p for p in C.compare(address, want))
    spec.write_text(base.format(act="relu", fc="head"))
    problems = C.compare(address, want)
    assert any("state_dict keys/shapes changed" in p for p in problems)


# ---- the seven users' specs against the libraries they mirror ------------------------------------------
USERS = {   # address: (reference, input per sample, also check the deploy form)
    "users/regnetx.arch:regnet_x_400mf": ("torchvision.regnet_x_400mf", (3, 160, 160), False),
    "users/efficientnet_v2.arch:efficientnet_v2_s": ("torchvision.efficientnet_v2_s", (3, 128, 128), False),
    "users/cspdarknet.arch:cspdarknet53": ("timm.cspdarknet53", (3, 128, 128), False),
    "users/mobileone.arch:mobileone_s0": ("timm.mobileone_s0", (3, 128, 128), True),
    "users/repvit.arch:repvit_m0_9": ("timm.repvit_m0_9", (3, 224, 224), True),
    "users/fastvit.arch:fastvit_t8": ("timm.fastvit_t8", (3, 256, 256), True),
}


def randomize_constants(model: Any, seed: int = 1) -> None:
    """Give every parameter that starts as a constant (layer scales at 1e-5, zero biases, unit norm weights)
    random values in [0.5, 1), so no term of the function hides behind its initial value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            if p.numel() > 1 and bool((p == p.flatten()[0]).all()):
                p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.5)


@pytest.mark.parametrize("address", list(USERS))
def test_users_spec_loads_the_reference_strictly_and_matches(address: str) -> None:
    ref_name, shape, deploy = USERS[address]
    ref = make_reference(ref_name)
    randomize_constants(ref)
    randomize_bn(ref, seed=4)
    ref.eval()
    ours = C.build(address).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(3))
    want, fp32_error = float64_error(ref, x)
    with torch.no_grad():
        assert_close(ours(x), want)
    if deploy:
        import archdsl
        dep = archdsl.deploy(ours, memory_format="contiguous")
        assert dep.deploy_info["fused_groups"] == len(ours.arch_graph.reparam_groups) > 0
        weight_error = assert_deploy_is_exact(ours, dep, x)
        with torch.no_grad():
            assert_close_to_float64(dep(x), want, max(fp32_error, weight_error))


def test_users_unet_trains_one_step() -> None:
    model = C.build("users/unet.arch:unet").train()
    C.fill_deterministic(model)   # C.build skips torch's initializers
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 3, 128, 128, generator=g)
    target = torch.randint(0, 2, (2, 128, 128), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.0)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    out = model(x)
    assert tuple(out.shape) == (2, 2, 128, 128)
    loss = torch.nn.functional.cross_entropy(out, target)
    opt.zero_grad()
    loss.backward()
    trained = {k for k, p in model.named_parameters() if p.grad is not None}
    assert len(trained) > 0.9 * len(before)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    opt.step()
    changed = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    assert changed == trained
    with torch.no_grad():
        assert torch.nn.functional.cross_entropy(model(x), target).item() < loss.item()
