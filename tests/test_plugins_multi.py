"""Plugin ops over several tensors (docs/extending.md, section 8): examples/plugins/fusion.py's 'fuse' (shape,
params and macs functions) and 'cross_attention' (inferred on the meta device) in examples/fpn_fusion.arch,
called on named tensors like matmul(a, b): checked, summarized, rendered, compiled, built and trained at two
input sizes; the module is called with the inputs in order; wrong input counts and plugin errors located."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from helpers import ROOT
from test_plugins import isolated_registry   # noqa: F401  (the autouse fixture: no plugin op outlives a test)

import archdsl
from archdsl import ArchError
from archdsl.cli import app
from archdsl.plugins import ENV_VAR, load_plugin, register_op, user_ops

PLUGIN = ROOT / "examples" / "plugins" / "fusion.py"
SPEC = ROOT / "examples" / "fpn_fusion.arch"
HEAD = ("network n():\n    input [3, 32, 32]\n    c3 = x -> stem: [conv2d(8, 3, stride=2, padding=1), relu]\n"
        "    c4 = c3 -> down: [conv2d(16, 3, stride=2, padding=1), relu]\n")   # c3 [8, 16, 16], c4 [16, 8, 8]


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _node(g: Any, name: str) -> Any:
    return next(n for n in g.nodes() if n.name == name)


# ---- the example: check, summary, render, compile -----------------------------------------------------------
def test_check_summary_render(tmp_path: Path) -> None:
    r = _cli("check", str(SPEC), "--plugin", str(PLUGIN))
    assert r.exit_code == 0, r.output
    r = _cli("summary", str(SPEC), "--plugin", str(PLUGIN), "--json")
    assert r.exit_code == 0, r.output
    layers = {row["name"]: row for row in json.loads(r.output)["layers"]}
    assert (layers["fuse3"]["op"], layers["fuse3"]["inputs"]) == ("fuse", [[32, 16, 16], [64, 8, 8]])
    assert layers["fuse3"]["connected_to"] == ["layer1", "layer2"]
    assert (layers["attn"]["op"], layers["attn"]["params"]) == ("cross_attention", 6272)
    assert layers["fuse3"]["line"] == f"{SPEC}:19:17"   # the call in 'p3 = fuse3: fuse(c3, c4, out=width)'
    svg = tmp_path / "fpn.svg"
    r = _cli("render", str(SPEC), "-o", str(svg), "--plugin", str(PLUGIN))
    assert r.exit_code == 0, r.output
    text = svg.read_text()
    assert text.lstrip().startswith("<") and "<svg" in text and "fuse3" in text and "cross_attention" in text


def test_graph_counts_equal_the_real_modules() -> None:
    import torch
    g = archdsl.graph(str(SPEC), plugins=[str(PLUGIN)])
    fuse3 = _node(g, "fuse3")
    assert (fuse3.op, fuse3.module) == ("fuse", "fuse3")
    assert [tuple(s) for s in fuse3.in_shapes] == [(32, 16, 16), (64, 8, 8)]
    assert tuple(fuse3.shape) == (32, 16, 16)
    assert fuse3.params == 33 * 32 + 65 * 32   # the params function: two 1x1 convs with bias
    assert fuse3.macs == 32 * 32 * 16 * 16 + 64 * 32 * 8 * 8
    attn = _node(g, "attn")   # cross_attention: shape and parameters found on the meta device
    assert [tuple(s) for s in attn.in_shapes] == [(16, 32), (64, 64)] and tuple(attn.shape) == (16, 32)
    assert [g.node(i).name for i in fuse3.inputs] == ["layer1.2", "layer2.2"]   # c3 then c4, in call order
    model = archdsl.build(str(SPEC))
    assert g.total_params == sum(p.numel() for p in model.parameters())
    assert attn.params == sum(p.numel() for p in model.get_submodule("attn").parameters()) == 32 * 33 + 64 * 64 + 64 \
        + 32 * 33
    assert isinstance(model.get_submodule("fuse3.top_down"), torch.nn.Conv2d)
    assert model.get_submodule("fuse3.top_down").in_channels == 64


def test_compiled_file_imports_the_plugin_and_runs(tmp_path: Path) -> None:
    out = tmp_path / "fpn_fusion.py"
    r = _cli("compile", str(SPEC), "-o", str(out), "--plugin", str(PLUGIN))
    assert r.exit_code == 0, r.output
    src = out.read_text()
    assert "import fusion as _plugin_fusion" in src
    assert "self.fuse3 = _plugin_fusion.Fuse(((32, 16, 16), (64, 8, 8)), out=32)" in src
    assert "self.attn = _plugin_fusion.CrossAttention(((16, 32), (64, 64)), heads=4)" in src
    assert re.search(r"= self\.fuse3\(\w+, \w+\)", src) and re.search(r"= self\.attn\(\w+, \w+\)", src)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGIN.parent), str(ROOT)])}
    env.pop(ENV_VAR, None)
    code = (f"import sys, torch; sys.path.insert(0, {str(tmp_path)!r}); import fpn_fusion as m; "
            "net = m.FpnFusion().eval(); print(*[tuple(net(torch.randn(2, 3, s, s)).shape) for s in (64, 96)], "
            "sum(p.numel() for p in net.parameters()))")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["(2,", "10)", "(2,", "10)", str(archdsl.graph(str(SPEC)).total_params)]


# ---- built models: training, the inputs' order -----------------------------------------------------------
@pytest.mark.parametrize("size", [(3, 64, 64), (3, 96, 80)])
def test_build_and_train_one_step(size: tuple[int, int, int]) -> None:
    import torch
    torch.manual_seed(0)
    model = archdsl.build(str(SPEC), input_shape=size, num_classes=10, plugins=[str(PLUGIN)])
    c2 = (32, -(-size[1] // 2), -(-size[2] // 2))
    assert model.get_submodule("fuse2").lateral.in_channels == 16 and c2[0] == 32
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(4, *size), torch.tensor([0, 1, 2, 3])
    model.train()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if n.split(".")[0] in ("fuse3", "fuse2", "attn")}
    assert len(grads) == 2 * 2 * 2 + 3 * 2   # two convs per fuse, three linears in attn (weight and bias)
    assert all(gr is not None and gr.abs().sum() > 0 for gr in grads.values())
    before = {k: v.clone() for k, v in model.get_submodule("fuse3").state_dict().items()}
    opt.step()
    after = model.get_submodule("fuse3").state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before)
    assert torch.isfinite(loss)


def test_outputs_equal_calling_the_modules_directly() -> None:
    import torch
    fusion = load_plugin(str(PLUGIN))
    model = archdsl.build(str(SPEC)).eval()
    seen: dict[str, tuple[tuple[torch.Tensor, ...], torch.Tensor]] = {}
    for name in ("fuse3", "fuse2", "attn"):
        model.get_submodule(name).register_forward_hook(
            lambda m, args, out, name=name: seen.__setitem__(name, (tuple(a.clone() for a in args), out.clone())))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        model(x)
        c2 = model.stem(x)
        c3 = model.layer1(c2)
        c4 = model.layer2(c3)
        direct = {"fuse3": fusion.Fuse(((32, 16, 16), (64, 8, 8)), out=32),
                  "fuse2": fusion.Fuse(((16, 32, 32), (32, 16, 16)), out=32),
                  "attn": fusion.CrossAttention(((16, 32), (64, 64)), heads=4)}
        for name, m in direct.items():
            m.load_state_dict(model.get_submodule(name).state_dict())
            m.eval()
        assert torch.equal(seen["fuse3"][0][0], c3) and torch.equal(seen["fuse3"][0][1], c4)
        p3 = direct["fuse3"](c3, c4)
        assert torch.allclose(seen["fuse3"][1], p3)
        assert torch.equal(seen["fuse2"][0][0], c2) and torch.allclose(seen["fuse2"][0][1], p3)
        p2 = direct["fuse2"](c2, p3)
        assert torch.allclose(seen["fuse2"][1], p2)
        q = model.smooth(p2)
        q = torch.nn.functional.adaptive_avg_pool2d(q, 4).reshape(2, 32, 16).transpose(1, 2)
        kv = c4.reshape(2, 64, -1).transpose(1, 2)
        assert torch.allclose(seen["attn"][1], direct["attn"](q, kv), atol=1e-6)
        assert not torch.allclose(direct["fuse3"](c3, torch.zeros_like(c4)), p3)   # the second input matters


def test_deploy_folds_around_the_fusions() -> None:
    import torch
    torch.manual_seed(0)
    model = archdsl.build(str(SPEC), plugins=[str(PLUGIN)]).eval()
    for m in model.modules():   # BatchNorm statistics that are not the identity, so folding them shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    fast = archdsl.deploy(model)
    keys = fast.state_dict()
    assert "fuse3.top_down.weight" in keys and "attn.kv.weight" in keys   # the plugin modules are kept
    assert not any(".bn." in k for k in keys)                            # the ConvBN blocks around them fold
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(model(x), fast(x), atol=1e-5)


# ---- the contract --------------------------------------------------------------------------------------------
def _write(tmp_path: Path, name: str, body: str) -> Path:
    p = tmp_path / f"{name}.py"
    p.write_text("import archdsl\nimport torch\nfrom torch import nn\n" + body)
    return p


def test_in_shape_is_a_tuple_of_shapes_everywhere(tmp_path: Path) -> None:
    mod = load_plugin(str(_write(tmp_path, "gated", '''
SEEN = []

def _shape(in_shape, hidden: int = 4):
    SEEN.append(("shape", in_shape))
    return in_shape[0]

def _params(in_shape, hidden: int = 4):
    SEEN.append(("params", in_shape))
    return in_shape[1][0] * hidden + hidden * in_shape[0][0]

def _macs(in_shape, out_shape, hidden: int = 4):
    SEEN.append(("macs", in_shape, out_shape))
    return 7

@archdsl.register_op("gate2", shape=_shape, params=_params, macs=_macs)
class Gate(nn.Module):
    """x * sigmoid(mlp(global context of g))."""

    def __init__(self, in_shape, hidden: int = 4):
        super().__init__()
        SEEN.append(("factory", in_shape))
        (cx, _, _), (cg, _, _) = in_shape
        self.mlp = nn.Sequential(nn.Linear(cg, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, cx, bias=False))

    def forward(self, x, g, scale=None):
        return x * self.mlp(g.mean((2, 3))).sigmoid()[:, :, None, None]
''')))
    g = archdsl.graph(HEAD + "    y = gate2(c3, c4, hidden=6)\n")
    shapes = ((8, 16, 16), (16, 8, 8))
    assert mod.SEEN == [("shape", shapes), ("params", shapes), ("macs", shapes, (8, 16, 16))]
    node = _node(g, "2")   # no label: named by its position, like any unlabelled layer
    assert (node.op, node.module, node.params, node.macs) == ("gate2", "2", 16 * 6 + 6 * 8, 7)
    model = archdsl.build(HEAD + "    y = gate2(c3, c4, hidden=6)\n")
    assert mod.SEEN[-1] == ("factory", shapes)
    assert sum(p.numel() for p in model.parameters()) == g.total_params
    assert user_ops()["gate2"].inputs == 2   # forward(self, x, g, scale=None): the two without a default


def test_inputs_rule_and_override(tmp_path: Path) -> None:
    import torch
    load_plugin(str(_write(tmp_path, "variadic", '''
class Sum(nn.Module):
    def __init__(self, in_shape):
        super().__init__()
        self.w = nn.Parameter(torch.ones(len(in_shape)))

    def forward(self, *xs):
        return sum(w * x for w, x in zip(self.w, xs))

def make_sum3(in_shape):
    return Sum(in_shape)

archdsl.register_op("wsum3", make_sum3, inputs=3)     # a function factory: the count is given
archdsl.register_op("wsum2", Sum, inputs=2)           # forward(self, *xs): the count is given
archdsl.register_op("wsum1", Sum)                     # nothing to read: one tensor
''')))
    assert [user_ops()[n].inputs for n in ("wsum3", "wsum2", "wsum1")] == [3, 2, 1]
    spec = HEAD + ("    a = c3 -> conv2d(16, 1)\n    b = c4 -> upsample(2)\n    y = s: wsum3(a, b, a)\n"
                   "    t: wsum2(y, b)\n")
    g = archdsl.graph(spec)
    assert [tuple(x) for x in _node(g, "s").in_shapes] == [(16, 16, 16)] * 3 and _node(g, "s").params == 3
    model = archdsl.build(spec)
    assert sorted(model.state_dict()) == ["2.bias", "2.weight", "down.0.bias", "down.0.weight", "s.w",
                                          "stem.0.bias", "stem.0.weight", "t.w"]
    assert tuple(model(torch.randn(1, 3, 32, 32)).shape) == (1, 16, 16, 16)
    assert re.search(r"= self\.s\((\w+), (?!\1)\w+, \1\)", archdsl.source(spec))   # a, b, a: in call order
    from torch import nn

    class Two(nn.Module):
        def __init__(self, in_shape: Any) -> None:
            super().__init__()

        def forward(self, q: Any, kv: Any, mask: Any = None) -> Any:
            return q
    for bad, match in ((4, r"inputs=4, but .*Two.forward\(q, kv, mask\) takes 2 to 3 tensors"),
                       (1, "inputs=1, but"), (0, "positive int"), (True, "positive int")):
        with pytest.raises(ValueError, match=match):
            register_op("two", Two, inputs=bad)
    register_op("two", Two, inputs=3)   # the optional mask too
    assert user_ops()["two"].inputs == 3


def test_function_factory_without_inputs_is_located(tmp_path: Path) -> None:
    load_plugin(str(_write(tmp_path, "fnfactory", '''
class Pair(nn.Module):
    def forward(self, a, b):
        return a + b

def make_pair(in_shape):
    return Pair()

archdsl.register_op("pair", make_pair)
''')))
    with pytest.raises(ArchError) as e:
        archdsl.graph(HEAD + "    y = c3 -> pair\n")
    text = str(e.value)
    assert "5:15: error: pair: ValueError: op 'pair': inputs=1, but Pair.forward(a, b) takes 2 tensors" in text
    assert "register it with inputs=2" in text and "hint: raised by plugin op 'pair'" in text


# ---- errors --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("line, want, hint", [
    ("p = f: fuse(c3, out=8)", "5:12: error: fuse takes 2 tensors, got 1",
     "hint: write fuse(fine, coarse, name=value): 2 named tensors, in the order of the module's forward"),
    ("f: fuse(c3, c4, c4, out=8)", "5:8: error: fuse takes 2 tensors, got 3", "hint: write fuse(fine, coarse"),
    ("c3 -> fuse(out=8)", "5:11: error: 'fuse' combines several tensors; it is not applied with '->'",
     "hint: fuse(a, b, ...) over named values"),
    ("fuse(c3, c4, 8)", "5:5: error: fuse(...) takes named tensors, then keyword arguments; got int 8",
     "hint: pass the op's other arguments by name"),
    ("fuse(c3, c4, outs=8)", "5:18: error: fuse has no argument 'outs'", "did you mean 'out'"),
])
def test_wrong_input_count_and_call_form_are_located(line: str, want: str, hint: str) -> None:
    load_plugin(str(PLUGIN))
    with pytest.raises(ArchError) as e:
        archdsl.graph(HEAD + "    " + line + "\n")
    text = str(e.value)
    assert want in text and hint in text and "Traceback" not in text


def test_plugin_errors_are_located_at_the_spec_line(tmp_path: Path) -> None:
    spec = tmp_path / "bad.arch"
    spec.write_text(HEAD + "    p3 = fuse3: fuse(c4, c3, out=8)\n")   # the coarse map first: the shape function raises
    r = _cli("check", str(spec), "--plugin", str(PLUGIN))
    assert r.exit_code == 1
    assert (f"{spec}:5:17: error: fuse: ValueError: the second map [8, 16, 16] must be the coarser one "
            "(the first is [16, 8, 8])") in r.output
    assert "p3 = fuse3: fuse(c4, c3, out=8)" in r.output and "^~~~" in r.output
    assert "hint: raised by plugin op 'fuse' (Fuse in module fusion)" in r.output and "Traceback" not in r.output
    # the factory raising while the module is built on the meta device: located the same way
    spec.write_text(HEAD + "    q = c3 -> reshape([8, -1])\n    k = c4 -> reshape([16, -1])\n"
                    "    cross: cross_attention(k, q, heads=3)\n")
    r = _cli("check", str(spec), "--plugin", str(PLUGIN))
    assert r.exit_code == 1
    assert f"{spec}:7:12: error: cross_attention: ValueError: the query width 64 does not split into 3 heads" \
        in r.output
    assert "hint: raised by plugin op 'cross_attention' (CrossAttention in module fusion)" in r.output


def test_labels_name_the_module_and_stay_refused_elsewhere() -> None:
    load_plugin(str(PLUGIN))
    g = archdsl.graph(HEAD + "    f: fuse(c3, c4, out=8) -> relu\n    g2: fuse(c3, c4, out=4)\n")
    assert [(n.name, n.module) for n in g.nodes() if n.op == "fuse"] == [("f", "f"), ("g2", "g2")]
    with pytest.raises(ArchError) as e:   # two modules cannot share a name
        archdsl.graph(HEAD + "    f: fuse(c3, c4, out=8)\n    f: fuse(c3, c4, out=8)\n")
    assert "6:5: error: two layers would be named 'f'" in str(e.value)
    with pytest.raises(ArchError) as e:   # a built-in op over tensors has no module: a label is refused as before
        archdsl.graph(HEAD + "    a = c3 -> reshape([8, 256])\n    at = a -> transpose(1, 2)\n"
                      "    y = m: matmul(a, at)\n")
    assert "error: a named value must start from a named tensor" in str(e.value)


def test_archc_ops_shows_the_call_over_tensors() -> None:
    r = _cli("ops", "--json", "--plugin", str(PLUGIN))
    assert r.exit_code == 0, r.output
    entry = next(e for e in json.loads(r.output) if e["name"] == "fuse")
    assert entry["signature"] == "out" and "Over 2 named tensors: fuse(fine, coarse, ...)" in entry["doc"]


# ---- docs/extending.md section 8: its code is the code tested here --------------------------------------------
def _doc_block(heading: str, lang: str) -> str:
    text = (ROOT / "docs" / "extending.md").read_text()
    m = re.search(re.escape(heading) + r".*?```" + lang + r"\n(.*?)```", text, re.S)
    assert m, f"no {lang} block after {heading!r} in docs/extending.md"
    return m.group(1)


def test_tutorial_section_8(tmp_path: Path) -> None:
    import torch
    (tmp_path / "doc_fusion.py").write_text(_doc_block("## 8.", "python"))
    spec = tmp_path / "fpn_tiny.arch"
    spec.write_text(_doc_block("## 8.", "arch"))
    g = archdsl.graph(str(spec), plugins=[str(tmp_path / "doc_fusion.py")])
    assert [tuple(s) for s in _node(g, "fuse3").in_shapes] == [(32, 16, 16), (64, 8, 8)]
    src = archdsl.source(str(spec))
    assert "self.fuse3 = _plugin_doc_fusion.Fuse(((32, 16, 16), (64, 8, 8)), out=32)" in src
    assert "x = self.fuse3(x1, x)" in src   # c3 then c4, as docs/extending.md shows it
    model = archdsl.build(str(spec))
    assert "fuse3.lateral.weight" in model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == g.total_params
    for s in (64, 96):
        assert tuple(model(torch.randn(1, 3, s, s)).shape) == (1, 10)
    text = (ROOT / "docs" / "extending.md").read_text()
    bad = tmp_path / "bad.arch"
    bad.write_text(_doc_block("## 8.", "arch").replace("fuse(c3, c4, out=32)", "fuse(c3, out=32)"))
    r = _cli("check", str(bad), "--plugin", str(tmp_path / "doc_fusion.py"))
    shown = re.search(r"\$ archc check bad\.arch --plugin doc_fusion\.py\n(.*?)```", text, re.S)
    assert r.exit_code == 1 and shown
    assert r.output.replace(str(bad), "bad.arch").strip() == shown.group(1).strip()


def test_an_unloaded_plugin_op_is_an_unknown_name_with_the_plugin_hint() -> None:
    """Without its plugin, 'p = fuse3: fuse(a, b)' is the unknown name 'fuse' (not "a named value must start
    from a named tensor"), and a called name with no close spelling says how to load a plugin; a plain typo
    of an op only gets the spelling."""
    text = ("network t():\n    input [4, 8, 8]\n    a = x -> conv2d(4, 1)\n    p = f3: fuse_two(a, x, out=4)\n"
            "    q = x -> batchnrom\n    attn: cross_attn(a, x, heads=2)\n")
    with pytest.raises(archdsl.ArchError) as e:
        archdsl.graph(text)
    errs = e.value.errors
    assert [d.message for d in errs] == ["unknown name 'fuse_two'", "unknown name 'batchnrom'",
                                         "unknown name 'cross_attn'"]
    assert errs[0].hint is not None and "--plugin FILE.py" in errs[0].hint and "ARCHDSL_PLUGINS" in errs[0].hint
    assert errs[1].hint == "did you mean 'batchnorm'?"
    assert errs[2].hint is not None and "--plugin FILE.py" in errs[2].hint
