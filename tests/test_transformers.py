"""Transformers and ConvNeXt V2 against timm: specs/vit.arch and specs/convnext_v2.arch.

For every network: timm's state_dict (every parameter randomized first, so no class token, position
embedding or GRN gamma/beta hides behind its zero or 1e-6 init) loads with ``strict=True``, eval outputs
are equal (max abs diff <= 1e-4 x max(1, max |reference|)), the summary's parameters equal timm's, and the
MACs equal fvcore's conv/linear/matmul count (tests/data/reference-counts.json, re-measured live here for
the small models; timm's attention is counted unfused, see tests/data/README.md).

Other input sizes: a ViT built for 160x160 (or 160x224) takes a 224 checkpoint through
``archdsl.hub.resample_pos_embed`` and equals timm's model created with that ``img_size`` and loaded
through timm's own checkpoint filter.
"""
from __future__ import annotations

from typing import Any

import pytest
from helpers import assert_same_outputs, reference_counts, run_archc

import archdsl
from archdsl import ArchError, hub

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

VIT = "specs/vit.arch"
CNX2 = "specs/convnext_v2.arch"
NETWORKS = [
    (VIT, "vit_tiny_patch16_224"),
    (VIT, "vit_small_patch16_224"),
    (VIT, "vit_base_patch16_224"),
    (VIT, "deit_tiny_distilled_patch16_224"),
    (CNX2, "convnextv2_atto"),
    (CNX2, "convnextv2_tiny"),
]
# fvcore traces these live (the larger ones are checked against the committed counts only, to keep the
# run short; the counts were measured the same way)
LIVE_FVCORE = {"vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "convnextv2_atto"}
_FVCORE_OPS = ("conv", "linear", "addmm", "matmul", "bmm", "einsum")


def _random_state(model: Any, seed: int) -> dict[str, Any]:
    """A random value for every parameter of ``model`` (tokens and GRN at scale 1, matrices small)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("cls_token", "dist_token", "pos_embed") or ".grn." in name:
            std = 1.0
        elif p.dim() >= 2:
            std = 0.02
        else:
            std = 0.5
        state[name] = torch.randn(p.shape, generator=g) * std
    return state


def _reference(name: str, seed: int = 0, **kwargs: Any) -> Any:
    """timm's model with every parameter random; built on the meta device (timm's own init is the slow
    part: 13 s for ViT-B on 2 cores) and given the random tensors with assign=True."""
    with torch.device("meta"):
        ref = timm.create_model(name, pretrained=False, **kwargs)
    ref.load_state_dict(_random_state(ref, seed), strict=True, assign=True)
    assert not any(t.is_meta for t in [*ref.parameters(), *ref.buffers()])
    return ref.eval()


def _ours(spec: str, state: dict[str, Any], **kwargs: Any) -> Any:
    """Build on the meta device (no init cost) and adopt ``state`` strictly."""
    with torch.device("meta"):
        model = archdsl.build(spec, **kwargs)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def _fvcore_macs(model: Any, shape: tuple[int, ...]) -> int:
    fvcore_nn = pytest.importorskip("fvcore.nn")
    fca = fvcore_nn.FlopCountAnalysis(model.eval(), torch.randn(1, *shape))
    fca.unsupported_ops_warnings(False)
    fca.uncalled_modules_warnings(False)
    return sum(v for k, v in fca.by_operator().items() if k in _FVCORE_OPS)


def _unfused(model: Any) -> Any:
    """timm's attention written as matmuls (same math), so fvcore counts them; fused SDPA counts 0 there."""
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    return model


@pytest.mark.parametrize("spec,name", NETWORKS, ids=[n for _, n in NETWORKS])
def test_weight_exact_against_timm(spec: str, name: str) -> None:
    ref = _reference(name)
    state = ref.state_dict()
    ours = _ours(f"{spec}:{name}", state)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {k: tuple(v.shape) for k, v in state.items()}
    assert_same_outputs(ours, ref, (3, 224, 224))

    g = ours.arch_graph
    counts = reference_counts()[f"timm.{name}"]
    assert g.total_params == sum(p.numel() for p in ref.parameters()) == counts["params"]
    assert g.total_macs == counts["macs"]
    assert [1, *g.output_shapes["out"]] == counts["output"]
    if name in LIVE_FVCORE:
        assert _fvcore_macs(_unfused(ref), (3, 224, 224)) == g.total_macs


