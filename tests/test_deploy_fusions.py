"""The deploy form's element-wise fusions: ``fold_scales`` (layer_scale / scale into the conv or linear they
scale) and ``fuse_mul_add`` (a product read only by a sum -> ``torch.addcmul``), and the ``addcmul`` op itself
(written in a spec, read by the importer)."""
from __future__ import annotations

from typing import Any

import pytest
import torch

import archdsl
from archdsl.passes.deploy import deploy_plan
from helpers import randomize_bn

SCALES = '''
block LS(dim):
    add:
        seq:
            conv2d(dim, 3, padding=1)
            permute([0, 2, 3, 1])
            linear(dim)
            permute([0, 3, 1, 2])
            ls: layer_scale(1e-6)
        identity

network scales():
    input [8, 6, 6]
    a: LS(8)
    b: LS(8)
    c: conv2d(8, 1)
    scale(0.17)
    relu
    y = x -> d: conv2d(8, 1)
    s = y -> shared: layer_scale(0.5)
    t = s + y
    t -> e: conv2d(6, 1) -> last: layer_scale(0.5, dim=-1)
'''

MUL_ADD = '''
network muladd():
    input [8, 6, 6]
    g = x -> adaptive_avgpool(1) -> conv2d(8, 1) -> sigmoid
    y = x -> conv2d(8, 3, padding=1)
    s = y * g + x
    w = parameter([8, 1, 1], init="ones", batch_dim=false)
    t = w * s + x + y
    u = s * t
    v = u + u
    p = t * v
    q = v -> relu
    r = p + q + y
    r -> first: Gated(8) -> later: Gated(8, late=true)

# a sum of three branches, the first a product: `x * gate + x + conv(x)`; with late=true the second term is
# computed after the product (a node order with no place for addcmul(t, a, b) there)
block Gated(c, late=false):
    add:
        mul:
            identity
            [adaptive_avgpool(1), conv2d(c, 1), sigmoid]
        if late:
            conv2d(c, 1)
            identity
        else:
            identity
            conv2d(c, 1)
'''


def _randomized(spec: str) -> Any:
    """The model with BatchNorm statistics and every 1-element-per-channel parameter away from its init (a
    layer scale at 1e-6 or a gain at 1 would hide a wrong fold)."""
    model = archdsl.build(spec)
    randomize_bn(model, seed=1)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() == p.shape[0] or p.dim() <= 1:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
    return model.eval()


def _same(model: Any, dep: Any, shape: tuple[int, ...]) -> None:
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a, b = model(x), dep(x)
    assert (a - b).abs().max().item() <= 1e-5 * max(1.0, a.abs().max().item())


def test_layer_scales_and_scales_fold_into_the_layer_before_them() -> None:
    plan = deploy_plan(archdsl.graph(SCALES))
    # a.ls and b.ls (through the permute, onto the linear's features) and scale(0.17) onto conv c; `shared`
    # reads d's output, which the sum reads too, and `last` scales the width, not e's channels
    assert plan.folded_scales == 3
    model = _randomized(SCALES)
    dep = archdsl.deploy(model, memory_format="contiguous")
    _same(model, dep, (8, 6, 6))
    keys = set(dep.state_dict())
    assert not {"a.ls", "b.ls"} & keys
    assert {"shared", "last"} <= keys
    assert dep.deploy_info["folded_scales"] == 3
    src = dep.__archdsl_source__
    assert "0.17" not in src                                    # the scale is in conv c's weights now


def test_keep_bn_folds_no_scale() -> None:
    model = _randomized(SCALES)
    dep = archdsl.deploy(model, fold_bn=False, memory_format="contiguous")
    _same(model, dep, (8, 6, 6))
    assert {"a.ls", "b.ls"} <= set(dep.state_dict())
    assert dep.deploy_info["folded_scales"] == 0 and dep.deploy_info["fused_mul_add"] == 0


