"""Issue 14's language items: spread branches, tuple unpacking, log/sqrt, token inputs, did-you-mean by
meaning; and docs/language.md section 13, whose code blocks are compiled and run here."""
from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import archdsl
from helpers import ROOT, error_of, net

SECTION = "## 13. Questions newcomers ask"


def _doc_block(heading: str) -> str:
    """The first code block after ``heading`` inside section 13 of docs/language.md."""
    text = (ROOT / "docs" / "language.md").read_text()
    text = text[text.index(SECTION):]
    m = re.search(re.escape(heading) + r".*?```\n(.*?)```", text, re.S)
    assert m, f"no code block after {heading!r}"
    return m.group(1)


def _convs(g: archdsl.Graph) -> list[tuple[str, int]]:
    return [(n.module or n.name, n.shape[0]) for n in g.nodes() if n.op == "conv2d"]


# ---------------------------------------------------------------- spread branches
def test_doc_spread_branches_make_a_module_list_of_branches() -> None:
    src = _doc_block("### Branches from a comprehension")
    model = archdsl.build(src)
    keys = [k for k in model.state_dict() if k.endswith("conv.weight")]
    assert keys == [f"0.conv_kxk.{i}.conv.weight" for i in range(4)] + ["0.conv_scale.conv.weight"]
    assert "dil1.weight" in model.state_dict() and "dil2.weight" in model.state_dict()
    model.eval()
    x = torch.randn(2, 16, 32, 32)
    y = model(x)
    assert y.shape == (2, 16, 32, 32)
    # the block's output is the sum of its branches, then relu; the last add sums the two dilated convs
    blk = model.get_submodule("0")
    t = torch.relu(blk.identity(x) + sum(blk.conv_kxk.get_submodule(str(i))(x) for i in range(4))
                   + blk.conv_scale(x))
    ref = model.dil1(t) + model.dil2(t)
    torch.testing.assert_close(y, ref)
    # the parameter changes the branch count
    two = archdsl.build(src.replace("(n=4)", "(n=2)"))
    assert sum(1 for k in two.state_dict() if ".conv_kxk." in k and k.endswith("conv.weight")) == 2


def test_spread_unlabelled_items_take_positions_and_none_is_left_out() -> None:
    src = net("    add:\n        *[conv2d(4, 1), [conv2d(4, 3, padding=1), relu], none]\n        identity\n",
              [4, 8, 8])
    model = archdsl.build(src)
    assert [k for k in model.state_dict() if k.endswith("weight")] == ["0.weight", "1.weight"]
    x = torch.randn(1, 4, 8, 8)
    ref = model.get_submodule("0")(x) + torch.relu(model.get_submodule("1")(x)) + x
    torch.testing.assert_close(model(x), ref)


def test_spread_labelled_named_items_use_their_names() -> None:
    src = net('    concat:\n        heads: *[named("h" + str(i), conv2d(2, 1)) for i in range(3)]\n', [4, 8, 8])
    g = archdsl.graph(src)
    assert [m for m, _ in _convs(g)] == ["heads.h0", "heads.h1", "heads.h2"]
    assert list(g.output_shapes.values()) == [(6, 8, 8)]


def test_spread_errors_are_located() -> None:
    msg = error_of(net("    *[conv2d(4, 1)]\n", [4, 8, 8]))
    assert "3:5: error: '*' spreads a list into branches, and belongs inside add:, concat:, mul: or stack:" in msg
    assert "write it without '*'" in msg
    msg = error_of(net("    add:\n        *conv2d(4, 1)\n        identity\n", [4, 8, 8]))
    assert "4:10: error: '*' spreads a list into branches, got layer" in msg
    msg = error_of(net("    add:\n        *[conv2d(4, 1), 3]\n", [4, 8, 8]))
    assert "4:10: error: expected a layer, got int 3" in msg


