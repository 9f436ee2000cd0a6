"""archc diff / archc migrate on three realistic edits of one small network (tests/data/diff/):
a widened stage (wide.arch), an inserted squeeze-and-excitation block (se.arch), a renamed label (renamed.arch)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import archdsl
from archdsl.cli import app
from archdsl.codegen.migrate import migrate_state_dict
from archdsl.design import split_revision
from archdsl.errors import ArchError
from archdsl.passes.diff import diff_graphs
from archdsl.pipeline import compile_graph
from typer.testing import CliRunner

D = "tests/data/diff"
runner = CliRunner()


def _diff(b: str):
    return diff_graphs(compile_graph(f"{D}/base.arch:net"), compile_graph(f"{D}/{b}.arch:net"))


def test_identical_specs_have_no_difference() -> None:
    d = _diff("base")
    assert d.identical and d.layers == [] and d.blocks == []
    assert d.keys is not None and not (d.keys.new or d.keys.reshaped or d.keys.renamed or d.keys.dropped)
    assert "no difference" in d.text()


def test_widened_stage() -> None:
    d = _diff("wide")
    changed = {c.path: c for c in d.layers}
    # every conv of stage 2 (and its shortcut projection) widened 32 -> 48, nothing added or removed
    assert {c.kind for c in d.layers} == {"changed"}
    for p in ("stage2.0.conv1", "stage2.0.conv2", "stage2.0.shortcut.0", "stage2.1.conv1", "stage2.1.conv2"):
        assert changed[p].args["out_channels"] == (32, 48), p
        assert changed[p].old_shape is not None and changed[p].old_shape[0] == 32 and changed[p].shape[0] == 48
    assert "stage1.0.conv1" not in changed and "stem" not in changed
    # per-block deltas: stage 2 grew, stage 1 did not
    blocks = {b.path: b for b in d.blocks}
    assert blocks["stage2"].params[1] > blocks["stage2"].params[0] and "stage1" not in blocks
    a = compile_graph(f"{D}/base.arch:net")
    b = compile_graph(f"{D}/wide.arch:net")
    assert d.totals["params"] == (a.total_params, b.total_params)
    assert sum(x.params[1] - x.params[0] for x in d.blocks if "." not in x.path) \
        == b.total_params - a.total_params - (48 - 32) * 10     # the head's wider input is outside the stages
    k = d.keys
    assert k is not None and not k.new and not k.dropped
    reshaped = {key: (o, n) for key, o, n in k.reshaped}
    assert reshaped["stage2.1.conv2.weight"] == ((32, 32, 3, 3), (48, 48, 3, 3))
    assert reshaped["head.weight"] == ((10, 32), (10, 48))
    assert "stem.weight" in k.unchanged and "stage1.1.bn2.running_var" in k.unchanged


def test_inserted_se_block() -> None:
    d = _diff("se")
    added = [c for c in d.layers if c.kind == "added"]
    assert added and all(".se." in c.path for c in added)
    assert not [c for c in d.layers if c.kind in ("removed", "changed")]
    assert {c.path for c in added if c.op == "conv2d"} == {f"stage{s}.{i}.se.fc{j}" for s in (1, 2) for i in (0, 1)
                                                         for j in (1, 2)}
    assert d.renumbered > 0     # the relu after the block shifted its number; no weight depends on it
    k = d.keys
    assert k is not None and len(k.new) == 16 and all(".se.fc" in key for key in k.new)
    assert not k.reshaped and not k.dropped and not k.renamed
    assert d.totals["params"][1] - d.totals["params"][0] == sum(c.params[1] for c in added)


def test_renamed_label() -> None:
    d = _diff("renamed")
    assert [(c.kind, c.old_path, c.path) for c in d.layers] == [("renamed", "stem", "stem_conv")]
    assert d.keys is not None and d.keys.renamed == [("stem.weight", "stem_conv.weight")]
    assert not d.keys.new and not d.keys.dropped


def _trained(spec: str, path: Path) -> torch.nn.Module:
    torch.manual_seed(3)
    m = archdsl.build(spec).eval()
    with torch.no_grad():   # no branch hides behind a default init: random BN statistics and affine
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    torch.save(m.state_dict(), path)
    return m


def test_migrate_renamed_label_gives_equal_outputs(tmp_path: Path) -> None:
    src = _trained(f"{D}/base.arch:net", tmp_path / "a.pt")
    out = tmp_path / "b.pt"
    r = runner.invoke(app, ["migrate", "--from", f"{D}/base.arch:net", "--to", f"{D}/renamed.arch:net",
                            "--weights", str(tmp_path / "a.pt"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "1 carried from renamed layers" in r.output and "stem.weight -> stem_conv.weight" in r.output
    dst = archdsl.build(f"{D}/renamed.arch:net").eval()
    dst.load_state_dict(torch.load(out, weights_only=True), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))


def test_migrate_inserted_block_keeps_every_old_tensor(tmp_path: Path) -> None:
    src = _trained(f"{D}/base.arch:net", tmp_path / "a.pt")
    a, b = compile_graph(f"{D}/base.arch:net"), compile_graph(f"{D}/se.arch:net")
    torch.manual_seed(0)
    init = archdsl.build(f"{D}/se.arch:net").state_dict()
    m = migrate_state_dict(a, b, src.state_dict(), init)
    assert m.count("copied") == len(src.state_dict()) and m.count("initialized") == 16 and not m.unused
    for key, v in src.state_dict().items():
        assert torch.equal(m.state_dict[key], v), key
    for dec in m.decisions:
        if dec.action == "initialized":
            assert torch.equal(m.state_dict[dec.key], init[dec.key]) and dec.reason == "new in the target"


def test_migrate_widened_stage_initializes_only_what_changed_shape(tmp_path: Path) -> None:
    src = _trained(f"{D}/base.arch:net", tmp_path / "a.pt")
    a, b = compile_graph(f"{D}/base.arch:net"), compile_graph(f"{D}/wide.arch:net")
    init = archdsl.build(f"{D}/wide.arch:net").state_dict()
    m = migrate_state_dict(a, b, src.state_dict(), init)
    reasons = {d.key: d.reason for d in m.decisions if d.action == "initialized"}
    assert reasons["head.weight"] == "shape changed: [10, 32] -> [10, 48]"
    assert all(k.startswith(("stage2.", "head.weight")) for k in reasons)
    assert "stage2.0.bn1.num_batches_tracked" not in reasons      # a scalar keeps its shape and travels


def test_migrate_refuses_unrelated_specs(tmp_path: Path) -> None:
    _trained(f"{D}/base.arch:net", tmp_path / "a.pt")
    r = runner.invoke(app, ["migrate", "--from", f"{D}/base.arch:net", "--to", "specs/lenet.arch",
                            "--weights", str(tmp_path / "a.pt"), "-o", str(tmp_path / "c.pt")])
    assert r.exit_code == 1 and "no tensor of" in r.output
    assert not (tmp_path / "c.pt").exists()


def test_migrate_checks_the_checkpoint(tmp_path: Path) -> None:
    torch.save({"stem.weight": torch.zeros(3)}, tmp_path / "bad.pt")
    r = runner.invoke(app, ["migrate", "--from", f"{D}/base.arch:net", "--to", f"{D}/renamed.arch:net",
                            "--weights", str(tmp_path / "bad.pt"), "-o", str(tmp_path / "c.pt")])
    assert r.exit_code == 1 and "do not match the network" in r.output
    assert not (tmp_path / "c.pt").exists()


def test_diff_cli_text_and_json() -> None:
    r = runner.invoke(app, ["diff", f"{D}/base.arch:net", f"{D}/wide.arch:net"])
    assert r.exit_code == 0, r.output
    assert "~ stage2.0.conv1: conv2d: out_channels 32 -> 48" in r.output
    r = runner.invoke(app, ["diff", f"{D}/base.arch:net", f"{D}/se.arch:net", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["identical"] is False and len(data["checkpoint"]["new"]) == 16
    r = runner.invoke(app, ["diff", f"{D}/base.arch:net", f"{D}/base.arch:net", "--depth", "0"])
    assert r.exit_code == 1 and "--depth must be at least 1" in r.output


def test_diff_errors_are_located() -> None:
    r = runner.invoke(app, ["diff", f"{D}/base.arch:net", "network n:\n  input [3, 8, 8]\n  conv2d(4, 3, groups=3)\n"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "<spec>:3:16: error" in r.output and "groups" in r.output and "^" in r.output


def test_git_revisions(tmp_path: Path) -> None:
    """``FILE@REV`` reads the file (and the .arch files beside it) at a revision: data only."""
    repo = tmp_path / "repo"
    (repo / "s").mkdir(parents=True)
    base = Path(f"{D}/base.arch").read_text()
    (repo / "s" / "net.arch").write_text(base)

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                       capture_output=True)
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "base")
    (repo / "s" / "net.arch").write_text(Path(f"{D}/wide.arch").read_text())
    spec = str(repo / "s" / "net.arch")
    r = runner.invoke(app, ["diff", f"{spec}:net@HEAD", f"{spec}:net"])
    assert r.exit_code == 0, r.output
    assert "out_channels 32 -> 48" in r.output and "@HEAD" in r.output
    r = runner.invoke(app, ["diff", f"{spec}:net@nosuchrev", f"{spec}:net"])
    assert r.exit_code == 1 and "unknown git revision 'nosuchrev'" in r.output


@pytest.mark.parametrize("operand", ["a.arch@--upload-pack=x", "a.arch:n@a..b", "a.arch@x;y"])
def test_revision_syntax_is_checked(operand: str) -> None:
    with pytest.raises(ArchError):
        split_revision(operand)
    assert split_revision("specs/x.arch:net@HEAD~2") == ("specs/x.arch:net", "HEAD~2")
    assert split_revision("net:\n  input [3]\n")[1] is None


def test_diff_never_imports_torch() -> None:
    code = ("import sys; from archdsl.cli import main; sys.argv=['archc','diff','tests/data/diff/base.arch',"
            "'tests/data/diff/se.arch']\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_diff_render_highlights_the_changes(tmp_path: Path) -> None:
    from archdsl.render.changes import CHANGE_COLORS
    svg = tmp_path / "se.svg"
    r = runner.invoke(app, ["diff", f"{D}/base.arch:net", f"{D}/se.arch:net", "--render", str(svg)])
    assert r.exit_code == 0, r.output
    text = svg.read_text()
    added_fill = CHANGE_COLORS["added"][0]
    # the added layers drawn in the 'added' colour: 6 boxes per SE (its identity is a wire), for the 3 SE
    # blocks drawn (stage1's two equal blocks are folded into one 'Res x2')
    assert text.count(f'fill="{added_fill}"') == 18
    assert "28 added (green)" in text
    page = tmp_path / "wide.html"
    r = runner.invoke(app, ["diff", f"{D}/base.arch:net", f"{D}/wide.arch:net", "--render", str(page)])
    assert r.exit_code == 0, r.output
    html_text = page.read_text()
    assert CHANGE_COLORS["changed"][0] in html_text and "19 changed (orange)" in html_text
    r = runner.invoke(app, ["diff", f"{D}/base.arch:net", f"{D}/renamed.arch:net", "--render", str(tmp_path / "x.txt")])
    assert r.exit_code == 1 and "cannot tell the diagram format" in r.output
