"""bench/bench_fused_linear.py: it times the helpers generated modules hold, and writes its table (one small
shape, one round: no timing is checked here, the script's figures are its own)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from helpers import bench_script

bfl = bench_script("bench_fused_linear")


def test_the_helpers_are_the_generated_ones_and_match_the_plain_ops() -> None:
    import archdsl
    dep = archdsl.deploy(archdsl.build("specs/vit.arch:vit_tiny_patch16_224").eval(), memory_format="contiguous")
    src = dep.__archdsl_source__
    ns = bfl.helpers()
    for name in ("_linear_act", "_linear_add", "_fused_linear_ok"):
        assert f"def {name}(" in src and callable(ns[name])
    x, w, b, r = torch.randn(6, 8), torch.randn(5, 8), torch.randn(5), torch.randn(6, 5)
    with torch.inference_mode():
        torch.testing.assert_close(ns["_linear_act"](x, w, b, "silu", "none"), F.silu(F.linear(x, w, b)))
        torch.testing.assert_close(ns["_linear_add"](x, r, w, b), r + F.linear(x, w, b))


def test_the_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bfl, "SHAPES", [("tiny", "fc + gelu", 16, 8, 32, "gelu"),
                                        ("tiny", "fc + sum", 16, 32, 8, "add")])
    out = tmp_path / "t.md"
    assert bfl.main(["--threads", "1", "--rounds", "1", "--out", str(out)]) == 0
    text = out.read_text()
    assert "sgemm bound (fp32, 1024^3, this run)" in text and "over " in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| tiny |")]
    assert {ln.split(" | ")[3] for ln in rows} >= {"float32"} and len(rows) in (2, 4)   # bf16 where native
    assert all(ln.endswith(" |") and ln.count("|") == 10 for ln in rows)
