"""Issue 20, names: any identifier that is not a keyword names a parameter, a local, a free parameter or a label.

A local shadows an op, block or built-in function of its name for the rest of its block, as in Python, so a
built-in added in a later version never breaks a spec (`exp = make_divisible(...)` broke when `exp` became a
math built-in). A parameter is stored under exactly the key its label spells, also `scale`, `weight`, `gamma`
and quoted dotted paths (`"layer_scale.gamma": layer_scale(1e-5)` once crashed the generated `__init__` with
"torch.FloatTensor is not a Module subclass"). The two user specs that broke are built against their
references (tests/data/compat_names/, copied from the compatibility corpus).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch

import archdsl
from helpers import DATA, assert_same_outputs, error_of, make_reference, randomize_bn, run_archc

COMPAT = DATA / "compat_names"


def _run(model: Any, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------- locals
@pytest.mark.parametrize("name", ["exp", "min", "max", "round", "sqrt", "log", "len", "sum", "relu", "conv2d",
                                  "scale", "chunk", "make_divisible", "Body"])
def test_a_local_shadows_a_builtin_op_or_block_only_in_its_block(name: str) -> None:
    spec = f"""
block Body(c):
    conv2d(c, 1)

block Proj(c):
    conv: conv2d(c, 1)
    relu

block B(c):
    {name} = make_divisible(c * 3, 8) if c > 0 else 0
    p: Proj({name})

block Other(c):
    width = max(c, 2) + round(1.4) + len([1]) + int(sqrt(4)) + int(exp(0))   # the built-ins, unshadowed here
    conv: conv2d(width, 1)

network n():
    input [4, 6, 6]
    b: B(5)
    o: Other(3)
    tail: Body(2)
"""
    model = archdsl.build(spec)
    sd = model.state_dict()
    assert tuple(sd["b.p.conv.weight"].shape) == (16, 4, 1, 1)     # make_divisible(15, 8) = 16
    assert tuple(sd["o.conv.weight"].shape) == (3 + 1 + 1 + 2 + 1, 16, 1, 1)
    assert tuple(sd["tail.0.weight"].shape) == (2, 8, 1, 1)
    assert _run(model, _x(2, 4, 6, 6)).shape == (2, 2, 6, 6)


def test_block_parameters_named_like_builtins_and_python_keywords() -> None:
    spec = """
block B(exp, min=2, max=3, lambda=1, self=1):
    conv: conv2d(exp * min + max + lambda + self, 1)

network n(class=4, max=7):
    input [3, 5, 5]
    b: B(class)
    c: conv2d(max, 1)
"""
    model = archdsl.build(spec)
    assert tuple(model.state_dict()["b.conv.weight"].shape) == (4 * 2 + 3 + 1 + 1, 3, 1, 1)
    assert tuple(model.state_dict()["c.weight"].shape) == (7, 13, 1, 1)
    # the network parameters are still set from outside, also a Python keyword
    other = archdsl.build(spec, **{"class": 1, "max": 5})
    assert tuple(other.state_dict()["b.conv.weight"].shape) == (1 * 2 + 3 + 1 + 1, 3, 1, 1)
    assert tuple(other.state_dict()["c.weight"].shape) == (5, 7, 1, 1)


def test_generated_source_with_keyword_parameters_is_a_valid_module(tmp_path: Path) -> None:
    spec = tmp_path / "kw.arch"
    spec.write_text("network n(lambda=6, self=2, x_=1):\n    input [3, 4, 4]\n    h = x -> head: conv2d(lambda * self, 1)\n"
                    "    exp = 2\n    scale = parameter([lambda * self, 1, 1], init=\"ones\", batch_dim=false)\n"
                    "    h * scale * exp\n", encoding="utf-8")
    out = tmp_path / "kw.py"
    r = run_archc("compile", str(spec), "-o", str(out))
    assert r.returncode == 0, r.stderr
    mod_spec = importlib.util.spec_from_file_location("kw_generated", out)
    assert mod_spec is not None and mod_spec.loader is not None
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    model = mod.N()
    assert sorted(model.state_dict()) == ["head.bias", "head.weight", "scale"]
    assert _run(model, _x(1, 3, 4, 4)).shape == (1, 12, 4, 4)


# names the generated module (or its __init__/forward) uses itself: a block parameter of that name whose value
# differs between instances becomes a constructor argument only where that is safe, and the module stays valid
GENERATED_NAMES = ["torch", "nn", "F", "math", "Tensor", "self", "super", "lambda", "x_in", "x1", "training",
                   "forward", "getattr", "int", "_check_input", "_channel_shuffle", "in_channels", "weight"]


@pytest.mark.parametrize("name", GENERATED_NAMES)
def test_block_parameters_named_like_generated_code_names_compile_to_valid_python(name: str) -> None:
    spec = f"""
