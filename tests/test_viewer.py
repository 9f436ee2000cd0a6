"""The HTML viewer of `archc render` in real headless Chromium (Playwright driving /usr/bin/chromium):
pan and zoom, search, the side panel of the selected layer, expand / collapse in place, keyboard
navigation, arrowheads on every edge, no page errors, nothing fetched (issue 23)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

import archdsl
from archdsl.render import write_diagram

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(CHROMIUM is None or shutil.which("dot") is None, reason="needs Chromium and Graphviz")

VISIBLE_NODES = ("Array.from(document.querySelectorAll('g.node'))"
                 ".filter(e => !e.classList.contains('arch-hidden')).length")
# every drawn edge has an arrowhead: Graphviz's own (a polygon) or the marker of an edge the viewer redrew
ARROWLESS = """() => {
  const bad = [];
  for (const e of document.querySelectorAll('g.edge')) {
    if (e.classList.contains('arch-hidden')) continue;
    if (!e.querySelector('polygon')) bad.push(e.id);
  }
  for (const e of document.querySelectorAll('g.arch-edge path'))
    if (e.getAttribute('marker-end') !== 'url(#arch-arrow)') bad.push('redrawn');
  if (document.querySelectorAll('g.arch-edge').length && !document.getElementById('arch-arrow')) bad.push('marker');
  return bad;
}"""


def _open(p: Any, profile: str) -> Any:
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-sync"]
    return p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=args,
                                                viewport={"width": 1300, "height": 800})


def test_viewer_zoom_search_panel_expand_keys(tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    page_file = tmp_path / "r50.html"
    write_diagram(archdsl.graph("specs/resnet.arch:resnet50"), page_file, fmt="html", depth=2)
    requests: list[str] = []
    errors: list[str] = []
    with sync_api.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = _open(p, profile)
        try:
            page = ctx.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_file.as_uri())
            shots = [page.screenshot()]
            assert page.locator(".arch-overlay").count() == 8
            assert page.locator("g.arch-edge").count() > 0 and page.evaluate(ARROWLESS) == []
            # collapsed blocks are sized to their label (not to the frame they replace): every line fits,
            # with little to spare
            fitness = page.evaluate("""() => Array.from(document.querySelectorAll('.arch-overlay')).map(g => {
                const r = g.querySelector('rect').getBBox();
                const t = Math.max(...Array.from(g.querySelectorAll('text')).map(t => t.getComputedTextLength()));
                return [r.width, t, r.height, g.querySelectorAll('text').length];
            })""")
            for width, text, height, lines in fitness:
                assert text + 4 <= width <= text + 40 and height <= 12 * lines + 12, (width, text, height)

            # zoom: wheel in, '-' out, fit back
            fit = page.evaluate("archView.camera()")
            page.mouse.move(500, 400)
            page.mouse.wheel(0, -400)
            zoomed = page.evaluate("archView.camera()")
            assert zoomed["s"] > fit["s"] * 1.5
            page.keyboard.press("-")
            assert page.evaluate("archView.camera()")["s"] < zoomed["s"]
            # drag pans
            before = page.evaluate("archView.camera()")
            page.mouse.move(600, 400)
            page.mouse.down()
            page.mouse.move(700, 450, steps=5)
            page.mouse.up()
            after = page.evaluate("archView.camera()")
            assert after["x"] < before["x"] and after["y"] < before["y"]
            page.click("#fit")
            assert abs(page.evaluate("archView.camera()")["s"] - fit["s"]) < 1e-6
            shots.append(page.screenshot())

            # select a layer: the side panel shows its op, shapes, parameters, receptive field and spec line
            page.evaluate("archView.select('n1')")
            panel = page.inner_text("#panel")
            assert "conv2d" in panel and "3\u00d7224\u00d7224" in panel and "64\u00d7112\u00d7112" in panel
            assert "9,408" in panel and "7\u00d77 px, stride 2\u00d72" in panel and "specs/resnet.arch:" in panel
            # keyboard: the arrow key follows the data flow to the next layer (bn1)
            page.keyboard.press("ArrowDown")
            assert page.evaluate("archView.selected()") != "n1"
            assert "batchnorm" in page.inner_text("#panel")

            # search a layer hidden in a collapsed block: Enter opens the blocks around it and selects it
            page.fill("#search", "downsample")
            assert "found" in page.inner_text("#found")
            hidden = "document.getElementById('n{}').classList.contains('arch-hidden')"
            target = page.evaluate("Object.keys(JSON.parse(document.getElementById('arch-meta').textContent).nodes)"
                                   ".find(k => k.startsWith('n') && JSON.parse(document.getElementById("
                                   "'arch-meta').textContent).nodes[k].name === 'layer2.0.conv2')")
            assert page.evaluate(hidden.format(target[1:]))       # inside the collapsed layer2.0
            page.fill("#search", "layer2.0.conv2")
            page.press("#search", "Enter")
            assert page.inner_text("#found") == "1 of 1 found"
            assert not page.evaluate(hidden.format(target[1:])) and page.evaluate("archView.selected()") == target
            panel = page.inner_text("#panel")
            assert "layer2.0.conv2" in panel and "kernel_size=3" in panel and "stride=2" in panel
            assert "128\u00d756\u00d756" in panel and "128\u00d728\u00d728" in panel and "specs/resnet.arch:" in panel
            shots.append(page.screenshot())
            page.fill("#search", "")

            # expand a block in place: more layers, its box gone, and the arrowheads still there
            page.click("button[data-depth='2']")
            shown = page.evaluate(VISIBLE_NODES)
            first = page.locator(".arch-overlay").first
            cid = first.get_attribute("data-cluster")
            y0 = first.bounding_box()["y"]
            first.click()
            assert page.evaluate(VISIBLE_NODES) > shown
            assert page.locator(f".arch-overlay[data-cluster='{cid}']").count() == 0
            # in place: the block's first layer is where the block's box was
            sel = page.evaluate("archView.selected()")
            box = page.locator(f"#ov-{sel}" if sel.startswith("c") else f"#{sel}").bounding_box()
            assert box is not None and abs(box["y"] - y0) < 60, (box, y0)
            assert page.evaluate(ARROWLESS) == []
            # the selection is the block's first layer; Enter collapses the block around it again
            assert sel.startswith("n")
            page.keyboard.press("Enter")
            assert page.evaluate(VISIBLE_NODES) == shown
            assert page.locator(f".arch-overlay[data-cluster='{cid}']").count() == 1
            shots.append(page.screenshot())
            page.click("button[data-depth='all']")
            assert page.evaluate(VISIBLE_NODES) == page.locator("g.node").count()
            assert page.locator("g.arch-edge").count() == 0 and page.evaluate(ARROWLESS) == []
            assert len({s for s in shots}) == len(shots)      # every step changed the picture
            for k, s in enumerate(shots):
                (tmp_path / f"viewer_{k}.png").write_bytes(s)
        finally:
            ctx.close()
    assert not errors, errors
    assert all(u.startswith(("file:", "data:", "about:")) for u in requests), requests