def test_deit_averages_its_two_heads_in_train_mode_too() -> None:
    # timm returns (head(cls) + head_dist(dist)) / 2 unless distilled_training is set, train mode included
    ref = _reference("deit_tiny_distilled_patch16_224", seed=4)
    ours = _ours(f"{VIT}:deit_tiny_distilled_patch16_224", ref.state_dict())
    ours.train()
    ref.train()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


def test_a_new_head_and_batch() -> None:
    ref = _reference("vit_tiny_patch16_224", seed=5, num_classes=10)
    ours = _ours(f"{VIT}:vit_tiny_patch16_224", ref.state_dict(), num_classes=10)
    assert tuple(ours.state_dict()["head.weight"].shape) == (10, 192)
    assert_same_outputs(ours, ref, (3, 224, 224), batch=3, seed=6)


def test_convnext_v2_at_another_size() -> None:
    ref = _reference("convnextv2_atto", seed=7)
    ours = _ours(f"{CNX2}:convnextv2_atto", ref.state_dict(), input_shape=(3, 160, 192))
    assert_same_outputs(ours, ref, (3, 160, 192))


def test_grn_weights_are_timm_shaped_and_used() -> None:
    ours = archdsl.build(f"{CNX2}:convnextv2_atto")
    sd = ours.state_dict()
    assert tuple(sd["stages.0.blocks.0.mlp.grn.weight"].shape) == (160,)
    assert tuple(sd["stages.0.blocks.0.mlp.grn.bias"].shape) == (160,)
    # zero gamma/beta (timm's init) make GRN the identity; a non-zero bias must change the output
    x = torch.randn(1, 3, 64, 64)
    ours.eval()
    with torch.no_grad():
        before = ours(x)
        ours.stages[0].blocks[0].mlp.grn.bias.fill_(0.5)
        assert not torch.allclose(before, ours(x))


# ---- summary shows token shapes ---------------------------------------------------------------------------
def test_summary_shows_token_shapes() -> None:
    r = run_archc("summary", f"{VIT}:vit_tiny_patch16_224")
    assert r.returncode == 0, r.stderr
    # the row is named by the fx node of the parameter's use (create_feature_extractor's name); the op
    # column says which parameter it is
    row = next(line for line in r.stdout.splitlines() if "parameter pos_embed" in line)
    assert "[197, 192]" in row and "37,824" in row
    add = next(line for line in r.stdout.splitlines() if line.split("│")[0].strip() == "blocks.0.attn.qkv")
    assert "[197, 192]" in add and "[197, 576]" in add
    counts = reference_counts()["timm.vit_tiny_patch16_224"]
    assert f"total: {counts['params']:,} params" in r.stdout and f"{counts['macs']:,} MACs" in r.stdout
    g = archdsl.graph(f"{VIT}:deit_tiny_distilled_patch16_224")
    assert any(n.name == "pos_embed" and n.shape == (198, 192) for n in g.records())


def test_render_dot_labels_token_shapes(tmp_path: Any) -> None:
    out = tmp_path / "vit.dot"
    r = run_archc("render", f"{VIT}:vit_tiny_patch16_224", "-o", str(out), "--depth", "1")
    assert r.returncode == 0, r.stderr
    dot = out.read_text()
    assert 'label="197×192"' in dot          # edges carry the token shape [197, 192]


