"""Classes the importer cannot see through are kept whole automatically (``auto_keep``, on by default), with
the reason and the source line; ``auto_keep=False`` / ``--no-auto-keep`` makes each a located error. Conditions
on sizes resolve at the import size (tracing with concrete shapes); conditions on tensor data, and failures
in the root's own forward or in a module traced as part of it, are reports naming the module, its class and
the line."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import module_from_text, run_archc

from archdsl.errors import ArchError
from archdsl.importer import import_model, roundtrip

MODEL_FILE = '''
import torch
import torch.nn.functional as F
from torch import nn


class Gate(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, x):
        if x.mean() > 0:  # GATE-LINE
            return self.proj(x)
        return x


class Twice(nn.Module):
    """One conv applied twice: shared weights, which a spec cannot write (each label is one module)."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(torch.relu(self.conv(x)))


class Net(nn.Module):
    def __init__(self, c=8):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.gate = Gate(c)
        self.twice = Twice(c)
        self.head = nn.Linear(c, 4)

    def forward(self, x):
        x = self.twice(self.gate(self.stem(x)))
        return self.head(x.mean((2, 3)))


class PadPool(nn.Module):
    """timm's MaxPool2dSame: -inf padding (a number a spec cannot write) under conditions on sizes."""

    def forward(self, x):
        ih, iw = x.size()[-2:]
        pad_h = max((ih + 1) // 2 * 2 - ih, 0)
        if pad_h > 0:
            x = F.pad(x, (0, pad_h, 0, pad_h), value=-float("inf"))
        return F.max_pool2d(x, 2)


class PadNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.pool = PadPool()

    def forward(self, x):
        return self.pool(self.stem(x)).mean((2, 3))


class Sized(nn.Module):
    """Conditions on sizes only (CrossViT's scale_image, its head average over branches): resolved at the
    import size."""

    def __init__(self, c=8):
        super().__init__()
        self.a = nn.Conv2d(3, c, 3, padding=1)
        self.b = nn.Conv2d(3, c, 1)
        self.size = 12

    def forward(self, x):
        H, W = x.shape[-2:]
        if H != self.size or W != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="nearest")
        for _ in range(len(x.shape) - 3):
            x = x * 2.0
        y = torch.stack([self.a(x), self.b(x)], dim=0)
        return torch.mean(y, dim=0).mean((2, 3))


class ByBatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        if x.shape[0] > 2:
            return self.conv(x) * 2.0
        return self.conv(x)


class Pair(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, x, y):
        if (x * y).sum() > 0:  # PAIR-LINE
            return self.proj(x)
        return y


class PairNet(nn.Module):
    """A module called with two tensors is traced as part of its caller: it cannot be kept whole."""

    def __init__(self, c=4):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 1)
        self.pair = Pair(c)

    def forward(self, x):
        x = self.stem(x)
        return self.pair(x, x).mean((2, 3))
