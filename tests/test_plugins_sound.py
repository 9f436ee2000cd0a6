"""Plugin ops are sound (issue 20): list arguments are normalized once, so check, summary, compile and build
see the same values (a list literal used to crash codegen with "unhashable type: 'list'"), and a plugin's
declared shape/params functions are compared with its module on the meta device wherever a module or its
code is made (build, source, summary, compile, deploy): a lying rule is a located error naming the plugin
and both values, an honest one passes; ``check`` stays torch-free and trusts the rule."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from helpers import ROOT

import archdsl
from archdsl import ArchError
from archdsl.cli import app
from archdsl.ops import HELPERS, OPS
from archdsl.ops import user as _user
from archdsl.plugins import load_plugin, verifying_shapes

torch = pytest.importorskip("torch")

CONV3D = '''
from torch import nn

def _shape(in_shape, out, k, stride=1):
    c, d, h, w = in_shape
    s = stride if isinstance(stride, tuple) else (stride,) * 3
    return (out, *[(n - kk) // ss + 1 for n, kk, ss in zip((d, h, w), k, s)])

@archdsl.register_op("conv3d_k", shape=_shape)
def make_conv3d(in_shape, out, k, stride=1):
    assert isinstance(k, tuple) and (isinstance(stride, int) or isinstance(stride, tuple)), (k, stride)
    return nn.Conv3d(in_shape[0], out, k, stride=stride)

def _lying_shape(in_shape, out, k, stride=1):
    c, d, h, w = in_shape
    return (out, *[n - kk + 1 for n, kk in zip((d, h, w), k)])      # forgets the stride

@archdsl.register_op("conv3d_lie", shape=_lying_shape)
def make_conv3d_lie(in_shape, out, k, stride=1):
    return nn.Conv3d(in_shape[0], out, k, stride=stride)

def _nested_shape(in_shape, groups=((1, 2), (3,))):
    return (in_shape[0] * sum(len(g) for g in groups), *in_shape[1:])

class Repeat(nn.Module):
    def __init__(self, in_shape, groups=((1, 2), (3,))):
        super().__init__()
        assert all(isinstance(g, tuple) for g in groups), groups
        self.n = sum(len(g) for g in groups)

    def forward(self, x):
        return x.repeat(1, self.n, 1, 1)

archdsl.register_op("repeat_groups", Repeat, shape=_nested_shape)

def _params(in_shape, out):
    return in_shape[0] * out            # forgets the bias

@archdsl.register_op("linear_lie", params=_params, shape=lambda in_shape, out: (out,))
def make_linear(in_shape, out):
    return nn.Linear(in_shape[0], out)

COUNT = {"meta": 0}

def _count_shape(in_shape, out):
    return (out, *in_shape[1:])

@archdsl.register_op("counted", shape=_count_shape)
def make_counted(in_shape, out):
    import torch
    if torch.empty(0).device.type == "meta":
        COUNT["meta"] += 1
    return nn.Conv2d(in_shape[0], out, 1)

class NeedsData(nn.Module):
    """A forward that cannot run on meta (it reads a value): the declared shape is trusted."""
    def __init__(self, in_shape):
        super().__init__()

    def forward(self, x):
        return x * float(x.flatten()[0].item() != 12345)

archdsl.register_op("needs_data", NeedsData, shape=lambda in_shape: in_shape)
'''

VOLUME = "network n():\n    input [24, 16, 16]\n    reshape([3, 8, 16, 16])\n    c: {call}\n    flatten\n"


@pytest.fixture(autouse=True)
def isolated_registry() -> Iterator[None]:
    """Each test starts without plugin ops and leaves none behind."""
    ops, helpers, users = dict(OPS), dict(HELPERS), dict(_user._USER)
    mods = set(sys.modules)
    yield
    OPS.clear()
    OPS.update(ops)
    HELPERS.clear()
    HELPERS.update(helpers)
    _user._USER.clear()
    _user._USER.update(users)
    for m in set(sys.modules) - mods:
        if str(getattr(sys.modules[m], "__file__", "") or "").startswith(tempfile.gettempdir()):
            del sys.modules[m]


def _plugin(tmp_path: Path, name: str = "sound3d") -> Path:
    p = tmp_path / f"{name}.py"
    p.write_text("import archdsl\n" + CONV3D)
    return p


def _spec(tmp_path: Path, call: str, name: str = "v.arch") -> Path:
    s = tmp_path / name
    s.write_text(VOLUME.format(call=call))
    return s


def _out(g: Any) -> tuple[int, ...]:
    (shape,) = g.output_shapes.values()
    return tuple(shape)


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


# ---- list arguments: one form everywhere ----------------------------------------------------------------
@pytest.mark.parametrize("call, out", [
    ("conv3d_k(8, [3, 3, 3], stride=[1, 2, 2])", (8, 6, 7, 7)),
    ("conv3d_k(4, k=[1, 3, 3], stride=[2, 1, 1])", (4, 4, 14, 14)),
    ("conv3d_k(out=2, k=[2, 2, 2], stride=2)", (2, 4, 8, 8)),
])
def test_list_arguments_check_summary_compile_build_agree(tmp_path: Path, call: str, out: tuple[int, ...]) -> None:
    plugin = _plugin(tmp_path)
    spec = _spec(tmp_path, call)
    r = _cli("check", str(spec), "--plugin", str(plugin))
    assert r.exit_code == 0, r.output
    r = _cli("summary", str(spec), "--plugin", str(plugin), "--json")
    assert r.exit_code == 0, r.output
    layer = next(lay for lay in json.loads(r.output)["layers"] if lay["name"] == "c")
    assert tuple(layer["shape"]) == out
    dest = tmp_path / "gen.py"
    r = _cli("compile", str(spec), "--plugin", str(plugin), "-o", str(dest))
    assert r.exit_code == 0, r.output
    ctor = next(line for line in dest.read_text().splitlines() if "self.c = " in line)
    assert "[" not in ctor and "(3, 8, 16, 16)" in ctor          # spec lists are written as tuples
    g = archdsl.graph(str(spec))
    node = next(n for n in g.nodes() if n.name == "c")
    assert all(not isinstance(v, list) for v in node.args.values()), node.args
    model = archdsl.build(str(spec))
    y = model.c(torch.randn(1, 3, 8, 16, 16))
    assert tuple(y.shape[1:]) == out
    # the compiled file runs on its own and gives the same module
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    code = (f"import runpy; ns = runpy.run_path({str(dest)!r}, run_name='gen'); "
            "m = ns['N'](); print(sum(p.numel() for p in m.parameters()))")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert int(p.stdout.split()[-1]) == sum(q.numel() for q in model.parameters())


def test_nested_list_argument_and_tuple_default(tmp_path: Path) -> None:
    load_plugin(str(_plugin(tmp_path)))
    spec = "network n():\n    input [2, 4, 4]\n    r: repeat_groups(groups=[[1], [2, 3], [4]])\n"
    model = archdsl.build(spec)
    assert tuple(model(torch.randn(1, 2, 4, 4)).shape) == (1, 8, 4, 4) == (1, *_out(archdsl.graph(spec)))
    # a spec list equal to the factory's tuple default is the default: generated code leaves it out
    src = archdsl.source("network n():\n    input [2, 4, 4]\n    r: repeat_groups(groups=[[1, 2], [3]])\n")
    assert "Repeat((2, 4, 4))" in src


# ---- declared shape rules are verified ------------------------------------------------------------------
def test_lying_shape_rule_is_a_located_error_in_summary_compile_and_build(tmp_path: Path) -> None:
    plugin = _plugin(tmp_path)
    spec = _spec(tmp_path, "conv3d_lie(8, [3, 3, 3], stride=[1, 2, 2])")
    r = _cli("check", str(spec), "--plugin", str(plugin))       # check trusts the rule (no module is built)
    assert r.exit_code == 0, r.output
    want = (f"{spec}:4:8: error: conv3d_lie: the plugin's shape function gives [8, 6, 14, 14] but the module "
            "returns [8, 6, 7, 7] for the input [3, 8, 16, 16]")
    for cmd in (["summary"], ["compile", "-o", str(tmp_path / "out.py")]):
        r = _cli(*cmd, str(spec), "--plugin", str(plugin))
        assert r.exit_code == 1, r.output
        assert want in r.output and "^~~~" in r.output, r.output
        assert "plugin op 'conv3d_lie' (make_conv3d_lie in module sound3d)" in r.output
        assert "Traceback" not in r.output
    assert not (tmp_path / "out.py").exists()
    with pytest.raises(ArchError) as e:
        archdsl.build(str(spec))
    assert want in str(e.value)
    with pytest.raises(ArchError):
        archdsl.source(str(spec))
    # an honest call of the same plugin at a size where the lie happens to be right is accepted
    ok = _spec(tmp_path, "conv3d_lie(8, [3, 3, 3])", "ok.arch")
    assert tuple(archdsl.build(str(ok)).c(torch.randn(1, 3, 8, 16, 16)).shape[1:]) == (8, 6, 14, 14)


def test_lying_params_rule_is_refused(tmp_path: Path) -> None:
    load_plugin(str(_plugin(tmp_path)))
    spec = "network n():\n    input [6]\n    fc: linear_lie(out=5)\n"
    assert archdsl.graph(spec).total_params == 30                 # what the plugin says, trusted by graph()
    with pytest.raises(ArchError) as e:
        archdsl.build(spec)
    assert "the plugin's params function gives 30 but the module has 35 parameters for the input [6]" in str(e.value)
    assert "<spec>:3:9" in str(e.value)


def test_verification_runs_once_per_input_shape_and_arguments(tmp_path: Path) -> None:
    mod = load_plugin(str(_plugin(tmp_path)))
    op = _user._USER["counted"]
    seen: list[Any] = []
    real = op.verify
    assert real is not None

    def counting(*a: Any) -> Any:
        seen.append(a[1:])
        return real(*a)
    op.verify = counting
    spec = ("network n():\n    input [4, 8, 8]\n    a: counted(4)\n    b: counted(4)\n    c: counted(4)\n"
            "    d: counted(6)\n")
    with verifying_shapes():
        archdsl.graph(spec)
        assert seen == [((4, 8, 8), (), {"out": 4}), ((4, 8, 8), (), {"out": 6})]
        builds = mod.COUNT["meta"]
        archdsl.graph(spec)
    assert len(seen) == 2 and mod.COUNT["meta"] == builds            # the comparison is remembered
    archdsl.graph(spec.replace("[4, 8, 8]", "[4, 6, 6]"))            # outside the context nothing is compared
    assert len(seen) == 2


def test_forward_that_cannot_run_on_meta_keeps_its_declared_shape(tmp_path: Path) -> None:
    load_plugin(str(_plugin(tmp_path)))
    model = archdsl.build("network n():\n    input [3, 4, 4]\n    nd: needs_data\n")
    assert tuple(model(torch.randn(2, 3, 4, 4)).shape) == (2, 3, 4, 4)


def test_check_with_a_lying_torch_free_plugin_never_imports_torch(tmp_path: Path) -> None:
    plugin = tmp_path / "lazyops.py"
    plugin.write_text("import archdsl\n\n"
                      "def _shape(in_shape, out: int):\n    return (out + 1,)\n\n"
                      "@archdsl.register_op('lazy_fc', shape=_shape, params=lambda in_shape, out: 0)\n"
                      "def make(in_shape, out: int):\n    from torch import nn\n"
                      "    return nn.Linear(in_shape[0], out)\n")
    spec = tmp_path / "s.arch"
    spec.write_text("network n():\n    input [8]\n    fc: lazy_fc(4)\n")
    code = ("import sys\nfrom archdsl.cli import main\n"
            "try:\n    main(['check', sys.argv[1], '--plugin', sys.argv[2]])\nexcept SystemExit as e:\n"
            "    print('exit', e.code)\nprint('torch' in sys.modules)\n"
            "try:\n    main(['summary', sys.argv[1], '--plugin', sys.argv[2]])\nexcept SystemExit as e:\n"
            "    print('exit', e.code)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", code, str(spec), str(plugin)], env=env, capture_output=True,
                       text=True, timeout=300, cwd=tmp_path)
    lines = p.stdout.split("\n")
    assert "exit 0" in lines and "False" in lines, p.stdout + p.stderr   # check: trusted, torch-free
    assert "exit 1" in lines, p.stdout                                   # summary: compared, refused
    assert "gives [5] but the module returns [4]" in p.stderr and "params function" not in p.stderr


# ---- property: any lying rule is refused, any honest one accepted ---------------------------------------
PROP = '''
from torch import nn

def _honest(in_shape, out, k, s):
    c, h, w = in_shape
    return (out, (h - k) // s + 1, (w - k) // s + 1)

def _shape(in_shape, out: int, k: int, s: int, lie=(0, 0, 0)):
    kind, where, delta = lie
    real = list(_honest(in_shape, out, k, s))
    if kind == 1:
        real[where] += delta
    elif kind == 2:
        real = real[:where] + real[where + 1:]
    elif kind == 3:
        real.insert(where, delta)
    return tuple(real)

def _params(in_shape, out: int, k: int, s: int, lie=(0, 0, 0)):
    n = in_shape[0] * out * k * k + out
    return n + lie[2] if lie[0] == 4 else n

@archdsl.register_op("prop_conv", shape=_shape, params=_params)
def make(in_shape, out: int, k: int, s: int, lie=(0, 0, 0)):
    return nn.Conv2d(in_shape[0], out, k, stride=s)
'''


@pytest.fixture(scope="module")
def prop_plugin() -> Iterator[None]:
    ops, helpers, users = dict(OPS), dict(HELPERS), dict(_user._USER)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "propconv.py"
        p.write_text("import archdsl\n" + PROP)
        load_plugin(str(p))
        yield
    OPS.clear()
    OPS.update(ops)
    HELPERS.clear()
    HELPERS.update(helpers)
    _user._USER.clear()
    _user._USER.update(users)
    sys.modules.pop("propconv", None)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(c=st.integers(1, 6), h=st.integers(3, 12), w=st.integers(3, 12), out=st.integers(1, 8),
       k=st.integers(1, 3), s=st.integers(1, 3),
       lie=st.one_of(st.just((0, 0, 0)), st.tuples(st.just(1), st.integers(0, 2), st.integers(-2, 3).filter(bool)),
                     st.tuples(st.just(2), st.integers(0, 2), st.just(0)),
                     st.tuples(st.just(3), st.integers(0, 3), st.integers(1, 4)),
                     st.tuples(st.just(4), st.just(0), st.integers(1, 9))))
def test_property_lying_rules_refused_honest_rules_accepted(prop_plugin: None, c: int, h: int, w: int, out: int,
                                                            k: int, s: int, lie: tuple[int, int, int]) -> None:
    call = f"p: prop_conv({out}, {k}, {s}, lie=[{lie[0]}, {lie[1]}, {lie[2]}])"
    spec = f"network n():\n    input [{c}, {h}, {w}]\n    {call}\n"
    real = (out, (h - k) // s + 1, (w - k) // s + 1)
    if lie[0] == 0:
        with verifying_shapes():
            g = archdsl.graph(spec)
        assert _out(g) == real and g.total_params == c * out * k * k + out
        return
    with pytest.raises(ArchError) as e, verifying_shapes():
        archdsl.graph(spec)
    text = e.value.diagnostics[0].format()
    assert text.startswith("<spec>:3:8: error: prop_conv: "), text
    assert "^~~" in text and "plugin op 'prop_conv'" in text, text
    if lie[0] == 1 and real[lie[1]] + lie[2] < 0:    # a negative dim: the rule's own result is refused
        assert "returned the invalid shape" in text, text
    elif lie[0] == 4:
        n = c * out * k * k + out
        assert f"gives {n + lie[2]:,} but the module has {n:,} parameters" in text, text
    else:
        assert f"but the module returns {list(real)} for the input [{c}, {h}, {w}]" in text, text
