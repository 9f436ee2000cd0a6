"""The ops' PyTorch spellings (``OpDef.torch_forms``, read by the importer): declared in each op's own registry
entry, one op per (kind, target) except the pairs several ops share on purpose, every target a real torch
object, and the args a form reads from a real torch module or call rebuild that module/call (same weights for
the stateful ops, same outputs for the others)."""
from __future__ import annotations

import ast
import importlib
from typing import Any, Callable

import pytest
from helpers import ROOT, net, randomize_bn
from op_forms import lit

import archdsl
from archdsl.ops import MULTI_OUTPUT_FORMS, OPS, OpDef
from archdsl.ops.core import TensorArg, TorchCall

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional
import torchvision  # noqa: E402

OPS_DIR = ROOT / "archdsl" / "ops"
NN, FN = "torch.nn.", "torch.nn.functional."


def _entries() -> list[OpDef]:
    seen: set[int] = set()
    out = []
    for d in OPS.values():
        if id(d) not in seen:
            seen.add(id(d))
            out.append(d)
    return out


def _registering_modules() -> dict[str, str]:
    """op -> the archdsl.ops module whose ``register(...)`` call creates its entry (from the source)."""
    out: dict[str, str] = {}
    for path in sorted(OPS_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "register":
                for a in node.args:
                    if isinstance(a, ast.Call) and a.args and isinstance(a.args[0], ast.Constant):
                        assert a.args[0].value not in out, f"{a.args[0].value} registered twice"
                        out[str(a.args[0].value)] = f"archdsl.ops.{path.stem}"
    return out


def test_no_module_attaches_forms_after_registration() -> None:
    offenders = []
    for path in sorted((ROOT / "archdsl").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            # d.torch_forms = ..., d.torch_forms += ..., del d.torch_forms
            if isinstance(node, ast.Attribute) and node.attr == "torch_forms" and not isinstance(node.ctx, ast.Load):
                offenders.append(where)
            # setattr(d, "torch_forms", ...), dataclasses.replace(d, torch_forms=...)
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                if name == "setattr" and any(isinstance(a, ast.Constant) and a.value == "torch_forms"
                                             for a in node.args):
                    offenders.append(where)
                if name == "replace" and any(k.arg == "torch_forms" for k in node.keywords):
                    offenders.append(where)
    assert not offenders, f"forms attached outside their op's OpDef: {offenders}"
    assert not (OPS_DIR / "pytorch.py").exists()


def test_every_built_in_form_lives_in_its_registering_module() -> None:
    reg = _registering_modules()
    entries = [d for d in _entries() if d.name in reg]
    assert len(entries) > 80 and sum(bool(d.torch_forms) for d in entries) > 70
    for d in entries:
        for f in d.torch_forms:
            assert f.args.__module__ in (reg[d.name], "archdsl.ops.forms"), (d.name, f.target, f.args.__module__)
        keys = [(f.kind, f.target) for f in d.torch_forms]
        assert len(keys) == len(set(keys)), f"{d.name} spells one call twice: {keys}"


# (kind, target) pairs several ops share, in the order the importer tries them (registry order): the first
# whose form accepts the call wins (a whole flatten is flatten, a partial one a reshape; a + b is add, a + 1
# is scalar; a * b is mul, a * 0.5 is scale)
SHARED = {
    **{("module", NN + "Flatten"): ["flatten", "reshape"], ("function", "torch.flatten"): ["flatten", "reshape"],
       ("method", "flatten"): ["flatten", "reshape"]},
    **{k: ["add", "scalar"] for k in (("function", "operator.add"), ("function", "operator.iadd"),
                                      ("function", "torch.add"), ("method", "add"))},
    **{k: ["mul", "scale"] for k in (("function", "operator.mul"), ("function", "operator.imul"),
                                     ("function", "torch.mul"), ("method", "mul"))},
    # an even chunk is chunk, an uneven one the split torch makes of it
    **{k: ["chunk", "split"] for k in (("method", "chunk"), ("function", "torch.chunk"))},
    ("function", "operator.sub"): ["scalar", "sub"],
    ("function", "operator.truediv"): ["scalar", "div"],
    ("method", "div"): ["scalar", "div"],
}


def _key_map() -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for d in _entries():
        for f in d.torch_forms:
            out.setdefault((f.kind, f.target), []).append(d.name)
    for name, forms in MULTI_OUTPUT_FORMS.items():
        for f in forms:
            out.setdefault((f.kind, f.target), []).append(name)
    return out


def test_a_torch_spelling_maps_to_the_ops_that_mean_it() -> None:
    keys = _key_map()
    assert {k: v for k, v in keys.items() if len(v) > 1} == SHARED
    t0, t1 = TensorArg(0), TensorArg(1)
    # the shared pairs tell their ops apart: exactly one op takes a two-tensor call, one a tensor-and-number
    for (kind, target), ops in SHARED.items():
        if "flatten" in ops or "chunk" in ops:
            continue
        for args, shapes in (((t0, t1), [(4, 3), (4, 3)]), ((t0, 2.0), [(4, 3)])):
            c = TorchCall(None, args, {}, shapes, [0] * len(shapes))
            took = [op for op in ops for f in OPS[op].torch_forms
                    if (f.kind, f.target) == (kind, target) and f.args(c) is not None]
            assert len(took) == 1, (kind, target, args, took)


def _resolve(target: str) -> Any:
    parts = target.split(".")
    for k in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        for p in parts[k:]:
            obj = getattr(obj, p)
        return obj
    raise AssertionError(f"{target} names nothing")


def test_every_target_names_a_real_torch_object() -> None:
    keys = _key_map()
    assert len(keys) > 150
    for kind, target in keys:
        if kind == "method":
            assert callable(getattr(torch.Tensor, target)), target
        elif kind == "module":
            assert isinstance(_resolve(target), type) and issubclass(_resolve(target), nn.Module), target
        else:
            assert callable(_resolve(target)), target
    # the everyday spellings all have an op
    common = [("module", NN + m) for m in (
        "Conv2d", "ConvTranspose2d", "Linear", "BatchNorm1d", "BatchNorm2d", "LayerNorm", "ReLU", "ReLU6", "GELU",
        "SiLU", "Sigmoid", "Tanh", "Hardswish", "Hardsigmoid", "LeakyReLU", "MaxPool2d", "AvgPool2d",
        "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "Dropout", "Flatten", "Identity", "Softmax", "Upsample",
        "PixelShuffle", "PixelUnshuffle", "ChannelShuffle")]
    common += [("function", FN + f) for f in (
        "relu", "gelu", "silu", "hardswish", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "dropout",
        "softmax", "pad", "interpolate", "scaled_dot_product_attention")]
    common += [("function", f) for f in ("torch.cat", "torch.flatten", "torch.stack", "torch.matmul", "operator.add",
                                         "operator.mul", "torch.roll", "torch.clamp", "torch.linalg.vector_norm")]
    common += [("method", m) for m in ("permute", "reshape", "view", "transpose", "mean", "sum", "softmax", "flatten",
                                       "contiguous", "chunk", "split", "unbind")]
    assert [k for k in common if k not in keys] == []


# ---- the args of real modules and calls rebuild them ------------------------------------------------------
X, Y, Z = TensorArg(0), TensorArg(1), TensorArg(2)


def _torch_args(v: Any, x: Any) -> Any:
    if isinstance(v, TensorArg):
        return x
    if isinstance(v, (list, tuple)):
        return type(v)(_torch_args(a, x) for a in v)
    return v


def _n_tensors(args: tuple[Any, ...]) -> int:
    flat = [a for v in args for a in (v if isinstance(v, (list, tuple)) else [v])]
    return len({a.k for a in flat if isinstance(a, TensorArg)})


def _spec(op: str, args: dict[str, Any], n_in: int, shape: tuple[int, ...]) -> str:
    """One statement ``m: op(k=v)`` on the input x, or ``op(x, x, k=v)`` for an op over several tensors (each
    tensor of the call is x)."""
    parts = ["x"] * n_in if n_in > 1 else []
    parts += [f"{k}={lit(v)}" for k, v in args.items()]
    label = "m: " if n_in <= 1 else ""         # a label names a layer, not an op over named tensors
    return net(f"    {label}{op}({', '.join(parts)})\n", list(shape))


MODULES: list[tuple[str, str, Callable[[], Any], tuple[int, ...]]] = [
    ("conv2d", NN + "Conv2d", lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1), (4, 9, 9)),
    ("conv2d", NN + "Conv2d", lambda: nn.Conv2d(4, 4, (1, 3), padding="same", groups=2, bias=False,
                                                padding_mode="reflect", dilation=(1, 2)), (4, 7, 7)),
    ("conv_transpose2d", NN + "ConvTranspose2d", lambda: nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1), (4, 5, 5)),
    ("linear", NN + "Linear", lambda: nn.Linear(8, 5), (6, 8)),
    ("linear", NN + "Linear", lambda: nn.Linear(8, 3, bias=False), (8,)),
    ("batchnorm", NN + "BatchNorm2d", lambda: nn.BatchNorm2d(4, eps=1e-3, momentum=0.03), (4, 5, 5)),
    ("batchnorm", NN + "BatchNorm1d", lambda: nn.BatchNorm1d(6), (6,)),
    ("layernorm", NN + "LayerNorm", lambda: nn.LayerNorm(8, eps=1e-6), (5, 8)),
    ("layernorm", NN + "LayerNorm", lambda: nn.LayerNorm(8), (3, 4, 8)),
    ("layernorm", "torchvision.models.convnext.LayerNorm2d",
     lambda: torchvision.models.convnext.LayerNorm2d(4, eps=1e-6), (4, 5, 5)),
    *[(op, NN + cls, getattr(nn, cls), (4, 6, 6)) for op, cls in (
        ("relu", "ReLU"), ("relu6", "ReLU6"), ("sigmoid", "Sigmoid"), ("tanh", "Tanh"), ("silu", "SiLU"),
        ("hardswish", "Hardswish"), ("hardsigmoid", "Hardsigmoid"), ("identity", "Identity"), ("flatten", "Flatten"))],
    ("gelu", NN + "GELU", lambda: nn.GELU(approximate="tanh"), (4, 6, 6)),
    ("leaky_relu", NN + "LeakyReLU", lambda: nn.LeakyReLU(0.2), (4, 6, 6)),
    ("maxpool", NN + "MaxPool2d", lambda: nn.MaxPool2d(3, 2, 1), (4, 9, 9)),
    ("maxpool", NN + "MaxPool2d", lambda: nn.MaxPool2d((2, 3), ceil_mode=True), (4, 9, 9)),
    ("avgpool", NN + "AvgPool2d", lambda: nn.AvgPool2d(3, 1, 1, count_include_pad=False), (4, 6, 6)),
    ("adaptive_avgpool", NN + "AdaptiveAvgPool2d", lambda: nn.AdaptiveAvgPool2d(1), (4, 6, 6)),
    ("adaptive_maxpool", NN + "AdaptiveMaxPool2d", lambda: nn.AdaptiveMaxPool2d((2, 3)), (4, 6, 6)),
    ("dropout", NN + "Dropout", lambda: nn.Dropout(0.1), (4, 6, 6)),
    ("softmax", NN + "Softmax", lambda: nn.Softmax(dim=1), (4, 6, 6)),
    ("upsample", NN + "Upsample", lambda: nn.Upsample(scale_factor=2, mode="bilinear"), (4, 6, 6)),
    ("upsample", NN + "Upsample", lambda: nn.Upsample(size=(8, 5)), (4, 6, 6)),
    ("pixel_shuffle", NN + "PixelShuffle", lambda: nn.PixelShuffle(2), (8, 3, 3)),
    ("pixel_unshuffle", NN + "PixelUnshuffle", lambda: nn.PixelUnshuffle(2), (2, 6, 6)),
    ("channel_shuffle", NN + "ChannelShuffle", lambda: nn.ChannelShuffle(2), (4, 3, 3)),
    ("permute", "torchvision.ops.misc.Permute", lambda: torchvision.ops.misc.Permute([0, 2, 3, 1]), (4, 3, 5)),
]