def test_a_product_read_only_by_a_sum_becomes_addcmul() -> None:
    plan = deploy_plan(archdsl.graph(MUL_ADD))
    ops = [n.op for n in plan.graph.records()]
    # y * g + x, w * s + x (sums are nested pairs) and p + q; `first`'s sum of three; u + u reads u twice and
    # `later`'s second term is computed after its product: those stay a product and a sum
    assert plan.fused_mul_add == 4
    assert ops.count("addcmul") == 4 and ops.count("mul") == 2
    model = _randomized(MUL_ADD)
    dep = archdsl.deploy(model, memory_format="contiguous")
    _same(model, dep, (8, 6, 6))
    assert dep.deploy_info["fused_mul_add"] == 4


@pytest.mark.parametrize("address", ["specs/convnext_v2.arch:convnextv2_atto", "specs/senet.arch:seresnet50",
                                     "specs/convnext.arch:convnext_tiny", "specs/fastvit.arch:fastvit_sa12"])
def test_library_networks_take_the_fusions(address: str) -> None:
    """GRN and squeeze-excitation gates become addcmul; ConvNeXt's layer scales fold (torch-free check; the
    outputs of every library network's deploy form are checked in test_deploy.py)."""
    plan = deploy_plan(archdsl.graph(address))
    blocks = {"convnextv2_atto": (0, 12), "seresnet50": (0, 16), "convnext_tiny": (18, 0), "fastvit_sa12": (12, 0)}
    assert (plan.folded_scales, plan.fused_mul_add) == blocks[address.rpartition(":")[2]]


def test_addcmul_in_a_spec() -> None:
    spec = '''
network n():
    input [4, 5]
    w = parameter([5], init="ones", batch_dim=false)
    y = x -> relu
    addcmul(y, w, x)
'''
    model = archdsl.build(spec).eval()
    x = torch.randn(3, 4, 5)
    with torch.no_grad():
        w = model.state_dict()["w"]
        torch.testing.assert_close(model(x), torch.relu(x) + w * x)
    with pytest.raises(archdsl.ArchError, match="addcmul takes 3 tensors"):
        archdsl.graph(spec.replace("addcmul(y, w, x)", "addcmul(y, x)"))


class _GRN(torch.nn.Module):
    """timm's GlobalResponseNorm, channels-last: x + addcmul(bias, weight, x * nx)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.rand(c) + 0.5)
        self.bias = torch.nn.Parameter(torch.rand(c))
        self.fc = torch.nn.Linear(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc(x)
        gx = x.norm(p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return x + torch.addcmul(self.bias, self.weight, x * nx)


def test_importer_reads_torch_addcmul() -> None:
    text = archdsl.import_module(_GRN(6).eval(), (5, 5, 6))   # the round trip (strict load, equal outputs) runs
    assert "addcmul(" in text


# ---- fuse_linear_pointwise: linear + activation, linear + residual sum ----------------------------------
LINEARS = '''
network linears():
    input [5, 8]
    a = x -> fc1: linear(16) -> gelu -> dropout(0.1) -> fc2: linear(8)
    b = a + x
    c = b -> fc3: linear(16) -> gelu(approximate="tanh") -> fc4: linear(8) -> relu
    d = c -> fc5: linear(8) -> silu
    e = d -> fc6: linear(8) -> sigmoid
    f = e -> fc7: linear(8)
    g = f + f
    h = g -> fc8: linear(8)
    k = h -> fc9: linear(8)
    m = k + h -> relu
    s = m -> fc10: linear(1)
    t = s + m
    late = m -> fc11: linear(8)
    v = m -> fc12: linear(8, bias=false)
    u = late + v + t
    u -> head: linear(3)
'''


def _fused_kernel_calls(model: Any, x: torch.Tensor) -> int:
    """How many times one forward runs oneDNN's fused inner product (torch.profiler's op names)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model(x)
    return sum(e.count for e in prof.key_averages() if e.key.startswith("mkldnn::_linear_pointwise"))


