"""archc sweep: grids, per-variant metrics, invalid variants, the Pareto front, resuming from the cache, the
CSV / PNG / HTML report (the page driven in headless Chromium) and the Ray runner on a local Ray instance."""
from __future__ import annotations

import csv
import io
import json
import os
import stat
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from archdsl.cli import app
from archdsl.errors import ArchError
from archdsl.pipeline import compile_graph
from archdsl.sweep import parse_grid, pareto_front, run_sweep, variants
from archdsl.sweep.metrics import peak_activation_bytes

SPEC = "tests/data/diff/base.arch:net"
GRID = ["--grid", "width=16,24,32,48", "--grid", "num_classes=10,100,1000"]      # 12 variants
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
runner = CliRunner()


def test_grid_parsing() -> None:
    axes = parse_grid(["width=16,32", "act=\"relu\",\"gelu\"", "sizes=[1,2];[2,2]", "flag=true,false"])
    assert axes == {"width": [16, 32], "act": ["relu", "gelu"], "sizes": [[1, 2], [2, 2]], "flag": [True, False]}
    vs = variants(axes, {"num_classes": 5})
    assert len(vs) == 16 and vs[0].params == {"num_classes": 5, "width": 16, "act": "relu", "sizes": [1, 2],
                                              "flag": True}
    assert parse_grid(["w=1,1,2"]) == {"w": [1, 2]}
    for bad in (["width"], ["width=1,,2"], ["w=1", "w=2"], ["w=inf"]):
        with pytest.raises(ArchError):
            parse_grid(bad)
    with pytest.raises(ArchError, match="more than"):
        variants({f"a{i}": list(range(10)) for i in range(5)})


def test_peak_activation_memory_of_a_chain() -> None:
    g = compile_graph("network net:\n    input [3, 8, 8]\n    conv2d(4, 3, padding=1)\n    relu\n    conv2d(2, 1)\n")
    # conv1 runs while the input is alive: 3*64 + 4*64 floats; then relu holds conv1's output and its own
    assert peak_activation_bytes(g) == 4 * (3 * 64 + 4 * 64 + 4 * 64)
    assert peak_activation_bytes(g, batch=2) == 2 * peak_activation_bytes(g)


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_sweep_of_twelve_variants_writes_csv_png_html(tmp_path: Path) -> None:
    outs = [tmp_path / "sweep.csv", tmp_path / "sweep.png", tmp_path / "sweep.html", tmp_path / "sweep.json"]
    r = runner.invoke(app, ["sweep", SPEC, *GRID, "--grid", "stem_extra=0", *sum([["-o", str(o)] for o in outs], []),
                            "-j", "2"])
    # stem_extra is not a parameter of the network: every variant is invalid and listed, the sweep finishes
    assert r.exit_code == 0, r.output
    assert "12 variants (0 valid, 12 invalid" in r.output and "no parameter 'stem_extra'" in r.output
    r = runner.invoke(app, ["sweep", SPEC, *GRID, *sum([["-o", str(o)] for o in outs], []), "-j", "2"])
    assert r.exit_code == 0, r.output
    assert "12 variants (12 valid, 0 invalid, 0 from the cache)" in r.output
    rows = _rows(outs[0])
    assert len(rows) == 12 and rows[0]["variant"] == "width=16,num_classes=10"
    for row in rows:   # every figure is the graph's own
        g = compile_graph(SPEC, {"width": int(row["width"]), "num_classes": int(row["num_classes"])})
        assert int(row["parameters"]) == g.total_params and int(row["macs"]) == g.total_macs
        assert int(row["activation_bytes"]) == peak_activation_bytes(g)
    data = json.loads(outs[3].read_text())
    assert [rows[i]["pareto"] for i in data["front"]] == ["yes"] * len(data["front"])
    assert outs[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and outs[1].stat().st_size > 10_000
    # a second run computes nothing: every variant comes from the cache beside the output
    r = runner.invoke(app, ["sweep", SPEC, *GRID, "-o", str(outs[0])])
    assert "12 from the cache" in r.output


def test_sweep_html_in_chromium(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    page_file = tmp_path / "sweep.html"
    r = runner.invoke(app, ["sweep", SPEC, "--grid", "width=16,24,32,48,0", "--grid", "num_classes=10,100,1000",
                            "-o", str(page_file), "--no-cache"])
    assert r.exit_code == 0, r.output
    assert "15 variants (12 valid, 3 invalid" in r.output
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
    with sync_api.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=args)
        try:
            page = ctx.new_page()
            errors: list[str] = []
            requests: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda q: requests.append(q.url))
            page.goto(page_file.as_uri())
            assert page.locator("circle.pt").count() == 12          # the invalid variants are not plotted
            n_front = page.locator("circle.pt.front").count()
            assert 1 <= n_front <= 12
            assert page.locator("tr.bad").count() == 3              # ... but listed with their error
            assert "out_channels must be positive" in page.locator("tr.bad").first.inner_text()
            page.locator("circle.pt").last.hover()          # the last drawn is on top
            assert "parameters" in page.locator("#tip").inner_text()
            page.locator("circle.pt").last.click()
            assert page.locator("circle.pt.sel").count() == 1
            page.select_option("#xs", "activation_bytes")           # switch the cost axis: the page redraws
            assert page.locator("circle.pt").count() == 12
            assert not errors, errors
            assert all(u.startswith("file:") for u in requests), requests   # works offline
        finally:
            ctx.close()


