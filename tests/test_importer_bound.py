"""Classes kept whole that the model calls with more than a tensor (``attn(x, size)`` returning ``(x,
new_size)``, ``pos(B, H, W)`` with no tensor at all): the import retries with the class kept whole and each
call becomes a plugin op bound to it (``call_<parameter>`` spec arguments; the batch size ``"batch"``), proven
by the round trip; what cannot be bound reports the module's own failure."""
from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import module_from_text, run_archc

from archdsl.errors import ArchError
from archdsl.importer import import_model, roundtrip
from archdsl.importer.plugin import recording_inits
from archdsl.importer.bound import Binding, bind_call, bound_lines
from archdsl.ops.core import BatchSize, TensorArg

MODEL_FILE = '''
import torch
from torch import nn
import torch.nn.functional as F


class SizedAttn(nn.Module):
    """Tokens and their grid size in, pooled tokens and the new size out; writes into a tensor's items,
    which fx cannot trace."""

    def __init__(self, c, stride):
        super().__init__()
        self.qkv = nn.Linear(c, c)
        self.stride = stride

    def forward(self, x, size):
        B, N, C = x.shape
        h, w = size
        y = self.qkv(x).transpose(1, 2).reshape(B, C, h, w)
        if self.stride > 1:
            y = F.avg_pool2d(y, self.stride)
        out = torch.zeros_like(y)
        out[:, :] = y  # ITEM-LINE
        return out.flatten(2).transpose(1, 2), [h // self.stride, w // self.stride]


class GridPos(nn.Module):
    """A position code computed from the grid size and projected: called with sizes only."""

    def __init__(self, c):
        super().__init__()
        self.proj = nn.Conv2d(2, c, 1)

    def forward(self, B, H, W):
        ys = torch.arange(H, dtype=torch.float32)  # POS-LINE
        xs = torch.arange(W, dtype=torch.float32)
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")).unsqueeze(0)
        return self.proj(torch.sin(grid)).repeat(B, 1, 1, 1)


class Net(nn.Module):
    def __init__(self, c=8):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 2, stride=2)
        self.pos = GridPos(c)
        self.attn1 = SizedAttn(c, 2)
        self.attn2 = SizedAttn(c, 1)
        self.head = nn.Linear(c, 3)

    def forward(self, x):
        x = self.stem(x)
        B, C, H, W = x.shape
        x = x + self.pos(B, H, W)
        t = x.flatten(2).transpose(1, 2)
        t, size = self.attn1(t, (H, W))
        t, size = self.attn2(t, size)
        return self.head(t.mean(1) * size[0])


class TwoOut(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, x, scale):
        if x.sum() > 0:  # TWO-LINE
            x = self.proj(x)
        return x * scale, x


class TwoNet(nn.Module):
    """A module whose result holds two tensors cannot be one plugin op: the report is its own failure."""

    def __init__(self, c=4):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 1)
        self.two = TwoOut(c)

    def forward(self, x):
        a, b = self.two(self.stem(x), 2.0)
        return (a + b).mean((2, 3))
'''


def _line(marker: str) -> str:
    lines = MODEL_FILE.splitlines()
    return f"bound_models.py:{next(i for i, ln in enumerate(lines) if marker in ln) + 1}"


pytestmark = pytest.mark.usefixtures("clean_plugin_ops")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Any:
    yield module_from_text(tmp_path_factory.mktemp("bound"), "bound_models", MODEL_FILE)
    sys.modules.pop("bound_models", None)


def test_calls_with_sizes_become_bound_plugin_ops(models: Any, tmp_path: Path) -> None:
    torch.manual_seed(0)
    with recording_inits():
        model = models.Net()
    r = import_model(model, (3, 8, 8), name="boundnet")      # check=True: the round trip is proven
    assert r.max_diff is not None and r.max_diff < 1e-5 and r.plugin is not None
    assert r.kept_classes == {"pos": "bound_models.GridPos", "attn1": "bound_models.SizedAttn",
                              "attn2": "bound_models.SizedAttn"}
    # why each class was kept: its own failure, with the line
    assert r.kept["pos"].startswith("no op of the language is written as the function torch.arange")
    assert r.kept["pos"].endswith(_line("POS-LINE"))
    assert "does not support item assignment" in r.kept["attn1"] and r.kept["attn1"].endswith(_line("ITEM-LINE"))
    # the calls' arguments are spec arguments (defaults: the first call's): sizes as traced, the batch size
    # by name; the sizes the calls return are constants of the caller (size[0] of attn2's result: scale(2.0));
    # a call without a tensor takes the caller's input for its batch size (pos(x) added to stem(x))
    assert "add:\n        stem: conv2d(8, 2, stride=2)\n        pos: boundnet_grid_pos\n" in r.spec
    assert "attn1: boundnet_sized_attn\n    attn2: boundnet_sized_attn(call_size=[2, 2], stride=1)\n" in r.spec
    assert "scale(2.0)" in r.spec
    assert "c=8, call_B='batch', call_H=4, call_W=4):" in r.plugin
    assert "stride=2, call_size=[4, 4]):" in r.plugin
    # the plugin subclasses each class with the model's call; a value of the spec is never source
    assert "class _boundnet_sized_attn_call(_SizedAttn):" in r.plugin
    assert "super().forward(x, _arg(a['size'], x))[0]" in r.plugin
    assert "super().forward(_arg(a['B'], x), _arg(a['H'], x), _arg(a['W'], x))" in r.plugin
    plugin = tmp_path / "boundnet_plugins.py"
    plugin.write_text(r.plugin)
    x = torch.randn(3, 3, 8, 8)            # another batch size than the import's
    rt = roundtrip(model, r.spec, x, plugins=[str(plugin)])
    assert rt.ok and rt.stage == "outputs", rt.error


