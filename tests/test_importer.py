"""archdsl.import_module / import_model: a PyTorch model in, a spec out, proven by a round trip.

Each import here compiles the produced text, builds it, loads the source model's state_dict strictly and
compares outputs (``import_model(check=True)`` raises otherwise; BatchNorm statistics and every parameter
are randomized first); the tests also re-do that check themselves on a fresh build, and assert on the text
(one block per class, labels, ``* n`` runs, the comment naming the source class).
"""
from __future__ import annotations

from helpers import module_from_text
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

import archdsl
from archdsl.errors import ArchError
from archdsl.importer import import_model
from archdsl.importer import ImportResult, randomize_constants, verify
from archdsl.importer.plugin import recording_inits

MODEL_FILE = '''
import torch
import torch.nn.functional as F
from torch import nn


class ConvBN(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(ConvBN(c, c), nn.Conv2d(c, c, 1))

    def forward(self, x):
        return x + self.body(x)


class Gate(nn.Module):
    """Data-dependent control flow: kept whole as a plugin op."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, x):
        if x.mean() > 0:
            return self.proj(x)
        return x


class Scaled(nn.Module):
    def __init__(self, c, alpha=0.5):
        super().__init__()
        self.proj = nn.Conv2d(c, c, 1)
        self.alpha = alpha

    def forward(self, x):
        return self.proj(x) * self.alpha


class Net(nn.Module):
    def __init__(self, num_classes=10, c=16):
        super().__init__()
        self.stem = ConvBN(3, c, stride=2)
        self.blocks = nn.Sequential(*[Residual(c) for _ in range(3)])
        self.down = ConvBN(c, 2 * c, stride=2)
        self.mix = Scaled(2 * c)
        self.head = nn.Linear(2 * c, num_classes)

    def forward(self, x):
        x = self.down(self.blocks(self.stem(x)))
        x = self.mix(x)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class GatedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = ConvBN(3, 8)
        self.gate = Gate(8)

    def forward(self, x):
        return self.gate(self.stem(x)).mean((2, 3))


class Attention(nn.Module):
    """timm's attention idiom: the permute moves the batch off dim 0, unbind(0) splits q, k, v."""

    def __init__(self, dim=32, heads=4, indexed=False):
        super().__init__()
        self.heads = heads
        self.indexed = indexed
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        if self.indexed:
            q, k, v = qkv[0], qkv[1], qkv[2]
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            q, k, v = qkv.unbind(0)
            attn = (q @ k.transpose(-2, -1)) * (C // self.heads) ** -0.5
            x = attn.softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Encoder(nn.Module):
    def __init__(self, dim=32, depth=2):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList([Attention(dim, indexed=i % 2 == 1) for i in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for blk in self.blocks:
            x = x + blk(x)
        return self.norm(x)[:, 0]
'''


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Any:
    yield module_from_text(tmp_path_factory.mktemp("usermodels"), "usermodels", MODEL_FILE)
    sys.modules.pop("usermodels", None)


@pytest.fixture(autouse=True)
def _forget_plugins() -> Any:
    """Plugin ops a test loads are unregistered after it (the registry is process-wide: docs/ops.md is
    generated from it in another test)."""
    from archdsl.plugins import unregister_op, user_ops
    before, mods = set(user_ops()), set(sys.modules)
    yield
    for name in set(user_ops()) - before:
        unregister_op(name)
    for m in set(sys.modules) - mods:
        if m.endswith("_plugins") or "_plugins_" in m:
            sys.modules.pop(m, None)


def _round_trip(model: Any, spec: str, shape: tuple[int, ...], plugins: list[str] | None = None) -> float:
    """Build the text, load the (randomized) model's weights strictly, compare outputs."""
    torch.manual_seed(0)
    model = model.eval()
    randomize_constants(model, seed=3)
    built = archdsl.build(spec, plugins=plugins or [])
    built.load_state_dict(model.state_dict(), strict=True)
    built.eval()
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want, got = model(x), built(x)
    assert got.shape == want.shape
    diff = float((want - got).abs().max())
    assert diff <= 1e-4 * max(1.0, float(want.abs().max())), diff
    return diff


