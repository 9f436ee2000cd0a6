"""timm's vision transformers with rotary position embeddings, imported whole (``import_model`` proves the round
trip: check, build, strict load of the randomized model's state_dict, equal outputs). Each is built small (two
blocks, a small image) with the classes of the full model.

* EVA-02 and ViT-RoPE: the non-persistent ``rope.pos_embed`` is ``buffer(init="rotary_sin_cos")``;
  ``apply_rot_embed_cat`` in every block is chunk, stepped slices, neg, stack, reshape, mul and add.
* ViT-RoPE-Mixed: the table is computed in forward from learnt frequencies (a float32 parameter cast by
  ``.float()``, the identity), the sin and cos of the angles, and picked per block (``rot_pos_embed[i]``).
* DINOv3: the table is computed in forward from a coordinate grid of the input's size (a constant at the
  traced size) and periods.
"""
from __future__ import annotations

from typing import Any

import pytest

from archdsl.importer import import_model

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")


def _import(name: str, size: int, **kw: Any) -> Any:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, img_size=size, depth=2, **kw).eval()
    r = import_model(model, (3, size, size), name=name, auto_keep=False)
    assert r.plugin is None and not r.kept and r.max_diff is not None and r.max_diff <= 1e-5, r.max_diff
    return r


def test_eva02_rotary_table_rescaled_onto_its_reference_grid() -> None:
    # 56 px: a 4x4 grid of patches whose positions are rescaled onto the 16x16 pretraining grid
    r = _import("eva02_tiny_patch14_224", 56)
    assert "init=\"rotary_sin_cos\", window=[4, 4], ref_window=[16, 16]" in r.spec, r.spec
    assert "neg" in r.spec and "stack(" in r.spec


def test_vit_rope_xy_indexing_and_temperature() -> None:
    r = _import("vit_small_patch16_rope_224", 64)
    assert "init=\"rotary_sin_cos\", window=[4, 4], temperature=100.0, indexing=\"xy\"" in r.spec, r.spec


def test_vit_rope_mixed_computes_its_table_in_forward() -> None:
    r = _import("vit_small_patch16_rope_mixed_224", 64)
    spec = r.spec
    assert "-> sin" in spec and "-> cos" in spec and "rope.freqs" in spec, spec
    assert "rotary_sin_cos" not in spec            # learnt frequencies: no fixed table


def test_dinov3_computes_its_table_in_forward_from_a_constant_grid() -> None:
    # DINOv3 (dynamic_img_size): the coordinate grid is timm's fx-wrapped _build_grid of the traced size, a
    # non-persistent buffer of its values; the periods are indexed eagerly (a constant fx lifts); rotate_half
    r = _import("vit_small_patch16_dinov3", 64)
    spec = " ".join(r.spec.split())
    assert "buffer( [4, 4, 2], persistent=false, values=[ -0.75, -0.75, -0.75, -0.25," in spec, r.spec
    assert "-> sin" in spec and "-> cos" in spec


def test_eva02_without_a_class_token_drops_the_empty_prefix() -> None:
    # no prefix token: q[:, :, :0] is empty, and cat([empty, rotated]) is the rotated part alone
    r = _import("eva02_tiny_patch14_224", 56, class_token=False, global_pool="avg")
    assert "end=0" not in r.spec and "rotary_sin_cos" in r.spec, r.spec


def test_an_input_the_model_refuses_is_a_user_error() -> None:
    # EVA's position tables are built for its img_size: another input fails in the model's own forward
    from archdsl.errors import ArchError
    model = timm.create_model("eva02_tiny_patch14_224", pretrained=False, img_size=56, depth=1).eval()
    with pytest.raises(ArchError) as ei:
        import_model(model, (3, 112, 112), name="eva", auto_keep=False)
    msg = str(ei.value)
    assert "fails on an input of shape [2, 3, 112, 112]: AssertionError: Input height (112)" in msg, msg
    assert "img_size" in msg, msg