# ---------------------------------------------------------------- unpacking, zip, enumerate, log
def test_tuple_unpacking_in_comprehensions() -> None:
    src = net("    conv2d(sum([a * b for a, b in [[2, 3], [4, 5]]]), 1)\n"
              "    conv2d(sum([i * w for i, w in enumerate([2, 3], 1)]), 1)\n"
              "    conv2d(sum([a + b + c for a, b, c in zip([1], [2], [3])]), 1)\n", [3, 8, 8])
    assert [c for _, c in _convs(archdsl.graph(src))] == [26, 8, 6]


def test_tuple_unpacking_errors() -> None:
    msg = error_of(net("    conv2d(sum([a * b for a, b in [[2, 3], [4, 5, 6]]]), 1)\n", [3, 8, 8]))
    assert "3:35: error: 'for a, b in ...' unpacks each item into 2 names; got a list of 3" in msg
    msg = error_of(net("    conv2d(sum([a * b for a, b in [1, 2]]), 1)\n", [3, 8, 8]))
    assert "unpacks each item into 2 names; got int 1" in msg
    msg = error_of(net("    conv2d(len(zip(1, [2])), 1)\n", [3, 8, 8]))
    assert "3:16: error: zip(...): zip(...) takes lists" in msg


def test_doc_regnet_widths_with_log_match_the_paper_formula() -> None:
    g = archdsl.graph(_doc_block("### Unpacking, `zip`, `enumerate`, and `log`"))
    w0, wa, wm, depth, q = 24, 36.44, 2.49, 13, 8
    ws = [round(w0 * wm ** round(math.log((w0 + wa * i) / w0, wm)) / q) * q for i in range(depth)]
    stages = [w for i, w in enumerate(ws) if i == 0 or w != ws[i - 1]]
    assert stages == [24, 56, 152, 368]   # RegNetX-200MF's stage widths
    assert [c for _, c in _convs(g)] == [24, *stages]


@pytest.mark.parametrize("expr, value", [("log(8, 2)", 3), ("log2(16)", 4), ("sqrt(49)", 7), ("exp(0)", 1),
                                         ("log(exp(2))", 2)])
def test_log_sqrt_exp_on_numbers(expr: str, value: int) -> None:
    g = archdsl.graph(net(f"    conv2d(round({expr}), 1)\n", [3, 4, 4]))
    assert _convs(g)[0][1] == value


@pytest.mark.parametrize("expr, message", [
    ("log(0)", "log(...): log needs x > 0 (and a base > 0, not 1); got 0"),
    ("log(8, 1)", "log(...): log needs x > 0 (and a base > 0, not 1); got 8, base 1"),
    ("log2(-1)", "log2(...): log2 needs x > 0, got -1"),
    ('sqrt("a")', "sqrt(...): sqrt(...) takes a number, got string"),
    ("exp(10000)", "exp(...): math range error"),
])
def test_log_sqrt_exp_errors(expr: str, message: str) -> None:
    msg = error_of(net(f"    conv2d(round({expr}), 1)\n", [3, 4, 4]))
    assert f"3:18: error: {message}" in msg


def test_sqrt_stays_a_tensor_op() -> None:
    src = net("    t = x -> relu\n    t -> sqrt\n", [3, 4, 4])
    model = archdsl.build(src)
    x = torch.randn(1, 3, 4, 4)
    torch.testing.assert_close(model(x), torch.relu(x).sqrt())


# ---------------------------------------------------------------- token inputs
def test_doc_token_input_runs_and_its_shape_attributes() -> None:
    src = _doc_block("### Token inputs `[N, C]`")
    g = archdsl.graph(src)
    assert g.input_shape == (16, 32) and list(g.output_shapes.values()) == [(32,)]
    model = archdsl.build(src)
    assert model(torch.randn(2, 16, 32)).shape == (2, 32)
    rank = archdsl.graph(net("    linear(in.rank * 10 + len(in.shape))\n", [16, 32]))
    assert list(rank.output_shapes.values()) == [(16, 22)]