def _canonical(text: str) -> None:
    """The imported text is the printer's: parsed and printed again it is the same text (comments kept), and
    ``archc fmt`` leaves it as it is."""
    from archdsl.lang.comments import collect_comments
    from archdsl.lang.fmt import format_text
    from archdsl.lang.parser import parse
    from archdsl.lang.printer import print_spec
    from archdsl.source import Source
    src = Source(text, "imported.arch")
    spec = parse(src)
    assert print_spec(spec, collect_comments(src, spec)) == text
    assert format_text(text) == text


def test_emit_writes_only_literals_and_validated_names() -> None:
    from archdsl.importer.emit import ident, lit
    from archdsl.lang.printer import print_expr
    assert print_expr(lit([1, -2, 0.5, 1e-06, True, None, "a b"])) == '[1, -2, 0.5, 1e-6, true, none, "a b"]'
    assert print_expr(lit('say "hi"')) == "'say \"hi\"'"
    for bad in ("a\nb", "both ' and \"", float("inf"), float("nan"), object()):
        with pytest.raises(ValueError):
            lit(bad)
    for bad_name in ("x y", "input", "add", "1x", "naïve", "a.b"):
        with pytest.raises(ValueError):
            ident(bad_name)
    assert ident("conv_1") == "conv_1"


def test_verify_is_the_round_trip_and_names_the_failing_stage() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    ok = "network net:\n    input [3, 8, 8]\n    \"0\": conv2d(4, 3)\n    \"1\": relu\n"
    assert verify(model, ImportResult(ok, "net"), torch.zeros(1, 3, 8, 8)) <= 1e-4
    for spec, stage in ((ok.replace("relu", "sigmoid"), "outputs"), (ok.replace('"0"', "c0"), "load"),
                        (ok.replace("conv2d(4, 3)", "conv2d(4, 3, nope=1)"), "check")):
        with pytest.raises(ArchError, match=f"round trip failed at {stage}"):
            verify(model, ImportResult(spec, "net"), torch.zeros(1, 3, 8, 8))


def test_user_model_round_trip(models: Any) -> None:
    torch.manual_seed(0)
    model = models.Net()
    r = import_model(model, (3, 32, 32), name="net")
    assert r.plugin is None and r.max_diff is not None
    text = r.spec
    # one block per class, each named after it with a comment naming the source class
    assert "block ConvBN(c, stride=1):" in text and "# usermodels.ConvBN" in text
    assert text.count("block Residual") == 1 and "# usermodels.Residual" in text
    # the three equal residual blocks of the Sequential are one run; the residual is an add combinator
    assert "blocks: [Residual * 3]" in text or "blocks: [Residual(16) * 3]" in text
    assert "add:\n        identity" in text or "add:\n        body:" in text
    # the multiply by a constant is an op with its value, defaults are left out
    assert "scale(0.5)" in text and "padding_mode" not in text
    _canonical(text)
    _round_trip(model, text, (3, 32, 32))


def test_attention_with_batch_moving_permute(models: Any) -> None:
    torch.manual_seed(0)
    model = models.Encoder()
    r = import_model(model, (16, 32), name="encoder")
    text = r.spec
    # the permute that moves the batch to dim 1 is written per sample; unbind is chunk + reshape
    assert "permute([0, 3, 2, 4, 1])" not in text
    assert "= t2 -> chunk(3)" in text and "scaled_dot_product_attention(" in text
    assert "cls_token = parameter([1, 32])" in text
    assert '"blocks.0": Attention' in text and '"blocks.1": Attention2' in text
    _canonical(text)
    _round_trip(model, text, (16, 32))


