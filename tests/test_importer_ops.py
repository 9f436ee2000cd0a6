"""The importer on buffers, computation on parameters and the newer ops: each model below is written in the
test, imported with ``import_model`` (which proves the round trip: check, build, strict load of the randomized
model's state_dict, equal outputs) and re-checked here on a fresh build; none may keep a class as a plugin.
"""
from __future__ import annotations

from helpers import module_from_text
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import archdsl
from archdsl.importer import import_model
from archdsl.importer import roundtrip

MODEL_FILE = '''
import torch
import torch.nn as nn
import torch.nn.functional as F


class Scaled(nn.Module):
    """A persistent buffer (loaded from the checkpoint), a non-persistent one (its values), a parameter
    reshaped before use, GroupNorm."""

    def __init__(self, c):
        super().__init__()
        self.register_buffer("shift", torch.randn(c, 1, 1))
        self.register_buffer("mask", torch.tensor([1.0, 0.0, 1.0, 1.0]).reshape(1, 1, 4), persistent=False)
        self.gamma = nn.Parameter(torch.randn(c))
        self.norm = nn.GroupNorm(2, c)

    def forward(self, x):
        x = self.norm(x) * self.gamma.reshape(1, -1, 1, 1)
        return x + self.shift + self.mask


class RelBias(nn.Module):
    """Swin's relative position bias: a table gathered by a non-persistent index, reshaped and permuted."""

    def __init__(self, heads, window):
        super().__init__()
        self.n = window * window
        self.table = nn.Parameter(torch.randn((2 * window - 1) ** 2, heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
        rel[:, :, 0] += window - 1
        rel[:, :, 1] += window - 1
        rel[:, :, 0] *= 2 * window - 1
        self.register_buffer("index", rel.sum(-1).flatten(), persistent=False)

    def forward(self, x):
        bias = self.table[self.index].reshape(self.n, self.n, -1).permute(2, 0, 1)
        return x + bias


class Tokens(nn.Module):
    """Conv1d over [C, L], then nn.MultiheadAttention called as torchvision's ViT calls it."""

    def __init__(self, c=8, heads=2):
        super().__init__()
        self.conv = nn.Conv1d(c, c, 3, padding=1)
        self.attn = nn.MultiheadAttention(c, heads, batch_first=True)

    def forward(self, x):
        x = self.conv(x).transpose(1, 2)
        return self.attn(x, x, x, need_weights=False)[0]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.scaled = Scaled(8)
        self.rel = RelBias(2, 2)
        self.tokens = Tokens()

    def forward(self, x):
        x = self.scaled(self.stem(x))
        a = x.reshape(x.shape[0], 2, 4, 16)
        x = torch.cat([self.rel(a[:, :, :, :4]), a[:, :, :, 4:]], -1).reshape(x.shape[0], 8, 4, 4)
        return self.tokens(x.flatten(2))


class StdConv(nn.Module):
    """Weight standardization (timm StdConv2d's math on its own weight), then F.conv2d with it."""

    def __init__(self, cin, cout):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3))
        self.bias = nn.Parameter(torch.randn(cout))

    def forward(self, x):
        w = self.weight - self.weight.mean((1, 2, 3), keepdim=True)
        w = w * torch.rsqrt((w * w).mean((1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w, self.bias, padding=1)


class QkvBias(nn.Module):
    """BEiT's qkv: F.linear with a bias concatenated from parameters and zeros, computed in forward."""

    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3 * c, c))
        self.q_bias = nn.Parameter(torch.randn(c))
        self.v_bias = nn.Parameter(torch.randn(c))

    def forward(self, x):
        bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
        return F.linear(x, self.weight, bias)


class Computed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = StdConv(3, 8)
        self.qkv = QkvBias(8)

    def forward(self, x):
        return self.qkv(self.conv(x).flatten(2).transpose(1, 2))


class BigTable(nn.Module):
    """A non-persistent buffer too large for a literal list and equal to no generator."""

    def __init__(self):
        super().__init__()
        self.register_buffer("noise", torch.linspace(-1, 1, 8 * 32 * 32).reshape(8, 32, 32), persistent=False)
        self.conv = nn.Conv2d(3, 8, 1)

    def forward(self, x):
        return self.conv(x) + self.noise


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = BigTable()
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(self.body(x))
'''


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Any:
    yield module_from_text(tmp_path_factory.mktemp("opmodels"), "opmodels", MODEL_FILE)
    sys.modules.pop("opmodels", None)


def _round_trip(model: Any, spec: str, shape: tuple[int, ...]) -> None:
    """A fresh build of the text loads the randomized model's state_dict strictly and gives its outputs."""
    r = roundtrip(model.eval(), spec, torch.zeros(2, *shape), seed=3)
    assert r.ok, r.summary()
    assert r.stage == "outputs" and r.max_diff is not None and r.max_diff <= r.tolerance


