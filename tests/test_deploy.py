"""Re-parameterization groups and the deploy compiler (archdsl.passes.reparam, archdsl.codegen.deploy).

Every spec file under specs/ is deployed and checked against its train form in eval mode; the
RepVGG/RepLKNet specs are checked against timm and the official RepLKNet key lists; hypothesis
generates random fusable groups (fused exactly) and random non-fusable ones (rejected, with the reason).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import archdsl
from archdsl.codegen.deploy import deploy_graph, deploy_plan, deploy_source
from archdsl.ir import Graph
from archdsl.lang.loader import load_program, load_source
from helpers import ROOT, randomize_bn, reference_counts, replknet_state_dict_keys, run_archc

SPEC_FILES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "specs").rglob("*.arch"))
# Building and deploying a model costs time proportional to its weights, and the suite has a 15 minute
# budget on 2 cores: every network is built at the smallest input it accepts, and networks above this size
# (RepLKNet-XL: 333M at 64x64, ~40 s) run a single one-sample forward.
MAX_BUILD_PARAMS = 30_000_000
SMALL_SIDES = (64, 96, 128, 160, 224, 299)


def _state_shapes(g: Graph) -> dict[str, list[int]]:
    """The state_dict keys and shapes a graph compiles to, without building it."""
    out: dict[str, list[int]] = {}
    for n in g.nodes():
        if not n.module:
            continue
        p, a = n.module, n.args
        if n.op == "conv2d":
            out[p + ".weight"] = [a["out_channels"], n.in_shapes[0][0] // a["groups"], *a["kernel_size"]]
            if a["bias"]:
                out[p + ".bias"] = [a["out_channels"]]
        elif n.op == "linear":
            out[p + ".weight"] = [a["out_features"], n.in_shapes[0][-1]]
            if a["bias"]:
                out[p + ".bias"] = [a["out_features"]]
        elif n.op == "batchnorm":
            for k in ("weight", "bias", "running_mean", "running_var"):
                out[f"{p}.{k}"] = [n.shape[0]]
            out[p + ".num_batches_tracked"] = []
    return out


def _small_graph(address: str) -> tuple[Graph, dict[str, Any]]:
    """The network at the smallest square input it accepts (from SMALL_SIDES), 10 classes where it can."""
    base = archdsl.graph(address)
    params = {"num_classes": 10} if "num_classes" in base.params_used else {}
    shape = base.input_shape
    if len(shape) == 3 and shape[1] * shape[2] <= 64 * 64:
        return archdsl.graph(address, **params), params
    last: Exception | None = None
    # big networks also try 32x32: their forward (RepLKNet's 31x31 depthwise convs) is a good part of the time
    sides = SMALL_SIDES if base.total_params <= MAX_BUILD_PARAMS else (32, 48, *SMALL_SIDES)
    for side in sides:
        # a video clip [C, T, H, W] (r3d_18): at most 4 frames, small frames
        small = (shape[0], side, side) if len(shape) == 3 else (shape[0], min(shape[1], 4), side, side)
        try:
            return archdsl.graph(address, input_shape=small, **params), params
        except archdsl.ArchError as e:   # too small for this network's downsampling: try a bigger one
            last = e
    raise AssertionError(f"{address} compiles at none of {sides}: {last}")


def _assert_deploy_matches(model: Any, g: Graph, *, fold_bn: bool = True, batch: int = 2) -> Any:
    randomize_bn(model, seed=1)
    model.eval()
    dep = archdsl.deploy(model, fold_bn=fold_bn, memory_format="contiguous")
    x = torch.randn(batch, *g.input_shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref, got = model(x), dep(x)
    refs = ref.values() if isinstance(ref, dict) else [ref]
    gots = got.values() if isinstance(got, dict) else [got]
    for a, b in zip(refs, gots):
        scale = max(1.0, a.abs().max().item())
        assert (a - b).abs().max().item() <= 1e-4 * scale
    n_bn = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in dep.modules())
    if fold_bn:
        keep = sum(1 for n in g.nodes() if n.op == "batchnorm" and
                   (len(n.shape) != 3 and not n.args["track_running_stats"]))
        assert n_bn == keep, f"{n_bn} BatchNorm modules left in the deploy form"
    modules = dict(dep.named_modules())
    for path in g.reparam_groups:
        fused = g.reparam_groups[path].fused_path
        vector = len(g.node(g.reparam_groups[path].input).shape) == 1   # a group over vectors: one linear
        want = torch.nn.Linear if vector else torch.nn.Conv2d
        assert isinstance(modules.get(fused), want), f"no fused {want.__name__} at {fused}"
        group_modules = {n.module for n in g.nodes() if n.reparam == path and n.module}
        assert not group_modules & set(modules), "train-form modules of a fused group survived"
    assert dep.deploy_info["fused_groups"] == len(g.reparam_groups)
    return dep


@pytest.mark.parametrize("spec_file", SPEC_FILES)
def test_every_spec_deploys_exactly(spec_file: str) -> None:
    """Per spec file: its smallest network, plus every network with reparam groups (whatever its size)."""
    program = load_program(load_source(spec_file))
    names = list(program.root.networks)
    if not names:  # a block library: its blocks are deployed through the network files that import them
        here = (ROOT / spec_file).resolve()
        imported = {name for f in SPEC_FILES for imp in load_program(load_source(f)).root.imports
                    if ((ROOT / f).parent / imp.path).resolve() == here for name, _ in imp.names}
        missing = sorted(set(program.root.blocks) - imported)
        assert program.root.blocks and not missing, f"blocks of {spec_file} that no network file uses: {missing}"
        return
    graphs = {n: _small_graph(f"{spec_file}:{n}") for n in names}
    smallest = min(names, key=lambda n: graphs[n][0].total_params)
    chosen = [n for n in names if n == smallest or graphs[n][0].reparam_groups]
    for name in chosen:
        g, params = graphs[name]
        model = archdsl.build(f"{spec_file}:{name}", input_shape=g.input_shape, **params)
        # over MAX_BUILD_PARAMS the time goes into the weights (build, fold, load): one sample is enough
        _assert_deploy_matches(model, g, batch=1 if g.total_params > MAX_BUILD_PARAMS else 2)
        del model


# ------------------------------------------------------------------------------------------ RepVGG
@pytest.mark.parametrize("name", ["repvgg_a0", "repvgg_a2", "repvgg_b1"])
def test_repvgg_counts_match_timm(name: str) -> None:
    g = archdsl.graph(f"specs/repvgg.arch:{name}")
    ref = reference_counts()[f"timm.{name}"]
    assert (g.total_params, g.total_macs) == (ref["params"], ref["macs"])
    assert all((info.fused_path or "").endswith("reparam_conv") for info in g.reparam_groups.values())


@pytest.mark.xdist_group("repvgg")
def test_repvgg_a0_loads_timm_weights_and_deploys_like_timm() -> None:
    import timm
    ref = timm.create_model("repvgg_a0", pretrained=False, num_classes=10)
    randomize_bn(ref, seed=2)
    ours = archdsl.build("specs/repvgg.arch:repvgg_a0", input_shape=(3, 64, 64), num_classes=10)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    ours.eval()
    ref.eval()
    dep = archdsl.deploy(ours, memory_format="contiguous")
    ref.stem.reparameterize()
    for stage in ref.stages:
        for block in stage:
            block.reparameterize()
    # timm's own inference mode has the same module names as our deploy form
    assert set(dep.state_dict()) == set(ref.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = dep(x), ref(x)
    assert (a - b).abs().max().item() <= 1e-4 * max(1.0, b.abs().max().item())


# ---------------------------------------------------------------------------------------- RepLKNet
REPLKNET = {"replknet_31b": "RepLKNet-31B", "replknet_31l": "RepLKNet-31L", "replknet_xl": "RepLKNet-XL"}


@pytest.mark.parametrize("name", list(REPLKNET))
def test_replknet_keys_shapes_and_counts_match_official(name: str) -> None:
    """Train keys/shapes, the official deploy keys (lkb_reparam), params and MACs of both forms; no weights."""
    official = replknet_state_dict_keys()[REPLKNET[name]]
    counts = reference_counts()[f"replknet.{REPLKNET[name]}"]
    g = archdsl.graph(f"specs/replknet.arch:{name}")
    assert _state_shapes(g) == official["train"]
    assert (g.total_params, g.total_macs) == (counts["params"], counts["macs"])
    dg = deploy_graph(g, fold_bn=False)
    assert _state_shapes(dg) == official["deploy"]
    assert (dg.total_params, dg.total_macs) == (counts["params_deploy"], counts["macs_deploy"])
    full = deploy_graph(g)
    assert not any(n.op == "batchnorm" for n in full.nodes())


TINY_REPLKNET = '''
from "replknet.arch" import ConvBnRelu, Stage, Transition

network tiny_replknet(small=5):
    input [3, 32, 32]
    stem:
        ConvBnRelu(8, 3, stride=2)
        ConvBnRelu(8, 3, stride=2, groups=8)
    stages:
        Stage(8, 1, 7, small, 1.5, 0, 2, 0.1)
    transitions:
        Transition(16)
    stages:
        Stage(16, 1, 5, small, 1.0, 1, 2, 0.1)
    norm: batchnorm
    adaptive_avgpool(1)
    flatten
    head: linear(10)
'''


@pytest.mark.parametrize("small", [5, None])
@pytest.mark.parametrize("fold_bn", [True, False])
def test_replknet_blocks_deploy_exactly(tmp_path: Path, small: int | None, fold_bn: bool) -> None:
    """RepLKNet's own blocks at toy width (the full models are too big to run here): both deploy forms."""
    (tmp_path / "replknet.arch").write_text((ROOT / "specs" / "replknet.arch").read_text())
    spec = tmp_path / "tiny.arch"
    spec.write_text(TINY_REPLKNET)
    g = archdsl.graph(str(spec), small=small)
    model = archdsl.build(str(spec), small=small)
    dep = _assert_deploy_matches(model, g, fold_bn=fold_bn)
    keys = set(dep.state_dict())
    assert "stages.0.blocks.0.large_kernel.lkb_reparam.weight" in keys
    assert ("stages.0.blocks.0.prelkb_bn.running_mean" in keys) == (not fold_bn)