# ---- position embeddings at other input sizes --------------------------------------------------------------
@pytest.mark.parametrize("name,size", [
    ("vit_tiny_patch16_224", (160, 160)),
    ("vit_tiny_patch16_224", (160, 224)),
    ("deit_tiny_distilled_patch16_224", (160, 160)),
])
def test_resampled_pos_embed_equals_timm_at_another_size(name: str, size: tuple[int, int]) -> None:
    from timm.models.vision_transformer import checkpoint_filter_fn
    trained = _reference(name, seed=8).state_dict()        # weights "trained" at 224
    with torch.device("meta"):
        ref = timm.create_model(name, pretrained=False, img_size=size).eval()
    ref.load_state_dict(checkpoint_filter_fn(trained, ref), strict=True, assign=True)

    grid = (size[0] // 16, size[1] // 16)
    state = hub.resample_pos_embed(trained, grid)
    prefix = 2 if "distilled" in name else 1
    assert tuple(state["pos_embed"].shape) == (1, grid[0] * grid[1] + prefix, 192)
    torch.testing.assert_close(state["pos_embed"], ref.pos_embed.detach(), rtol=0, atol=0)
    assert trained["pos_embed"].shape[1] == 196 + prefix           # the input dict is left alone
    ours = _ours(f"{VIT}:{name}", state, input_shape=(3, *size))
    assert ours.arch_graph.total_params == sum(p.numel() for p in ref.parameters())
    assert_same_outputs(ours, ref, (3, *size), seed=9)


def test_resample_pos_embed_same_grid_and_errors() -> None:
    sd = {"cls_token": torch.zeros(1, 1, 8), "pos_embed": torch.randn(1, 17, 8)}
    same = hub.resample_pos_embed(sd, 4)
    assert same["pos_embed"] is sd["pos_embed"] and same is not sd
    assert tuple(hub.resample_pos_embed(sd, (2, 6))["pos_embed"].shape) == (1, 13, 8)
    with pytest.raises(ArchError, match="no position embedding 'pos'"):
        hub.resample_pos_embed(sd, 4, key="pos")
    with pytest.raises(ArchError, match="grid must be a positive int or"):
        hub.resample_pos_embed(sd, (0, 4))
    with pytest.raises(ArchError, match="not a 3x3 grid") as ei:
        hub.resample_pos_embed({"pos_embed": torch.randn(1, 12, 8), "cls_token": torch.zeros(1, 1, 8)}, 4)
    assert "old_grid=(rows, cols)" in str(ei.value.diagnostics[0].hint)
    wide = hub.resample_pos_embed({"pos_embed": torch.randn(1, 12, 8)}, (4, 6), old_grid=(3, 4),
                                  num_prefix_tokens=0)
    assert tuple(wide["pos_embed"].shape) == (1, 24, 8)


def test_vit_at_another_size_without_resampling_names_the_key() -> None:
    ref_state = _reference("vit_tiny_patch16_224", seed=10).state_dict()
    with torch.device("meta"):
        model = archdsl.build(f"{VIT}:vit_tiny_patch16_224", input_shape=(3, 160, 160))
    with pytest.raises(ArchError) as ei:
        hub.load_weights(model, ref_state)
    assert "pos_embed: [1, 197, 192] in the file, [1, 101, 192] in the model" in str(ei.value)
    assert "resample_pos_embed=True" in str(ei.value.diagnostics[0].hint)


def test_load_weights_resamples_pos_embed_on_request() -> None:
    from timm.models.vision_transformer import checkpoint_filter_fn
    trained = _reference("vit_tiny_patch16_224", seed=11).state_dict()
    with torch.device("meta"):
        ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=(224, 160)).eval()
    ref.load_state_dict(checkpoint_filter_fn(trained, ref), strict=True, assign=True)
    model = archdsl.build(f"{VIT}:vit_tiny_patch16_224", input_shape=(3, 224, 160))
    hub.load_weights(model, trained, resample_pos_embed=True)
    torch.testing.assert_close(model.state_dict()["pos_embed"], ref.pos_embed.detach(), rtol=0, atol=0)
    assert_same_outputs(model, ref, (3, 224, 160), seed=12)
    with pytest.raises(ArchError, match="cannot tell the patch grid"):
        hub.resample_pos_embed_to(torch.nn.Linear(2, 2), trained)


def test_vit_runs_the_fused_attention_on_4d_heads() -> None:
    """ViT's q, k, v are slices of the packed qkv ([B, 1, heads, N, d]); PyTorch's CPU SDPA runs its fused
    kernel only for 4-D inputs, so the train and the deploy form merge the leading dims into the batch, and
    still equal timm (outputs and, for the train form, gradients)."""
    from archdsl.codegen.deploy import deploy_source
    name = "vit_tiny_patch16_224"
    g = archdsl.graph(f"specs/vit.arch:{name}")
    for src in (archdsl.pipeline.generate_source(g), deploy_source(g)):
        assert src.count(".flatten(0, 1)") == 3 and ").unflatten(0, (-1, 1))" in src
    ref = _reference(name)
    ours = _ours(f"specs/vit.arch:{name}", ref.state_dict())
    x = torch.randn(2, 3, 224, 224)
    ours.train()
    ref.train()
    ours(x).square().mean().backward()
    ref(x).square().mean().backward()
    grads = dict(ref.named_parameters())
    for k, p in ours.named_parameters():   # the merged view passes the gradient through unchanged
        torch.testing.assert_close(p.grad, grads[k].grad, rtol=1e-4, atol=1e-6)
    ours.eval()
    dep = archdsl.deploy(ours, memory_format="contiguous")
    for m in (ours, dep):
        assert_same_outputs(m, ref, (3, 224, 224), batch=2)
        with torch.inference_mode(), torch.profiler.profile() as prof:
            m(x)
        ops = {e.key for e in prof.key_averages()}
        assert "aten::_scaled_dot_product_attention_math" not in ops
