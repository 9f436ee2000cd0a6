"""The paper style of `archc render` and depth that follows the architecture (issue 23).

Paper figures: stages as frames with their output size, repeated blocks once with "×N", only the block
arguments that describe the architecture, a legend, no size-only edges, SVG and PDF, a block-detail
figure. Depth: at depth 1 a network shows its stages whatever containers they sit in.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import archdsl
from archdsl.errors import ArchError
from archdsl.ir import Graph
from archdsl.render import build_view, render_svg, to_dot, write_diagram
from archdsl.render.paper import is_schedule_arg, shown_args
from helpers import ROOT

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")

RESNET50 = "specs/resnet.arch:resnet50"
SWIN_T = "specs/swin.arch:swin_t"
VIT_B = "specs/vit.arch:vit_base_patch16_224"
REPLKNET = "specs/replknet.arch:replknet_31b"
SCHEDULE = re.compile(r"\b(first|total|sd|dp|rate|drop_path_rate|stochastic_depth_prob)=")


@pytest.fixture(scope="module")
def swin() -> Graph:
    return archdsl.graph(SWIN_T)


@pytest.fixture(scope="module")
def vit() -> Graph:
    return archdsl.graph(VIT_B)


def _heads(view_labels: list[str]) -> list[str]:
    return [label.split("\n")[0] for label in view_labels]


# ------------------------------------------------------------------------------------------- depth
def test_swin_depth_one_shows_its_stages(swin: Graph) -> None:
    """torchvision's `features` list is a container, not a level: depth 1 is the patch embedding, the
    four stages and the three patch mergings (it used to be one 'features' box)."""
    v = build_view(swin, depth=1)
    blocks = [n for n in v.nodes.values() if n.kind == "block"]
    names = [b.label.split("\n")[0].split(": ")[-1] for b in blocks]
    assert names == ["PatchEmbed", "Stage", "PatchMerging", "Stage", "PatchMerging", "Stage", "PatchMerging",
                     "Stage"]
    assert not any(n.label.split("\n")[0] == "features" for n in v.nodes.values())
    # every layer is in exactly one box: the stages hold the 12 transformer blocks' parameters
    assert sum(b.params for b in blocks) + sum(n.params for n in v.nodes.values() if n.kind == "op") == \
        swin.total_params
    # the container is still a frame around them (it is the module 'features'), at level 0
    feats = [c for c in v.visible_clusters() if c.frame.path == "features"]
    assert len(feats) == 1 and feats[0].container
    # depth 2 opens the stages: the transformer blocks, folded where identical
    v2 = build_view(swin, depth=2)
    inner = [n.label.split("\n")[0] for n in v2.nodes.values() if n.kind == "block"]
    assert sum("SwinTransformerBlock" in h for h in inner) == 7    # 2 + 2 + 2 (x3 alternating) + 1 (x2)


def test_vit_depth_one_shows_embedding_blocks_head(vit: Graph) -> None:
    v = build_view(vit, depth=1)
    blocks = {n.label.split("\n")[0]: n for n in v.nodes.values() if n.kind == "block"}
    assert set(blocks) == {"patch_embed: PatchEmbed", "blocks"}
    assert "Block \u00d712" in blocks["blocks"].label
    assert any(n.label.startswith("head: linear") for n in v.nodes.values())


def test_replknet_interleaved_lists_are_not_frames() -> None:
    """RepLKNet keeps its stages and transitions in two module lists that the data flow interleaves: at
    depth 1 they are seven boxes in data-flow order, never two frames with edges running between them."""
    v = build_view(archdsl.graph(REPLKNET), depth=1)
    names = [n.label.split("\n")[0].split(": ")[-1] for n in v.nodes.values() if n.kind == "block"]
    assert names == ["stem", "Stage", "Transition", "Stage", "Transition", "Stage", "Transition", "Stage"]
    assert not v.visible_clusters()


def test_resnet_depth_is_unchanged() -> None:
    """A stage that is a list of one repeated block (ResNet's layer1) stays a level of its own."""
    v = build_view(archdsl.graph(RESNET50), depth=1)
    assert sorted(n.label.split("\n")[0] for n in v.nodes.values() if n.kind == "block") == \
        ["layer1", "layer2", "layer3", "layer4"]


# ------------------------------------------------------------------------------------------- paper style
def test_schedule_arguments_are_recognised() -> None:
    for name in ("first", "total", "sd", "dp", "drop_path_rate", "rate", "dropout", "stochastic_depth_prob"):
        assert is_schedule_arg(name), name
    for name in ("heads", "c", "k", "stride", "depth", "shift", "groups", "dim", "ratio"):
        assert not is_schedule_arg(name), name
    args = "heads=3, depth=2, first=0, total=12, sd=0.2"
    assert shown_args(args, (), []) == "heads=3, depth=2"
    assert shown_args(args, ("depth",), []) == "heads=3"
    assert shown_args(args, (), ["sd"]) == "heads=3, depth=2, sd=0.2"
    assert shown_args(args, ("depth",), ["all"]) == args


@needs_dot
@pytest.mark.parametrize("spec", [SWIN_T, REPLKNET, VIT_B, RESNET50, "specs/convnext.arch:convnext_tiny"])
def test_paper_svg_has_no_schedule_arguments(spec: str) -> None:
    g = archdsl.graph(spec)
    svg = render_svg(g, style="paper")
    text = " ".join(re.findall(r">([^<]*)</text>", svg))
    # not in the figure's text, nor in its hover titles
    assert not SCHEDULE.search(svg), SCHEDULE.search(svg)
    assert "<svg" in svg and "params" not in text
    if spec != VIT_B and spec != RESNET50:
        # the default style prints them (so the test above is not vacuous), and asking keeps them
        assert SCHEDULE.search(to_dot(build_view(g, depth=1)))
        asked = render_svg(g, style="paper", show_args=["first", "total"])
        assert "first=" in asked and "total=" in asked


@needs_dot
def test_paper_figure_of_swin(swin: Graph) -> None:
    v = build_view(swin, style="paper")
    # the stages are frames with their output size; the blocks inside are boxes, folded where identical
    stages = [c for c in v.visible_clusters()]
    assert [c.title.split("\n")[0] for c in stages] == [
        "Stage  \u00b7  56\u00d756\u00d796", "Stage  \u00b7  28\u00d728\u00d7192",
        "Stage  \u00b7  14\u00d714\u00d7384", "Stage  \u00b7  7\u00d77\u00d7768"]
    assert stages[0].title.split("\n")[1] == "heads=3, depth=2"
    boxes = [n.label for n in v.nodes.values() if n.kind == "block"]
    assert "SwinTransformerBlock \u00d73\nheads=12, shift=3" in boxes
    assert "SwinTransformerBlock \u00d72\nheads=24, shift=0" in boxes
    # no size-only edge (the default full-depth view of Swin has them), no edge from a silent reshape
    assert any(e.size_only for e in build_view(swin).edges)
    assert not any(e.size_only for e in v.edges)
    assert all(n.family not in ("shape", "dropout") for n in v.nodes.values())
    # the legend: each block type and op family once, each block type with its own fill
    legend = {(kind, name): fill for kind, name, fill in v.legend}
    assert {("block", "PatchEmbed"), ("block", "SwinTransformerBlock"), ("block", "PatchMerging")} <= set(legend)
    blocks = [fill for (kind, _), fill in legend.items() if kind == "block"]
    assert len(set(blocks)) == len(blocks)
    src = to_dot(v, rankdir="LR")
    assert "rankdir=LR" in src and "SwinTransformerBlock" in src and "dashed" not in src
    # sizes only where they change: after the input, the patch embedding, each merging, the pooling, the head
    labelled = [e for e in v.edges if e.labelled]
    assert 0 < len(labelled) < len(v.edges)


@needs_dot
def test_paper_resnet_stages_and_detail(tmp_path: Path) -> None:
    g = archdsl.graph(RESNET50)
    v = build_view(g, style="paper")
    assert [c.title for c in v.visible_clusters()] == [
        "layer1  \u00b7  256\u00d756\u00d756", "layer2  \u00b7  512\u00d728\u00d728",
        "layer3  \u00b7  1024\u00d714\u00d714", "layer4  \u00b7  2048\u00d77\u00d77"]
    labels = [n.label for n in v.nodes.values()]
    assert "Bottleneck \u00d75\nc=256" in labels and "Bottleneck\nc=256, stride=2" in labels
    # the stem's conv, BatchNorm and ReLU are one box
    assert "conv2d\n7\u00d77 s=2\n+ batchnorm\n+ relu" in labels
    # one block in full, the rest as context
    d = build_view(g, style="paper", detail="layer2.0")
    inner = [n for n in d.nodes.values() if n.kind == "op" and n.cluster and
             d.clusters[n.cluster].frame.path.startswith("layer2.0")]
    assert len(inner) >= 5 and any("3\u00d73 s=2" in n.label for n in inner)
    assert len([n for n in d.nodes.values() if n.kind == "block"]) == len(
        [n for n in v.nodes.values() if n.kind == "block"]) - 1
    with pytest.raises(ArchError, match="no block at that module path") as ei:
        build_view(g, style="paper", detail="layer9.0")
    assert "layer4.0" in (ei.value.format())
    with pytest.raises(ArchError, match="run of identical blocks") as ei:
        build_view(g, style="paper", detail="layer3.3")
    assert "'layer3.1'" in ei.value.format()
    assert build_view(g, style="paper", detail="layer3.3", expand=True).clusters
    with pytest.raises(ArchError, match="--style must be one of"):
        build_view(g, style="poster")
    # SVG and PDF for LaTeX
    for fmt, magic in (("svg", b"<?xml"), ("pdf", b"%PDF")):
        out = tmp_path / f"fig.{fmt}"
        write_diagram(g, out, style="paper")
        assert out.read_bytes().startswith(magic)


@needs_dot
def test_cli_paper_pdf_never_imports_torch(tmp_path: Path) -> None:
    out = tmp_path / "fig.pdf"
    code = ("import sys; from archdsl.cli import main\n"
            "try:\n"
            f"    main(['render', {SWIN_T!r}, '-o', {str(out)!r}, '--style', 'paper', '--detail', 'features.2'])\n"
            "except SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout
    assert out.read_bytes().startswith(b"%PDF")


def test_paper_stages_by_resolution_for_a_chain_of_blocks() -> None:
    """Inception-v3 has no stage frames: the paper style frames its runs of blocks by grid size, as the
    paper's figure does (35×35, 17×17, 8×8); a U-Net, whose skips cross the resolutions, is left alone."""
    v = build_view(archdsl.graph("specs/inception.arch:inception_v3"), style="paper")
    titles = [c.title for c in v.visible_clusters()]
    assert "35\u00d735  \u00b7  288\u00d735\u00d735" in titles and "17\u00d717  \u00b7  768\u00d717\u00d717" in titles
    assert "8\u00d78  \u00b7  2048\u00d78\u00d78" in titles
    inside = {n.label.split("\n")[0] for n in v.nodes.values() if n.cluster and
              v.clusters[n.cluster].title.startswith("17\u00d717")}
    assert inside == {"InceptionB", "InceptionC", "InceptionC \u00d72"}
    u = build_view(archdsl.graph("examples/unet.arch"), style="paper")
    assert not u.visible_clusters()
    assert sum(n.kind == "block" for n in u.nodes.values()) == 9      # inc, down1-4, up1-4's DoubleConv


def test_archdsl_render_is_callable_with_the_paper_style(tmp_path: Path) -> None:
    """``archdsl.render(graph_or_model, style="paper")``: the package is also the function (issue 23)."""
    import archdsl
    import archdsl.render
    g = archdsl.graph("specs/swin.arch:swin_t")
    svg = archdsl.render(g, style="paper", depth=1)
    assert svg.lstrip().startswith("<?xml") and "first=" not in svg and "sd=" not in svg
    assert archdsl.render(g, tmp_path / "swin.pdf", style="paper") == "pdf"
    assert (tmp_path / "swin.pdf").read_bytes()[:4] == b"%PDF"
    with pytest.raises(archdsl.ArchError, match="expected a graph"):
        archdsl.render("specs/swin.arch:swin_t")
