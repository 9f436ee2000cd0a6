"""The importer on the zoo's shapes it once refused: an uneven ``torch.chunk`` (EdgeNeXt), the values of
``x.max(dim)`` (VOLO's aux head), a Sequential holding a Sequential whose output is named (HRNet's
``transition1.1``) and parameters, buffers and modules whose names are keywords or ops (``seq``, ``add``,
``scale``). Each model is written in the test and imported with ``import_model`` (which proves the round
trip: check, build, strict load of the randomized model's state_dict, equal outputs); the spec is then
round-tripped again here on a fresh build."""
from __future__ import annotations

import re
import sys
from typing import Any

import pytest
import torch
from helpers import module_from_text

from archdsl.errors import ArchError
from archdsl.importer import import_model, roundtrip
from archdsl.ops import MULTI_OUTPUT_FORMS, OPS, ShapeError
from archdsl.ops.core import TensorArg, TorchCall

MODEL_FILE = '''
import torch
import torch.nn as nn


class UnevenChunk(nn.Module):
    """11 channels in 3 chunks are 4, 4, 3 (torch's rule); a width of 6 in 4 chunks is 3 parts of 2; an even
    chunk stays chunk."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 11, 1)
        self.convs = nn.ModuleList(nn.Conv2d(k, k, 3, padding=1, groups=k) for k in (4, 4, 3))

    def forward(self, x):
        x = self.conv(x)
        p = x.chunk(3, dim=1)      # (fx indexes the result; unpacking a Proxy would iterate it)
        y = torch.cat([self.convs[0](p[0]), self.convs[1](p[1]), self.convs[2](p[2])], 1)
        w = y.chunk(4, dim=-1)
        y = torch.cat([w[2], w[0], w[1]], -1)
        h = y[:, :10].chunk(2, 1)
        return torch.cat([h[1], h[0], y[:, 10:]], 1)


class MaxValues(nn.Module):
    """VOLO's aux head reads x.max(1)[0]; torch.min(x, dim, keepdim)[0] likewise."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        y = self.fc(x)
        lo = torch.min(y, -1, keepdim=True)[0]
        return y.max(1)[0] + (y - lo).amax(1)


class MaxIndices(nn.Module):
    """The indices of x.max(dim) are an integer tensor the language has no op for."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        y = self.fc(x)
        return y + y.max(1)[1].float().unsqueeze(1)


class Nested(nn.Module):
    """HRNet's transition1: a ModuleList whose item 1 is a Sequential holding a Sequential, its output used
    twice (so it is a named value, written in a pipeline)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.transition = nn.ModuleList([
            nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()),
            nn.Sequential(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU()),
                          nn.Sequential(nn.Conv2d(8, 8, 1), nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU())))])

    def forward(self, x):
        x = self.stem(x)
        a = self.transition[0](x)
        b = self.transition[1](x)
        return a * b + b


class Counted(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        return self.conv(x).relu()


class Mid(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = Counted()
        self.norm = nn.BatchNorm2d(8)

    def forward(self, x):
        return self.norm(self.inner(x)) + x


class Deep(nn.Module):
    """Three levels of blocks: the innermost forward must run once per batch size and pass, not once per
    level (vit_h_14's import ran its 632M parameters several times over)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.mid = Mid()

    def forward(self, x):
        return self.mid(self.stem(x))


class Keywords(nn.Module):
    """State_dict keys that are keywords (seq, add) or op names (scale) or x: the spec keeps every key."""

    def __init__(self):
        super().__init__()
        self.seq = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU())
        self.add = nn.Parameter(torch.randn(1, 8, 1, 1))
        self.scale = nn.Parameter(torch.randn(8, 1, 1))
        self.x = nn.Parameter(torch.randn(8, 1, 1))
        self.register_buffer("input", torch.randn(8, 1, 1))

    def forward(self, x):
        y = self.seq(x)
        return (y + self.add) * (y + self.scale) + self.x - self.input
'''


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Any:
    yield module_from_text(tmp_path_factory.mktemp("zooforms"), "zooforms", MODEL_FILE)
    sys.modules.pop("zooforms", None)


def _imported(model: Any, shape: tuple[int, ...]) -> str:
    """The spec of ``model`` (its round trip proven by import_model), round-tripped again on a batch of 2."""
    torch.manual_seed(0)
    r = import_model(model.eval(), shape, name="net")
    assert r.plugin is None and not r.kept and r.max_diff is not None
    rt = roundtrip(model.eval(), r.spec, torch.zeros(2, *shape), seed=3)
    assert rt.ok and rt.stage == "outputs", rt.summary()
    return r.spec


