"""The plugin file rebuilds every class kept whole: constructor arguments that are modules (``nn.Sequential(*mods)``),
dataclass configs, ``functools.partial``, Enum members and closures made by a factory are written as Python; a
class loaded from a module its package shadows (a function of the same name) is found; what cannot be written (a
lambda) is taken from the model's source, or is a report naming the module. Each import below proves its round trip
(check, build, strict load of the randomized state_dict, equal outputs) with the plugin file it wrote.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import module_from_text

from archdsl.errors import ArchError
from archdsl.importer import import_model, recording_inits
from archdsl.importer.plugin import remember_source

LAYERS = '''
import torch
from torch import nn


class Gate(nn.Module):
    """Data-dependent control flow: kept whole."""

    def __init__(self, c):
        super().__init__()
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return self.proj(x) if x.sum() > -1e30 else x
'''

# the package's function `layers` shadows its module `plugpkg.layers` (as timm.layers.conv2d_same does)
PACKAGE = '''
from .layers import Gate


def layers():
    return "a function of the package's own"
'''

MODELS = '''
import dataclasses
import enum
import functools

import torch
from torch import nn


class Mode(enum.Enum):
    SUM = "sum"
    MAX = "max"


@dataclasses.dataclass
class Cfg:
    width: int = 8
    act: type = nn.ReLU
    norm: object = functools.partial(nn.BatchNorm2d, eps=1e-3)
    mode: Mode = Mode.MAX
    sizes: tuple = (1, 3)


class Gamma(nn.Module):
    def __init__(self, gamma=1.0):
        super().__init__()
        self.gamma = gamma

    def forward(self, x):
        return torch.relu(x) * self.gamma


def act_with_gamma(gamma):
    def _create():
        return Gamma(gamma)
    return _create


class Kept(nn.Module):
    """Kept whole (by --keep): a module argument, a config, a closure, a lambda-free default."""

    def __init__(self, body, cfg, act_layer=nn.GELU, scale=1.0):
        super().__init__()
        self.body = body
        self.norm = cfg.norm(cfg.width)
        self.act = act_layer()
        self.mode = cfg.mode
        self.scale = scale

    def forward(self, x):
        y = self.act(self.norm(self.body(x)))
        return (y + x if self.mode.value == "sum" else torch.maximum(y, x)) * self.scale


class Odd(nn.Module):
    """Kept whole; its argument is a lambda: only the model's source can give it back."""

    def __init__(self, c, make=lambda c: nn.Conv2d(c, c, 3, padding=1)):
        super().__init__()
        self.conv = make(c)

    def forward(self, x):
        return self.conv(x)


class Net(nn.Module):
    def __init__(self, c=8, odd=False):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        cfg = Cfg(width=c)
        self.a = Kept(nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), Gamma(0.5)), cfg,
                      act_layer=act_with_gamma(1.7))
        self.b = Kept(nn.Conv2d(c, c, 1), Cfg(width=c, mode=Mode.SUM), scale=0.5)
        self.seq = nn.Sequential(nn.Conv2d(c, c, 1), nn.BatchNorm2d(c))
        self.odd = Odd(c) if odd else nn.Identity()

    def forward(self, x):
        return self.odd(self.seq(self.b(self.a(self.stem(x))))).mean((2, 3))
