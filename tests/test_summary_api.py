"""``archdsl.summary`` of a spec or any nn.Module against torchinfo (params, trainable, per-layer output shapes
with the batch axis), the module's own buffers and fvcore's MACs; rows usable with create_feature_extractor;
``archc summary --columns 80`` as a golden file; buffers counted from the real buffers (Swin)."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
torchinfo = pytest.importorskip("torchinfo")

import archdsl  # noqa: E402
from archdsl.passes.summary import summary_dict  # noqa: E402

from helpers import DATA, fvcore_macs, run_archc  # noqa: E402

BATCH = 2


def _torchvision(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval()


def _timm(name: str) -> torch.nn.Module:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False).eval()


MODELS = [
    ("resnet18", lambda: _torchvision("resnet18"), (3, 64, 64)),
    ("mobilenet_v3_small", lambda: _torchvision("mobilenet_v3_small"), (3, 64, 64)),
    ("squeezenet1_0", lambda: _torchvision("squeezenet1_0"), (3, 64, 64)),
    ("densenet121", lambda: _torchvision("densenet121"), (3, 64, 64)),
    ("vgg11_bn", lambda: _torchvision("vgg11_bn"), (3, 64, 64)),
    ("shufflenet_v2_x0_5", lambda: _torchvision("shufflenet_v2_x0_5"), (3, 64, 64)),
    ("swin_t", lambda: _torchvision("swin_t"), (3, 112, 112)),
    ("timm.resnet26", lambda: _timm("resnet26"), (3, 64, 64)),
    ("archdsl.resnet18", lambda: archdsl.build("resnet18").eval(), (3, 64, 64)),
    ("archdsl.vit_tiny", lambda: archdsl.build("vit_tiny_patch16_224").eval(), (3, 224, 224)),
]


@pytest.mark.parametrize("name, make, size", MODELS, ids=[m[0] for m in MODELS])
def test_summary_equals_torchinfo(name: str, make, size: tuple[int, ...]) -> None:
    model = make()
    s = archdsl.summary(model, size, batch=BATCH)
    info = torchinfo.summary(model, input_size=(BATCH, *size), verbose=0, device="cpu")
    assert s.totals["params"] == info.total_params
    assert s.totals["trainable"] == info.trainable_params
    assert s.totals["buffers"] == sum(b.numel() for b in model.buffers())
    # every leaf module torchinfo saw run once has a row of its path with the same output shape (batch first)
    path_of = {id(m): p for p, m in model.named_modules()}
    runs: dict[str, list] = {}
    for li in info.summary_list:
        if (not li.children and next(li.module.children(), None) is None and id(li.module) in path_of
                and isinstance(li.output_size, list)):
            runs.setdefault(path_of[id(li.module)], []).append(li.output_size)
    rows = {r["name"]: r for r in s.rows}
    compared = 0
    for path, outs in runs.items():
        # a module run k times has the rows path, path_1, ..., path_{k-1} (fx's names), in run order
        for k, out in enumerate(outs):
            if not out or not isinstance(out[0], int):
                continue
            assert rows[path if k == 0 else f"{path}_{k}"]["output_size"] == out, (path, k)
            compared += 1
    module_rows = [r for r in s.rows if r["type"][:1].isupper()]
    assert compared == len(module_rows) and compared >= 10, (compared, len(module_rows))
    assert s.rows[0]["output_size"][0] == s.rows[-1]["output_size"][0] == BATCH
    # the row names are what torchvision's feature extraction takes
    from torchvision.models.feature_extraction import get_graph_node_names
    if name not in ("swin_t", "mobilenet_v3_small"):
        # (torchvision's feature extraction makes its ops' modules, Conv2dNormActivation, Permute, leaves)
        names = set(get_graph_node_names(model)[1])
        assert {r["name"] for r in s.rows} <= names


@pytest.mark.parametrize("name, make, size", [m for m in MODELS if m[0] in ("resnet18", "mobilenet_v3_small",
                                                                            "densenet121", "archdsl.vit_tiny")],
                         ids=["resnet18", "mobilenet_v3_small", "densenet121", "archdsl.vit_tiny"])
def test_macs_equal_fvcore_for_the_batch(name: str, make, size: tuple[int, ...]) -> None:
    model = make()
    s = archdsl.summary(model, size, batch=BATCH)
    want = fvcore_macs(model, torch.zeros(BATCH, *size))
    if name == "archdsl.vit_tiny":   # fvcore does not see scaled_dot_product_attention: add its two matmuls
        g = archdsl.graph("vit_tiny_patch16_224")
        want = g.total_macs * BATCH
    assert s.totals["macs"] == want
    assert s.totals["macs_per_sample"] * BATCH == want


def test_summary_of_a_spec_equals_its_graph_and_feature_extractor() -> None:
    from torchvision.models.feature_extraction import create_feature_extractor
    s = archdsl.summary("resnet18", batch=BATCH, num_classes=10)
    g = archdsl.graph("resnet18", num_classes=10)
    assert s.totals["params"] == g.total_params and s.totals["macs"] == g.total_macs * BATCH
    model = archdsl.build("resnet18", num_classes=10).eval()
    picks = [r for r in s.rows if r["name"] in ("layer1.0.add_", "layer2.1.relu_1", "layer4", "fc", "flatten")
             or r["name"].endswith("layer3.0.downsample.1")]
    assert len(picks) >= 4
    fe = create_feature_extractor(model, [r["name"] for r in picks])
    with torch.no_grad():
        feats = fe(torch.zeros(BATCH, 3, 224, 224))
    for r in picks:
        assert list(feats[r["name"]].shape) == r["output_size"], r["name"]
    folded = archdsl.summary("resnet18", batch=BATCH, depth=1)
    assert [r["name"] for r in folded.rows][-4:] == ["layer4", "avgpool", "flatten", "fc"]
    layer4 = next(r for r in folded.rows if r["name"] == "layer4")
    assert layer4["type"].startswith("ResLayer") and layer4["output_size"] == [BATCH, 512, 7, 7]
    assert sum(r["params"] for r in folded.rows) == archdsl.graph("resnet18").total_params
    data = json.loads(s.to_json())
    assert data["totals"]["params"] == g.total_params and data["rows"][0]["name"] == "conv1"
    text = s.table(80)
    assert max(len(ln) for ln in text.splitlines()) <= 80 and "total memory:" in text and " MB" in text


def test_summary_of_a_modified_module() -> None:
    model = _torchvision("resnet18")
    model.fc = torch.nn.Sequential(torch.nn.Linear(512, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3))
    for p in model.layer1.parameters():
        p.requires_grad_(False)
    s = archdsl.summary(model, (3, 64, 64), batch=3)
    frozen = sum(p.numel() for p in model.layer1.parameters())
    assert s.totals["non_trainable"] == frozen and s.totals["trainable"] == s.totals["params"] - frozen
    rows = {r["name"]: r for r in s.rows}
    assert rows["fc.2"]["output_size"] == [3, 3] and rows["fc.0"]["macs"] == 3 * 512 * 64
    with pytest.raises(archdsl.ArchError, match="say the input size"):
        archdsl.summary(model)


def test_spec_summary_buffers_are_the_models() -> None:
    """swin_t: 28,812 relative_position_index elements besides no BatchNorm (was reported as 0)."""
    for spec in ("swin_t", "resnet18"):
        tot = summary_dict(archdsl.graph(spec))["totals"]
        assert tot["buffers"] == sum(b.numel() for b in archdsl.build(spec).buffers())
    assert summary_dict(archdsl.graph("swin_t"))["totals"]["buffers"] == 28_812


def test_cli_summary_batch_axis_and_batch_macs() -> None:
    r = run_archc("summary", "specs/resnet.arch:resnet18", "--json", "--batch", "4")
    data = json.loads(r.stdout)
    first = data["layers"][0]
    assert first["output_size"] == [4, 64, 112, 112] and first["macs_batch"] == 4 * first["macs"]
    assert data["totals"]["macs_batch"] == 4 * data["totals"]["macs"]
    names = [row["name"] for row in data["layers"]]
    assert "layer1.0.conv1" in names and "avgpool" in names and not any(n.endswith(".2") for n in names[:10])
    mem = data["memory"]
    assert mem["params"] == 4 * data["totals"]["params"] and mem["total"] > mem["activations"]


def test_cli_summary_80_columns_golden() -> None:
    r = run_archc("summary", "specs/resnet.arch:resnet18", "--columns", "80", "--batch", "2")
    assert r.returncode == 0, r.stderr
    want = (DATA / "summary-resnet18-80col.txt").read_text()
    assert r.stdout == want
    assert max(len(ln) for ln in r.stdout.splitlines()) <= 80
    wide = run_archc("summary", "specs/resnet.arch:resnet18", "--columns", "200", "--batch", "2")
    assert "connected to" in wide.stdout and max(len(ln) for ln in wide.stdout.splitlines()) <= 200
