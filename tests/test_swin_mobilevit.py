"""MobileViT and Swin against their references: specs/mobilevit.arch (timm) and specs/swin.arch (torchvision).

For every network: the reference's state_dict (BatchNorm statistics and every LayerNorm affine randomized
first, so no branch hides behind a constant init) loads with ``strict=True``, eval outputs are equal (max abs
diff <= 1e-4 x max(1, max |reference|)), the summary's parameters equal the reference's, and the MACs equal
fvcore's conv/linear/matmul count (tests/data/reference-counts.json, re-measured live here; timm's attention
is counted unfused, see tests/data/README.md).
"""
from __future__ import annotations

from typing import Any

import pytest
from helpers import assert_same_outputs, randomize_bn, reference_counts

import archdsl

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

MOBILEVIT = "specs/mobilevit.arch:mobilevit_s"
SWIN = "specs/swin.arch:swin_t"
_FVCORE_OPS = ("conv", "linear", "addmm", "matmul", "bmm", "einsum")


def _randomize(model: Any, seed: int) -> Any:
    """BatchNorm statistics and affines random, LayerNorm weights/biases away from their 1/0 init."""
    randomize_bn(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


def _ours(address: str, state: dict[str, Any], **kwargs: Any) -> Any:
    """Build on the meta device (no init cost) and adopt ``state`` strictly."""
    with torch.device("meta"):
        model = archdsl.build(address, **kwargs)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def _fvcore_macs(model: Any, shape: tuple[int, ...]) -> int:
    fvcore_nn = pytest.importorskip("fvcore.nn")
    for m in model.modules():          # timm's attention as matmuls: fvcore counts fused SDPA as 0
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    fca = fvcore_nn.FlopCountAnalysis(model.eval(), torch.randn(1, *shape))
    fca.unsupported_ops_warnings(False)
    fca.uncalled_modules_warnings(False)
    return sum(v for k, v in fca.by_operator().items() if k in _FVCORE_OPS)


def _shapes(sd: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items()}


# ---- MobileViT-S (timm) -------------------------------------------------------------------------------------
def test_mobilevit_s_weight_exact_against_timm() -> None:
    ref = _randomize(timm.create_model("mobilevit_s", pretrained=False), seed=0)
    state = ref.state_dict()
    ours = _ours(MOBILEVIT, state)
    assert _shapes(ours.state_dict()) == _shapes(state)
    assert list(ours.state_dict()) == list(state)             # same keys in timm's order
    assert_same_outputs(ours, ref, (3, 256, 256), batch=2)

    g = ours.arch_graph
    counts = reference_counts()["timm.mobilevit_s"]
    assert g.total_params == sum(p.numel() for p in ref.parameters()) == counts["params"]
    assert [1, *g.input_shape] == counts["input"]
    assert [1, *g.output_shapes["out"]] == counts["output"]
    assert g.total_macs == counts["macs"] == _fvcore_macs(ref, (3, 256, 256))


def test_mobilevit_s_built_once_runs_at_other_sizes_like_timm() -> None:
    # the unfold/fold reshapes read their sizes at run time (in.h // patch): one model built at 256 runs at
    # every size its contract names (multiples of 64), equal to timm, and refuses the others with the contract
    ref = _randomize(timm.create_model("mobilevit_s", pretrained=False), seed=4)
    ours = _ours(MOBILEVIT, ref.state_dict())
    assert ours.input_sizes == "[3, H, W] with H and W multiples of 64"
    for size in [(320, 192), (128, 128)]:
        assert_same_outputs(ours, ref, (3, *size), seed=5)
    with pytest.raises(ValueError, match="multiples of 64"):
        ours(torch.randn(1, 3, 224, 224))


def test_mobilevit_s_at_224_resizes_the_odd_last_stage_like_timm() -> None:
    # at 224 the last MobileViT block sees 7x7: timm resizes it to 8x8 (bilinear) to unfold 2x2 patches and
    # back to 7x7 after folding; the spec does the same, so outputs and fvcore's count (resize uncounted) agree
    ref = _randomize(timm.create_model("mobilevit_s", pretrained=False), seed=2)
    ours = _ours(MOBILEVIT, ref.state_dict(), input_shape=(3, 224, 224))
    assert any(n.op == "upsample" for n in ours.arch_graph.nodes())
    assert_same_outputs(ours, ref, (3, 224, 224), seed=3)
    assert ours.arch_graph.total_macs == _fvcore_macs(ref, (3, 224, 224))


def test_mobilevit_tokens_are_patch_positions_by_patches() -> None:
    # timm folds the 4 pixel positions of a 2x2 patch into the batch ([B*4, N, C]); per sample that is
    # [4, N, C]: at 256 stage 2's map is 32 x 32, i.e. 16 x 16 = 256 patches of width 144
    g = archdsl.graph(MOBILEVIT)
    qkv = next(n for n in g.nodes() if n.module == "stages.2.1.transformer.0.attn.qkv")
    assert tuple(qkv.in_shapes[0]) == (4, 256, 144)
    assert tuple(qkv.shape) == (4, 256, 432)
    fusion = next(n for n in g.nodes() if n.module == "stages.2.1.conv_fusion.conv")
    assert tuple(fusion.in_shapes[0]) == (192, 32, 32)    # concat of the block input and conv_proj


# ---- Swin-T (torchvision) -----------------------------------------------------------------------------------
def _swin_reference(seed: int) -> Any:
    import torchvision
    ref = _randomize(torchvision.models.swin_t(weights=None), seed)
    g = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():        # the bias tables at scale 1 (their 0.02 init would hide a wrong lookup)
        for name, p in ref.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.copy_(torch.randn(p.shape, generator=g))
    return ref


def test_swin_t_weight_exact_against_torchvision() -> None:
    ref = _swin_reference(seed=0)
    state = ref.state_dict()
    ours = _ours(SWIN, state)
    assert _shapes(ours.state_dict()) == _shapes(state)
    assert_same_outputs(ours, ref, (3, 224, 224), batch=2)

    g = ours.arch_graph
    counts = reference_counts()["torchvision.swin_t"]
    assert g.total_params == sum(p.numel() for p in ref.parameters()) == counts["params"]
    assert [1, *g.output_shapes["out"]] == counts["output"]
    assert g.total_macs == counts["macs"] == _fvcore_macs(ref, (3, 224, 224))


def test_swin_relative_position_index_is_torchvision_buffer() -> None:
    import torchvision
    ref = torchvision.models.swin_t(weights=None)
    ours = archdsl.build(SWIN)
    key = "features.5.3.attn.relative_position_index"
    assert key in dict(ours.named_buffers()) and key not in dict(ours.named_parameters())
    idx = ours.state_dict()[key]
    assert idx.dtype == torch.int64 and tuple(idx.shape) == (49 * 49,)
    assert torch.equal(idx, ref.state_dict()[key])            # built, not loaded: computed as torchvision does
    from archdsl.ops.index import swin_index
    assert idx.tolist() == swin_index(7)                       # the pure-Python form of the same index
    table = ours.state_dict()["features.5.3.attn.relative_position_bias_table"]
    assert tuple(table.shape) == (169, 12)


@pytest.mark.parametrize("size", [(96, 128), (160, 160)])
def test_swin_t_pads_and_masks_like_torchvision_at_other_sizes(size: tuple[int, int]) -> None:
    # 96x128: maps 24x32, 12x16, 6x8, 3x4 are padded to whole 7x7 windows; at 6x8 (padded 7x14) torchvision
    # shifts along the width only; 160: 40x40 padded to 42x42, the last stage 5x5 is padded and not shifted
    ref = _swin_reference(seed=4)
    ours = _ours(SWIN, ref.state_dict(), input_shape=(3, *size))
    assert_same_outputs(ours, ref, (3, *size), seed=5)


def test_swin_shifted_block_has_the_mask_in_its_bias() -> None:
    g = archdsl.graph(SWIN)
    by_module = {n.module: n for n in g.nodes() if n.op == "swin_attention_bias"}
    plain = by_module["features.1.0.attn.relative_position_index"]
    shifted = by_module["features.1.1.attn.relative_position_index"]
    last = by_module["features.7.1.attn.relative_position_index"]
    assert tuple(plain.shape) == (1, 3, 49, 49)
    assert tuple(shifted.shape) == (64, 3, 49, 49)           # 56x56 map: 8x8 windows, each with its mask
    assert tuple(last.shape) == (1, 24, 49, 49)              # 7x7 map: one window, not shifted
    assert tuple(shifted.args["shift"]) == (3, 3) and tuple(last.args["shift"]) == (0, 0)


def test_swin_deploy_writes_its_masked_attention_out_and_equals_torchvision() -> None:
    """The deploy form computes the attention over Swin's finite bias as torchvision does (q*scale @ k^T + bias,
    softmax, @ v: PyTorch's CPU SDPA with a float mask scans for fully masked rows, 2x the time); the train form
    and a mask from elsewhere (which may mask a row fully) keep F.scaled_dot_product_attention."""
    from archdsl.codegen.deploy import deploy_source
    g = archdsl.graph(SWIN)
    src = deploy_source(g)
    assert "scaled_dot_product_attention" not in src and src.count("torch.softmax(torch.matmul(") == 2
    assert "scaled_dot_product_attention(" in archdsl.pipeline.generate_source(g)
    ref = _swin_reference(seed=2)
    ours = _ours(SWIN, ref.state_dict(), input_shape=(3, 96, 128))   # padded, shifted, masked windows
    dep = archdsl.deploy(ours, memory_format="contiguous")
    assert_same_outputs(dep, ref, (3, 96, 128), seed=3)
    text = ("network t():\n    input [48]\n    t = x -> reshape([2, 6, 4])\n"
            "    bias = parameter([2, 6, 6], init=\"normal\", std=1.0)\n    sdpa(t, t, t, bias)\n")
    assert "scaled_dot_product_attention(" in deploy_source(archdsl.graph(text))
