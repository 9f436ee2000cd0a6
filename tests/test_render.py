"""Architecture diagrams (archdsl.render, `archc render`): structure, determinism, real Graphviz, HTML.

The HTML viewer is exercised in real headless Chromium (via Playwright, pointed at /usr/bin/chromium);
those tests skip only when no Chromium is installed.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import archdsl
from archdsl.errors import ArchError
from archdsl.ir import Graph
from archdsl.pipeline import list_networks
from archdsl.passes.deploy import deploy_plan
from archdsl.passes.reparam import plan_group
from archdsl.render import (FAMILY_COLORS, RANKDIRS, build_view, deploy_graph, family_color, render_bytes,
                            render_html, render_svg, require_dot, to_dot, write_diagram)
from helpers import ROOT

HAS_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAS_DOT, reason="Graphviz 'dot' is not installed")
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)

RESNET50 = "specs/resnet.arch:resnet50"
REPVGG = "examples/repvgg_block.arch"
INCEPTION = "examples/inception_block.arch"


@pytest.fixture(scope="module")
def r50() -> Graph:
    return archdsl.graph(RESNET50)


def _top_frames(g: Graph) -> set[str]:
    return {n.scope[1].path for n in g.nodes() if len(n.scope) > 1}


# ------------------------------------------------------------------------------------------- view structure
def test_depth_one_collapses_to_stem_stages_head(r50: Graph) -> None:
    v = build_view(r50, depth=1)
    blocks = sorted(n.label.split("\n")[0] for n in v.nodes.values() if n.kind == "block")
    assert blocks == ["layer1", "layer2", "layer3", "layer4"]
    assert not v.visible_clusters()
    top_ops = [n for n in r50.nodes() if len(n.scope) <= 1 and n.op not in ("input", "identity")]
    assert len([n for n in v.nodes.values() if n.kind == "op"]) == len(top_ops)
    assert len(blocks) == len(_top_frames(r50))
    # the DOT has exactly these nodes and no cluster
    src = to_dot(v)
    assert "subgraph cluster_" not in src
    assert len(re.findall(r"^\s*[nbo]\d+ \[", src, re.M)) == len(v.nodes)


def test_depth_two_counts_and_folding(r50: Graph) -> None:
    v = build_view(r50, depth=2)
    assert len(v.visible_clusters()) == 4                      # layer1..layer4 as frames
    blocks = [n for n in v.nodes.values() if n.kind == "block"]
    # first Bottleneck of each stage, then the identical rest folded: 2 per stage
    assert len(blocks) == 8
    assert any("1\u20135: Bottleneck \u00d75" in b.label for b in blocks)
    assert sum(b.params for b in blocks) == r50.total_params - sum(
        n.params for n in r50.nodes() if len(n.scope) <= 1)
    expanded = build_view(r50, depth=2, expand=True)
    assert len([n for n in expanded.nodes.values() if n.kind == "block"]) == 16   # 3 + 4 + 6 + 3
    assert to_dot(expanded).count("subgraph cluster_") == 4


def test_full_depth_expand_shows_every_layer(r50: Graph) -> None:
    v = build_view(r50, expand=True)
    ops = [n for n in r50.nodes() if n.op not in ("input", "identity")]
    assert len([n for n in v.nodes.values() if n.kind == "op"]) == len(ops)
    frames = {(f.kind, f.path) for n in r50.nodes() for f in n.scope[1:] if f.kind != "combinator"}
    assert len(v.visible_clusters()) == len(frames)
    folded = build_view(r50)
    assert len(folded.nodes) < len(v.nodes)
    assert any(c.count > 1 for c in folded.clusters.values())


def test_more_depth_never_shows_fewer_nodes(r50: Graph) -> None:
    counts = [len(build_view(r50, depth=d).nodes) for d in (1, 2, 3)]
    assert counts == sorted(counts) and counts[0] < counts[-1]


def test_edge_labels_are_ir_shapes(r50: Graph) -> None:
    v = build_view(r50, expand=True)
    by_id = {n.id: n for n in r50.nodes()}
    wires = 0
    for e in v.edges:
        src = v.nodes[e.src]
        assert e.shape == tuple(by_id[src.ir[0]].shape)
        wires += 1
    # every data dependency of the IR (identities are drawn as plain edges) is an edge
    def real(i: int) -> int:
        while by_id[i].op == "identity":
            i = by_id[i].inputs[0]
        return i
    expected = {(f"n{real(i)}", f"n{n.id}") for n in r50.nodes() if n.op != "identity" for i in n.inputs}
    assert expected <= {(e.src, e.dst) for e in v.edges}
    src = to_dot(v)
    for e in v.edges[:20]:
        label = "\u00d7".join(map(str, e.shape))
        assert re.search(rf'{e.src} -> {e.dst} \[label="{label}"', src)


def test_folded_edges_keep_shapes_and_skip_instance_wires(r50: Graph) -> None:
    v = build_view(r50, depth=2)
    for e in v.edges:
        assert e.src != e.dst
    shapes = {e.shape for e in v.edges}
    assert (1024, 14, 14) in shapes and (2048, 7, 7) in shapes


def test_key_args_and_params_on_nodes(r50: Graph) -> None:
    v = build_view(r50, expand=True)
    conv1 = next(n for n in v.nodes.values() if n.label.startswith("conv1: conv2d") and n.cluster is None)
    assert "7\u00d77" in conv1.label and "s=2" in conv1.label and "9.41K params" in conv1.label
    assert "specs/resnet.arch:" in conv1.tooltip and "[64, 112, 112]" in conv1.tooltip
    fc = next(n for n in v.nodes.values() if n.label.startswith("fc: linear"))
    assert "out=1000" in fc.label


def test_family_colours_are_fixed() -> None:
    assert family_color("conv") == FAMILY_COLORS["conv"]
    assert family_color("attention") == family_color("attention")   # hashed, but stable
    g = archdsl.graph(INCEPTION)
    src = to_dot(build_view(g))
    assert f'fillcolor="{FAMILY_COLORS["conv"]}"' in src and f'fillcolor="{FAMILY_COLORS["merge"]}"' in src


def test_reparam_groups_marked_and_deploy_fused() -> None:
    g = archdsl.graph(REPVGG)
    train = build_view(g)
    reparam = [c for c in train.visible_clusters() if c.frame.kind == "reparam"]
    assert len(reparam) == len(g.reparam_groups) == 2
    assert all("reparam add" in c.title for c in reparam)
    src = to_dot(train)
    assert "dashed" in src
    dep = build_view(g, deploy=True)
    assert not [c for c in dep.visible_clusters() if c.frame.kind == "reparam"]
    fused = [n for n in dep.nodes.values() if n.fused]
    assert len(fused) == 2 and all("fused conv2d" in n.label and "3\u00d73" in n.label for n in fused)
    # the fused convs are exactly the planner's: geometry and parameter count of each group's plan
    dg = deploy_graph(g)
    for path, info in g.reparam_groups.items():
        gp = plan_group(g, path)
        conv = dg.node(info.output)
        assert conv.id in dg.fused_nodes and conv.op == "conv2d"
        assert (conv.args["kernel_size"], conv.args["stride"], conv.args["padding"], conv.args["groups"]) == (
            gp.kernel, gp.stride, gp.padding, gp.groups)
        assert conv.params == gp.out_channels * (gp.in_channels // gp.groups) * gp.kernel[0] * gp.kernel[1] + \
            gp.out_channels
    assert sorted(n.params for n in fused) == [64 * 32 * 9 + 64, 64 * 64 * 9 + 64]
    # the output shape is the group's
    assert [e.shape for e in dep.edges if e.src in {n.id for n in fused}] == [(64, 28, 28), (64, 28, 28)]
    # the drawn deploy form is the deploy pass's graph, node for node
    assert [(n.id, n.op, n.params) for n in dg.nodes()] == [(n.id, n.op, n.params)
                                                           for n in deploy_plan(g).graph.nodes()]
    assert not dep.notes


def test_replknet_deploy_params_match_reference() -> None:
    from helpers import reference_counts
    ref = reference_counts()["replknet.RepLKNet-31B"]
    g = archdsl.graph("specs/replknet.arch:replknet_31b")
    dg = deploy_graph(g)
    assert len(dg.fused_nodes) == len(g.reparam_groups) > 0
    # the official deploy form fuses the groups and keeps the BatchNorms: the reference's parameter count
    assert deploy_plan(g, fold_bn=False).graph.total_params == ref["params_deploy"]
    # what render draws (BatchNorms folded too) has no parameters the official form lacks
    assert dg.total_params <= ref["params_deploy"]


def test_deploy_form_notes_what_it_leaves_unfolded(tmp_path: Path) -> None:
    """A BatchNorm beside a linear on a feature map is not folded (other axis): the diagram says so."""
    spec = tmp_path / "bn_linear.arch"
    spec.write_text("network bn_linear():\n    input [4, 6, 6]\n    bn: batchnorm\n    fc: linear(8)\n")
    g = archdsl.graph(str(spec))
    v = build_view(g, deploy=True)
    assert len(v.notes) == 1 and "batchnorm 'bn'" in v.notes[0] and "not folded into linear 'fc'" in v.notes[0]
    assert "not folded into linear" in to_dot(v)
    assert not build_view(g).notes


def test_unfusable_group_is_an_error_not_a_guess() -> None:
    """A group the exact planner refuses is a located error for --deploy, never a heuristic fused conv."""
    g = archdsl.graph(REPVGG)
    path = sorted(g.reparam_groups)[0]
    conv = next(n for n in g.nodes() if n.op == "conv2d" and n.reparam == path and n.args["kernel_size"] == (3, 3))
    conv.args["dilation"] = (2, 2)       # a graph built by hand: lowering would have refused this spec
    with pytest.raises(ArchError) as ei:
        build_view(g, deploy=True)
    text = ei.value.format()
    assert "reparam group cannot be fused into one conv" in text and "dilated" in text
    assert "examples/repvgg_block.arch:" in text


def test_render_uses_the_op_registry_families() -> None:
    """Colours and the identity-as-edge rule come from OpDef.family, not from lists of op names."""
    from archdsl.ops import OPS
    v = build_view(archdsl.graph(INCEPTION), expand=True)
    ops = [n for n in v.nodes.values() if n.kind == "op"]
    assert ops
    for n in ops:
        op = n.label.split("\n")[0].split(": ")[-1]
        assert n.family == OPS[op].family and n.family != "identity"


def test_bad_options_are_arch_errors(r50: Graph, tmp_path: Path) -> None:
    with pytest.raises(ArchError, match="--depth must be at least 1"):
        build_view(r50, depth=0)
    with pytest.raises(ArchError, match="one of TB, LR, BT, RL"):
        to_dot(build_view(r50, depth=1), rankdir="XY")
    for rd in RANKDIRS:
        assert f"rankdir={rd}" in to_dot(build_view(r50, depth=1), rankdir=rd)
    with pytest.raises(ArchError, match="cannot tell the diagram format"):
        write_diagram(r50, tmp_path / "out.jpeg")


# ------------------------------------------------------------------------------------------- determinism
@needs_dot
def test_dot_and_svg_are_deterministic() -> None:
    a = archdsl.graph(RESNET50)
    b = archdsl.graph(RESNET50)
    for depth in (1, None):
        assert to_dot(build_view(a, depth=depth)) == to_dot(build_view(b, depth=depth))
    assert render_svg(a, depth=2) == render_svg(b, depth=2)
    html_a, html_b = render_html(archdsl.graph(INCEPTION)), render_html(archdsl.graph(INCEPTION))
    assert html_a == html_b
    assert not re.search(r"0x[0-9a-f]{6,}", to_dot(build_view(a)))   # no memory addresses


# ------------------------------------------------------------------------------------------- real Graphviz
def _all_networks() -> list[str]:
    nets = []
    for d in ("specs", "examples"):
        if (ROOT / d).exists():
            nets += [n["spec"] for n in list_networks(d) if "error" not in n]
    return nets


@needs_dot
@pytest.mark.parametrize("spec", _all_networks())
def test_every_spec_renders_at_depth_one_and_two(spec: str) -> None:
    g = archdsl.graph(spec)
    # one dot process lays out both graphs (dot reads a stream of graphs and writes one SVG per graph)
    src = to_dot(build_view(g, depth=1)) + to_dot(build_view(g, depth=2))
    # and the paper figure (issue 23): no schedule arguments, no size-only edges, whatever the spec
    paper = build_view(g, style="paper")
    assert not any(e.size_only for e in paper.edges)
    paper_src = to_dot(paper, rankdir="LR")
    assert not re.search(r"\b(first|total|sd|dp)=", paper_src)
    svg = render_bytes(src + paper_src, "svg")
    assert svg.count(b"<svg") == 3 and svg.count(b"</svg>") == 3


@needs_dot
def test_write_diagram_formats(tmp_path: Path) -> None:
    g = archdsl.graph(REPVGG)
    magic = {"svg": b"<?xml", "png": b"\x89PNG", "pdf": b"%PDF", "dot": b"digraph"}
    for fmt, head in magic.items():
        out = tmp_path / f"d.{fmt}"
        assert write_diagram(g, out, depth=2) == fmt
        assert out.read_bytes().startswith(head)


def test_missing_dot_is_a_readable_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(ArchError) as ei:
        require_dot()
    text = ei.value.format()
    assert "'dot' program was not found" in text
    assert "apt-get install graphviz" in text and "bash scripts/setup.sh" in text
    # the DOT source needs no Graphviz binary
    write_diagram(archdsl.graph(REPVGG), tmp_path / "x.dot")
    assert (tmp_path / "x.dot").read_text().startswith("digraph")


def _archc(*args: str) -> int:
    """Run the CLI in this process (as `archc ARGS`); returns the exit code."""
    from archdsl.cli import main
    try:
        main(list(args))
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_cli_without_dot_fails_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))     # no 'dot' anywhere on PATH
    assert _archc("render", REPVGG, "-o", str(tmp_path / "x.svg")) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "apt-get install graphviz" in err and "scripts/setup.sh" in err
    assert not (tmp_path / "x.svg").exists()


@needs_dot
def test_cli_render(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.svg"
    assert _archc("render", RESNET50, "-o", str(out), "--depth", "2", "--rankdir", "LR",
                  "--set", "num_classes=10") == 0
    svg = out.read_text()
    assert "<svg" in svg and "1024\u00d714\u00d714" in svg and ">10<" in svg.replace("\n", "")
    assert _archc("render", REPVGG, "-o", str(tmp_path / "d.dot"), "--deploy", "--expand") == 0
    assert "fused conv2d" in (tmp_path / "d.dot").read_text()
    assert _archc("render", REPVGG, "-o", str(tmp_path / "v.html"), "--depth", "1") == 0
    assert (tmp_path / "v.html").read_text().startswith("<!DOCTYPE html>")
    capsys.readouterr()
    assert _archc("render", RESNET50, "-o", str(tmp_path / "bad.gif")) == 1
    assert "cannot tell the diagram format" in capsys.readouterr().err


def test_render_never_imports_torch(tmp_path: Path) -> None:
    """`archc render` (deploy form, DOT and HTML) never imports torch."""
    outs = [str(tmp_path / "x.dot"), str(tmp_path / "x.html")] if HAS_DOT else [str(tmp_path / "x.dot")]
    code = ("import sys; from archdsl.cli import main\n"
            f"for out in {outs!r}:\n"
            "    try:\n"
            f"        main(['render', {REPVGG!r}, '-o', out, '--deploy'])\n"
            "    except SystemExit as e:\n"
            "        assert not e.code, e.code\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout
    assert all(Path(o).is_file() for o in outs)


def test_render_imports_only_down_and_graphviz_only_in_dot() -> None:
    """render (L5) imports passes, lower layers and its own modules, never codegen/backends (same layer) or
    anything above; function-level imports count. The graphviz package is imported by render/dot.py alone."""
    import ast
    pkg = ROOT / "archdsl" / "render"
    allowed = {"errors", "ir", "limits", "fsutil", "source", "ops", "passes", "render"}
    graphviz_users = []
    for f in sorted(pkg.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                top = (node.module or "").split(".")[0] if node.level == 2 else "render"
                assert top in allowed, f"{f.name} imports ..{node.module}"
            elif isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("archdsl"), f"{f.name}: absolute archdsl import"
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "graphviz" for a in node.names):
                graphviz_users.append(f.name)
    assert graphviz_users == ["dot.py"]


@needs_dot
def test_jupyter_repr_svg() -> None:
    g = archdsl.graph("specs/lenet.arch") if (ROOT / "specs/lenet.arch").exists() else archdsl.graph(REPVGG)
    svg = g._repr_svg_()
    assert svg is not None and "<svg" in svg
    model = archdsl.build(REPVGG)
    assert model._repr_svg_() == archdsl.graph(REPVGG)._repr_svg_()


# ------------------------------------------------------------------------------------------- HTML viewer
def test_html_is_self_contained() -> None:
    if not HAS_DOT:
        pytest.skip("Graphviz 'dot' is not installed")
    page = render_html(archdsl.graph(RESNET50))
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "<script>" in page
    # url(#id) points into the page itself (the viewer's arrowhead marker); any other url( would fetch
    assert not re.search(r"<script[^>]+src=|<link|@import|url\((?!#)", page)
    assert "url(#arch-arrow)" in page
    assert not re.search(r"(href|src)=\"https?:", page)


@pytest.mark.skipif(CHROMIUM is None or not HAS_DOT, reason="needs Chromium and Graphviz")
def test_html_expand_collapse_and_hover_in_chromium(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    page_file = tmp_path / "r50.html"
    write_diagram(archdsl.graph(RESNET50), page_file, fmt="html", depth=2)
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-sync"]
    requests: list[str] = []
    with sync_api.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=args)
        try:
            page = ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_file.as_uri())
            visible = ("Array.from(document.querySelectorAll('g.node'))"
                       ".filter(e => !e.classList.contains('arch-hidden')).length")
            before = page.evaluate(visible)
            overlays = page.locator(".arch-overlay").count()
            assert overlays == 8                          # the 8 (folded) Bottlenecks start collapsed
            shot_before = page.screenshot(full_page=True)
            first = page.locator(".arch-overlay").first
            cid = first.get_attribute("data-cluster")
            first.click()                                 # expand layer1.0 (its downsample stays collapsed)
            after = page.evaluate(visible)
            assert after > before
            assert page.locator(f".arch-overlay[data-cluster='{cid}']").count() == 0
            assert page.screenshot(full_page=True) != shot_before
            # clicking the expanded block's frame collapses it again
            page.locator(f"#{cid} > text").first.click()
            assert page.evaluate(visible) < after
            page.hover("#n1")                            # conv1
            tip = page.inner_text("#tip")
            assert "[64, 112, 112]" in tip and "params: 9,408" in tip and "specs/resnet.arch:" in tip
            page.click("button[data-depth='all']")
            assert page.evaluate(visible) == page.locator("g.node").count()
            assert not errors
        finally:
            ctx.close()
    assert all(u.startswith(("file:", "data:", "about:")) for u in requests), requests


def test_cli_render_honours_limits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """render takes --limit like check/summary/compile: a too-large graph is an error, and nothing is written."""
    out = tmp_path / "r.dot"
    assert _archc("render", RESNET50, "-o", str(out), "--limit", "max_nodes=20") == 1
    err = capsys.readouterr().err
    assert "max_nodes" in err and "Traceback" not in err and not out.exists()
    assert _archc("render", RESNET50, "-o", str(out), "--limit", "max_nodes=5000") == 0
    assert out.read_text().startswith("digraph")
