"""The importer on NaFlexViT's and SAM2-Hiera's position embeddings: a float32 value cast to float32 is the
identity, in each spelling (``.float()``, ``.to(torch.float32)``, ``.type_as(y)``), a cast that changes the
dtype is refused by name; a parameter resized by F.interpolate to a size read at trace time; ``x.tile``; an
in-place ``x.add_(y)`` (refused when a view made before it is read after). Each model is written in the test and imported with ``import_model`` (which proves the round trip:
check, build, strict load of the randomized model's state_dict, equal outputs), then round-tripped again."""
from __future__ import annotations

import sys
from typing import Any

import pytest
import torch
from helpers import module_from_text

from archdsl.errors import ArchError
from archdsl.importer import import_model, roundtrip
from archdsl.ops import OPS, ShapeError
from archdsl.ops.core import TorchCall

MODEL_FILE = '''
import torch
import torch.nn as nn
import torch.nn.functional as F


class FloatCasts(nn.Module):
    """Each cast of a float32 value to float32 (NaFlexViT's embeds: x.float())."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 6)
        self.proj = nn.Linear(6, 6)

    def forward(self, x):
        y = self.fc(x).float()
        z = self.proj(y.to(torch.float32)).type_as(x)
        return z.permute(0, 2, 1).float() * 2.0


class PosEmbedResize(nn.Module):
    """Hiera/SAM2's and NaFlexViT's position embeddings: a parameter (1, C, H, W) resized to the feature
    map's size read at trace time (bicubic; antialias where it shrinks), added to the features."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 2, stride=2)
        self.pos_embed = nn.Parameter(torch.randn(1, 6, 7, 7))
        self.grid = nn.Parameter(torch.randn(1, 7, 7, 6))

    def forward(self, x):
        x = self.conv(x)
        h, w = x.shape[-2:]
        a = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        b = F.interpolate(self.grid.permute(0, 3, 1, 2).float(), size=(h // 2, w // 2), mode="bilinear",
                          antialias=True)
        return x + a + F.interpolate(b, scale_factor=2.0, mode="nearest")


class HieraPosEmbed(nn.Module):
    """SAM2's Hiera (timm hieradet_sam2): the position embedding resized to the feature map, plus the window
    embedding tiled over it, permuted to channels-last and added."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, 4, 2, stride=2)
        self.pos_embed = nn.Parameter(torch.randn(1, 4, 5, 5))
        self.pos_embed_window = nn.Parameter(torch.randn(1, 4, 2, 2))

    def forward(self, x):
        x = self.proj(x).permute(0, 2, 3, 1)
        h, w = x.shape[1:3]
        pos_embed = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        tile_h = pos_embed.shape[-2] // self.pos_embed_window.shape[-2]
        tile_w = pos_embed.shape[-1] // self.pos_embed_window.shape[-1]
        pos_embed = pos_embed + self.pos_embed_window.tile((tile_h, tile_w))
        return x + pos_embed.permute(0, 2, 3, 1)


class InplaceAdd(nn.Module):
    """NaFlexViT's embeds: x.add_(pos), its result unused; x's later uses read the sum."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 6)
        self.pos = nn.Linear(8, 6)

    def forward(self, x):
        y = self.fc(x)
        y.add_(self.pos(x))
        return y * 2.0


class InplaceUnderAView(nn.Module):
    """A view made before x.add_ and read after sees the change too: no spec says that."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 6)

    def forward(self, x):
        y = self.fc(x)
        v = y.view(-1, 5, 3, 2)
        y.add_(x[:, :, :6])
        return v.flatten(2)


class ToDouble(nn.Module):
    """A cast that changes the dtype is no identity."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 6)

    def forward(self, x):
        return self.fc(x).to(torch.float64)
'''


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Any:
    yield module_from_text(tmp_path_factory.mktemp("casts"), "casts_models", MODEL_FILE)
    sys.modules.pop("casts_models", None)


