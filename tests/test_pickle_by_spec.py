"""Models pickle by spec, not by source (issue 20): a pickle carries the spec texts, network, parameters and
input shape as data and unpickling compiles them with archdsl's own compiler, so no source text from a
pickle is ever executed. pickle, deepcopy, torch.save/torch.load(weights_only=False) and spawn still round
trip (feature taps, deploy forms and plugin ops included); a crafted pickle that names the old
source-executing ``rebuild`` or a tampered recipe runs nothing."""
from __future__ import annotations

import copy
import io
import multiprocessing
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from helpers import ROOT

import archdsl
from archdsl import ArchError
from archdsl.codegen import build as _build
from archdsl.ops import HELPERS, OPS
from archdsl.ops import user as _user
from archdsl import persist
from archdsl.persist import rebuild_model
from archdsl.plugins import load_plugin

torch = pytest.importorskip("torch")

BLOCKS = "block Unit(c):\n    conv2d(c, 3, padding=1)\n    batchnorm\n    relu\n"
MAIN = ('import "blocks.arch"\n\nnetwork tiny(num_classes=10, width=8):\n    input [3, 16, 16]\n'
        "    stem: Unit(width)\n    body: Unit(width * 2) * 2\n    adaptive_avgpool(1)\n    flatten\n"
        "    fc: linear(num_classes)\n")


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    (tmp_path / "blocks.arch").write_text(BLOCKS)
    (tmp_path / "main.arch").write_text(MAIN)
    return tmp_path


def _model(spec_dir: Path, **params: Any) -> Any:
    torch.manual_seed(0)
    m = archdsl.build(str(spec_dir / "main.arch"), **params).eval()
    for mod in m.modules():   # BatchNorm statistics that matter
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 1.5)
    return m


class _Recorder(pickle.Unpickler):
    """An unpickler that records every global a pickle names (what a restricting unpickler would judge)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.seen: list[str] = []

    def find_class(self, module: str, name: str) -> Any:
        self.seen.append(f"{module}.{name}")
        return super().find_class(module, name)


def test_pickle_carries_the_spec_and_no_code(spec_dir: Path) -> None:
    m = _model(spec_dir, num_classes=5, width=4)
    data = pickle.dumps(m)
    assert b"def forward" not in data and b"import torch" not in data     # no generated source
    assert BLOCKS.encode() in data and b"network tiny" in data           # the spec texts, as data
    rec = _Recorder(data)
    again = rec.load()
    archdsl_globals = {g for g in rec.seen if g.startswith("archdsl")}
    assert archdsl_globals == {"archdsl.persist.rebuild_model"}, archdsl_globals
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(m(x), again(x))
    assert type(again) is type(m) and not again.training and again.fc.out_features == 5
    assert again.arch_graph.total_params == m.arch_graph.total_params


def test_round_trips_deepcopy_torch_save_features_and_deploy(spec_dir: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    m = _model(spec_dir)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        y = m(x)
        c = copy.deepcopy(m)
        assert torch.equal(c(x), y) and c.arch_graph is not m.arch_graph
        buf = io.BytesIO()
        torch.save(m, buf)
        buf.seek(0)
        assert torch.equal(torch.load(buf, weights_only=False)(x), y)
        f = archdsl.build(str(spec_dir / "main.arch"), features_only=True)
        f2 = pickle.loads(pickle.dumps(f))
        assert f2.feature_info == f.feature_info
        fa, fb = f(x), f2(x)
        fa, fb = (list(fa.values()), list(fb.values())) if isinstance(fa, dict) else ([fa], [fb])
        assert len(fa) == len(fb) >= 1 and all(torch.equal(a, b) for a, b in zip(fa, fb))
        d = archdsl.deploy(m, memory_format="contiguous")
        d2 = pickle.loads(pickle.dumps(d))
        assert torch.equal(d(x), d2(x)) and d2.deploy_info == d.deploy_info
        assert sum(1 for mod in d2.modules() if isinstance(mod, torch.nn.BatchNorm2d)) == 0
        # as in a fresh process (nothing generated yet): each form is compiled again from its recipe
        blobs = [pickle.dumps(obj) for obj in (m, f, d)]
        monkeypatch.setattr(_build, "_MODULES", {})
        monkeypatch.setattr(persist, "_GRAPHS", {})
        m3, f3, d3 = (pickle.loads(b) for b in blobs)
        assert torch.equal(m3(x), y) and torch.equal(d3(x), d(x)) and f3.feature_info == f.feature_info
        assert type(m3) is not type(m) and type(m3).__archdsl_source__ == type(m).__archdsl_source__
        assert pickle.loads(pickle.dumps(m3)).fc.out_features == 10       # a rebuilt model pickles again


FRESH = """
import pickle, sys, torch
with open(sys.argv[1], "rb") as f:
    model = pickle.load(f)