block B({name}, k):
    w = parameter([{name}], init="normal", std=1.0, dim=1)
    y = x -> relu -> conv: conv2d({name}, k, padding=k // 2)
    y * w -> scale(0.5) -> leaky_relu(0.1 * k) -> channel_shuffle(2)

network n():
    input [4, 8, 8]
    a: B(8, 3)
    b: B(6, 1)
    c: B(8, 3)
"""
    text = archdsl.source(spec)
    namespace: dict[str, Any] = {}
    exec(compile(text, "<generated>", "exec"), namespace)   # the text archc would write, run as a module
    compiled = namespace["N"]()
    model = archdsl.build(spec).eval()
    compiled.load_state_dict(model.state_dict(), strict=True)
    assert tuple(model.state_dict()["b.w"].shape) == (6,)
    x = _x(2, 4, 8, 8)
    assert torch.equal(_run(compiled, x), _run(model, x))


@pytest.mark.parametrize("text, message", [
    ("    true = 1\n", "3:5: error: 'true' is a constant and cannot be reassigned"),
    ("    none = parameter([3, 1, 1])\n", "3:5: error: 'none' is a constant and cannot be reassigned"),
])
def test_constants_stay_fixed(text: str, message: str) -> None:
    assert message in error_of("network n():\n    input [3, 4, 4]\n" + text)


def test_parameter_names_that_would_be_hidden_are_located_errors_once_per_definition() -> None:
    err = error_of("block B(x, false=1):\n    relu\nnetwork n():\n    input [3, 4, 4]\n    B(1) * 4\n")
    assert "1:9: error: the parameter name 'x' cannot be used: inside a block 'x' is the block's input" in err
    assert "1:12: error: the parameter name 'false' cannot be used: 'false' is a constant" in err
    assert err.count("error:") == 2   # once per definition, not once per instance


# ----------------------------------------------------------------------------- free parameters and labels
@pytest.mark.parametrize("name", ["scale", "weight", "bias", "gamma", "exp", "mean", "parameter"])
def test_a_free_parameter_is_stored_under_its_name(name: str) -> None:
    spec = f"""
block Affine(c):
    shift = parameter([c, 1, 1], init="normal", std=1.0, batch_dim=false)
    {name} = parameter([c, 1, 1], init="normal", std=1.0, batch_dim=false)
    x * {name} + shift

network n():
    input [4, 3, 3]
    aff: Affine(4)
"""
    model = archdsl.build(spec)
    sd = model.state_dict()
    assert sorted(sd) == sorted([f"aff.{name}", "aff.shift"])
    x = _x(2, 4, 3, 3)
    assert torch.equal(_run(model, x), x * sd[f"aff.{name}"] + sd["aff.shift"])


@pytest.mark.parametrize("label", ["scale", "weight", "bias", "gamma", "exp", "relu"])
def test_a_label_is_the_key_of_the_parameter_it_names(label: str) -> None:
    model = archdsl.build(f"network n():\n    input [4, 3, 3]\n    {label}: layer_scale(0.5)\n"
                          f"    body:\n        {label}: conv2d(4, 1)\n")
    sd = model.state_dict()
    assert sorted(sd) == sorted([label, f"body.{label}.weight", f"body.{label}.bias"])
    with torch.no_grad():
        sd_gamma = torch.randn(4, 1, 1, generator=torch.Generator().manual_seed(3))
        model.get_parameter(label).copy_(sd_gamma)
    x = _x(2, 4, 3, 3)
    conv = torch.nn.functional.conv2d(x * sd_gamma, sd[f"body.{label}.weight"], sd[f"body.{label}.bias"])
    assert torch.allclose(_run(model, x), conv, atol=1e-6)


# every depth of a quoted dotted label on a layer that owns a parameter (or a buffer), in the network and in a
# block, beside a module in the same container
DOTTED = """
block Mixer():
    "layer_scale.gamma": layer_scale(0.5)
    "a.b.c.gamma": layer_scale(2.0)
    "convs.0": conv2d(6, 1)
    "convs.1": layer_scale(3.0)

network n():
    input [6, 4, 4]
    "ls.gamma": layer_scale(0.25)
    "deep.er.scale": layer_scale(4.0)
    mixer: Mixer()
    blocks: [Mixer() for i in range(2)]
"""
DOTTED_KEYS = ["ls.gamma", "deep.er.scale"] + [
    f"{p}.{k}" for p in ("mixer", "blocks.0", "blocks.1")
    for k in ("layer_scale.gamma", "a.b.c.gamma", "convs.0.weight", "convs.0.bias", "convs.1")]


def test_dotted_labels_on_parameters_build_with_exact_keys_and_the_spec_s_function(tmp_path: Path) -> None:
    archdsl.graph(DOTTED)   # a clean check ...
    model = archdsl.build(DOTTED)   # ... then no crash in the generated __init__
    sd = model.state_dict()
    assert sorted(sd) == sorted(DOTTED_KEYS)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    sd = model.state_dict()
    x = _x(2, 6, 4, 4)
    want = x * sd["ls.gamma"] * sd["deep.er.scale"]
    for p in ("mixer", "blocks.0", "blocks.1"):
        want = want * sd[f"{p}.layer_scale.gamma"] * sd[f"{p}.a.b.c.gamma"]
        want = torch.nn.functional.conv2d(want, sd[f"{p}.convs.0.weight"], sd[f"{p}.convs.0.bias"])
        want = want * sd[f"{p}.convs.1"]
    got = _run(model, x)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    # the same through the compiled file: valid Python, a strict load of the same keys, the same outputs
    spec = tmp_path / "dotted.arch"
    spec.write_text(DOTTED, encoding="utf-8")
    out = tmp_path / "dotted.py"
    r = run_archc("compile", str(spec), "-o", str(out))
    assert r.returncode == 0, r.stderr
    mod_spec = importlib.util.spec_from_file_location("dotted_generated", out)
    assert mod_spec is not None and mod_spec.loader is not None
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    compiled = mod.N()
    compiled.load_state_dict(sd, strict=True)
    assert torch.equal(_run(compiled, x), got)


def test_a_labelled_free_parameter_is_stored_under_its_label() -> None:
    src = """
block Blk(c):
    g = "layer_scale.gamma": parameter([c], init="normal", std=1.0, dim=1) -> sigmoid
    w = weight: parameter([c, 1, 1], init="normal", std=1.0, batch_dim=false)
    s = "a.b.scale": parameter([c], init="normal", std=1.0, dim=1)
    x * g * s + w

network n():
    input [4, 3, 3]
    blocks: [Blk(4) for i in range(2)]
"""
    model = archdsl.build(src).eval()
    sd = model.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == {
        f"blocks.{i}.{k}": shape for i in range(2)
        for k, shape in (("layer_scale.gamma", (4,)), ("weight", (4, 1, 1)), ("a.b.scale", (4,)))}
    x = _x(2, 4, 3, 3)
    want = x
    for i in range(2):
        p = f"blocks.{i}."
        want = (want * torch.sigmoid(sd[p + "layer_scale.gamma"]).view(4, 1, 1) * sd[p + "a.b.scale"].view(4, 1, 1)
                + sd[p + "weight"])
    torch.testing.assert_close(_run(model, x), want)


def test_dotted_labels_on_parameters_deploy() -> None:
    model = archdsl.build(DOTTED)
    dep = archdsl.deploy(model.eval(), memory_format="contiguous")
    x = _x(1, 6, 4, 4)
    assert torch.allclose(_run(dep, x), _run(model, x), atol=1e-6)


# ---------------------------------------------------------------------------------- the two user specs
@pytest.mark.parametrize("spec, ref, side", [
    ("efficientnet_v2.arch:efficientnet_v2_s", "torchvision.efficientnet_v2_s", 128),
    ("fastvit.arch:fastvit_t8", "timm.fastvit_t8", 256),
])
def test_user_specs_that_broke_build_and_equal_their_reference(spec: str, ref: str, side: int) -> None:
    torch.manual_seed(0)
    reference = make_reference(ref)
    randomize_bn(reference, seed=1)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():   # timm initialises every layer scale to 1e-5, which would hide the residual branches
        for name, p in reference.named_parameters():
            if name.endswith("gamma"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    ours = archdsl.build(str(COMPAT / spec), input_shape=(3, side, side))
    assert sorted(ours.state_dict()) == sorted(reference.state_dict())
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert_same_outputs(ours, reference, (3, side, side), batch=2)
