"""User ops from Python plugins (docs/extending.md): ECA and CBAM attention in ResNet-50, loaded from
examples/plugins/attention.py, checked, summarized, rendered, compiled, built and trained; shape-function
and meta-inferred ops; plugin errors located at the spec line; loading only by whoever runs archc."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest
from typer.testing import CliRunner

from helpers import ROOT

import archdsl
from archdsl import ArchError
from archdsl.cli import app
from archdsl.ops import HELPERS, OPS
from archdsl.ops import user as _user
from archdsl.plugins import ENV_VAR, load_plugin, register_op

PLUGIN = ROOT / "examples" / "plugins" / "attention.py"
SPEC = ROOT / "examples" / "resnet50_attention.arch"
SMALL = (3, 64, 64)   # ResNet-50 runs at any size >= 32: small inputs keep the training step cheap


@pytest.fixture(autouse=True)
def isolated_registry() -> Iterator[None]:
    """Each test starts without plugin ops and leaves none behind (other test modules list the built-ins)."""
    ops, helpers, users = dict(OPS), dict(HELPERS), dict(_user._USER)
    mods = set(sys.modules)
    yield
    OPS.clear()
    OPS.update(ops)
    HELPERS.clear()
    HELPERS.update(helpers)
    _user._USER.clear()
    _user._USER.update(users)
    roots = (str(PLUGIN.parent), tempfile.gettempdir())
    for m in set(sys.modules) - mods:   # the plugin modules the test loaded (from examples/ or tmp_path)
        if str(getattr(sys.modules[m], "__file__", "") or "").startswith(roots):
            del sys.modules[m]


def _cli(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env=env)


def _write_plugin(tmp_path: Path, name: str, body: str) -> Path:
    p = tmp_path / f"{name}.py"
    p.write_text("import archdsl\n" + body)
    return p


# ---- the tutorial: ECA and CBAM in ResNet-50 ---------------------------------------------------------------
def test_check_summary_render_with_plugin(tmp_path: Path) -> None:
    r = _cli("check", str(SPEC), "--plugin", str(PLUGIN))
    assert r.exit_code == 0, r.output
    assert "ok: 2 networks checked" in r.output
    r = _cli("summary", f"{SPEC}:resnet50_cbam", "--plugin", str(PLUGIN), "--json")
    assert r.exit_code == 0, r.output
    assert '"cbam"' in r.output
    g = archdsl.graph(f"{SPEC}:resnet50_cbam")   # the plugin is loaded now: the API sees its ops too
    attn = [n for n in g.nodes() if n.op == "cbam"]
    assert len(attn) == 16
    c = 256   # layer1's first block: CBAM's shared MLP (256 -> 16 -> 256) and its 7x7 spatial conv
    assert attn[0].params == 2 * c * (c // 16) + 2 * 7 * 7
    assert attn[0].macs == 4 * c * (c // 16) + 2 * 49 * 56 * 56
    assert attn[0].name == "layer1.0.attn"
    dot = tmp_path / "eca.dot"
    r = _cli("render", f"{SPEC}:resnet50_eca", "-o", str(dot), "--plugin", str(PLUGIN), "--depth", "3")
    assert r.exit_code == 0, r.output
    assert "eca" in dot.read_text()


def test_meta_inferred_counts_equal_the_real_module() -> None:
    import torch
    g = archdsl.graph(f"{SPEC}:resnet50_eca", plugins=[str(PLUGIN)])
    model = archdsl.build(f"{SPEC}:resnet50_eca")
    assert g.total_params == sum(p.numel() for p in model.parameters())
    ecas = [n for n in g.nodes() if n.op == "eca"]
    # ECA-Net's adaptive kernel: k=5 for 256 to 1024 channels, 7 for 2048 (one 1D conv, no bias)
    assert [n.params for n in ecas] == [5] * 13 + [7] * 3
    assert isinstance(model.get_submodule("layer4.2.attn.conv"), torch.nn.Conv1d)


def test_compiled_file_imports_the_plugin_and_runs(tmp_path: Path) -> None:
    out = tmp_path / "resnet50_eca.py"
    r = _cli("compile", f"{SPEC}:resnet50_eca", "-o", str(out), "--plugin", str(PLUGIN))
    assert r.exit_code == 0, r.output
    src = out.read_text()
    assert "import attention as _plugin_attention" in src
    assert "_plugin_attention.ECA(" in src
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGIN.parent), str(ROOT)])}
    env.pop(ENV_VAR, None)
    code = (f"import sys, torch; sys.path.insert(0, {str(tmp_path)!r}); import resnet50_eca as m; "
            "net = m.Resnet50Eca().eval(); print(tuple(net(torch.randn(1, 3, 64, 64)).shape), "
            "sorted(k for k in net.state_dict() if '.attn.' in k)[0])")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["(1,", "1000)", "layer1.0.attn.conv.weight"]


@pytest.mark.parametrize("net", ["resnet50_eca", "resnet50_cbam"])
def test_build_and_train_one_step(net: str) -> None:
    import torch
    torch.manual_seed(0)
    model = archdsl.build(f"{SPEC}:{net}", input_shape=SMALL, num_classes=10, plugins=[str(PLUGIN)])
    keys = list(model.state_dict())
    assert "layer1.0.attn." + ("conv.weight" if net.endswith("eca") else "spatial_gate.conv.weight") in keys
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(4, *SMALL), torch.tensor([0, 1, 2, 3])
    model.train()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    attn_grads = [p.grad for n, p in model.named_parameters() if ".attn." in n]
    assert attn_grads and all(gr is not None and gr.abs().sum() > 0 for gr in attn_grads)
    before = model.get_submodule("layer1.0.attn").state_dict()
    before = {k: v.clone() for k, v in before.items()}
    opt.step()
    after = model.get_submodule("layer1.0.attn").state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert torch.isfinite(loss)


# ---- the contract -------------------------------------------------------------------------------------------
def test_shape_function_op_never_builds_the_module(tmp_path: Path) -> None:
    p = _write_plugin(tmp_path, "shapeonly", '''
CALLS = []

def _shape(in_shape, out, stride=1):
    c, h, w = in_shape
    return (out, -(-h // stride), -(-w // stride))

def _params(in_shape, out, stride=1):
    return in_shape[0] * out

def _macs(in_shape, out_shape, out, stride=1):
    return in_shape[0] * out * out_shape[1] * out_shape[2]

@archdsl.register_op("mix", shape=_shape, params=_params, macs=_macs)
def make_mix(in_shape, out: int, stride: int = 1):
    CALLS.append(in_shape)
    raise AssertionError("the factory is only called to build the model")
''')
    mod = load_plugin(str(p))
    g = archdsl.graph("network n():\n    input [8, 9, 9]\n    m: mix(4, stride=2)\n    flatten\n")
    node = next(n for n in g.nodes() if n.op == "mix")
    assert (tuple(node.shape), node.params, node.macs) == ((4, 5, 5), 32, 8 * 4 * 25)
    assert mod.CALLS == []
    with pytest.raises(ArchError) as e:   # a type from the annotation, checked at the argument
        archdsl.graph("network n():\n    input [8, 9, 9]\n    mix(4, stride=1.5)\n")
    assert "3:12: error: mix: 'stride' must be an integer, got float 1.5" in str(e.value)


def test_function_factory_and_meta_inference(tmp_path: Path) -> None:
    p = _write_plugin(tmp_path, "metaop", '''
from torch import nn

def make_head(in_shape, hidden: int, act="relu"):
    """A 2-layer conv head (its output shape is found on the meta device)."""
    a = nn.ReLU() if act == "relu" else nn.GELU()
    return nn.Sequential(nn.Conv2d(in_shape[0], hidden, 3, stride=2, padding=1), a, nn.Conv2d(hidden, 5, 1))

archdsl.register_op("head", make_head)
''')
    load_plugin(str(p))
    spec = "network n():\n    input [3, 16, 16]\n    h: head(8, act=\"gelu\")\n"
    g = archdsl.graph(spec)
    node = next(n for n in g.nodes() if n.op == "head")
    assert tuple(node.shape) == (5, 8, 8)
    assert node.params == 3 * 8 * 9 + 8 + 8 * 5 + 5
    import torch
    model = archdsl.build(spec)
    assert sorted(model.state_dict()) == ["h.0.bias", "h.0.weight", "h.2.bias", "h.2.weight"]
    assert tuple(model(torch.randn(2, 3, 16, 16)).shape) == (2, 5, 8, 8)
    assert isinstance(model.h[1], torch.nn.GELU)


def test_labels_repeats_and_combinators(tmp_path: Path) -> None:
    load_plugin(str(PLUGIN))
    spec = ("network n():\n    input [16, 8, 8]\n    gates: eca(k_size=3) * 2\n"
            "    add:\n        identity\n        gate: cbam(reduction=4, kernel_size=3)\n")
    model = archdsl.build(spec)
    assert {k.split(".")[0] + "." + k.split(".")[1] for k in model.state_dict()} >= {"gates.0", "gates.1"}
    assert "gate.spatial_gate.conv.weight" in model.state_dict()


def test_plugin_error_is_located_at_the_spec_line(tmp_path: Path) -> None:
    spec = tmp_path / "bad.arch"
    spec.write_text("network n():\n    input [16, 8, 8]\n    conv2d(16, 3, padding=1)\n    a: eca(k_size=4)\n")
    r = _cli("check", str(spec), "--plugin", str(PLUGIN))
    assert r.exit_code == 1
    assert f"{spec}:4:8: error: eca: ValueError: k_size must be odd, got 4" in r.output
    assert "a: eca(k_size=4)" in r.output and "^~~~" in r.output
    assert "hint: raised by plugin op 'eca' (ECA in module attention)" in r.output
    assert "Traceback" not in r.output
    # a shape function that raises is located the same way
    spec.write_text("network n():\n    input [16, 8, 8]\n    cbam(reduction=32)\n")
    r = _cli("check", str(spec), "--plugin", str(PLUGIN))
    assert r.exit_code == 1 and "3:5: error: cbam: ValueError: reduction=32 leaves no hidden channel" in r.output


def test_bad_return_values_are_located(tmp_path: Path) -> None:
    p = _write_plugin(tmp_path, "badret", '''
from torch import nn

archdsl.register_op("noshape", lambda in_shape: nn.Identity(), shape=lambda in_shape: "wide")
''')
    # a lambda cannot be imported by generated code, but checking works; building says why it cannot
    load_plugin(str(p))
    with pytest.raises(ArchError) as e:
        archdsl.graph("network n():\n    input [4]\n    noshape\n")
    assert "3:5: error: noshape: TypeError: the shape function of 'noshape' must return a shape" in str(e.value)


def test_unloaded_plugin_op_gives_a_located_error_with_the_hint(tmp_path: Path) -> None:
    spec = tmp_path / "needs.arch"
    spec.write_text("network n():\n    input [16, 8, 8]\n    a: eca(k_size=3)\n")
    r = _cli("check", str(spec))
    assert r.exit_code == 1
    assert f"{spec}:3:8: error: unknown name 'eca'" in r.output
    assert "--plugin FILE.py" in r.output and "ARCHDSL_PLUGINS" in r.output
    # and the environment variable loads it
    r = _cli("check", str(spec), env={ENV_VAR: str(PLUGIN)})
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("kind", ["missing", "raises", "module"])
def test_bad_plugin_is_one_line_and_exit_1(tmp_path: Path, kind: str) -> None:
    spec = tmp_path / "ok.arch"
    spec.write_text("network n():\n    input [4]\n    relu\n")
    if kind == "missing":
        ref, want = str(tmp_path / "nope.py"), "does not exist"
    elif kind == "raises":
        ref, want = str(_write_plugin(tmp_path, "boom", "raise RuntimeError('no GPU here')\n")), \
            "raised RuntimeError while loading: no GPU here"
    else:
        ref, want = "no_such_plugin_module_xyz", "no module named 'no_such_plugin_module_xyz'"
    for cmd in (["check", str(spec)], ["summary", str(spec)], ["render", str(spec), "-o", str(tmp_path / "x.dot")],
                ["compile", str(spec), "-o", str(tmp_path / "x.py")]):
        r = _cli(*cmd, "--plugin", ref)
        assert r.exit_code == 1, r.output
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("archc: error: plugin") and want in lines[0], r.output
    assert not (tmp_path / "x.py").exists()


def test_spec_text_cannot_load_python(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').close()\nimport archdsl\n")
    for text in ('import "evil.py"\nnetwork n():\n    input [4]\n    relu\n',
                 'from "evil.py" import Net\nnetwork n():\n    input [4]\n    relu\n',
                 'import evil\nnetwork n():\n    input [4]\n    relu\n',
                 'network n():\n    input [4]\n    evil\n',
                 'network n():\n    input [4]\n    plugin("evil.py")\n'):
        spec = tmp_path / "s.arch"
        spec.write_text(text)
        with pytest.raises(ArchError):
            archdsl.graph(str(spec))
        r = _cli("check", str(spec))
        assert r.exit_code == 1
    assert not marker.exists()
    assert "evil" not in sys.modules


def test_register_op_refuses_what_a_spec_could_not_call() -> None:
    from torch import nn
    with pytest.raises(ValueError, match="built-in op"):
        register_op("conv2d", lambda in_shape: nn.Identity())
    with pytest.raises(ValueError, match="word of the spec language"):
        register_op("range", lambda in_shape: nn.Identity())
    with pytest.raises(ValueError, match=r"\*kwargs"):
        register_op("anyargs", lambda in_shape, **kwargs: nn.Identity())
    with pytest.raises(ValueError, match="input shape as its first parameter"):
        register_op("noshape", lambda: nn.Identity())
    with pytest.raises(ValueError, match="not an identifier"):
        register_op("my-op", lambda in_shape: nn.Identity())


def test_factory_outside_a_module_cannot_be_compiled() -> None:
    from torch import nn

    def local(in_shape):   # defined in a function: generated code could not import it
        return nn.Identity()
    register_op("local_op", local)
    spec = "network n():\n    input [4]\n    local_op\n"
    assert archdsl.graph(spec).total_params == 0
    with pytest.raises(ArchError, match="cannot be imported by generated code"):
        archdsl.source(spec)


def test_deploy_keeps_plugin_modules_and_their_weights(tmp_path: Path) -> None:
    import torch
    spec = tmp_path / "d.arch"
    spec.write_text("network d():\n    input [8, 16, 16]\n    conv1: conv2d(16, 3, padding=1, bias=false)\n"
                    "    bn1: batchnorm\n    relu\n    attn: cbam(reduction=4, kernel_size=3)\n")
    model = archdsl.build(str(spec), plugins=[str(PLUGIN)]).eval()
    x = torch.randn(2, 8, 16, 16)
    fast = archdsl.deploy(model)
    assert "attn.channel_gate.mlp.0.weight" in fast.state_dict()
    assert torch.allclose(model(x), fast(x), atol=1e-5)
    w = tmp_path / "w.pt"
    torch.save(model.state_dict(), w)
    r = _cli("deploy", str(spec), "-w", str(w), "-o", str(tmp_path / "dep.pt"), "--plugin", str(PLUGIN))
    assert r.exit_code == 0, r.output
    assert "attn.spatial_gate.conv.weight" in torch.load(tmp_path / "dep.pt")


# ---- docs/extending.md: its code is the code tested here -------------------------------------------------
def _doc_block(heading: str, lang: str) -> str:
    text = (ROOT / "docs" / "extending.md").read_text()
    m = re.search(re.escape(heading) + r".*?```" + lang + r"\n(.*?)```", text, re.S)
    assert m, f"no {lang} block after {heading!r} in docs/extending.md"
    return m.group(1)


def test_tutorial_eca_and_bottleneck(tmp_path: Path) -> None:
    import torch
    (tmp_path / "doc_eca.py").write_text(_doc_block("## 1.", "python"))
    load_plugin(str(tmp_path / "doc_eca.py"))
    spec = _doc_block("## 2.", "arch") + ("network n():\n    input [64, 16, 16]\n    b1: AttnBottleneck(16)\n"
                                          "    b2: AttnBottleneck(32, stride=2)\n")
    model = archdsl.build(spec)
    assert "b1.attn.conv.weight" in model.state_dict()
    assert tuple(model(torch.randn(1, 64, 16, 16)).shape) == (1, 128, 8, 8)


def test_tutorial_small_plugin_checks_without_torch(tmp_path: Path) -> None:
    (tmp_path / "tinyops.py").write_text(_doc_block("## 5.", "python"))
    spec = tmp_path / "tiny.arch"
    spec.write_text(_doc_block("## 5.", "arch"))
    code = ("import sys, archdsl; g = archdsl.graph(sys.argv[1], plugins=[sys.argv[2]]); "
            "print(g.total_params, 'torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", code, str(spec), str(tmp_path / "tinyops.py")], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [str(3 * 16 + 16 * 32 + 32 * 32 + 32 * 10 + 10), "False"]
    load_plugin(str(tmp_path / "tinyops.py"))
    model = archdsl.build(str(spec))
    assert sum(p.numel() for p in model.parameters()) == archdsl.graph(str(spec)).total_params


def test_python_only_defaults_stay_out_of_the_graph(tmp_path: Path) -> None:
    p = _write_plugin(tmp_path, "pydefault", '''
from torch import nn

def make_block(in_shape, width: int, act=nn.GELU, norm: bool = True):
    layers = [nn.Conv2d(in_shape[0], width, 1), act()]
    if norm:
        layers.append(nn.BatchNorm2d(width))
    return nn.Sequential(*layers)

archdsl.register_op("pyblock", make_block)
''')
    load_plugin(str(p))
    spec = "network n():\n    input [3, 8, 8]\n    b: pyblock(4, norm=false)\n"
    g = archdsl.graph(spec)
    node = next(n for n in g.nodes() if n.op == "pyblock")
    assert node.args == {"width": 4, "norm": False}   # 'act' is Python's default: not a spec value
    src = archdsl.source(spec)
    assert "_plugin_pydefault.make_block((3, 8, 8), width=4, norm=False)" in src
    r = _cli("summary", spec, "--json")
    assert r.exit_code == 0, r.output
    import torch
    assert isinstance(archdsl.build(spec).b[1], torch.nn.GELU)


def test_shape_error_points_at_the_argument(tmp_path: Path) -> None:
    p = _write_plugin(tmp_path, "pointed", '''
from archdsl.ops import ShapeError

def _shape(in_shape, groups: int = 1):
    if in_shape[0] % groups:
        raise ShapeError(f"{in_shape[0]} channels do not split into {groups} groups", arg="groups",
                         hint="use a divisor of the channel count")
    return in_shape

@archdsl.register_op("shuffle2", shape=_shape, params=lambda in_shape, groups=1: 0)
def make_shuffle(in_shape, groups: int = 1):
    from torch import nn
    return nn.ChannelShuffle(groups)
''')
    load_plugin(str(p))
    with pytest.raises(ArchError) as e:
        archdsl.graph("network n():\n    input [6, 4, 4]\n    shuffle2(groups=4)\n")
    text = str(e.value)
    assert "3:14: error: shuffle2: 6 channels do not split into 4 groups" in text
    assert "hint: use a divisor of the channel count" in text


def test_archc_ops_lists_plugin_ops_only_when_asked() -> None:
    r = _cli("ops")
    assert r.exit_code == 0 and "cbam" not in r.output
    r = _cli("ops", "--json", "--plugin", str(PLUGIN))
    assert r.exit_code == 0, r.output
    assert '"cbam"' in r.output and "reduction=16, kernel_size=7" in r.output
