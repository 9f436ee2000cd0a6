"""FastViT-SA12 against timm, in train and deploy form, and the signed sums inside reparam groups it needs.

`specs/fastvit.arch:fastvit_sa12` loads timm's state_dict strictly and computes the same eval function, with
BatchNorm statistics *and* every layer scale randomized (timm initialises them to 1e-5, which would hide
the RepMixer's mixer/norm difference and the residual branches). Its deploy form (`fold_bn=False`: timm
keeps the BatchNorms outside the re-parameterized modules) has exactly the keys and shapes of timm's
`reparameterize_model` and loads that state_dict strictly; `archc deploy --keep-bn --weights` converts a
checkpoint. The RepMixer group `x + layer_scale * (mixer(x) - norm(x))` is a signed sum of linear maps:
random groups with `a - b` and scales after it fuse exactly, and what cannot fuse is refused with its reason.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import archdsl
from archdsl.passes.deploy import deploy_graph
from helpers import assert_close, assert_group_fuses_to_one_conv, randomize_bn, run_archc

timm = pytest.importorskip("timm")
from timm.utils import reparameterize_model  # noqa: E402

SPEC = "specs/fastvit.arch:fastvit_sa12"
SIDE = 64   # FastViT runs at any multiple of 32; the weights do not depend on the input size


def _randomize_layer_scales(model: Any, seed: int) -> int:
    """Random per-channel layer scales (timm's `gamma`, (C, 1, 1)); returns how many were set."""
    g = torch.Generator().manual_seed(seed)
    n = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
                n += 1
    return n


def _pair(num_classes: int = 10) -> tuple[Any, Any]:
    ref = timm.create_model("fastvit_sa12", pretrained=False, num_classes=num_classes)
    randomize_bn(ref, seed=5)
    assert _randomize_layer_scales(ref, seed=6) == 2 * 10 + 2 * 2   # RepMixer blocks: 2 each; attention: 2 each
    ref.eval()
    ours = archdsl.build(SPEC, input_shape=(3, SIDE, SIDE), num_classes=num_classes)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    return ours, ref


def _shapes(sd: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items()}


def test_params_equal_timm() -> None:
    g = archdsl.graph(SPEC)
    ref = timm.create_model("fastvit_sa12", pretrained=False)
    assert g.total_params == sum(p.numel() for p in ref.parameters()) == 11_580_968
    assert g.input_shape == tuple(ref.default_cfg["input_size"])


def _fvcore_macs(model: Any) -> int:
    """fvcore's conv/linear/matmul count at SIDE x SIDE, timm's attention unfused (fvcore counts no fused kernel)."""
    fvcore_nn = pytest.importorskip("fvcore.nn")
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    fca = fvcore_nn.FlopCountAnalysis(model.eval(), torch.randn(1, 3, SIDE, SIDE))
    fca.unsupported_ops_warnings(False)
    fca.uncalled_modules_warnings(False)
    return sum(v for k, v in fca.by_operator().items() if k in ("conv", "linear", "addmm", "matmul", "bmm"))


def test_macs_of_both_forms_match_fvcore() -> None:
    ref = timm.create_model("fastvit_sa12", pretrained=False, num_classes=10)
    g = archdsl.graph(SPEC, input_shape=(3, SIDE, SIDE), num_classes=10)
    assert g.total_macs == _fvcore_macs(ref) == 121_073_664
    # deploy form: every group is one conv (as big as its largest branch), the BatchNorms stay (timm's form)
    assert deploy_graph(g, fold_bn=False).total_macs == _fvcore_macs(reparameterize_model(ref))


def test_train_form_loads_strictly_and_matches() -> None:
    ours, ref = _pair()
    assert _shapes(ours.state_dict()) == _shapes(ref.state_dict())
    x = torch.randn(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert_close(ours(x), ref(x))


def test_deploy_matches_train_form_and_timm_reparameterize() -> None:
    ours, ref = _pair()
    x = torch.randn(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = ref(x)
    g = archdsl.graph(SPEC)
    # stem 3 + patch embeddings 3 x 2 + RepMixers 10 + positional encoding 1 + final conv 1
    assert len(g.reparam_groups) == 21
    dep = archdsl.deploy(ours, fold_bn=False, memory_format="contiguous")
    assert dep.deploy_info["fused_groups"] == 21
    tdep = reparameterize_model(ref)
    assert _shapes(dep.state_dict()) == _shapes(tdep.state_dict())
    with torch.no_grad():
        assert_close(dep(x), want)
        assert_close(tdep(x), want)
        dep.load_state_dict(tdep.state_dict(), strict=True)   # timm's fused weights run in our deploy form
        assert_close(dep(x), want)
    folded = archdsl.deploy(ours, memory_format="contiguous")   # BatchNorms folded too: the same function
    with torch.no_grad():
        assert_close(folded(x), want)


def test_cli_deploy_converts_a_trained_fastvit_checkpoint(tmp_path: Path) -> None:
    ours, ref = _pair()
    torch.save(ref.state_dict(), tmp_path / "train.pt")
    r = run_archc("deploy", SPEC, "--set", "num_classes=10", "--keep-bn", "--weights", str(tmp_path / "train.pt"),
                  "-o", str(tmp_path / "deploy.pt"))
    assert r.returncode == 0, r.stderr
    got = torch.load(tmp_path / "deploy.pt", weights_only=True)
    tdep = reparameterize_model(ref)
    assert _shapes(got) == _shapes(tdep.state_dict())
    tdep.load_state_dict(got, strict=True)   # our converted checkpoint runs in timm's inference form
    x = torch.randn(1, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert_close(tdep(x), ours(x))


# ------------------------------------------------------------------ signed sums inside reparam groups
@st.composite
def signed_groups(draw: Any) -> str:
    """A random group `identity + scales * (a - b)` whose a and b are themselves sums of conv/BN branches."""
    c = draw(st.sampled_from([4, 6]))
    G = draw(st.sampled_from([1, c]))

    def operand(name: str) -> str:
        lines = []
        for k in draw(st.lists(st.sampled_from([1, 3, 5]), min_size=0, max_size=2)):
            post = draw(st.sampled_from(["", ", batchnorm", ", layer_scale(init=0.3)"]))
            lines.append(f"[conv2d({c}, {k}, padding={k // 2}, groups={G}, bias=false){post}]")
        lines.append(draw(st.sampled_from(["batchnorm", "identity", "scale(0.5)", "[batchnorm, layer_scale]"])))
        body = "\n".join("        " + line for line in lines)
        return f"block {name}:\n    add:\n{body}\n"

    after = draw(st.sampled_from(["", " -> layer_scale", " -> scale(-2.0)", " -> layer_scale -> scale(0.5)"]))
    first, second = draw(st.sampled_from([("m", "n"), ("n", "m")]))
    outer = draw(st.sampled_from(["        identity\n", "", f"        conv2d({c}, 3, padding=1, groups={G})\n"]))
    return (operand("A") + operand("B") +
            f"network t():\n    input [{c}, 9, 9]\n    g: reparam add:\n{outer}        seq:\n"
            f"            m = x -> a: A\n            n = x -> b: B\n            {first} - {second}{after}\n    relu\n")


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(signed_groups())
def test_differences_and_scales_fuse_into_the_group(text: str) -> None:
    assert_group_fuses_to_one_conv(text)


def test_a_difference_is_not_a_sum() -> None:
    """`a - b` and `b - a` fuse to opposite kernels: the sign is not lost (a zero result would pass a sum)."""
    body = ("network t():\n    input [4, 7, 7]\n    g: reparam add:\n        seq:\n"
            "            m = x -> c: conv2d(4, 3, padding=1, bias=false)\n            n = x -> b: batchnorm\n"
            "            {} - {}\n")
    outs = []
    for order in (("m", "n"), ("n", "m")):
        model = archdsl.build(body.format(*order))
        torch.manual_seed(0)
        model.load_state_dict({k: (torch.rand(v.shape) + 0.5 if k.endswith("running_var") else torch.randn(v.shape))
                               if v.is_floating_point() else v for k, v in model.state_dict().items()})
        model.eval()
        dep = archdsl.deploy(model, memory_format="contiguous")
        outs.append(dep.state_dict()["g.reparam_conv.weight"])
    assert outs[0].abs().max() > 0.1
    torch.testing.assert_close(outs[0], -outs[1])


REFUSED = {
    # the statement after the two operands, the reason the refusal must name
    "m - n -> batchnorm": "applies batchnorm at g.3 after the sub at g.sub, which adds a shift",
    "m - n -> conv2d(8, 1)": "applies conv2d at g.3 after the sub at g.sub, which is not a per-channel scale",
    "m - n -> avgpool(3, 1, 1)": "applies avgpool at g.3 after the sub at g.sub, which is not a per-channel scale",
    "m - n -> gelu": "applies gelu at g.3, which is not linear",
    "m * n": "combines several tensors at g.mul (mul), which is not linear",
    "concat(m, n, dim=1) -> conv2d(8, 1)": "combines several tensors at g.concat (concat), which one conv cannot do",
}


@pytest.mark.parametrize("stmt,reason", sorted(REFUSED.items()))
def test_refusals_name_the_real_reason(stmt: str, reason: str) -> None:
    text = ("network t():\n    input [8, 9, 9]\n    g: reparam add:\n        identity\n        seq:\n"
            "            m = x -> conv2d(8, 3, padding=1)\n            n = x -> batchnorm\n"
            f"            {stmt}\n    relu\n")
    with pytest.raises(archdsl.ArchError) as e:
        archdsl.graph(text)
    msgs = [d.message for d in e.value.diagnostics if "cannot be fused" in d.message]
    assert msgs and reason in msgs[0], str(e.value)


def test_an_operand_read_twice_is_refused_with_where() -> None:
    """A term's value feeds one sum: `(m - n) + n` reads n twice inside the group; `n -> relu` after the group
    reads it outside."""
    head = ("network t():\n    input [8, 9, 9]\n    g: reparam add:\n        identity\n        seq:\n"
            "            m = x -> conv2d(8, 3, padding=1)\n            n = x -> batchnorm\n")
    for tail, where in (("            d = m - n\n            d + n\n", "outside its branch"),
                        ("            m - n\n    relu\n    n -> relu\n", "outside the group")):
        with pytest.raises(archdsl.ArchError) as e:
            archdsl.graph(head + tail)
        assert f"the output of branch 2 (g.2 (batchnorm)) is also used {where}" in str(e.value), str(e.value)