def test_float32_casts_of_float32_values_import_as_the_identity(models: Any) -> None:
    model = models.FloatCasts().eval()
    torch.manual_seed(0)
    r = import_model(model, (5, 8), name="net")
    assert r.plugin is None and not r.kept and r.max_diff is not None
    rt = roundtrip(model, r.spec, torch.zeros(2, 5, 8), seed=3)
    assert rt.ok and rt.stage == "outputs", rt.summary()
    assert "float" not in r.spec.replace("float32", "")   # no cast is written: the values are float32


def test_a_parameter_resized_to_a_size_read_at_trace_time(models: Any) -> None:
    model = models.PosEmbedResize().eval()
    torch.manual_seed(0)
    r = import_model(model, (3, 12, 8), name="net")
    assert r.plugin is None and not r.kept and r.max_diff is not None
    rt = roundtrip(model, r.spec, torch.zeros(2, 3, 12, 8), seed=3)
    assert rt.ok and rt.stage == "outputs", rt.summary()
    # the parameter's one sample is resized: its leading 1 dropped before, put back after
    assert 'pos_embed -> reshape([6, 7, 7]) -> upsample(mode="bicubic", size=[6, 4]) -> reshape([1, 6, 6, 4])' \
        in r.spec
    assert 'upsample(mode="bilinear", size=[3, 2], antialias=true)' in r.spec


def test_hiera_window_embedding_tiled_over_the_resized_one(models: Any) -> None:
    model = models.HieraPosEmbed().eval()
    torch.manual_seed(0)
    r = import_model(model, (3, 8, 12), name="net")
    assert r.plugin is None and not r.kept and r.max_diff is not None
    rt = roundtrip(model, r.spec, torch.zeros(2, 3, 8, 12), seed=3)
    assert rt.ok and rt.stage == "outputs", rt.summary()
    assert "pos_embed_window -> tile([1, 1, 2, 3])" in r.spec


def test_an_inplace_method_is_its_op_read_by_the_later_uses(models: Any) -> None:
    model = models.InplaceAdd().eval()
    torch.manual_seed(0)
    r = import_model(model, (5, 8), name="net")
    assert r.plugin is None and not r.kept and r.max_diff is not None
    rt = roundtrip(model, r.spec, torch.zeros(2, 5, 8), seed=3)
    assert rt.ok and rt.stage == "outputs", rt.summary()
    assert "    add:\n        fc: linear(6)\n        pos: linear(6)\n    scale(2.0)\n" in r.spec   # the sum, scaled


def test_an_inplace_method_under_a_view_read_later_is_refused(models: Any) -> None:
    with pytest.raises(ArchError, match=r"the in-place add_ also changes view, which shares its storage"):
        import_model(models.InplaceUnderAView().eval(), (5, 8), name="net", check=False)


def test_a_cast_that_changes_the_dtype_is_refused(models: Any) -> None:
    with pytest.raises(ArchError, match=r"a cast from float32 to float64: only float32 to float32"):
        import_model(models.ToDouble().eval(), (5, 8), name="net", check=False)


def test_the_cast_form_reads_the_traced_dtypes() -> None:
    forms = {(f.kind, f.target): f for f in OPS["identity"].torch_forms}
    for m in ("float", "to", "type_as", "type"):
        assert ("method", m) in forms
    call = TorchCall(None, (), {}, [(4,)], [0], [(4,)], [0], ["float32"], ["float32"])
    assert forms["method", "float"].args(call) == {}
    for ins, outs in ((["float16"], ["float32"]), (["float32"], ["int64"]), ([], [])):
        with pytest.raises(ShapeError):
            forms["method", "to"].args(TorchCall(None, (), {}, [(4,)], [0], [(4,)], [0], ins, outs))
    # a value whose dtype the trace did not keep is named so, never as an empty word
    with pytest.raises(ShapeError, match="a cast from an unknown dtype to float32"):
        forms["method", "float"].args(TorchCall(None, (), {}, [(4,)], [0], [(4,)], [0], [""], ["float32"]))