def test_buffers_parameters_and_ops_round_trip(models: Any) -> None:
    torch.manual_seed(0)
    model = models.Net()
    r = import_model(model, (3, 4, 4), name="net")
    assert r.plugin is None and not r.kept and r.max_diff is not None
    text = r.spec
    # the persistent buffer loads from the checkpoint under its own name; the other one is data
    assert 'shift = buffer([8, 1, 1], init="loaded")' in text
    assert 'mask = buffer([1, 1, 4], persistent=false, values=[1.0, 0.0, 1.0, 1.0])' in text
    # the index equals Swin's generator, the table is gathered by it, reshaped and permuted per the spec's dims
    assert 'index = buffer([16], dtype="int64", persistent=false, init="relative_position_index", window=[2, 2])' \
        in text
    assert "gather_rows(table, index) -> reshape([4, 4, 2]) -> permute([0, 3, 1, 2])" in text
    # the parameter keeps its key and shape; its reshape drops the leading 1 torch lines up with the batch
    assert "gamma = parameter([8], batch_dim=false)" in text and "gamma -> reshape([8, 1, 1])" in text
    assert "norm: groupnorm(2)" in text and "conv: conv1d(8, 3, padding=1)" in text
    assert "attn: multihead_attention(2)" in text
    _round_trip(model, text, (3, 4, 4))


def test_persistent_buffer_values_come_from_the_checkpoint(models: Any) -> None:
    torch.manual_seed(1)
    model = models.Net().eval()
    r = import_model(model, (3, 4, 4), name="net", check=False)
    built = archdsl.build(r.spec)
    assert "scaled.shift" in built.state_dict() and "scaled.mask" not in built.state_dict()
    model.scaled.shift.fill_(2.5)
    built.load_state_dict(model.state_dict(), strict=True)
    built.eval()
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(built(x), model(x), atol=1e-5)


def test_large_unknown_buffer_keeps_its_class(models: Any, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = models.Outer()
    r = import_model(model, (3, 32, 32), name="outer")
    assert list(r.kept) == ["body"] and "noise" in r.kept["body"] and "4096" in r.kept["body"]
    assert r.max_diff is not None and r.max_diff <= 1e-4


def test_timm_convnext_atto_imports_without_plugins() -> None:
    import timm
    torch.manual_seed(0)
    # convnext_atto with one block per stage (the same classes; the full depths take longer to trace)
    model = timm.create_model("convnext_atto", pretrained=False, num_classes=10, depths=(1, 1, 1, 1))
    r = import_model(model, (3, 32, 32), name="convnext_atto")
    assert r.plugin is None and not r.kept and r.max_diff is not None
    # the layer scale keeps its key (gamma, shape [C]) and is reshaped to [C, 1, 1] in the spec
    assert "gamma = parameter(" in r.spec and "batch_dim=false" in r.spec


def test_timm_batchnorm_act_is_batchnorm_then_act() -> None:
    from timm.layers import BatchNormAct2d
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), BatchNormAct2d(8, act_layer=torch.nn.SiLU),
                                torch.nn.Conv2d(8, 4, 1), BatchNormAct2d(4, apply_act=False))
    r = import_model(model, (3, 8, 8), name="bnact")
    assert r.plugin is None and not r.kept
    # the batchnorm carries the module's path (its keys: weight, bias, running stats); the act has no keys
    assert "batchnorm" in r.spec and "silu" in r.spec and "BatchNormAct2d" not in r.spec
    _round_trip(model, r.spec, (3, 8, 8))
    # training mode: batch statistics and the running-average update, as in timm
    built = archdsl.build(r.spec)
    built.load_state_dict(model.state_dict(), strict=True)
    built.train()
    model.train()
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(built(x), model(x), atol=1e-4)
    assert torch.allclose(built.state_dict()["1.running_mean"], model.state_dict()["1.running_mean"], atol=1e-6)


def test_weights_computed_in_forward(models: Any) -> None:
    torch.manual_seed(0)
    model = models.Computed()
    r = import_model(model, (3, 6, 6), name="computed")
    assert r.plugin is None and not r.kept
    text = r.spec
    # torch's dims (1, 2, 3) of the unbatched weight are the spec's (2, 3, 4); the conv and the linear take
    # the computed weight (and the concatenated bias) as tensors
    assert "mean([2, 3, 4], keepdim=true)" in text and "conv2d_fn(" in text and "linear_fn(" in text
    assert "zeros_like" in text and "concat(" in text
    _round_trip(model, text, (3, 6, 6))
