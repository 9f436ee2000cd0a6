"""The importer on tensors a body reads by attribute rather than receives: a submodule's parameters and buffers
read directly (BEiT/CaiT/EVA's pattern), a child called with arguments at their defaults (its own block), a
buffer transformed before use (``index.view(-1)``), metadata reads (``weight.device``), and the buffer
generators the importer recognizes. Each model is written here, imported with ``import_model`` (which proves
the round trip) and round-tripped again on the written text through :func:`archdsl.importer.roundtrip`.
"""
from __future__ import annotations

import sys
from typing import Any

import pytest
import torch

from helpers import module_from_text
from archdsl.importer import import_model
from archdsl.importer import roundtrip
from archdsl.importer.attrs import param_name
from archdsl.importer.tables import buffer_args
from archdsl.ops.buffers import relative_position_index

MODEL_FILE = '''
import torch
import torch.nn as nn
import torch.nn.functional as F


class Attn(nn.Module):
    """BEiT's qkv: F.linear on the child qkv's weight with a bias concatenated from q_bias, a zero
    non-persistent k_bias buffer and v_bias; a relative position bias gathered by index.view(-1)."""

    def __init__(self, c, n):
        super().__init__()
        self.qkv = nn.Linear(c, 3 * c, bias=False)
        self.q_bias = nn.Parameter(torch.randn(c))
        self.register_buffer("k_bias", torch.zeros(c), persistent=False)
        self.v_bias = nn.Parameter(torch.randn(c))
        self.table = nn.Parameter(torch.randn(7, 1))
        self.register_buffer("index", torch.arange(n * n).remainder(7).reshape(n, n), persistent=False)
        self.n = n

    def forward(self, x, extra=None):
        qkv = F.linear(x, weight=self.qkv.weight, bias=torch.cat((self.q_bias, self.k_bias, self.v_bias)))
        q, k, v = qkv.chunk(3, dim=-1)
        rel = self.table[self.index.view(-1)].view(self.n, self.n)
        out = (q @ k.transpose(-2, -1) + rel).softmax(-1) @ v
        return out if extra is None else out + extra


class Block(nn.Module):
    """A layer-scale gamma; it and its attention are called with a second tensor, so they are traced through
    as part of the parent, which then reads blocks.N.gamma and blocks.N.attn.q_bias itself."""

    def __init__(self, c, n):
        super().__init__()
        self.norm = nn.LayerNorm(c)
        self.attn = Attn(c, n)
        self.gamma = nn.Parameter(torch.randn(c))

    def forward(self, x, extra):
        return x + self.gamma * self.attn(self.norm(x), extra)


class Fourier(nn.Module):
    """Reads its child's weight only for its shape (as XCiT's positional encoding reads its device)."""

    def __init__(self, c):
        super().__init__()
        self.proj = nn.Linear(c, c)

    def forward(self, x):
        return self.proj(x.reshape(x.shape[0], -1, self.proj.weight.shape[1]))


class Net(nn.Module):
    def __init__(self, c=8, n=4):
        super().__init__()
        self.embed = nn.Linear(4, c)
        self.blocks = nn.ModuleList([Block(c, n) for _ in range(2)])
        self.pos = Fourier(c)
        self.scale = nn.Parameter(torch.randn(c))

    def forward(self, x):
        x = self.embed(x)
        extra = self.pos(x)
        for blk in self.blocks:
            x = blk(x, extra)
        return x * self.scale


class Plain(nn.Module):
    """Block called as blk(x) with its extra argument at the default: a block of its own."""

    def __init__(self, c, n):
        super().__init__()
        self.attn = Attn(c, n)
        self.gamma = nn.Parameter(torch.randn(c))

    def forward(self, x, bias=None, flag=True):
        return x + self.gamma * self.attn(x, extra=bias)


class Gain(nn.Module):
    """NFNet's skip-init gain: a 0-d parameter, no spec parameter has its shape."""

    def __init__(self, c):
        super().__init__()
        self.c = c          # (the plugin recovers its constructor argument from it)
        self.conv = nn.Conv2d(c, c, 1)
        self.gain = nn.Parameter(torch.tensor(0.5))

    def forward(self, x):
        out = self.conv(x)
        out.mul_(self.gain)
        return out + x


class GainNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.block = Gain(4)

    def forward(self, x):
        return self.block(self.stem(x))


class Stack(nn.Module):
    def __init__(self, c=8, n=4):
        super().__init__()
        self.embed = nn.Linear(4, c)
        self.blocks = nn.ModuleList([Plain(c, n) for _ in range(2)])

    def forward(self, x):
        x = self.embed(x)
        for blk in self.blocks:
            x = blk(x, bias=None, flag=True)
        return x
'''


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Any:
    yield module_from_text(tmp_path_factory.mktemp("attrmodels"), "attrmodels", MODEL_FILE)
    sys.modules.pop("attrmodels", None)