def test_the_built_model_keeps_the_source_classes_and_pickles(models: Any, tmp_path: Path) -> None:
    import archdsl
    from archdsl.plugins import unregister_op
    torch.manual_seed(0)
    with recording_inits():
        model = models.Net().eval()
    r = import_model(model, (3, 8, 8), name="boundpk", check=False)
    assert r.plugin is not None
    (tmp_path / "boundpk_plugins.py").write_text(r.plugin)
    sys.path.insert(0, str(tmp_path))
    try:
        import boundpk_plugins  # noqa: F401 - registers the ops
        spec = tmp_path / "boundpk.arch"
        spec.write_text(r.spec)
        built = archdsl.build(str(spec)).eval()
        built.load_state_dict(model.state_dict(), strict=True)
        assert isinstance(built.get_submodule("attn1"), models.SizedAttn)
        assert tuple(built.get_submodule("attn1")._archdsl_call["size"]) == (4, 4)
        x = torch.randn(2, 3, 8, 8)
        with torch.no_grad():
            want = model(x)
            assert torch.allclose(built(x), want, atol=1e-5)
            again = pickle.loads(pickle.dumps(built))
            assert torch.allclose(again(x), want, atol=1e-5)
    finally:
        sys.path.remove(str(tmp_path))
        for op in r.plugin_ops:
            unregister_op(op)
        sys.modules.pop("boundpk_plugins", None)


def test_a_result_with_two_tensors_reports_the_modules_own_failure(models: Any) -> None:
    with pytest.raises(ArchError) as e:
        import_model(models.TwoNet(), (3, 4, 4), check=False)
    msg = str(e.value)
    assert "module 'two' (bound_models.TwoOut) cannot be imported: data-dependent control flow" in msg
    assert _line("TWO-LINE") in msg


def test_no_auto_keep_does_not_retry(models: Any) -> None:
    # (tracing comes before conversion: attn1's failure is the first met)
    with pytest.raises(ArchError, match=r"module 'attn1' \(bound_models.SizedAttn\) cannot be imported: 'Proxy' "
                                        r"object does not support item assignment"):
        import_model(models.Net(), (3, 8, 8), check=False, auto_keep=False)


def test_cli_writes_the_bound_plugin(tmp_path: Path) -> None:
    src = tmp_path / "bound_cli.py"
    src.write_text(MODEL_FILE)
    out = tmp_path / "net.arch"
    r = run_archc("import", f"{src}:Net", "-o", str(out), "--input", "3,8,8", "--name", "bnet", timeout=600)
    assert r.returncode == 0, r.stderr
    assert "kept whole: pos (bound_cli.GridPos): no op of the language" in r.stdout
    plugin = tmp_path / "bnet_plugins.py"
    assert out.exists() and plugin.exists()
    c = run_archc("check", str(out), "--plugin", str(plugin), timeout=600)
    assert c.returncode == 0, c.stderr


# ---- the binding itself -------------------------------------------------------------------------------

def test_bind_call_names_arguments_and_the_batch() -> None:
    b = bind_call(["x", "size", "scale"], (TensorArg(0), (4, 4)), {"scale": 0.5}, ["tensor", "other"])
    assert b.slots == [(None, "x"), (None, "size"), ("scale", "scale")]
    assert b.values == {"call_size": [4, 4], "call_scale": 0.5} and b.out == 0 and not b.donor
    d = bind_call(["B", "H", "W"], (BatchSize(1), 14, BatchSize(3)), {}, None)
    assert d.donor and d.values == {"call_B": "batch", "call_H": 14, "call_W": "batch*3"} and d.out is None


@pytest.mark.parametrize("args, kwargs, items, why", [
    ((TensorArg(0), TensorArg(1)), {}, None, "more than one tensor"),
    ((TensorArg(0),), {}, ["tensor", "tensor"], "holds 2 tensors"),
    ((TensorArg(0), "batch"), {}, None, "reads as the batch size"),
    ((TensorArg(0), {"a": 1}), {}, None, "not a number, string, boolean or list"),
    ((TensorArg(0), 1, 2), {}, None, "no parameter name"),
])
def test_bind_call_refuses(args: tuple[Any, ...], kwargs: dict[str, Any], items: list[str] | None,
                           why: str) -> None:
    with pytest.raises(ValueError, match=why):
        bind_call(["x", "size"], args, kwargs, items)


def test_bound_lines_write_only_identifiers() -> None:
    b = Binding([(None, "x"), ("size", "size")], 0, False, {"call_size": [4, 4]})
    text = "\n".join(bound_lines("net_attn", "_Attn", "pkg.Attn", b))
    assert "class _net_attn_call(_Attn):" in text
    assert "return super().forward(x, size=_arg(a['size'], x))[0]" in text
    # the values themselves are never in the source (they arrive as the op's arguments)
    assert "4" not in text.replace("_net_attn", "")