# -------------------------------------------------------------------------------- property tests
def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@st.composite
def fusable_groups(draw: Any) -> tuple[str, int]:
    """A random fusable group as spec text, and the number of branches."""
    cin = draw(st.sampled_from([4, 6, 8]))
    same = draw(st.booleans())
    cout = cin if same else draw(st.sampled_from([4, 6, 8]))
    stride = 1 if same and draw(st.booleans()) else draw(st.sampled_from([1, 2]))
    common = [d for d in _divisors(cin) if cout % d == 0]
    G = draw(st.sampled_from(common))
    branches: list[str] = []
    for k in draw(st.lists(st.sampled_from([1, 3, 5]), min_size=1, max_size=3)):
        mult = [m for m in (1, 2) if cin % (G * m) == 0 and cout % (G * m) == 0]
        g = G * draw(st.sampled_from(mult))
        bias = draw(st.booleans())
        bn = "batchnorm" if draw(st.booleans()) else "identity"
        branches.append(f"[conv2d({cout}, {k}, stride={stride}, padding={k // 2}, groups={g}, "
                        f"bias={'true' if bias else 'false'}), {bn}]")
    if G == 1 and draw(st.booleans()):   # DBB-style 1x1 -> kxk branch
        k = draw(st.sampled_from([3, 5]))
        branches.append(f"[conv2d({cout}, 1, bias=false), conv2d({cout}, {k}, stride={stride}, padding={k // 2}), "
                        "batchnorm]")
    if cin == cout and stride == 1:
        extra = draw(st.sampled_from(["", "identity", "batchnorm", "[avgpool(3, 1, 1), batchnorm]"]))
        if extra:
            branches.append(extra)
    elif cin == cout and draw(st.booleans()):
        branches.append(f"[avgpool(3, {stride}, 1), batchnorm]")
    body = "\n".join("        " + b for b in branches)
    text = f"network t():\n    input [{cin}, 9, 9]\n    g: reparam add:\n{body}\n    relu\n"
    return text, len(branches)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fusable_groups())