def _only_form(op: str, kind: str, target: str) -> Any:
    forms = [f for f in OPS[op].torch_forms if (f.kind, f.target) == (kind, target)]
    assert len(forms) == 1, (op, kind, target)
    return forms[0]


@pytest.mark.parametrize("op,target,make,shape", MODULES, ids=[f"{m[1].split('.')[-1]}-{k}"
                                                                for k, m in enumerate(MODULES)])
def test_module_form_rebuilds_the_module(op: str, target: str, make: Callable[[], Any], shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    ref = make().eval()
    randomize_bn(ref, seed=1)
    with torch.no_grad():           # LayerNorm's constant init would hide a swapped weight and bias
        for p in ref.parameters():
            p.copy_(torch.randn_like(p))
    c = TorchCall(ref, (X,), {}, [shape], [0])
    args = _only_form(op, "module", target).args(c)
    assert args is not None
    model = archdsl.build(_spec(op, args, 1, shape)).eval()
    if OPS[op].stateful:
        model.m.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))


CALLS: list[tuple[str, str, str, tuple[Any, ...], dict[str, Any], tuple[int, ...]]] = [
    ("relu", "function", FN + "relu", (X,), {}, (4, 5, 5)),
    ("sigmoid", "method", "sigmoid", (X,), {}, (4, 5, 5)),
    ("gelu", "function", FN + "gelu", (X,), {"approximate": "tanh"}, (4, 5, 5)),
    ("leaky_relu", "function", FN + "leaky_relu", (X, 0.3), {}, (4, 5, 5)),
    ("maxpool", "function", FN + "max_pool2d", (X, 3, 2, 1), {}, (4, 9, 9)),
    ("avgpool", "function", FN + "avg_pool2d", (X, 2), {"ceil_mode": True}, (4, 7, 7)),
    ("adaptive_avgpool", "function", FN + "adaptive_avg_pool2d", (X, (2, 3)), {}, (4, 6, 6)),
    ("flatten", "function", "torch.flatten", (X, 1), {}, (4, 3, 3)),
    ("concat", "function", "torch.cat", ([X, Y], 1), {}, (4, 3, 3)),
    ("stack", "function", "torch.stack", ([X, Y],), {"dim": -1}, (4, 3)),
    ("add", "function", "operator.add", (X, Y), {}, (4, 3, 3)),
    ("mul", "method", "mul", (X, Y), {}, (4, 3, 3)),
    ("scale", "function", "operator.mul", (X, 0.5), {}, (4, 3, 3)),
    ("scalar", "function", "operator.sub", (1.5, X), {}, (4, 3, 3)),
    ("matmul", "function", "torch.matmul", (X, Y), {}, (2, 4, 4)),
    ("softmax", "method", "softmax", (X, -1), {}, (4, 3, 5)),
    ("softmax", "function", FN + "softmax", (X,), {"dim": 1}, (4, 3, 5)),
    ("mean", "method", "mean", (X, (-2, -1)), {"keepdim": True}, (4, 3, 5)),
    ("reduce_sum", "function", "torch.sum", (X, 1), {}, (4, 3, 5)),
    ("amax", "method", "amax", (X, -1), {}, (4, 3, 5)),
    ("transpose", "method", "transpose", (X, -2, -1), {}, (2, 3, 5)),
    ("permute", "method", "permute", (X, 0, 2, 3, 1), {}, (4, 3, 5)),
    ("permute", "function", "torch.permute", (X, (0, 3, 1, 2)), {}, (4, 3, 5)),
    ("reshape", "method", "reshape", (X, 2, 4, -1), {}, (4, 3, 5)),
    ("reshape", "method", "view", (X, 2, -1, 15), {}, (4, 3, 5)),
    ("roll", "function", "torch.roll", (X, (-1, 2), (1, 2)), {}, (4, 3, 5)),
    ("pad", "function", FN + "pad", (X, (1, 1, 2, 0)), {}, (4, 3, 5)),
    ("pad", "function", FN + "pad", (X, [1, 2, 1, 0]), {"mode": "reflect"}, (4, 3, 5)),
    ("upsample", "function", FN + "interpolate", (X,), {"scale_factor": 2, "mode": "bilinear",
                                                        "align_corners": False}, (4, 3, 5)),
    ("upsample", "function", FN + "interpolate", (X, (6, 4)), {}, (4, 3, 5)),
    ("scaled_dot_product_attention", "function", FN + "scaled_dot_product_attention", (X, Y, Z),
     {"scale": 0.3}, (2, 5, 4)),
    ("pow", "method", "pow", (X, 2), {}, (4, 3, 5)),
    ("clamp", "function", "torch.clamp", (X, -0.5, 0.5), {}, (4, 3, 5)),
    ("norm", "function", "torch.linalg.vector_norm", (X, 2), {"dim": (1, 2), "keepdim": True}, (4, 3, 5)),
    ("neg", "function", "operator.neg", (X,), {}, (4, 3, 5)),
    ("identity", "method", "contiguous", (X,), {}, (4, 3, 5)),
]


@pytest.mark.parametrize("op,kind,target,args,kwargs,shape", CALLS, ids=[f"{c[2]}-{k}" for k, c in enumerate(CALLS)])
def test_call_form_rebuilds_the_call(op: str, kind: str, target: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                                     shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, *shape)
    fn = getattr(torch.Tensor, target) if kind == "method" else _resolve(target)
    want = fn(*_torch_args(args, x), **kwargs)
    n = _n_tensors(args)
    c = TorchCall(None, args, kwargs, [shape] * n, [0] * n, [tuple(want.shape[1:])], [0])
    got = _only_form(op, kind, target).args(c)
    assert got is not None
    model = archdsl.build(_spec(op, got, n, shape)).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), want)
