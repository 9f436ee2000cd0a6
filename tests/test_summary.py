"""archc summary like torchinfo and more: block totals by depth, the parameter split, the static
receptive field (checked against gradients), activation memory, connected-to."""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Any
from unittest import mock

import pytest

import archdsl
from archdsl.passes.features import feature_taps
from archdsl.passes.summary import activation_memory, summary_dict, summary_tree

from helpers import ROOT, run_archc

SPECS = ["specs/resnet.arch:resnet18", "specs/googlenet.arch:googlenet", "specs/convnext.arch:convnext_tiny",
         "specs/repvgg.arch:repvgg_a0"]
KEYS = ("params", "macs", "trainable", "buffers")


def _children(rows: list[dict[str, Any]], i: int) -> list[dict[str, Any]]:
    """The rows directly under rows[i] (depth + 1, until the next row at its depth or above)."""
    d = rows[i]["depth"]
    out = []
    for r in rows[i + 1:]:
        if r["depth"] <= d:
            break
        if r["depth"] == d + 1:
            out.append(r)
    return out


@pytest.mark.parametrize("spec", SPECS)
def test_block_totals_equal_the_sum_of_their_rows(spec: str) -> None:
    g = archdsl.graph(spec)
    for depth in (1, 2, 3, 6):
        rows = summary_tree(g, depth)
        top = [r for r in rows if r["depth"] == 1]
        for k in KEYS:
            assert sum(r[k] for r in top) == {"params": g.total_params, "macs": g.total_macs,
                                              "trainable": g.total_params,
                                              "buffers": summary_dict(g)["totals"]["buffers"]}[k], (depth, k)
        blocks = 0
        for i, r in enumerate(rows):
            assert r["depth"] <= depth
            if r["kind"] == "block" and r["depth"] < depth:
                kids = _children(rows, i)
                assert kids, r["name"]
                for k in KEYS:
                    assert r[k] == sum(c[k] for c in kids), (depth, r["name"], k)
                blocks += 1
        assert blocks or depth == 1


def test_tree_rows_carry_inputs_outputs_and_connections() -> None:
    rows = summary_tree(archdsl.graph("specs/googlenet.arch:googlenet"), 2)
    by = {r["name"]: r for r in rows}
    inc = by["inception3a"]
    assert inc["op"] == "Inception" and inc["inputs"] == [[192, 28, 28]] and inc["shape"] == [256, 28, 28]
    assert by["inception3a.concat"]["connected_to"] == ["inception3a.branch1", "inception3a.branch2",
                                                        "inception3a.branch3", "inception3a.branch4"]
    assert by["conv1.conv"]["kernel"] == [7, 7] and by["conv1.conv"]["depth"] == 2
    flat = summary_dict(archdsl.graph("specs/resnet.arch:resnet18"))["layers"]
    add = next(r for r in flat if r["name"] == "layer1.0.add")
    assert add["connected_to"] == ["layer1.0.bn2", "layer1.0.downsample"] and add["inputs"] == [[64, 56, 56]] * 2


@pytest.mark.parametrize("spec", SPECS)
def test_trainable_and_buffers_equal_torch_counts(spec: str) -> None:
    data = summary_dict(archdsl.graph(spec))
    model = archdsl.build(spec)
    tot = data["totals"]
    assert tot["trainable"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert tot["non_trainable"] == sum(p.numel() for p in model.parameters() if not p.requires_grad)
    assert tot["trainable"] + tot["non_trainable"] == tot["params"]
    assert tot["buffers"] == sum(b.numel() for b in model.buffers())


def test_resnet18_receptive_field_is_435_and_equals_the_gradient_extent() -> None:
    """Static: 435 px at layer4 (the published value for torchvision's resnet18). Empirical: with positive
    weights, identity BatchNorms and max pooling read as average pooling (same windows), d out[center] /
    d input is non-zero exactly on the receptive field; its extent is measured well inside a 512 image."""
    import torch

    from archdsl.codegen.build import instantiate

    g = archdsl.graph("specs/resnet.arch:resnet18")
    rf = summary_dict(g)["receptive_field"]
    assert rf == {"module": "layer4", "rf": [435, 435], "stride": 32}
    g512 = archdsl.graph("specs/resnet.arch:resnet18", input_shape=(3, 512, 512))
    taps, info = feature_taps(g512, labels=["layer4"])
    model = instantiate(taps).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.fill_(1.0 / m.weight[0].numel())
    x = torch.ones(1, 3, 512, 512, requires_grad=True)

    def avg(x: Any, k: Any, s: Any = None, p: Any = 0, d: Any = 1, ceil_mode: bool = False, **_: Any) -> Any:
        return torch.nn.functional.avg_pool2d(x, k, s, p, ceil_mode)

    with mock.patch.object(torch.nn.functional, "max_pool2d", avg):
        out = model(x)
    c = out.shape[-1] // 2
    out[0, :, c, c].sum().backward()
    nz = (x.grad[0].abs().sum(0) > 0).nonzero()
    lo, hi = nz.min(0).values, nz.max(0).values
    assert (lo > 0).all() and (hi < 511).all(), "the field touches the border: probe too small"
    assert (hi - lo + 1).tolist() == [435, 435]


def test_activation_memory_scales_with_batch_and_dtype() -> None:
    g = archdsl.graph("specs/resnet.arch:resnet50")
    one = activation_memory(g, 1)
    eight = activation_memory(g, 8)
    half = activation_memory(g, 8, "bfloat16")
    assert 0 < one["peak"] < one["activations"]
    assert one["input"] == 3 * 224 * 224 * 4
    for k in ("input", "activations", "peak"):
        assert eight[k] == 8 * one[k] and half[k] * 2 == eight[k]
    # the sum counts each layer's output once: resnet50 at 224 is about 100 MiB of float32 per sample
    assert 80 * 2**20 < one["activations"] < 200 * 2**20


def test_cli_depth_table_and_json() -> None:
    r = run_archc("summary", "specs/resnet.arch:resnet18", "--depth", "1", "--batch", "4")
    assert r.returncode == 0, r.stderr
    assert "layer4" in r.stdout and "ResLayer" in r.stdout and "layer4.1.conv2" not in r.stdout
    assert "receptive field: 435 px at layer4 (stride 32)" in r.stdout
    assert "memory at batch 4, float32" in r.stdout and "11,689,512 trainable, 0 non-trainable" in r.stdout
    r = run_archc("summary", "specs/resnet.arch:resnet18", "--depth", "2", "--json", "--dtype", "float16")
    data = json.loads(r.stdout)
    assert data["depth"] == 2 and data["memory"]["bytes_per_element"] == 2
    assert {"name": "layer1.0", "kind": "block", "op": "BasicBlock", "depth": 2}.items() <= data["tree"][5].items()
    first = data["layers"][0]
    assert first["inputs"] == [[3, 224, 224]] and first["kernel"] == [7, 7] and first["rf"] == [7, 7]
    bad = run_archc("summary", "specs/resnet.arch:resnet18", "--dtype", "float13")
    assert bad.returncode == 1 and "unknown dtype 'float13'" in bad.stderr and "Traceback" not in bad.stderr


def test_depth_summary_never_imports_torch() -> None:
    code = ("import sys\nfrom archdsl.cli import main\n"
            "try:\n    main(['summary', 'specs/googlenet.arch:googlenet', '--depth', '3', '--batch', '2'])\n"
            "except SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules\nprint('no torch')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.stdout.strip().endswith("no torch"), r.stderr[-2000:]
