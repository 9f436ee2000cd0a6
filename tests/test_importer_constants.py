"""The importer on tensors a model computes from constants alone while tracing (DINOv3's coordinate grid:
an ``fx.wrap``'d call on sizes known at trace time; a plain tensor attribute or a buffer indexed eagerly,
which fx lifts out of the code as ``_tensor_constantN``): each is a non-persistent ``buffer`` holding its
traced values (a fill or generator by name, else a literal list within ``Limits.max_literal_values``), and
``x[:, :, None]`` (a new axis) is a reshape. ``import_model`` proves the round trip."""
from __future__ import annotations

import sys
from typing import Any

import pytest
from helpers import module_from_text

from archdsl.errors import ArchError
from archdsl.importer import import_model

torch = pytest.importorskip("torch")

MODEL_FILE = '''
import torch
import torch.nn as nn


def grid(h: int, w: int) -> torch.Tensor:
    """A coordinate grid in [-1, 1] (as timm's _build_grid: fx-wrapped, one call of constants)."""
    ys, xs = torch.linspace(-1.0, 1.0, h), torch.linspace(-1.0, 1.0, w)
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1)


torch.fx.wrap("grid")


class Consts(nn.Module):
    def __init__(self, side=4):
        super().__init__()
        self.side = side
        self.proj = nn.Linear(2, 6)
        self.register_buffer("periods", torch.tensor([1.0, 2.0, 4.0]), persistent=False)
        self.offsets = torch.arange(6.0) / 8       # a plain tensor attribute, no buffer: fx lifts it

    def forward(self, x):                          # x: (B, side * side, 6)
        # (N, 2) from sizes known at trace time (a call node: fx calls a wrapped function given no proxy)
        g = grid(x.shape[1] // self.side, self.side).flatten(0, 1)
        angles = (g[:, :, None] / self.periods[None, None, :]).flatten(1)   # new axes: (N, 2, 3) -> (N, 6)
        return x + self.proj(g) * angles.sin() + self.offsets


class Rope(nn.Module):
    """A child whose table is indexed eagerly in a method the parent calls (DINOv3's periods[None, None, :]):
    fx lifts the indexed tensor into the parent's code as a constant."""

    def __init__(self):
        super().__init__()
        self.register_buffer("periods", torch.tensor([1.0, 3.0]), persistent=False)

    def embed(self, n):
        return torch.arange(float(n))[:, None] / self.periods[None, :]


class Parent(nn.Module):
    def __init__(self):
        super().__init__()
        self.rope = Rope()
        self.fc = nn.Linear(2, 2)

    def forward(self, x):                          # x: (B, 5, 2)
        return self.fc(x) * self.rope.embed(5).cos()


class EmptyUse(nn.Module):
    def forward(self, x):                          # an empty slice read other than by a concatenation
        return x[:, :0].sum(1) + x.mean(1)


class EmptyCat(nn.Module):
    def forward(self, x):                          # cat([x[:, :0], y]) is y
        return torch.cat([x[:, :0], x * 2.0], dim=1)


class Big(nn.Module):
    def forward(self, x):                          # a 100x100 grid: too many values for a literal list
        return x + grid(x.shape[1], x.shape[2])
'''


@pytest.fixture(scope="module")
def models(tmp_path_factory: Any) -> Any:
    mod = module_from_text(tmp_path_factory.mktemp("consts"), "consts_models", MODEL_FILE)
    yield mod
    sys.modules.pop("consts_models", None)


def test_values_computed_from_constants_are_buffers(models: Any) -> None:
    torch.manual_seed(0)
    r = import_model(models.Consts().eval(), (16, 6), name="consts", auto_keep=False)
    assert r.plugin is None and not r.kept and r.max_diff is not None and r.max_diff <= 1e-6
    spec = r.spec
    # the grid (32 values) and the lifted offsets are non-persistent buffers with their traced values; the
    # module's own buffer keeps its name
    assert spec.count("persistent=false") == 3, spec
    flat = " ".join(spec.split())
    assert "buffer( [4, 4, 2], persistent=false, values=[ -1.0, -1.0, -1.0, -0.333" in flat, spec   # the grid
    assert "buffer([6], persistent=false, values=[0.0, 0.125, 0.25" in flat, spec                 # offsets
    assert "periods = buffer([3], persistent=false, values=[1.0, 2.0, 4.0])" in flat, spec
    assert "reshape([16, 2, 1])" in flat, spec                                          # g[:, :, None]


def test_a_tensor_fx_lifted_as_a_constant_is_a_buffer(models: Any) -> None:
    torch.manual_seed(0)
    r = import_model(models.Parent().eval(), (5, 2), name="parent", auto_keep=False)
    assert r.plugin is None and not r.kept and r.max_diff is not None and r.max_diff <= 1e-6
    assert "cos" in r.spec and "persistent=false" in r.spec, r.spec


def test_a_large_constant_is_a_located_error(models: Any) -> None:
    with pytest.raises(ArchError) as ei:
        import_model(models.Big().eval(), (100, 100, 2), name="big", auto_keep=False)
    msg = str(ei.value)
    assert "a tensor computed from constants alone (function" in msg and "20000 values" in msg, msg
    assert "consts_models.py" in msg or "grid" in msg, msg


def test_an_empty_slice_is_left_out_of_a_concatenation_and_refused_elsewhere(models: Any) -> None:
    r = import_model(models.EmptyCat().eval(), (3, 4), name="emptycat", auto_keep=False)
    assert r.max_diff == 0 and "slice" not in r.spec and "concat" not in r.spec, r.spec
    with pytest.raises(ArchError, match=r"an empty slice \(x\[:, :0\]\) cannot be expressed"):
        import_model(models.EmptyUse().eval(), (3, 4), name="emptyuse", auto_keep=False)