def test_token_input_refuses_c_h_w() -> None:
    for attr in ("c", "h", "w"):
        msg = error_of(net(f"    linear(in.{attr})\n", [16, 32]))
        assert f"3:12: error: shape [16, 32] has no '{attr}'" in msg
        assert "use .shape[i] (e.g. .shape[-1] for tokens [N, C]) or .rank" in msg


# ---------------------------------------------------------------- did you mean, by meaning
@pytest.mark.parametrize("name, hint", [
    ("deconv", "did you mean 'conv_transpose2d'?"),
    ("ConvTranspose2d", "did you mean 'conv_transpose2d'?"),
    ("bmm", "did you mean 'matmul'?"),
    ("attention", "did you mean 'scaled_dot_product_attention'?"),
    ("upsampling", "did you mean 'upsample' or 'interpolate'?"),
    ("batch_norm", "did you mean 'batchnorm'?"),
    ("depth_to_space", "did you mean 'pixel_shuffle'?"),
    ("fc", "did you mean 'linear'?"),
    ("upsmaple", "did you mean 'upsample'"),   # no synonym: spelling distance still answers
])
def test_did_you_mean_by_meaning(name: str, hint: str) -> None:
    msg = error_of(net(f"    {name}(3)\n", [3, 8, 8]))
    assert f"3:5: error: unknown name '{name}'" in msg and f"hint: {hint}" in msg


def test_missing_import_never_suggests_the_importing_file(tmp_path: Path) -> None:
    spec = tmp_path / "model.arch"
    spec.write_text('import "modle.arch"\nnetwork n():\n    input [3, 8, 8]\n    relu\n')
    (tmp_path / "model2.arch").write_text("block B():\n    relu\n")
    with pytest.raises(archdsl.ArchError) as ei:
        archdsl.graph(str(spec))
    msg = str(ei.value)
    assert "imported file 'modle.arch' not found" in msg
    assert "'model2.arch'" in msg and "'model.arch'" not in msg


# ---------------------------------------------------------------- the rest of section 13
def test_doc_branch_from_a_named_tensor() -> None:
    src = _doc_block("### Branching from the tensor after some lines")
    model = archdsl.build(src).eval()
    st = model.stage1
    x = torch.randn(2, 16, 32, 32)
    t = st.conv_down(x)
    a, b = t.chunk(2, dim=1)
    u = st.conv_transition(torch.cat([a, st.blocks(b)], dim=1))
    ref = u + st.refine(u)
    torch.testing.assert_close(model(x), ref)
    # a block container is callable on its own (section 13, "Block containers are modules")
    torch.testing.assert_close(model.stage1(x), ref)
    assert isinstance(st.blocks, torch.nn.Sequential) and st.blocks[0].out_channels == 16


def test_doc_reparam_example_fuses_to_one_conv() -> None:
    src = _doc_block("### Which reparam branches fuse")
    model = archdsl.build(src).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):   # non-trivial statistics, so the fold is really checked
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 2)
            m.bias.data.uniform_(-1, 1)
    fast = archdsl.deploy(model)
    assert fast.deploy_info["fused_groups"] == 1
    assert "block.reparam_conv.weight" in fast.state_dict()
    x = torch.randn(2, 8, 16, 16)
    torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)


def test_doc_archc_list_piped_is_complete(tmp_path: Path) -> None:
    long = tmp_path / ("a_directory_with_a_rather_long_name_" * 3)
    long.mkdir()
    (long / "good.arch").write_text("network " + "n" * 60 + "():\n    input [3, 8, 8]\n    relu\n")
    (long / "bad.arch").write_text("network broken():\n    input [3\n")
    r = subprocess.run([sys.executable, "-m", "archdsl", "list", str(long)], check=False, capture_output=True,
                       text=True, timeout=120, env={"COLUMNS": "40", "PATH": "/usr/bin:/bin"})
    lines = r.stdout.splitlines()
    assert f"{long / 'good.arch'}:{'n' * 60}\t[3, 8, 8]\t-" in lines
    assert f"{long / 'bad.arch'}\terror\t-" in lines
    assert "bad.arch:2:11: error: '[' is never closed" in r.stderr