'''


@pytest.fixture(scope="module")
def mods(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("plugmodels")
    pkg = folder / "plugpkg"
    pkg.mkdir()
    (pkg / "layers.py").write_text(LAYERS)
    (pkg / "__init__.py").write_text(PACKAGE)
    sys.path.insert(0, str(folder))
    import plugpkg
    assert callable(plugpkg.layers) and not hasattr(plugpkg.layers, "Gate")
    yield module_from_text(folder, "plugmodels", MODELS), plugpkg
    sys.path.remove(str(folder))
    for m in ("plugmodels", "plugpkg", "plugpkg.layers"):
        sys.modules.pop(m, None)


@pytest.fixture(autouse=True)
def _forget_plugins() -> Any:
    from archdsl.plugins import unregister_op, user_ops
    before = set(user_ops())
    yield
    for name in set(user_ops()) - before:
        unregister_op(name)


def test_module_config_partial_enum_and_closure_arguments_are_written(mods: Any) -> None:
    models, _ = mods
    torch.manual_seed(0)
    with recording_inits():
        model = models.Net()
    r = import_model(model, (3, 8, 8), name="pnet", keep=["Kept", "Sequential"])
    assert r.max_diff is not None and set(r.kept) == {"a", "b", "seq"}
    p = r.plugin or ""
    # the module argument is its own constructor call; the config a dataclass call with its fields; the closure
    # the call of the factory that made it; the Enum member by name
    assert "_Sequential(_Conv2d(in_channels=8, out_channels=8, kernel_size=3" in p
    assert "_Gamma(gamma=0.5)" in p and "act_layer=_act_with_gamma(gamma=1.7)" in p
    assert "_Cfg(width=8, act=_ReLU, norm=functools.partial(_BatchNorm2d, eps=0.001), mode=_Mode.MAX" in p
    assert "mode=_Mode.SUM" in p and "_load('plugmodels', 'act_with_gamma')" in p
    # the nn.Sequential kept whole takes its modules as *args
    assert "_Sequential(_Conv2d(" in p and "_BatchNorm2d(num_features=8" in p
    assert "lambda" not in p and "_submodule" not in p


def test_a_class_whose_module_is_shadowed_loads(mods: Any) -> None:
    _, plugpkg = mods
    torch.manual_seed(0)
    with recording_inits():
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), plugpkg.Gate(4))
    r = import_model(model, (3, 8, 8), name="shadow")
    assert list(r.kept) == ["1"] and r.max_diff is not None
    assert "_Gate = _load('plugpkg.layers', 'Gate')" in (r.plugin or "")


def test_a_lambda_is_taken_from_the_models_source(mods: Any, tmp_path: Path) -> None:
    models, _ = mods
    torch.manual_seed(0)
    with recording_inits():
        model = models.Net(odd=True)
    # no source to build it from: a report naming the module, its class and the lambda
    with pytest.raises(ArchError) as e:
        import_model(model, (3, 8, 8), name="lnet", keep=["Odd"], check=False)
    msg = str(e.value)
    assert "odd (plugmodels.Odd): its argument make: function plugmodels.Odd.<lambda> is a lambda" in msg, msg
    assert "archc import" in msg
    remember_source(model, "plugmodels", "Net", {"odd": True})
    r = import_model(model, (3, 8, 8), name="lnet", keep=["Odd"])
    assert r.max_diff is not None and r.kept["odd"] == "kept with --keep"
    p = r.plugin or ""
    assert "_MODEL[\"model\"] = _Net(odd=True)" in p and "_PATHS_lnet_odd = ('odd',)" in p
    assert "odd: lnet_odd(path=\"odd\")" in r.spec or "odd: lnet_odd\n" in r.spec
    # the plugin takes only the modules it was written for
    ns = vars(module_from_text(tmp_path, "lnet_plugins", p))
    sys.modules.pop("lnet_plugins")
    with pytest.raises(ValueError, match="'stem' is none of the modules"):
        ns["_lnet_odd"]((8, 8, 8), path="stem")
    # the source model is built once, and the random number stream is left as it was
    torch.manual_seed(1)
    a = ns["_lnet_odd"]((8, 8, 8), path="odd")
    after = torch.rand(1)
    torch.manual_seed(1)
    assert torch.equal(torch.rand(1), after)
    b = ns["_lnet_odd"]((8, 8, 8), path="odd")
    assert a is not b and torch.equal(a.conv.weight, b.conv.weight)


@pytest.mark.parametrize("pad", ["ZeroPad2d((1, 2, 0, 1))", "ConstantPad2d(1, 0.5)", "ReflectionPad2d((2, 1, 1, 0))",
                                 "ReplicationPad2d(1)", "CircularPad2d(1)", "ConstantPad1d((1, 0), -1.0)"])
def test_pad_modules_import_as_pad(pad: str) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), eval(f"torch.nn.{pad}"), torch.nn.Conv2d(4, 4, 3))
    r = import_model(model, (3, 8, 8), name="padded")
    assert r.plugin is None and r.max_diff is not None and "pad(" in r.spec


def test_cli_takes_a_lambda_class_from_the_file(tmp_path: Path) -> None:
    """`archc import FILE.py:Net --arg ...`: the plugin rebuilds the model from the file with the same --arg
    values; a fresh process builds the spec with it and loads the model's weights strictly."""
    from helpers import run_archc
    (tmp_path / "lambdanet.py").write_text(MODELS)
    out = tmp_path / "ln.arch"
    r = run_archc("import", f"{tmp_path / 'lambdanet.py'}:Net", "-o", str(out), "--input", "3,8,8",
                  "--arg", "odd=true", "--arg", "c=4", "--keep", "Odd", "--name", "ln", timeout=600)
    assert r.returncode == 0, r.stderr
    plugin = (tmp_path / "ln_plugins.py").read_text()
    assert "_Net = _load('lambdanet', 'Net')" in plugin and "_MODEL[\"model\"] = _Net(odd=True, c=4)" in plugin
    assert f"sys.path.insert(0, {str(tmp_path)!r})" in plugin
    script = f'''
import sys, torch, archdsl
sys.path.insert(0, {str(tmp_path)!r})
import lambdanet
torch.manual_seed(3)
ref = lambdanet.Net(odd=True, c=4).eval()
net = archdsl.build(open({str(out)!r}).read(), plugins=[{str(tmp_path / "ln_plugins.py")!r}]).eval()
net.load_state_dict(ref.state_dict(), strict=True)
x = torch.randn(2, 3, 8, 8)
print("diff", float((net(x) - ref(x)).abs().max()))
'''
    import subprocess
    res = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300,
                         cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert float(res.stdout.split("diff")[-1]) <= 1e-5


class _Conf:
    """A plain config object: its attributes are its constructor's arguments."""

    def __init__(self, dim: int, act: Any = torch.nn.ReLU, _private: int = 0) -> None:
        self.dim, self.act, self._private = dim, act, _private


def _make_factory(n: int) -> Any:
    k = n * 2      # a computed value: the closure is not the factory's call on its arguments

    def inner() -> int:
        return k
    return inner


def test_writer_values_and_what_it_refuses() -> None:
    from archdsl.importer.pywrite import Unwritable, Writer, load

    def no_guess(m: Any) -> dict[str, Any]:
        raise ValueError("no arguments")
    w = Writer(lambda m: None, no_guess, set())
    src = w.value(_Conf(4, _private=2))
    assert src == "__Conf(dim=4, act=_ReLU, _private=2)"
    assert w.refs[(__name__, "_Conf")] == "__Conf" and load(__name__, "_Conf") is _Conf
    assert w.value([1.5, float("nan"), (None,), {"a": True}]) == "[1.5, float('nan'), (None,), {'a': True}]"
    for bad, why in [(torch.zeros(2), "not a literal"), (lambda x: x, "lambda"),
                     (_make_factory(2), "closes over values other than the arguments"),
                     (torch.nn.Conv2d(1, 1, 1), "no arguments"), ({1, 2}, "not a literal")]:
        with pytest.raises(Unwritable, match=why):
            w.value(bad)