def test_random_fusable_groups_fuse_exactly(case: tuple[str, int]) -> None:
    text, _ = case
    g = archdsl.graph(text)
    model = archdsl.build(text)
    randomize_bn(model, seed=5)
    with torch.no_grad():   # non-trivial biases, so bias folding is exercised
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.normal_()
    model.eval()
    dep = archdsl.deploy(model, memory_format="contiguous")
    convs = [m for m in dep.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 1 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in dep.modules())
    x = torch.randn(2, *g.input_shape)
    with torch.no_grad():
        a, b = model(x), dep(x)
    assert (a - b).abs().max().item() <= 1e-4 * max(1.0, a.abs().max().item())


NOT_FUSABLE = {
    "relu": ("[conv2d(8, 3, padding=1), relu]", "applies relu at g.1, which is not linear", "after the group"),
    "not_centred": ("conv2d(8, [1, 3], padding=[0, 1])\n        conv2d(8, [3, 1], padding=[1, 0])",
                    "is not centred inside", "kernel_size // 2"),
    "groups": ("conv2d(12, 3, padding=1, groups=2)\n        conv2d(12, 1, groups=3)",
               "groups=2 and groups=3 cannot share one conv", "same groups"),
    "dilation": ("conv2d(8, 3, padding=2, dilation=2)\n        conv2d(8, 5, padding=2)",
                 "is dilated", "dilation=1"),
    "bn_before_pad": ("[batchnorm, conv2d(12, 3, padding=1)]\n        conv2d(12, 1)",
                      "before the padded", "after the conv"),
    "concat": (None, "only 'reparam add:' groups fuse", "summed"),
    "maxpool": ("maxpool(3, 1, 1)\n        identity", "applies maxpool", "after the group"),
}