def _round_trip(model: Any, spec: str, shape: tuple[int, ...]) -> None:
    r = roundtrip(model.eval(), spec, torch.zeros(2, *shape), seed=5)
    assert r.ok, r.summary()
    assert r.stage == "outputs" and r.max_diff is not None and r.max_diff <= r.tolerance


def test_submodule_parameters_read_directly_keep_their_keys(models: Any) -> None:
    torch.manual_seed(0)
    model = models.Net()
    r = import_model(model, (4, 4), name="net")
    assert r.plugin is None and not r.kept and r.max_diff is not None
    text = r.spec
    # the blocks are traced through (two tensors in): the parent labels what it reads with the path
    assert '"blocks.0.gamma": layer_scale' in text and '"blocks.1.gamma": layer_scale' in text
    assert 'blocks_0_attn_qkv_weight = "blocks.0.attn.qkv.weight": parameter([24, 8], batch_dim=false)' in text
    assert 'blocks_1_attn_q_bias = "blocks.1.attn.q_bias": parameter([8], batch_dim=false)' in text
    # the zero buffer is written by name, not as a list of zeros; the index is a literal list (16 values)
    assert 'blocks_0_attn_k_bias = "blocks.0.attn.k_bias": buffer([8], persistent=false)' in text
    assert 'blocks_0_attn_index = "blocks.0.attn.index": buffer(' in text
    assert '[4, 4], dtype="int64", persistent=false, values=[0, 1, 2, 3, 4, 5, 6, 0, 1' in text
    # the index buffer is read by a view (a get_attr, not a constant computed while tracing)
    assert "blocks_0_attn_index -> reshape([16])" in text
    # the weight read for its shape writes nothing; the own parameter keeps its plain name
    assert "proj.weight" not in text and "proj_weight" not in text and "scale: layer_scale" in text
    _round_trip(model, text, (4, 4))


def test_child_called_with_defaults_is_its_own_block(models: Any) -> None:
    torch.manual_seed(1)
    model = models.Stack()
    r = import_model(model, (4, 4), name="tower")
    assert r.plugin is None and not r.kept
    text = r.spec
    # blk(x, bias=None, flag=True) is blk(x): Plain and Attn are blocks, each owning its parameters
    assert "block Plain:" in text and "block Attn:" in text
    assert '"blocks.0": Plain' in text and "gamma: layer_scale" in text
    assert 'qkv_weight = "qkv.weight": parameter([24, 8], batch_dim=false)' in text
    assert "q_bias = parameter([8], batch_dim=false)" in text
    assert "blocks_0" not in text
    _round_trip(model, text, (4, 4))


