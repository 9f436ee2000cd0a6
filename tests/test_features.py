"""Feature taps (archdsl.passes.features): stage outputs derived from the IR for every spec, and the
tapped tensors equal torchvision's intermediate layers with identical weights."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest

import archdsl
from archdsl.errors import ArchError
from archdsl.passes.features import feature_taps, receptive_fields, stage_taps, trunk
from archdsl.pipeline import list_networks

from helpers import ROOT, make_reference, randomize_bn


def _ancestors(g: archdsl.Graph, nids: list[int]) -> set[int]:
    seen: set[int] = set()
    stack = list(nids)
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(g.node(n).inputs)
    return seen


def test_every_spec_has_stage_taps_matching_its_feature_info() -> None:
    """For each network `archc list specs` knows, at its default input: the taps graph's outputs are the
    feature_info entries (same order, channels, a stride that matches the map size), strides grow, the
    head is gone, and nothing after the last tap is kept."""
    nets = list_networks("specs")
    assert len(nets) >= 60
    problems = []
    for net in nets:
        g = archdsl.graph(net["spec"])
        if any(n.op == "parameter" and len(n.shape) == 2 for n in g.records()):
            # a token model (ViT/DeiT: a [1, D] class token): no [C, H, W] stages of growing stride; timm's
            # per-block feature_info for ViTs is not derived by feature_taps yet (issue 15)
            continue
        taps, info = feature_taps(g)
        h_in = g.input_shape[-2]   # H of [C, H, W] and of a video clip [C, T, H, W]
        shapes = list(taps.output_shapes.items())
        try:
            assert len(info) >= 3, f"only {len(info)} levels"
            assert [name for name, _ in shapes] == [i["module"] for i in info]
            reds = [i["reduction"] for i in info]
            assert reds == sorted(set(reds)), f"strides not increasing: {reds}"
            for (name, shape), i in zip(shapes, info):
                assert len(shape) == len(g.input_shape) and shape[0] == i["num_chs"], (name, shape, i)
                assert math.log2(i["reduction"]).is_integer(), i
                # the map is the input divided by the stride, less what valid (unpadded) windows trim
                assert h_in / i["reduction"] / 2 < shape[-2] <= math.ceil(h_in / i["reduction"]), (name, shape, i)
            kept = {n.id for n in taps.records()}
            assert kept == _ancestors(g, [nid for _, nid in taps.outputs])
            assert len(kept) < len(g) or len(g.outputs) > 1
            if list(g.output_shapes.values())[0] != list(taps.output_shapes.values())[-1]:
                assert not any(nid in kept for _, nid in g.outputs if len(g.node(nid).shape) == 1), "head kept"
        except AssertionError as e:
            problems.append(f"{net['spec']}: {e}")
    assert not problems, "\n".join(problems)


def test_stage_taps_are_the_reference_stage_outputs() -> None:
    """The derived taps name the stage outputs a reader expects (timm's feature_info modules)."""
    def mods(spec: str) -> list[tuple[str, int, int]]:
        return [(t["module"], t["num_chs"], t["reduction"]) for t in stage_taps(archdsl.graph(spec))]

    assert mods("specs/resnet.arch:resnet50")[1:] == [("layer1", 256, 4), ("layer2", 512, 8),
                                                      ("layer3", 1024, 16), ("layer4", 2048, 32)]
    assert [m for m, _, _ in mods("specs/inception.arch:inception_v3")] == [
        "Conv2d_2b_3x3", "Conv2d_4a_3x3", "Mixed_5d", "Mixed_6e", "Mixed_7c"]
    # an inverted-residual net taps the stage outputs, not the expansion conv before a stride-2 block
    assert [c for _, c, _ in mods("specs/efficientnet.arch:efficientnet_b0")] == [16, 24, 40, 112, 1280]
    assert [m for m, _, _ in mods("specs/convnext.arch:convnext_tiny")] == [
        "features.1", "features.3", "features.5", "features"]


def test_trunk_skips_branches() -> None:
    g = archdsl.graph("specs/googlenet.arch:googlenet")
    names = [g.node(n).name for n in trunk(g)]
    assert "inception3a.concat" in names and not any(".branch" in n for n in names)


def test_out_indices_and_labels_select_taps() -> None:
    g = archdsl.graph("specs/resnet.arch:resnet18")
    taps, info = feature_taps(g, out_indices=(1, -1))
    assert [i["module"] for i in info] == ["layer1", "layer4"]
    assert taps.output_shapes == {"layer1": (64, 56, 56), "layer4": (512, 7, 7)}
    taps, info = feature_taps(g, labels=["layer3", "layer4.1.bn2"])
    assert info == [{"num_chs": 256, "reduction": 16, "module": "layer3"},
                    {"num_chs": 512, "reduction": 32, "module": "layer4.1.bn2"}]
    bb = archdsl.graph("specs/resnet.arch:resnet50_backbone")
    taps, info = feature_taps(bb, labels=["c3"])
    assert taps.output_shapes == {"c3": (512, 28, 28)}


def test_bad_selections_are_clean_errors() -> None:
    g = archdsl.graph("specs/resnet.arch:resnet18")
    with pytest.raises(ArchError, match="out_indices: 7 is not an index of the 5 feature levels") as e:
        feature_taps(g, out_indices=[7])
    assert "4: layer4 (stride 32)" in e.value.format()
    with pytest.raises(ArchError, match="no node or block named 'layr4'") as e:
        feature_taps(g, labels=["layr4"])
    assert "did you mean 'layer4'" in e.value.format()
    with pytest.raises(ArchError, match="not both"):
        feature_taps(g, out_indices=[1], labels=["layer1"])


def test_receptive_field_composes_kernel_stride_dilation() -> None:
    spec = ("network n():\n    input [1, 64, 64]\n    conv2d(4, 3, padding=1)\n"
            "    conv2d(4, 3, stride=2, padding=1)\n    conv2d(4, 3, dilation=2, padding=2)\n"
            "    maxpool(2)\n    conv2d(4, [1, 5], padding=[0, 2])\n")
    g = archdsl.graph(spec)
    geo = receptive_fields(g)
    rfs = [geo[n.id].rf for n in g.nodes()]
    # 1 -> 3 -> 5 (then jump 2) -> 5 + 4*2 = 13 -> 13 + 1*2 = 15 (jump 4) -> width 15 + 4*4 = 31
    assert rfs == [(1, 1), (3, 3), (5, 5), (13, 13), (15, 15), (15, 31)]


def test_taps_pass_is_torch_free() -> None:
    code = ("import sys, archdsl\nfrom archdsl.passes.features import feature_taps\n"
            "g = archdsl.graph('specs/resnet.arch:resnet50'); t, info = feature_taps(g)\n"
            "assert len(info) == 5 and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)\n"
            "print('ok')")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "ok", r.stderr[-2000:]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_taps_equal_torchvision_intermediate_layers(name: str) -> None:
    """layer1..layer4 of the taps graph, loaded strictly with torchvision's weights (head keys dropped),
    equal torchvision's IntermediateLayerGetter outputs."""
    import torch
    from torchvision.models._utils import IntermediateLayerGetter

    from archdsl.codegen.build import instantiate

    taps, info = feature_taps(archdsl.graph(f"specs/resnet.arch:{name}"), out_indices=[1, 2, 3, 4])
    ours = instantiate(taps).eval()
    ref = make_reference(f"torchvision.{name}").eval()
    randomize_bn(ref)
    sd = {k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    ours.load_state_dict(sd, strict=True)
    getter = IntermediateLayerGetter(ref, {f"layer{i}": f"layer{i}" for i in range(1, 5)}).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ours(x), getter(x)
    assert list(a) == [i["module"] for i in info] == list(b)
    for k in b:
        assert a[k].shape == b[k].shape and a[k].shape[1] == info[list(b).index(k)]["num_chs"]
        diff = (a[k] - b[k]).abs().max().item()
        assert diff <= 1e-4 * max(1.0, b[k].abs().max().item()), f"{k}: max abs diff {diff:.3g}"


def test_a_permuted_parameter_of_another_rank_than_the_input_has_a_field() -> None:
    # NaFlexViT's position embedding: a [1, H, W, C] parameter (it takes the input's geometry) permuted to
    # [1, C, H, W]; the analysis lost its layout (4 dims against the input's 3) and must not index past it
    src = ("network n:\n    input [4, 3, 3]\n    w = parameter([1, 3, 3, 4], batch_dim=false)\n"
           "    t = w -> permute([0, 1, 4, 2, 3]) -> reshape([4, 3, 3])\n    add(x, t)\n")
    g = archdsl.graph(src)
    geo = receptive_fields(g)
    perm = next(n for n in g.nodes() if n.op == "permute")
    assert geo[perm.id].axes == ("?", "?", "?", "?")
    archdsl.build(src)   # its head analysis runs the same pass