@settings(max_examples=20, deadline=None)
@given(kind=st.sampled_from(sorted(NOT_FUSABLE)), extra=st.sampled_from(["", "identity", "conv2d(12, 3, padding=1)"]),
       side=st.sampled_from([7, 8, 12]))
def test_random_non_fusable_groups_are_rejected(kind: str, extra: str, side: int) -> None:
    branches, message, hint = NOT_FUSABLE[kind]
    cin = 12
    if kind == "concat":
        head, body = "reparam concat", "conv2d(4, 3, padding=1)\n        conv2d(4, 1)"
    else:
        head, body = "reparam add", branches.replace("conv2d(8", "conv2d(12")
        # a 3x3 branch would be a kernel that both 1x3 and 3x1 fit in: then the group is fusable
        if extra and kind not in ("groups",) and not (kind == "not_centred" and extra.startswith("conv2d")):
            body += "\n        " + extra
    text = f"network t():\n    input [{cin}, {side}, {side}]\n    conv2d({cin}, 1)\n    g: {head}:\n" \
           f"        {body}\n    relu\n"
    with pytest.raises(archdsl.ArchError) as e:
        archdsl.graph(text)
    diags = [d for d in e.value.diagnostics if "cannot be fused" in d.message or "reparam" in d.message]
    assert diags, str(e.value)
    d = diags[0]
    assert message in d.message and hint in (d.hint or ""), d.format()
    assert d.span is not None and d.span.line == 4   # the group's own line


def test_fused_name_must_be_an_identifier() -> None:
    text = 'network t():\n    input [4, 8, 8]\n    g: reparam add(fused="a.b"):\n        conv2d(4, 3, padding=1)\n' \
           '        identity\n'
    with pytest.raises(archdsl.ArchError, match="identifier string"):
        archdsl.graph(text)


def test_reopened_group_interleaves_containers() -> None:
    g = archdsl.graph("network n():\n    input [3, 8, 8]\n    a:\n        conv2d(4, 1)\n    b:\n        relu\n"
                      "        conv2d(4, 1)\n    a:\n        conv2d(4, 1)\n")
    assert [n.module for n in g.nodes() if n.module] == ["a.0", "b.1", "a.1"]