x, y = torch.load(sys.argv[2])
with torch.no_grad():
    print(float((model(x) - y).abs().max()), type(model).__name__)
"""


def test_fresh_process_uses_the_pickled_spec_not_the_files(spec_dir: Path, tmp_path: Path) -> None:
    m = _model(spec_dir, width=6)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.save((x, m(x)), tmp_path / "xy.pt")
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(m))
    (spec_dir / "blocks.arch").write_text(BLOCKS.replace("relu", "gelu"))     # the files change afterwards
    (spec_dir / "main.arch").unlink()
    elsewhere = Path(tempfile.mkdtemp())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", FRESH, str(tmp_path / "m.pkl"), str(tmp_path / "xy.pt")],
                       cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    diff, name = p.stdout.split()
    assert float(diff) <= 1e-6 and name == type(m).__name__


def _spawned(model: Any, x: Any, q: Any) -> None:
    with torch.no_grad():
        q.put(model(x).tolist())   # plain data: a tensor would be shared through a file descriptor


def test_spawn_pickles_the_model_to_a_child(spec_dir: Path) -> None:
    m = _model(spec_dir)
    x = torch.randn(1, 3, 16, 16)
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_spawned, args=(m, x, q))
    p.start()
    out = q.get(timeout=300)
    p.join(timeout=60)
    assert p.exitcode == 0
    with torch.no_grad():
        assert torch.allclose(torch.tensor(out), m(x), atol=1e-6)


# ---- hostile pickles run nothing ---------------------------------------------------------------------------
class _OldStyle:
    """A pickle that calls the old ``rebuild(source, qualname)`` with source text that writes a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        src = f"open({str(self.marker)!r}, 'w').write('pwned')\nclass Net:\n    pass\n"
        return (_build.rebuild, (src, "Net", "net"))


def test_old_rebuild_with_hostile_source_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    data = pickle.dumps(_OldStyle(marker))
    rec = _Recorder(data)
    with pytest.raises(pickle.UnpicklingError, match="no longer executes"):
        rec.load()
    assert rec.seen == ["archdsl.codegen.build.rebuild"]     # an archdsl-only allowlist would let it through
    assert not marker.exists()


def _recipe(m: Any) -> dict[str, Any]:
    return dict(type(m).__archdsl_recipe__)