def test_data_dependent_class_becomes_a_plugin(models: Any, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = models.GatedNet()
    r = import_model(model, (3, 16, 16), name="gated")
    assert r.plugin is not None and list(r.kept) == ["gate"]
    assert "control flow" in r.kept["gate"]
    assert "_Gate = _load('usermodels', 'Gate')" in r.plugin and "return _Gate(c=c)" in r.plugin
    assert "gate: gated_gate(c=8)" in r.spec or "gate: gated_gate" in r.spec
    plugin = tmp_path / "gated_plugins.py"
    plugin.write_text(r.plugin)
    _round_trip(model, r.spec, (3, 16, 16), plugins=[str(plugin)])


def test_keep_names_a_class(models: Any, tmp_path: Path) -> None:
    torch.manual_seed(0)
    # Residual keeps no attribute per argument: its constructor arguments are recorded while it is built
    with pytest.raises(ArchError, match="cannot recover the constructor argument 'c' of usermodels.Residual"):
        import_model(models.Net(), (3, 32, 32), keep=["Residual"], check=False)
    with recording_inits():
        model = models.Net()
    r = import_model(model, (3, 32, 32), name="kept", keep=["Residual"])
    assert set(r.kept) == {"blocks.0", "blocks.1", "blocks.2"}
    assert "block Residual" not in r.spec and "kept_residual" in r.spec
    plugin = tmp_path / "kept_plugins.py"
    plugin.write_text(r.plugin or "")
    _round_trip(model, r.spec, (3, 32, 32), plugins=[str(plugin)])
    # the diagram shows the kept class as one box: one node for each instance
    g = archdsl.graph(r.spec)
    assert sum(1 for n in g.nodes() if n.op == "kept_residual") == 3


def test_root_with_data_dependent_flow_is_a_located_report(models: Any) -> None:
    with pytest.raises(ArchError) as e:
        import_model(models.Gate(4), (4, 8, 8))
    assert "usermodels.Gate" in str(e.value) and "control flow" in str(e.value)


def _small_convnext() -> Any:
    # ConvNeXt-T's classes (CNBlock with layer scale and stochastic depth, LayerNorm2d, Permute) at a size
    # the 2-core test machine runs quickly
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt
    return ConvNeXt([CNBlockConfig(24, 48, 2), CNBlockConfig(48, None, 2)], stochastic_depth_prob=0.1)


@pytest.mark.parametrize("builder,size", [("resnet18", 64), ("mobilenet_v3_small", 64), ("convnext", 32)])
def test_torchvision_round_trip(builder: str, size: int) -> None:
    import torchvision
    torch.manual_seed(0)
    model = _small_convnext() if builder == "convnext" else getattr(torchvision.models, builder)()
    r = import_model(model, (3, size, size), name=builder)
    assert r.plugin is None
    assert f"network {builder}:" in r.spec and "# torchvision.models." in r.spec
    _canonical(r.spec)
    _round_trip(model, r.spec, (3, size, size))
    if builder == "convnext":
        # gamma * x is the layer_scale op named by the parameter; the permutes are ops, not blocks
        assert "layer_scale: layer_scale(dim=1)" in r.spec and "block Permute" not in r.spec
    if builder == "resnet18":
        # one block for the class: the downsample branch is a condition of it
        assert r.spec.count("block BasicBlock") == 1 and "block BasicBlock(c, stride=1, downsample=false):" in r.spec
        assert "if downsample else identity" in r.spec and "layer1: [BasicBlock(64) * 2]" in r.spec


class _LongChain(torch.nn.Module):
    """A chain read twice (a named value) whose one-line pipeline would be wider than the printer's width."""

    def __init__(self) -> None:
        super().__init__()
        self.first_convolution_with_a_long_name = torch.nn.Conv2d(3, 4, 1)
        self.second_convolution_with_a_long_name = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.third_convolution_with_a_long_name = torch.nn.Conv2d(4, 4, 1)
        self.last = torch.nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.third_convolution_with_a_long_name(self.second_convolution_with_a_long_name(
            self.first_convolution_with_a_long_name(x)))
        return torch.cat([x, y, self.last(y)], 1)


def test_a_long_pipeline_is_split_into_named_parts() -> None:
    from archdsl.lang.printer import WIDTH
    torch.manual_seed(0)
    model = _LongChain()
    r = import_model(model, (3, 8, 8), name="chain")
    text = r.spec
    assert all(len(line) <= WIDTH for line in text.splitlines())
    # one part per layer here (two would not fit); the printer never breaks a pipeline inside its brackets
    assert "t1 = t0 -> second_convolution_with_a_long_name: conv2d(4, 3, padding=1)" in text
    assert "concat(x, t2, t3)" in text
    _canonical(text)
    _round_trip(model, text, (3, 8, 8))
