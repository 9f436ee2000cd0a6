"""A built model in the PyTorch ecosystem: FSDP2/DDP on 2 gloo processes, torchvision's feature extraction and
FPN utilities, torch.export / ONNX / torch.compile, and the generated source's constructor parameters. Every
code block of docs/pytorch.md runs here too."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import ROOT, randomize_bn
from torch import nn

import archdsl

RESNET18 = "specs/resnet.arch:resnet18"
BACKBONE = "specs/resnet.arch:resnet50_backbone"
STAGES = ("layer1", "layer2", "layer3", "layer4")


def _tv_pair(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """Our ResNet-18 and torchvision's with identical weights and non-trivial BN statistics, in eval mode."""
    import torchvision
    torch.manual_seed(seed)
    ref = torchvision.models.resnet18(weights=None)
    randomize_bn(ref, seed)
    ours = archdsl.build(RESNET18)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours.eval(), ref.eval()


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], tol: float = 1e-5) -> None:
    assert list(a) == list(b)
    for k, v in a.items():
        assert v.shape == b[k].shape, k
        torch.testing.assert_close(v, b[k], atol=tol, rtol=tol, msg=k)


# ---------------------------------------------------------------------------------------------- distributed

_WORKER = textwrap.dedent('''
    import sys
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    import archdsl

    mode, steps, d = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = archdsl.build("specs/resnet.arch:resnet18", num_classes=10)
    model.load_state_dict(torch.load(f"{d}/init.pt"))
    x, y = torch.load(f"{d}/data.pt")
    x, y = x.chunk(world)[rank], y.chunk(world)[rank]
    sharded = []
    if mode == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import FSDPModule, fully_shard
        mesh = init_device_mesh("cpu", (world,))
        for stage in ("layer1", "layer2", "layer3", "layer4"):
            for block in getattr(model, stage).children():     # each residual block its own FSDP unit
                fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)                            # the root: stem and head
        sharded = [name for name, m in model.named_modules() if isinstance(m, FSDPModule)]
        net = model
    else:
        from torch.nn.parallel import DistributedDataParallel
        net = DistributedDataParallel(model)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        losses.append(mean.item() / world)
    params = {}
    for name, p in model.named_parameters():
        full = p.full_tensor() if hasattr(p, "full_tensor") else p   # FSDP2 parameters are DTensor shards
        local = p.to_local().numel() if hasattr(p, "to_local") else p.numel()
        params[name] = (full.detach().clone(), local)
    if rank == 0:
        torch.save({"losses": losses, "params": params, "sharded": sharded}, f"{d}/out.pt")
    dist.destroy_process_group()
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(script: Path, args: list[str], world: int = 2, timeout: float = 300) -> None:
    """Run ``script`` on ``world`` local processes with the environment torchrun gives them (gloo, CPU)."""
    port = str(_free_port())
    procs = []
    for rank in range(world):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "RANK": str(rank),
               "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world),
               "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        procs.append(subprocess.Popen([sys.executable, str(script), *args], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]


def _single_process_reference(d: Path, steps: int, world: int = 2) -> tuple[list[float], dict[str, torch.Tensor]]:
    """The same steps in one process: the mean of the per-rank losses is the loss whose gradient both
    DDP and FSDP apply (they average the ranks' gradients; BatchNorm sees each rank's half, as there)."""
    model = archdsl.build(RESNET18, num_classes=10)
    model.load_state_dict(torch.load(d / "init.pt"))
    x, y = torch.load(d / "data.pt")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = sum(F.cross_entropy(model(xs), ys) for xs, ys in zip(x.chunk(world), y.chunk(world))) / world
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, {k: v.detach() for k, v in model.named_parameters()}


def _distributed_run(tmp_path: Path, mode: str, steps: int) -> None:
    torch.manual_seed(0)
    init = archdsl.build(RESNET18, num_classes=10)
    torch.save(init.state_dict(), tmp_path / "init.pt")
    torch.save((torch.randn(8, 3, 64, 64), torch.randint(0, 10, (8,))), tmp_path / "data.pt")
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    _launch(script, [mode, str(steps), str(tmp_path)])
    out = torch.load(tmp_path / "out.pt")
    ref_losses, ref_params = _single_process_reference(tmp_path, steps)
    assert all(torch.isfinite(torch.tensor(out["losses"])))
    assert out["losses"] == pytest.approx(ref_losses, rel=1e-4, abs=1e-5)
    start = init.state_dict()
    changed = [k for k, (v, _) in out["params"].items() if not torch.equal(v, start[k])]
    assert len(changed) == len(out["params"])            # every parameter got a gradient step
    for k, (v, _) in out["params"].items():
        torch.testing.assert_close(v, ref_params[k], atol=1e-5, rtol=1e-4, msg=k)
    if mode == "fsdp":
        blocks = [f"{s}.{i}" for s in STAGES for i in range(2)]
        assert out["sharded"] == ["", *blocks]             # root + one FSDP unit per block
        w = out["params"]["layer4.1.conv2.weight"]
        assert w[1] == w[0].numel() // 2                   # each rank holds half of the weight


def test_fsdp2_fully_shard_per_block_matches_single_process(tmp_path: Path) -> None:
    _distributed_run(tmp_path, "fsdp", steps=2)


def test_ddp_one_step_matches_single_process(tmp_path: Path) -> None:
    _distributed_run(tmp_path, "ddp", steps=1)


# ------------------------------------------------------------------------------------ torchvision utilities

def test_create_feature_extractor_by_spec_labels_equals_torchvision() -> None:
    from torchvision.models.feature_extraction import (
        create_feature_extractor,
        get_graph_node_names,
    )
    ours, ref = _tv_pair()
    nodes = {"layer4": "c5", "layer2.1": "mid"}
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        a = create_feature_extractor(ours, nodes)(x)
        b = create_feature_extractor(ref, nodes)(x)
    _close(a, b)
    assert "layer4.1.conv2" in get_graph_node_names(ours)[1]   # FX sees through the blocks to the spec labels


def test_intermediate_layer_getter_and_fpn_equal_torchvision() -> None:
    """Both run the root's children in order, so the stem's relu and maxpool must be child modules too."""
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    ours, ref = _tv_pair()
    layers = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        _close(IntermediateLayerGetter(ours, layers)(x), IntermediateLayerGetter(ref, layers)(x))
        torch.manual_seed(1)
        fa = BackboneWithFPN(ours, return_layers=layers, in_channels_list=[64, 128, 256, 512], out_channels=256)
        torch.manual_seed(1)
        fb = BackboneWithFPN(ref, return_layers=layers, in_channels_list=[64, 128, 256, 512], out_channels=256)
        _close(fa.eval()(x), fb.eval()(x))


def test_sequential_of_children_without_head() -> None:
    """``nn.Sequential(*list(model.children())[:-1])`` is the common 'drop the classifier' idiom. Our root's
    children are its labelled modules in forward order, the head ``fc`` last. Parameter-free steps the spec does
    not make modules (today: the stem's relu + maxpool, the global pool; flatten, as in torchvision) run in
    forward, as docs/pytorch.md says: then the Sequential keeps every trunk weight but not those steps. Once
    they are child modules as in torchvision, the Sequential equals torchvision's. The idiom that gives the
    pooled features either way is ``model.fc = nn.Identity()``, checked against torchvision."""
    ours, ref = _tv_pair()
    kids = [n for n, _ in ours.named_children()]
    assert kids[-1] == "fc" and [k for k in kids if k.startswith("layer")] == list(STAGES)
    assert kids.index("conv1") < kids.index("bn1") < kids.index("layer1")
    trunk = nn.Sequential(*list(ours.children())[:-1])
    assert sum(p.numel() for p in trunk.parameters()) == sum(p.numel() for n, p in ours.named_parameters()
                                                             if not n.startswith("fc."))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        if {"relu", "maxpool", "avgpool"} <= set(kids):
            torch.testing.assert_close(trunk(x), nn.Sequential(*list(ref.children())[:-1])(x))
        else:      # what the user gets today: the stages run on the un-pooled stem (2x the resolution)
            assert trunk(x).shape == (2, 512, 6, 6)
        ours.fc = nn.Identity()
        ref.fc = nn.Identity()
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)
        assert ours(x).shape == (2, 512)


# -------------------------------------------------------------------------------- export / compile / ONNX

def test_torch_export_keeps_the_block_hierarchy() -> None:
    model = archdsl.build(RESNET18, input_shape=(3, 64, 64)).eval()
    ep = torch.export.export(model, (torch.randn(2, 3, 64, 64),))
    stacks = [list(n.meta["nn_module_stack"].values()) for n in ep.graph.nodes
              if n.op == "call_function" and n.meta.get("nn_module_stack")]
    inner = [s for s in stacks if any(path.endswith("layer4.1") for path, _ in s)]
    assert inner, "no node inside layer4.1"
    paths = [p for p, _ in inner[0]]
    types = {p: t for p, t in inner[0]}
    assert [p for p in paths if p.endswith(("layer4", "layer4.1"))][:2] == ["layer4", "layer4.1"]
    assert str(types["layer4.1"]).endswith("BasicBlock")
    assert torch.allclose(ep.module()(torch.ones(2, 3, 64, 64)), model(torch.ones(2, 3, 64, 64)), atol=1e-5)


def test_torch_export_with_dynamic_sizes_through_the_input_guard() -> None:
    """The root forward's input check (the derived contract) traces under torch.export with dynamic batch,
    height and width; a contract with a period exports with dims written as multiples of it, and the
    exported program still refuses a wrong size."""
    model = archdsl.build(RESNET18, input_shape=(3, 64, 64)).eval()
    b, h, w = torch.export.Dim("b", min=1, max=16), torch.export.Dim("h", min=64, max=256), \
        torch.export.Dim("w", min=64, max=256)
    ep = torch.export.export(model, (torch.randn(2, 3, 64, 64),), dynamic_shapes={"x": {0: b, 2: h, 3: w}})
    x = torch.randn(3, 3, 96, 160)
    assert torch.allclose(ep.module()(x), model(x), atol=1e-5)
    s2d = "network s():\n    input [8, 8, 8]\n    reshape([in.c, in.h // 2, 2, in.w // 2, 2])\n" \
          "    permute([0, 1, 3, 5, 2, 4])\n    reshape([in.c * 4, in.h // 2, in.w // 2])\n"
    m2 = archdsl.build(s2d).eval()
    assert m2.input_sizes == "[8, H, W] with H and W multiples of 2"
    k = torch.export.Dim("k", min=1, max=32)
    ep2 = torch.export.export(m2, (torch.randn(1, 8, 8, 8),), dynamic_shapes={"x": {2: 2 * k, 3: 2 * k}})
    x2 = torch.randn(1, 8, 12, 12)
    assert torch.equal(ep2.module()(x2), m2(x2))
    with pytest.raises((AssertionError, RuntimeError, ValueError)):
        ep2.module()(torch.randn(1, 8, 9, 12))   # an odd height: refused, never a silently wrong reshape


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_to_onnx_dict_output_names_and_onnxruntime(tmp_path: Path, dynamo: bool) -> None:
    import numpy as np
    import onnx
    import onnxruntime as ort

    from archdsl.export import to_onnx
    model = archdsl.build(BACKBONE, input_shape=(3, 64, 64))
    randomize_bn(model)
    path = tmp_path / "backbone.onnx"
    names = to_onnx(model, path, dynamo=dynamo)
    assert model.training                                    # to_onnx restores the mode
    assert names == ["c2", "c3", "c4", "c5"]
    assert sorted(os.listdir(tmp_path)) == ["backbone.onnx"]   # one self-contained file, no temporaries
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert [o.name for o in proto.graph.output] == names
    assert [i.name for i in proto.graph.input] == ["x"]
    for v in [*proto.graph.input, *proto.graph.output]:
        assert v.type.tensor_type.shape.dim[0].dim_param, f"{v.name}: batch axis is not dynamic"
    x = torch.randn(3, 3, 64, 64)                             # batch 3: not the traced batch of 2
    got = ort.InferenceSession(str(path)).run(None, {"x": x.numpy()})
    with torch.no_grad():
        want = model.eval()(x)
    for name, arr in zip(names, got):
        np.testing.assert_allclose(arr, want[name].numpy(), atol=1e-4, rtol=1e-4)


def test_to_onnx_failure_leaves_nothing(tmp_path: Path) -> None:
    from archdsl.export import to_onnx

    class Bad(nn.Module):
        input_shape = (3, 8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.linalg.eigvals(x).real   # no ONNX symbolic

    with pytest.raises(torch.onnx.errors.UnsupportedOperatorError):
        to_onnx(Bad(), tmp_path / "bad.onnx", dynamo=False)
    assert os.listdir(tmp_path) == []


def test_to_onnx_without_input_shape_asks_for_an_example(tmp_path: Path) -> None:
    from archdsl.export import to_onnx
    with pytest.raises(archdsl.ArchError, match="example="):
        to_onnx(nn.Linear(2, 2), tmp_path / "lin.onnx", dynamo=False)
    assert to_onnx(nn.Linear(2, 2), tmp_path / "lin.onnx", torch.randn(3, 2), dynamo=False) == ["output"]


def test_torch_compile_no_graph_breaks_bf16_autocast_channels_last() -> None:
    import torch._dynamo
    model = archdsl.build(RESNET18, input_shape=(3, 64, 64)).eval()
    randomize_bn(model)
    x = torch.randn(2, 3, 64, 64)
    explain = torch._dynamo.explain(model)(x)
    assert explain.graph_break_count == 0 and explain.graph_count == 1, explain.break_reasons
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager")
    with torch.no_grad():
        eager = model(x)
        torch.testing.assert_close(compiled(x), eager, atol=1e-4, rtol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
        assert low.dtype == torch.bfloat16
        assert (low.float() - eager).abs().max() <= 0.05 * eager.abs().max()
        cl = model.to(memory_format=torch.channels_last)
        torch.testing.assert_close(cl(x.to(memory_format=torch.channels_last)), eager, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------ archc compile's parameters

def test_archc_compile_class_takes_network_parameters(tmp_path: Path) -> None:
    out = tmp_path / "r18.py"
    r = subprocess.run([sys.executable, "-m", "archdsl", "compile", RESNET18, "-o", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert "num_classes: int = 1000" in out.read_text()
    import importlib.util
    spec = importlib.util.spec_from_file_location("r18_generated", out)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.Resnet18(num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)
        assert mod.Resnet18()(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_generate_source_is_the_source_archdsl_builds_from() -> None:
    from archdsl.pipeline import compile_graph, generate_source, source_with_params
    g = compile_graph(RESNET18, {"num_classes": 7})
    a = generate_source(g, spec=RESNET18, params={"num_classes": 7})
    assert a == source_with_params(RESNET18, {"num_classes": 7}, g, None, None)
    assert "num_classes: int = 7" in a
    assert "num_classes" not in generate_source(g).split("def __init__(self")[-1].split(")")[0]


# ------------------------------------------------------------------------------------ docs/pytorch.md blocks

def _doc_blocks() -> list[tuple[str, str]]:
    """(first comment line or "", code) of each python block of docs/pytorch.md."""
    text = (ROOT / "docs" / "pytorch.md").read_text()
    return [(m.group(1) or "", m.group(2))
            for m in re.finditer(r"```python\n(# [^\n]*\n)?(.*?)```", text, re.DOTALL)]


def test_docs_pytorch_has_the_idioms() -> None:
    code = "\n".join(h + b for h, b in _doc_blocks())
    for idiom in ("features_only=True", "feature_info", "create_feature_extractor", "BackboneWithFPN",
                  "register_forward_hook", "register_timm", "weights=", "torch.save", "fully_shard",
                  "DistributedDataParallel", "checkpoint", "torch.compile", "torch.export.export", "to_onnx"):
        assert idiom in code, idiom


@pytest.mark.parametrize("index", range(11))
def test_docs_pytorch_block_runs(index: int, tmp_path: Path) -> None:
    """Each block runs as written, as its own script from the repository root (a fresh process: no state
    shared with other tests); a ``# torchrun ...`` block runs on 2 processes, as torchrun would start it."""
    blocks = _doc_blocks()
    assert len(blocks) == 11, "docs/pytorch.md: update the parametrize range with the number of blocks"
    head, code = blocks[index]
    script = tmp_path / "example.py"
    script.write_text(head + code)
    if "torchrun" in head:
        _launch(script, [])
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300, check=False)
    assert r.returncode == 0, f"docs/pytorch.md block {index}:\n{code}\n{r.stderr[-4000:]}"