def test_tampered_recipes_run_nothing_and_never_build_another_model(spec_dir: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    m = _model(spec_dir)
    good = _recipe(m)
    monkeypatch.setattr(_build, "_MODULES", {})       # as in a fresh process: nothing generated yet
    monkeypatch.setattr(persist, "_GRAPHS", {})
    marker = tmp_path / "PWNED"
    python = f"import os\nopen({str(marker)!r}, 'w').write('x')\n"
    other = MAIN.replace("width * 2", "width * 3")
    hostile: list[tuple[Any, type[BaseException], str]] = [
        ({**good, "texts": {good["root_key"]: python}}, ArchError, "error"),           # Python is no spec
        ({**good, "texts": {**good["texts"], good["root_key"]: other}}, ArchError, "compiles to other code"),
        ({**good, "params": {"num_classes": object()}}, pickle.UnpicklingError, "parameters must be spec values"),
        ({**good, "format": 99}, pickle.UnpicklingError, "format"),
        ({**good, "input_shape": [3, -1, 16]}, pickle.UnpicklingError, "input shape"),
        ({**good, "links": {good["root_key"]: {"blocks.arch": "/etc/passwd"}}}, ArchError, "not part of the kept"),
        ({**good, "deploy": {"fold_bn": True, "memory_format": "x", "dtype": None}}, pickle.UnpicklingError,
         "deploy"),
        ("exec", pickle.UnpicklingError, "not an archdsl model pickle"),
    ]
    for recipe, exc, text in hostile:
        with pytest.raises(exc, match=text):
            rebuild_model(recipe, "Tiny", (), True)
    assert not marker.exists() and not _build._MODULES     # nothing was generated, let alone run
    with pytest.raises(pickle.UnpicklingError, match="identifier"):
        rebuild_model(good, "os.system", (), False)
    rebuilt = rebuild_model(good, "Tiny", (), True)           # the untampered recipe compiles to the same code
    assert type(rebuilt).__archdsl_source__ == type(m).__archdsl_source__


def test_a_model_built_without_its_spec_refuses_to_pickle() -> None:
    from archdsl.codegen.build import instantiate
    g = archdsl.graph("network bare():\n    input [3, 8, 8]\n    conv2d(4, 1)\n")
    with pytest.raises(pickle.PicklingError, match="without its spec"):
        pickle.dumps(instantiate(g))


# ---- plugin ops ---------------------------------------------------------------------------------------------
PLUGIN = '''import archdsl
from torch import nn

@archdsl.register_op("gate_pk", shape=lambda in_shape, k=[1, 1]: in_shape)
class Gate(nn.Module):
    def __init__(self, in_shape, k=(1, 1)):
        super().__init__()
        self.conv = nn.Conv2d(in_shape[0], in_shape[0], tuple(k))

    def forward(self, x):
        return x * self.conv(x).sigmoid()
'''
PLUGIN_SPEC = "network gated():\n    input [4, 8, 8]\n    g: gate_pk(k=[1, 1])\n    relu\n"


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Iterator[Path]:
    ops, helpers, users = dict(OPS), dict(HELPERS), dict(_user._USER)
    d = tmp_path / "plugins"
    d.mkdir()
    (d / "gatepk.py").write_text(PLUGIN)
    yield d
    OPS.clear()
    OPS.update(ops)
    HELPERS.clear()
    HELPERS.update(helpers)
    _user._USER.clear()
    _user._USER.update(users)
    sys.modules.pop("gatepk", None)


def test_plugin_model_round_trips_where_the_plugin_is_importable(plugin_dir: Path, tmp_path: Path) -> None:
    load_plugin(str(plugin_dir / "gatepk.py"))
    m = archdsl.build(PLUGIN_SPEC).eval()
    x = torch.randn(1, 4, 8, 8)
    data = pickle.dumps(m)
    rec = _Recorder(data)
    with torch.no_grad():
        assert torch.equal(rec.load()(x), m(x))
    assert "gatepk.Gate" in rec.seen          # the factory, by reference: the unpickler imports its module
    (tmp_path / "m.pkl").write_bytes(data)
    with torch.no_grad():
        torch.save((x, m(x)), tmp_path / "xy.pt")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(plugin_dir)])}
    p = subprocess.run([sys.executable, "-c", FRESH, str(tmp_path / "m.pkl"), str(tmp_path / "xy.pt")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert float(p.stdout.split()[0]) == 0.0
    # not importable: the unpickler's own ModuleNotFoundError; archdsl never loads a plugin by itself
    env["PYTHONPATH"] = str(ROOT)
    p = subprocess.run([sys.executable, "-c", FRESH, str(tmp_path / "m.pkl"), str(tmp_path / "xy.pt")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and "No module named 'gatepk'" in p.stderr


def test_another_factory_under_the_plugin_op_name_is_refused(plugin_dir: Path) -> None:
    mod = load_plugin(str(plugin_dir / "gatepk.py"))
    m = archdsl.build(PLUGIN_SPEC)
    recipe = _recipe(m)
    with pytest.raises(ArchError, match="registered here by"):
        rebuild_model({**recipe, "digest": "f" * 16}, "Gated", (("gate_pk", torch.nn.Identity),), True)
    del sys.modules["gatepk"]   # not registered at all
    _user.unregister_user_op("gate_pk")
    with pytest.raises(ArchError, match="not registered here"):
        rebuild_model({**recipe, "digest": "f" * 16}, "Gated", (("gate_pk", mod.Gate),), True)