def test_a_linear_read_only_by_an_activation_or_a_sum_runs_as_one_kernel() -> None:
    plan = deploy_plan(archdsl.graph(LINEARS))
    fused = {n.module: (n.op, n.args.get("act"), n.args.get("approximate")) for n in plan.graph.records()
             if n.op in ("linear_act", "linear_add")}
    # fc1 + gelu, fc3 + gelu(tanh), fc4 + relu, fc5 + silu; fc2 + x (through the dropout), fc9 + h (h also feeds
    # fc9: it is both inputs), fc12 + late (late is computed first). Not: fc6 (sigmoid), fc7 (read twice),
    # fc8 (read by fc9 and the sum), fc10 (its [5, 1] broadcasts in the sum), fc11 (fc12 comes after it), head
    # (the output), and the three-term sum's second addition (its other term is a sum, not a linear)
    assert fused == {"fc1": ("linear_act", "gelu", "none"), "fc3": ("linear_act", "gelu", "tanh"),
                     "fc4": ("linear_act", "relu", "none"), "fc5": ("linear_act", "silu", "none"),
                     "fc2": ("linear_add", None, None), "fc9": ("linear_add", None, None),
                     "fc12": ("linear_add", None, None)}
    assert (plan.fused_linear_act, plan.fused_linear_add) == (4, 3)
    model = _randomized(LINEARS)
    dep = archdsl.deploy(model, memory_format="contiguous")
    assert (dep.deploy_info["fused_linear_act"], dep.deploy_info["fused_linear_add"]) == (4, 3)
    assert set(dep.state_dict()) == set(model.state_dict())           # the same nn.Linear modules and keys
    assert isinstance(dep.fc1, torch.nn.Linear)
    x = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        torch.testing.assert_close(dep(x), model(x), rtol=1e-5, atol=1e-5)
        assert _fused_kernel_calls(dep, x) == 7
    bf = archdsl.deploy(model, memory_format="contiguous", dtype=torch.bfloat16)
    with torch.inference_mode():
        torch.testing.assert_close(bf(x.bfloat16()).float(), model(x), rtol=0.05, atol=0.05)
    assert archdsl.deploy(model, fold_bn=False).deploy_info["fused_linear_act"] == 0


def test_the_fused_linear_keeps_autograd_tracing_and_export_on_the_plain_ops() -> None:
    """The fused kernel has no backward: with gradients the deploy form runs F.linear and the activation or sum
    (the same gradients as the train form); fx, TorchScript and torch.export see only portable ops."""
    model = _randomized(LINEARS)
    dep = archdsl.deploy(model, memory_format="contiguous")
    x = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(5))
    assert _fused_kernel_calls(dep, x) == 0                             # parameters require grad here
    model(x).square().sum().backward()
    dep(x).square().sum().backward()
    for name, p in dep.named_parameters():
        torch.testing.assert_close(p.grad, model.get_parameter(name).grad, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        want = model(x)
        traced = torch.fx.symbolic_trace(dep)
        assert not any("mkldnn" in str(n.target) for n in traced.graph.nodes)
        torch.testing.assert_close(traced(x), want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(torch.jit.script(dep)(x), want, rtol=1e-5, atol=1e-5)
    exported = torch.export.export(dep.eval(), (x,))
    assert not any("mkldnn" in str(n.target) for n in exported.graph.nodes)
    torch.testing.assert_close(exported.module()(x), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("address, counts", [("specs/vit.arch:vit_small_patch16_224", (12, 24)),
                                             ("specs/swin.arch:swin_t", (12, 12)),
                                             ("specs/convnext.arch:convnext_tiny", (18, 0)),
                                             ("specs/vgg.arch:vgg16", (2, 0))])
def test_library_networks_fuse_their_mlps(address: str, counts: tuple[int, int]) -> None:
    """ViT: fc1 + GELU, proj and fc2 + residual per block; Swin: the MLP's fc1 + GELU and fc2 + residual (its
    proj feeds the window reverse); ConvNeXt: pwconv1 + GELU (pwconv2's output is permuted before the sum);
    VGG: the classifier's two linear + ReLU (torch-free)."""
    plan = deploy_plan(archdsl.graph(address))
    assert (plan.fused_linear_act, plan.fused_linear_add) == counts