def test_resume_ignores_tampered_and_special_cache_entries(tmp_path: Path) -> None:
    vs = variants(parse_grid(["width=16,32"]))
    cache = tmp_path / "cache"
    first = run_sweep(SPEC, vs, cache_dir=cache)
    files = sorted(cache.glob("*.json"))
    assert len(files) == 2 and first.cached == 0
    files[0].write_text("{not json")                                  # damaged: recomputed
    files[1].unlink()
    os.mkfifo(files[1])                                               # a FIFO never blocks the sweep
    again = run_sweep(SPEC, vs, cache_dir=cache)
    assert again.cached == 0 and [r["parameters"] for r in again.rows] == [r["parameters"] for r in first.rows]
    third = run_sweep(SPEC, vs, cache_dir=cache)
    assert third.cached == 1                        # the damaged entry was rewritten; the FIFO is never written
    assert stat.S_ISFIFO(os.stat(files[1]).st_mode)


def test_measured_sweep_has_latency_beside_the_sgemm_bound(tmp_path: Path) -> None:
    res = run_sweep(SPEC, variants(parse_grid(["width=16,32"])), measure="cpu")
    assert res.sgemm_gflops is not None and res.sgemm_gflops > 0
    for row in res.rows:
        assert row["ok"] and row["eager_ms"] > 0 and row["deploy_ms"] > 0
    front = pareto_front(res.rows, "deploy_ms", "parameters")
    assert front


def test_sweep_on_a_local_ray_instance(tmp_path: Path) -> None:
    vs = variants(parse_grid(["width=16,32,0"]))
    res = run_sweep(SPEC, vs, ray="local", cache_dir=tmp_path / "c")
    local = run_sweep(SPEC, vs)
    assert [r["ok"] for r in res.rows] == [True, True, False]
    assert [r.get("parameters") for r in res.rows] == [r.get("parameters") for r in local.rows]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), min_size=1, max_size=12))
def test_pareto_front_property(points: list[tuple[int, int]]) -> None:
    rows = [{"ok": True, "macs": c, "parameters": b} for c, b in points]
    front = set(pareto_front(rows, "macs", "parameters"))
    for i, (c, b) in enumerate(points):
        dominated = any(c2 <= c and b2 >= b and (c2 < c or b2 > b) for c2, b2 in points)
        assert (i in front) == (not dominated)