# ---------------------------------------------------------------------------- memory layout, CLI
def test_auto_memory_format_is_measured_and_recorded() -> None:
    text = "network t():\n    input [8, 16, 16]\n    reparam add:\n        [conv2d(8, 3, padding=1), batchnorm]\n" \
           "        identity\n    relu\n"
    model = archdsl.build(text).eval()
    dep = archdsl.deploy(model, repeats=1)
    info = dep.deploy_info
    assert info["memory_format"] in ("contiguous", "channels_last")
    assert set(info["timings_s"]) == {"contiguous", "channels_last"}
    faster = min(info["timings_s"], key=info["timings_s"].get)
    assert info["memory_format"] == faster
    with torch.no_grad():
        x = torch.randn(1, 8, 16, 16)
        assert torch.allclose(dep(x), model(x), atol=1e-5)


def test_layout_timing_alternates_the_two_layouts() -> None:
    """The layouts are timed forward by forward in turn (a load change on a shared machine hits both alike;
    timed one after the other, a busy moment could pick the slower layout)."""
    from archdsl.codegen.deploy import _time_both
    calls: list[str] = []
    res = _time_both({"contiguous": lambda x: calls.append("c"), "channels_last": lambda x: calls.append("l")},
                     torch.zeros(1), 3)
    assert calls == ["c", "l"] * 4 and set(res) == {"contiguous", "channels_last"}
    assert all(v >= 0 for v in res.values())


def test_layout_timing_progress_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The timing shows a progress line on a terminal's stderr, and nothing when stderr is not a terminal."""
    import io
    model = archdsl.build("network t():\n    input [4, 8, 8]\n    conv2d(4, 3, padding=1)\n").eval()
    archdsl.deploy(model, repeats=1)
    assert capsys.readouterr().err == ""

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True
    tty = Tty()
    monkeypatch.setattr("sys.stderr", tty)
    archdsl.deploy(model, repeats=1)
    assert "deploy: timing" in tty.getvalue()


def test_auto_memory_format_times_the_deployment_batch() -> None:
    text = "network t():\n    input [4, 8, 8]\n    conv2d(4, 3, padding=1)\n"
    dep = archdsl.deploy(archdsl.build(text).eval(), repeats=1, batch_size=3)
    assert dep.deploy_info["timed_batch"] == 3
    with pytest.raises(ValueError, match="batch_size"):
        archdsl.deploy(archdsl.build(text), batch_size=0)


def test_deploy_compile_freezes_and_matches() -> None:
    """compile=True: inductor with frozen weights, compiled at deploy time, same function as the train form."""
    text = "network t():\n    input [3, 16, 16]\n    reparam add:\n        [conv2d(8, 3, padding=1), batchnorm]\n" \
           "        [conv2d(8, 1), batchnorm]\n    relu\n    adaptive_avgpool(1)\n    flatten\n    linear(5)\n"
    torch.manual_seed(0)
    model = archdsl.build(text).eval()
    randomize_bn(model)
    dep = archdsl.deploy(model, memory_format="contiguous", batch_size=2, compile=True)
    assert dep.deploy_info["compiled"] and dep.deploy_info["fused_groups"] == 1
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        assert torch.allclose(dep(x), model(x), atol=1e-4)


def test_cli_deploy_round_trip(tmp_path: Path) -> None:
    """archc deploy (weights) + archc compile --deploy (source) give the deployed model; bad weights: exit 1."""
    spec = "examples/tiny_repvgg.arch"
    model = archdsl.build(spec)
    randomize_bn(model)
    model.eval()
    torch.save(model.state_dict(), tmp_path / "train.pt")
    r = run_archc("deploy", spec, "--weights", str(tmp_path / "train.pt"), "-o", str(tmp_path / "deploy.pt"))
    assert r.returncode == 0, r.stderr
    r = run_archc("compile", "--deploy", spec, "-o", str(tmp_path / "deploy.py"))
    assert r.returncode == 0, r.stderr
    ns: dict[str, Any] = {}
    exec(compile((tmp_path / "deploy.py").read_text(), "deploy.py", "exec"), ns)
    dep = ns["TinyRepvggDeploy"]()
    dep.load_state_dict(torch.load(tmp_path / "deploy.pt", weights_only=True))
    dep.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (dep(x) - model(x)).abs().max().item() <= 1e-4 * max(1.0, model(x).abs().max().item())
    bad = run_archc("deploy", spec, "--set", "num_classes=7", "--weights", str(tmp_path / "train.pt"),
                    "-o", str(tmp_path / "x.pt"))
    assert bad.returncode == 1 and "shapes differ" in bad.stderr and not (tmp_path / "x.pt").exists()