def test_buffer_generators_and_names() -> None:
    class M(torch.nn.Module):
        pass
    m = M()
    m.register_buffer("z", torch.zeros(3, 2), persistent=False)
    m.register_buffer("o", torch.ones(5), persistent=False)
    m.register_buffer("a", torch.arange(6).reshape(2, 3), persistent=False)
    m.register_buffer("cls", torch.tensor(relative_position_index(2, 3, cls_token=True)).reshape(7, 7),
                      persistent=False)
    m.register_buffer("one", torch.zeros(1), persistent=False)
    assert buffer_args(m, "z", m.z) == {"shape": [3, 2], "dtype": "float32", "persistent": False, "init": "zeros"}
    assert buffer_args(m, "o", m.o)["init"] == "ones"
    assert buffer_args(m, "a", m.a) == {"shape": [2, 3], "dtype": "int64", "persistent": False, "init": "arange"}
    got = buffer_args(m, "cls", m.cls)
    assert got["init"] == "relative_position_index_cls" and got["window"] == [2, 3]
    assert buffer_args(m, "one", m.one)["values"] == [0.0]
    assert param_name("gamma") == "gamma" and param_name("blocks.0.gamma_1") == "blocks_0_gamma_1"
    assert param_name("0.weight") == "p_0_weight"


def test_einsum_between_named_tensors_takes_its_equation_by_keyword(tmp_path: Any) -> None:
    class Mix(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(4, 4)
            self.b = torch.nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.einsum("bnc,bmc->bnm", self.a(x), self.b(x))
    torch.manual_seed(2)
    model = Mix()
    r = import_model(model, (3, 4), name="mix")
    assert 'einsum(t0, t1, equation="nc,mc->nm")' in r.spec
    _round_trip(model, r.spec, (3, 4))


def test_stack_in_front_of_the_batch_and_a_picked_weight() -> None:
    class Heads(torch.nn.Module):
        """EfficientViM's head: softmax weights, weights[i] (a 0-d value) times each head, stacked in front
        of the batch (dim 0) and summed over the heads."""

        def __init__(self) -> None:
            super().__init__()
            self.heads = torch.nn.ModuleList([torch.nn.Linear(6, 5) for _ in range(3)])
            self.weights = torch.nn.Parameter(torch.randn(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            w = self.weights.softmax(-1)
            return torch.stack([w[i] * head(x) for i, head in enumerate(self.heads)]).sum(0)
    torch.manual_seed(3)
    model = Heads()
    r = import_model(model, (6,), name="heads")
    assert r.plugin is None and not r.kept
    # stacked at the per-sample dim 0 (the default dim=1), summed over it
    assert "stack(t4, t7, t10)\n    reduce_sum(1)\n" in r.spec
    # w[2] is the slice [1] as it is (a 0-d value would need reshape([]), which the language has not)
    assert "slice(1, start=2, end=3)" in r.spec and "reshape(" not in r.spec
    _round_trip(model, r.spec, (6,))


def test_a_path_name_beside_an_own_parameter_of_that_name() -> None:
    class Inner(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.g = torch.nn.Parameter(torch.randn(4))

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return x + self.g + y

    class Outer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = Inner()
            self.inner_g = torch.nn.Parameter(torch.randn(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x, x) + x + self.inner_g
    torch.manual_seed(4)
    model = Outer()
    r = import_model(model, (3, 4), name="outer")
    assert 'inner_g_ = "inner.g": parameter([4], batch_dim=false)' in r.spec
    assert "inner_g = parameter([4], batch_dim=false)" in r.spec
    _round_trip(model, r.spec, (3, 4))


def test_a_0d_parameter_keeps_its_class_whole(models: Any) -> None:
    """A 0-d parameter (NFNet's ``skipinit_gain``) has no spec spelling (``parameter([])`` is refused and
    ``[1]`` would not load its key strictly): its class is kept whole and the model still round-trips."""
    torch.manual_seed(0)
    r = import_model(models.GainNet(), (3, 8, 8), name="gainnet")     # check=True: the round trip is proven
    assert set(r.kept) == {"block"} and "0-d parameter" in r.kept["block"]
    assert "parameter([]" not in r.spec