def test_uneven_chunk_is_the_split_torch_makes(models: Any) -> None:
    text = _imported(models.UnevenChunk(), (3, 5, 6))
    assert "split([4, 4, 3])" in text          # 11 channels in 3 chunks
    assert "split([2, 2, 2], dim=3)" in text   # a width of 6 in 4 chunks: 3 parts
    assert "chunk(2)" in text                  # an even chunk stays chunk
    t = TensorArg(0)
    forms = {(f.kind, f.target): f for f in MULTI_OUTPUT_FORMS["split"]}
    even = TorchCall(None, (t, 2, 1), {}, [(88, 4)], [0])
    uneven = TorchCall(None, (t, 3), {"dim": 1}, [(88, 4)], [0])
    assert forms["method", "chunk"].args(uneven) == {"sizes": [30, 30, 28], "dim": 1}
    assert torch.zeros(1, 88).chunk(3, 1)[-1].shape[1] == 28
    chunk = {(f.kind, f.target): f for f in MULTI_OUTPUT_FORMS["chunk"]}
    assert chunk["function", "torch.chunk"].args(even) == {"chunks": 2, "dim": 1}
    with pytest.raises(ShapeError, match="equal parts"):
        chunk["method", "chunk"].args(uneven)


def test_max_over_a_dim_is_amax_of_its_values(models: Any) -> None:
    text = _imported(models.MaxValues(), (4, 8))
    assert "amax(1)" in text and "amin(2, keepdim=true)" in text
    forms = {(f.kind, f.target): f for f in OPS["amax"].torch_forms}
    t = TensorArg(0)
    c = TorchCall(None, (t,), {"dim": -1, "keepdim": True}, [(4, 5)], [0])
    assert forms["method", "max"].args(c) == {"dim": 2, "keepdim": True}
    # torch.max(a, b) is element-wise and x.max() reduces the batch too: neither is amax
    assert forms["function", "torch.max"].args(TorchCall(None, (t, TensorArg(1)), {}, [(4, 5), (4, 5)], [0, 0])) is None
    assert forms["method", "max"].args(TorchCall(None, (t,), {}, [(4, 5)], [0])) is None


def test_the_indices_of_max_are_refused_by_name(models: Any) -> None:
    with pytest.raises(ArchError, match=r"the indices of max \(an integer tensor\) cannot be expressed"):
        import_model(models.MaxIndices().eval(), (4, 8), name="net", check=False)


def test_a_group_holding_groups_is_written_in_a_pipeline(models: Any) -> None:
    text = _imported(models.Nested(), (3, 6, 6))
    # the group's items, each labelled with its module path (a list in a list would be spliced)
    assert '"transition.1.0": [conv2d(8, 3, padding=1, bias=false), batchnorm, relu]' in text
    assert '"transition.1.1.0": conv2d(8, 1) -> "transition.1.1.1": [conv2d(8, 1), relu]' in text


def test_keys_that_are_keywords_or_ops_label_values_of_other_names(models: Any) -> None:
    text = _imported(models.Keywords(), (3, 4, 4))
    for key, op in (("add", "parameter"), ("scale", "parameter"), ("x", "parameter"), ("input", "buffer")):
        assert re.search(rf'\bp\d+ = "{key}": {op}\(', text) or re.search(rf'\bp\d+ = {key}: {op}\(', text), key
    assert '"seq": [conv2d(8, 1), relu]' in text


def test_each_forward_runs_once_per_batch_size_and_pass(models: Any) -> None:
    from archdsl.importer.trace import BATCHES
    model = models.Deep().eval()
    calls: list[int] = []
    hook = model.mid.inner.conv.register_forward_hook(lambda m, a, out: calls.append(a[0].shape[0]))
    r = import_model(model, (3, 4, 4), name="net", check=False)
    hook.remove()
    # the hooks' pass and the graphs' pass, each at both batch sizes (the bodies of Deep, Mid and Counted
    # interpreted inside each other, not each again on its own input)
    assert calls == [*BATCHES, *BATCHES]
    assert "inner: Counted" in r.spec and "mid: Mid" in r.spec
    _imported(model, (3, 4, 4))


def test_the_hooks_pass_on_fake_tensors_sees_what_a_real_one_sees(models: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from archdsl.importer import trace
    monkeypatch.setattr(trace, "FAKE_PARAMS", 0)       # the tiny model as if it were large
    model = models.Nested().eval()
    x = torch.zeros(1, 3, 6, 6)
    kinds: list[str] = []
    hook = model.transition[1].register_forward_hook(lambda m, a, out: kinds.append(type(a[0]).__name__))
    fake = trace._record(model, x)
    hook.remove()
    assert kinds == ["FakeTensor", "FakeTensor"]
    real = trace._record_run(model, x, None)

    def seen(infos: dict[int, Any]) -> dict[str, Any]:
        return {i.path: (i.calls, i.single, i.out_shape, [tuple(t.shape) for t in i.inputs]) for i in infos.values()}
    assert seen(fake) == seen(real) and seen(real)["transition.1"][3] == [(2, 8, 6, 6), (3, 8, 6, 6)]
    assert _imported(model, (3, 6, 6)).count("transition.1.") == 3