def test_batchnorm_chains_and_vectors_fold_exactly() -> None:
    """BN after BN, BN between nonlinearities (kept as a depthwise 1x1 conv) and a 1-D BN before a linear."""
    text = ("network t():\n    input [4, 8, 8]\n    conv2d(4, 3, padding=1)\n    relu\n    batchnorm\n"
            "    batchnorm\n    relu\n    batchnorm\n    conv2d(6, 1, stride=2, groups=2)\n    relu\n    flatten\n"
            "    batchnorm\n    linear(5)\n")
    g = archdsl.graph(text)
    dep = _assert_deploy_matches(archdsl.build(text), g)
    assert dep.deploy_info["folded_bn"] == 3 and dep.deploy_info["bn_as_conv"] == 1


def test_a_kept_batchnorm_runs_as_a_per_channel_multiply_add() -> None:
    """A BN kept between nonlinearities, and any depthwise 1x1 conv, is computed in the deploy form as the
    per-channel multiply-add it is (PyTorch's CPU conv runs it group by group: FastViT's two kept BNs took 8 ms
    each); the module stays an nn.Conv2d (same state_dict), the train form keeps calling it, TorchScript works."""
    text = ("network t():\n    input [6, 5, 5]\n    conv2d(6, 3, padding=1)\n    relu\n    batchnorm\n    relu\n"
            "    conv2d(6, 1, groups=6, bias=false)\n    relu\n    conv2d(6, 1, stride=2, groups=6)\n")
    g = archdsl.graph(text)
    assert "_channel_affine" not in archdsl.pipeline.generate_source(g)
    src = deploy_source(g)
    assert src.count("_channel_affine(") == 3   # the helper, the kept BN, the bias-free conv; not the strided one
    model = archdsl.build(text)
    dep = _assert_deploy_matches(model, g)
    assert dep.deploy_info["bn_as_conv"] == 1
    assert sum(isinstance(m, torch.nn.Conv2d) for m in dep.modules()) == 4
    x = torch.randn(2, 6, 5, 5, generator=torch.Generator().manual_seed(0))
    cl = archdsl.deploy(model, memory_format="channels_last")
    with torch.no_grad():
        want = model(x)
        torch.testing.assert_close(cl(x), want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(torch.jit.script(dep)(x), want, rtol=1e-5, atol=1e-5)


def test_deploy_needs_a_compiled_module() -> None:
    with pytest.raises(TypeError, match="arch_graph"):
        archdsl.deploy(torch.nn.Conv2d(3, 3, 1))


def test_deploy_plan_counts() -> None:
    g = archdsl.graph("specs/resnet.arch:resnet50")
    plan = deploy_plan(g)
    assert plan.folded_bn == 53 and plan.bn_as_conv == 0 and not plan.fused_groups
    bn_channels = sum(n.shape[0] for n in g.nodes() if n.op == "batchnorm")
    assert plan.graph.total_params == g.total_params - bn_channels   # each BN (2C params) becomes a bias (C)


def test_example_trains_and_deploys() -> None:
    import importlib.util
    spec = importlib.util.spec_from_file_location("train_reparam", ROOT / "examples" / "train_reparam.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    result = mod.main(steps=3, batch=8)
    assert result["max_abs_diff"] <= 1e-4 * max(1.0, result["output_scale"])
    assert result["deploy_convs"] < result["train_convs"]
