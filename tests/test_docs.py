"""The documentation's examples are real: they compile and match their references."""
from __future__ import annotations

import re
from pathlib import Path

import archdsl
from helpers import ROOT, assert_same_outputs, make_reference, randomize_bn, reference_counts


def _block(doc: str, heading: str) -> str:
    text = (ROOT / doc).read_text()
    m = re.search(re.escape(heading) + r".*?```\n(.*?)```", text, re.S)
    assert m, f"no code block after {heading!r} in {doc}"
    return m.group(1)


def test_language_reference_mobilenet_v2_example_matches_torchvision(tmp_path: Path) -> None:
    spec = tmp_path / "mbv2.arch"
    spec.write_text(_block("docs/language.md", "## 11."))
    g = archdsl.graph(str(spec))
    ref_counts = reference_counts()["torchvision.mobilenet_v2"]
    assert (g.total_params, g.total_macs) == (ref_counts["params"], ref_counts["macs"])
    ref = make_reference("torchvision.mobilenet_v2")
    randomize_bn(ref)
    ours = archdsl.build(str(spec))
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert_same_outputs(ours, ref, (3, 96, 96))


def test_readme_example_is_the_resnet50_in_specs() -> None:
    readme_spec = _block("README.md", "## A 20-line example")
    body = "\n".join(line for line in readme_spec.splitlines() if not line.startswith("#"))
    g = archdsl.graph(body)
    counts = reference_counts()["torchvision.resnet50"]
    assert (g.total_params, g.total_macs) == (counts["params"], counts["macs"])


def test_ops_reference_is_generated_from_the_registry() -> None:
    from archdsl.ops.docs import ops_markdown
    assert (ROOT / "docs" / "ops.md").read_text() == ops_markdown(), \
        "docs/ops.md is stale: regenerate with  archc ops --markdown > docs/ops.md"