'''


pytestmark = pytest.mark.usefixtures("clean_plugin_ops")


def _line(marker: str) -> str:
    """``autokeep_models.py:N`` of the line of MODEL_FILE holding ``marker``."""
    lines = MODEL_FILE.splitlines()
    return f"autokeep_models.py:{next(i for i, ln in enumerate(lines) if marker in ln) + 1}"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Any:
    yield module_from_text(tmp_path_factory.mktemp("autokeep"), "autokeep_models", MODEL_FILE)
    sys.modules.pop("autokeep_models", None)


def test_children_that_cannot_be_seen_through_are_kept_whole(models: Any, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = models.Net()
    r = import_model(model, (3, 8, 8), name="autonet")      # check=True: the round trip is proven
    assert r.max_diff is not None and r.plugin is not None
    assert set(r.kept) == {"gate", "twice"}
    assert r.kept_classes == {"gate": "autokeep_models.Gate", "twice": "autokeep_models.Twice"}
    assert r.kept["gate"].startswith("data-dependent control flow") and r.kept["gate"].endswith(_line("GATE-LINE"))
    assert "module conv is called twice (shared weights)" in r.kept["twice"]
    # the spec says so, one comment line per kept module; the rest stays in the language
    assert "# Kept whole: gate (autokeep_models.Gate): data-dependent control flow" in r.spec
    assert "# Kept whole: twice (autokeep_models.Twice): module conv is called twice" in r.spec
    assert "stem: conv2d(8, 3, padding=1)" in r.spec and "head: linear(4)" in r.spec
    plugin = tmp_path / "autonet_plugins.py"
    plugin.write_text(r.plugin)
    x = torch.zeros(2, 3, 8, 8)
    rt = roundtrip(model, r.spec, x, plugins=[str(plugin)])
    assert rt.ok and rt.stage == "outputs", rt.error


def test_no_auto_keep_is_a_located_error(models: Any) -> None:
    model = models.Net()
    with pytest.raises(ArchError) as e:
        import_model(model, (3, 8, 8), auto_keep=False, check=False)
    msg = str(e.value)
    assert "module 'gate' (autokeep_models.Gate) cannot be imported: data-dependent control flow" in msg
    assert _line("GATE-LINE") in msg and "--no-auto-keep" in msg
    model.gate = torch.nn.Identity()
    with pytest.raises(ArchError, match=r"module 'twice' \(autokeep_models.Twice\) cannot be imported: module "
                                        r"conv is called twice \(shared weights\)"):
        import_model(model, (3, 8, 8), auto_keep=False, check=False)


def test_conditions_on_sizes_resolve_at_the_import_size(models: Any) -> None:
    torch.manual_seed(0)
    model = models.Sized()
    r = import_model(model, (3, 16, 16), name="sized")
    assert r.plugin is None and not r.kept and r.max_diff is not None
    assert "upsample" in r.spec and "stack" in r.spec
    # at the size the model expects, no interpolation is traced
    r12 = import_model(model, (3, 12, 12), name="sized")
    assert "upsample" not in r12.spec and r12.max_diff is not None


def test_a_non_finite_argument_keeps_its_class_whole(models: Any) -> None:
    r = import_model(models.PadNet(), (3, 7, 7), name="padnet")
    assert list(r.kept) == ["pool"] and r.max_diff is not None
    assert r.kept["pool"].startswith("pad with a non-finite number, which a spec cannot write")
    # at an even size no padding is traced: the pool is in the language
    r8 = import_model(models.PadNet(), (3, 8, 8), name="padnet")
    assert not r8.kept and "maxpool" in r8.spec


def test_control_flow_on_the_batch_size_is_refused(models: Any) -> None:
    with pytest.raises(ArchError, match="other branches at batch sizes 2 and 3"):
        import_model(models.ByBatch(), (3, 4, 4), check=False)


def test_failures_in_the_root_name_the_module_class_and_line(models: Any) -> None:
    with pytest.raises(ArchError) as e:
        import_model(models.Gate(4), (4, 8, 8), check=False)
    msg = str(e.value)
    assert "the model (autokeep_models.Gate) cannot be imported: data-dependent control flow" in msg
    assert _line("GATE-LINE") in msg
    with pytest.raises(ArchError) as e:
        import_model(models.PairNet(), (3, 8, 8), check=False)
    msg = str(e.value)
    assert "module 'pair' (autokeep_models.Pair) cannot be imported: data-dependent control flow" in msg
    assert _line("PAIR-LINE") in msg and "traced as part of its caller" in msg


def test_cli_reports_kept_classes_and_no_auto_keep(tmp_path: Path) -> None:
    src = tmp_path / "autokeep_cli.py"
    src.write_text(MODEL_FILE)
    out = tmp_path / "net.arch"
    r = run_archc("import", f"{src}:Net", "-o", str(out), "--input", "3,8,8", "--name", "autonet", timeout=600)
    assert r.returncode == 0, r.stderr
    assert "kept whole: gate (autokeep_cli.Gate): data-dependent control flow" in r.stdout
    assert "kept whole: twice (autokeep_cli.Twice): module conv is called twice" in r.stdout
    assert out.exists() and (tmp_path / "autonet_plugins.py").exists()
    out2 = tmp_path / "strict.arch"
    r = run_archc("import", f"{src}:Net", "-o", str(out2), "--input", "3,8,8", "--no-auto-keep", timeout=600)
    assert r.returncode == 1 and not out2.exists()
    assert "module 'gate' (autokeep_cli.Gate) cannot be imported" in r.stderr
    assert "autokeep_cli.py:" in r.stderr
