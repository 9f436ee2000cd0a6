"""Sizes that follow the input (issue 14): reshape sizes computed at run time, the derived input contract,
and the forward guard that states it.

- ``in.h // 16`` in a reshape is written into the generated code as ``x_in.shape[2] // 16``: one built
  model runs at several sizes, equal to torch's own op (``F.pixel_shuffle``, window partition);
- :func:`archdsl.passes.sizes.input_contract` derives the accepted sizes of real specs, and the contract
  agrees with torch: every accepted size runs with the predicted output shape, and the rejected sizes next
  to the accepted ones fail in torch too (run with the guard removed);
- a forward at a wrong size is a ``ValueError`` quoting the contract (never the raw torch error of a fixed
  reshape); ``archc check FILE:NET`` / ``archc summary`` print it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import archdsl
from archdsl.lower.values import Dim
from archdsl.passes.sizes import input_contract, shapes_at
from helpers import run_archc

ROOT = Path(__file__).resolve().parent.parent


def _doc_block(heading: str) -> str:
    """The first code block after ``heading`` in docs/language.md."""
    text = (ROOT / "docs" / "language.md").read_text()
    after = text[text.index(heading):]
    return after.split("```\n", 2)[1]


D2S = _doc_block("### Reshapes that follow the input")

# a Swin-style window partition and its reverse, written from the input: any multiple of the window works
WINDOWS = """
block Windows(win):
    reshape([in.c, in.h // win, win, in.w // win, win])
    permute([0, 2, 4, 3, 5, 1])
    reshape([in.h // win * (in.w // win), win * win, in.c])

network windows(win=4):
    input [6, 16, 12]
    conv2d(6, 3, padding=1)
    parts: Windows(win)
"""


def _windows_ref(x: torch.Tensor, win: int) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.view(b, c, h // win, win, w // win, win).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // win) * (w // win), win * win, c)


def test_doc_depth_to_space_runs_at_two_sizes_like_pixel_shuffle() -> None:
    model = archdsl.build(D2S)
    src = archdsl.source(D2S)
    assert "x_in.shape[2]" in src and "x_in.shape[1] // 4" in src    # read at run time, not 8
    for size in [(8, 8), (5, 11)]:
        x = torch.randn(2, 16, *size)
        assert torch.equal(model(x), F.pixel_shuffle(x, 2))


def test_window_partition_follows_the_input() -> None:
    model = archdsl.build(WINDOWS).eval()
    conv = model.get_submodule("0")
    assert input_contract(archdsl.graph(WINDOWS)).describe() == "[6, H, W] with H and W multiples of 4"
    for size in [(16, 12), (8, 20), (4, 4)]:
        x = torch.randn(2, 6, *size)
        with torch.no_grad():
            assert torch.equal(model(x), _windows_ref(conv(x), 4))
    with pytest.raises(ValueError, match=r"H and W multiples of 4; got \[2, 6, 10, 12\]"):
        model(torch.randn(2, 6, 10, 12))


def test_sizes_read_from_a_named_tensor_and_passed_into_a_block() -> None:
    """``t.h`` of a named tensor, and ``in.w // 2`` passed as a block argument, are read at run time too."""
    text = """
block Fold(h, w):
    reshape([-1, h, w])

network t():
    input [4, 8, 6]
    a = x -> conv2d(8, 1)
    b = a -> pool: maxpool(2, stride=2)
    b -> f: Fold(a.h, in.w // 2)
"""
    model = archdsl.build(text)
    src = archdsl.source(text)
    assert ".shape[2]" in src and ".shape[3] // 2" in src
    for size in [(8, 6), (6, 10)]:
        x = torch.randn(1, 4, *size)
        # the pool halves H and W: [8, H/2, W/2] folded to [-1, H, W/2] is [4, H, W/2] at every size
        assert model(x).shape == (1, 4, size[0], size[1] // 2)


def test_fixed_reshape_fails_with_the_contract_not_a_torch_error() -> None:
    """The issue's example: a reshape written with numbers ran only at its size and failed with
    ``RuntimeError: shape '[2, 256, 2, 2, 8, 8]' is invalid``; now the forward says which sizes work."""
    text = """
network fixed():
    input [64, 16, 16]
    reshape([16, 2, 2, 8, 2, 8, 2])
    permute([0, 1, 2, 3, 5, 4, 6, 7])
    reshape([256, 8, 8])
"""
    model = archdsl.build(text)
    assert model(torch.randn(2, 64, 16, 16)).shape == (2, 256, 8, 8)
    assert model.input_sizes == "[64, 16, 16] only"
    with pytest.raises(ValueError) as e:
        model(torch.randn(2, 64, 32, 32))
    assert str(e.value) == ("Fixed takes a batch of [64, 16, 16] only (build the spec for another size: "
                            "archdsl.build(spec, input_shape=...)); got [2, 64, 32, 32]")


CONTRACTS = {
    "specs/resnet.arch:resnet50": "[3, H, W], any size",
    "specs/segmentation.arch:fcn_resnet50": "[3, H, W], any size",
    "examples/unet.arch:unet": "[3, H, W] with H and W multiples of 16",
    "specs/convnext.arch:convnext_tiny": "[3, H, W] with H and W at least 32",
    "specs/vgg.arch:vgg16": "[3, H, W] with H and W at least 32",
    "specs/vit.arch:vit_base_patch16_224": "[3, H, W] with H and W from 224 to 239",
    "specs/mobilevit.arch:mobilevit_s": "[3, H, W] with H and W multiples of 64",
    "specs/swin.arch:swin_t": "[3, H, W] with H and W from 224 to 227",
}


@pytest.mark.parametrize("spec", sorted(CONTRACTS))
def test_contracts_of_the_library(spec: str) -> None:
    g = archdsl.graph(spec)
    assert input_contract(g).describe() == CONTRACTS[spec]
    if spec in ("specs/resnet.arch:resnet50", "examples/unet.arch:unet"):   # the docs table quotes these
        assert CONTRACTS[spec] in (ROOT / "docs" / "language.md").read_text()


def _unguarded(text: str) -> Any:
    """The model of ``text`` built from its source with the input guard cut out (to ask torch itself)."""
    lines = archdsl.source(text).splitlines()
    guard = [i for i, ln in enumerate(lines) if ln.strip().startswith("_check_input(x, ")]
    assert len(guard) == 1
    ns: dict[str, Any] = {}
    exec(compile("\n".join(lines[:guard[0]] + lines[guard[0] + 1:]), "<unguarded>", "exec"), ns)   # our output
    cls = next(v for k, v in ns.items() if isinstance(v, type) and getattr(v, "input_shape", None) is not None)
    return cls().eval()


UNET_SMALL = (ROOT / "examples" / "unet.arch").read_text().replace("base=64", "base=4")
_MODELS: dict[str, Any] = {}


@settings(max_examples=12, deadline=None)
@given(h=st.integers(8, 48), w=st.integers(8, 48))
def test_contract_agrees_with_torch(h: int, w: int) -> None:
    """Accepted sizes run with the predicted output shape; rejected ones fail in torch as well."""
    g = archdsl.graph(UNET_SMALL)
    c = input_contract(g)
    if "unet" not in _MODELS:
        _MODELS["unet"] = _unguarded(UNET_SMALL)
    model = _MODELS["unet"]
    x = torch.randn(1, 3, h, w)
    if c.accepts((3, h, w)):
        want = shapes_at(g, (3, h, w))
        assert want is not None
        with torch.no_grad():
            assert tuple(model(x).shape[1:]) == want[g.outputs[0][1]]
    else:
        with pytest.raises(RuntimeError):
            with torch.no_grad():
                model(x)


def test_guard_and_contract_in_the_cli(tmp_path: Path) -> None:
    r = run_archc("check", "examples/unet.arch:unet")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1] == "input sizes: [3, H, W] with H and W multiples of 16"
    r = run_archc("summary", "specs/vit.arch:vit_tiny_patch16_224")
    assert "input sizes: [3, H, W] with H and W from 224 to 239" in r.stdout
    r = run_archc("summary", "examples/unet.arch:unet", "--json")
    import json
    sizes = json.loads(r.stdout)["input_sizes"]
    assert sizes["rules"] == [{"axis": a, "fixed": False, "multiple": 16, "minimum": 16, "maximum": None}
                              for a in ("H", "W")]


def test_unet_guard_message() -> None:
    model = archdsl.build(UNET_SMALL)
    with pytest.raises(ValueError, match=re.escape("Unet takes a batch of [3, H, W] with H and W multiples of 16; "
                                                   "got [1, 3, 40, 48]")):
        model(torch.randn(1, 3, 40, 48))
    with pytest.raises(ValueError, match=re.escape("got [1, 4, 32, 32]")):
        model(torch.randn(1, 4, 32, 32))     # channels are checked as well
    with pytest.raises(ValueError, match=re.escape("got [3, 32, 32]")):
        model(torch.randn(3, 32, 32))        # the batch dimension is required


def test_dim_arithmetic_keeps_its_formula_within_bounds() -> None:
    h = Dim(32, ("dim", 0, 1))
    y = (h // 4) * 2 + 1 - h % 3
    assert y == 32 // 4 * 2 + 1 - 32 % 3 and isinstance(y, Dim)
    assert y.expr == ("-", ("+", ("*", ("//", ("dim", 0, 1), ("k", 4)), ("k", 2)), ("k", 1)),
                      ("%", ("dim", 0, 1), ("k", 3)))
    assert repr(y) == str(y) == "15" and not isinstance(h / 2, Dim) and not isinstance(h ** 2, Dim)
    z: Any = h
    for _ in range(40):     # a long computation keeps only its number
        z = z + 1
    assert z == 72 and not isinstance(z, Dim)
    assert not isinstance(-h + 0, bool) and (-h) == -32 and isinstance(-h, Dim)


def test_sizes_of_other_ops_are_plain_numbers_in_the_ir() -> None:
    g = archdsl.graph("network t():\n    input [4, 8, 8]\n    conv2d(in.c * 2, in.h // 4)\n    reshape([in.c * 2, -1])\n")
    conv, resh = [n for n in g.nodes() if n.op in ("conv2d", "reshape")]
    assert type(conv.args["out_channels"]) is int and conv.args["kernel_size"] == (2, 2)
    assert resh.args["dyn"] == (("*", ("in", 1, 0), ("k", 2)), None) and len(resh.inputs) == 2


def test_size_only_inputs_are_dashed_size_edges_in_diagrams() -> None:
    """A reshape's run-time sizes read the block input: drawn as a light dashed 'size' edge that does not rank
    the layout, never as a second data input; feature taps ignore it too (no data path)."""
    from archdsl.render.dot import to_dot
    from archdsl.render.view import build_view
    g = archdsl.graph(D2S)
    view = build_view(g)
    size_edges = [e for e in view.edges if e.size_only]
    data_edges = [e for e in view.edges if not e.size_only]
    assert len(size_edges) == 1 and view.nodes[size_edges[0].dst].label.startswith("reshape")
    # the first reshape reads its data from the same tensor: one data edge there, no extra size edge
    assert len(data_edges) == 4
    dot = to_dot(view)
    assert dot.count('label=size') == 1 and "style=dashed" in dot and "constraint=false" in dot
