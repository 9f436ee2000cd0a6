"""bench/bench_deploy_library.py's pure parts: the network list from the library index, resuming, the table writer,
and that a network that fails or hangs is a row with its error (no timing here: the script's figures are its own)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from helpers import ROOT, bench_script

bdl = bench_script("bench_deploy_library")


def test_network_list_is_the_library_with_references() -> None:
    from archdsl.library import library_index
    nets = bdl.library_networks()
    ids = [n["id"] for n in nets]
    assert len(ids) == len(set(ids)), "a network id twice: a family variant named like a network"
    by_id = {n["id"]: n for n in nets}
    # networks with a `reference` line, family scales with one, RepLKNet's (official code not a dependency)
    assert by_id["resnet18"]["reference"] == "torchvision.resnet18"
    assert by_id["resnet:r18"]["reference"] == "torchvision.resnet18"
    assert by_id["fastvit_sa12"]["reference"] == "timm.fastvit_sa12"
    assert by_id["replknet_31b"]["reference"] == "replknet.RepLKNet_31B"
    assert by_id["swin_t"]["input"] == [3, 224, 224]
    # every id is a library name that builds; networks without a reference (segmentation, lenet) are not listed
    index = library_index()
    assert all(i in index for i in ids)
    unreferenced = {"lenet", "fcn_resnet50", "shufflenet_v1_g3"}
    assert unreferenced <= set(index) and not unreferenced & set(ids)
    assert all(n["reference"] and "error" not in n for n in nets)
    assert len(nets) >= 80
    # the twins of networks left out on request: the same graph timed twice
    lean = {n["id"] for n in bdl.library_networks(skip_twins=True)}
    assert "resnet:r18" not in lean and "resnet18" in lean and len(lean) < len(ids)


def test_only_patterns_select_by_name_or_shell_pattern() -> None:
    entries: list[dict[str, Any]] = [
        {"spec": "a.arch:resnet18", "network": "resnet18", "reference": "torchvision.resnet18", "input": [3, 8, 8]},
        {"spec": "a.arch:resnet:r18", "network": "resnet", "scale": "r18", "reference": "torchvision.resnet18",
         "input": [3, 8, 8]},
        {"spec": "a.arch:mobilenet_v3_small", "network": "mobilenet_v3_small",
         "reference": "torchvision.mobilenet_v3_small", "input": [3, 8, 8]},
        {"spec": "a.arch:lenet", "network": "lenet", "reference": None, "input": [1, 28, 28]},
        {"spec": "b.arch:broken", "network": "broken", "reference": "timm.x", "input": None, "error": "b.arch:3:1: x"},
    ]
    ids = [n["id"] for n in bdl.library_networks(entries=entries)]
    assert ids == ["resnet18", "resnet:r18", "mobilenet_v3_small", "broken"]
    assert [n["id"] for n in bdl.library_networks("resnet18", entries=entries)] == ["resnet18"]
    assert [n["id"] for n in bdl.library_networks("resnet:*,mobile*", entries=entries)] == \
        ["resnet:r18", "mobilenet_v3_small"]
    # a spec that does not compile stays in the list with its error: the run records it as a failed row
    assert bdl.library_networks("broken", entries=entries)[0]["error"] == "b.arch:3:1: x"
    assert [n["id"] for n in bdl.library_networks(skip_twins=True, entries=entries)] == \
        ["resnet18", "mobilenet_v3_small", "broken"]


def _row(net: str, batch: int, dtype: str, **kw: Any) -> dict[str, Any]:
    return {"net": net, "reference": f"torchvision.{net}", "batch": batch, "dtype": dtype, **kw}


def test_resume_runs_only_what_is_missing_or_failed(tmp_path: Path) -> None:
    meta = {"threads": 2, "rounds": 7, "cpu": "X"}
    results = {"meta": meta, "rows": {
        bdl.row_key("a", 1, "fp32"): _row("a", 1, "fp32", ratio=1.1),
        bdl.row_key("a", 8, "fp32"): _row("a", 8, "fp32", error="timed out after 10 s")}}
    all_rows = [("a", 1, "fp32"), ("a", 8, "fp32"), ("b", 1, "fp32"), ("b", 8, "fp32")]
    assert bdl.pending_rows(["a", "b"], [1, 8], ["fp32"], results, resume=False) == all_rows
    assert bdl.pending_rows(["a", "b"], [1, 8], ["fp32"], results, resume=True) == all_rows[1:]
    assert bdl.pending_rows(["a", "b"], [1, 8], ["fp32"], results, resume=True, retry_errors=False) == all_rows[2:]
    path = tmp_path / "r.json"
    bdl.save_results(path, results)
    assert not list(tmp_path.glob("*.tmp"))
    assert bdl.load_results(path, resume=True, meta=meta) == results
    assert bdl.load_results(path, resume=False, meta=meta) == {"meta": meta, "rows": {}}
    assert bdl.load_results(tmp_path / "none.json", resume=True, meta=meta) == {"meta": meta, "rows": {}}
    with pytest.raises(SystemExit, match="threads=2"):   # rows measured with other settings are not mixed
        bdl.load_results(path, resume=True, meta=dict(meta, threads=4))


def test_table_from_a_small_results_file() -> None:
    results = json.loads((ROOT / "tests" / "data" / "bench_deploy_library_small.json").read_text())
    text = bdl.render_markdown(results)
    lines = text.splitlines()
    assert lines[0] == "# Deploy form vs the best reference form, 3 library networks (CPU)"
    assert "AMD EPYC 9R14" in text and "avx512_bf16" in text and "torch 2.9.0" in text and "2 threads" in text
    assert "median 180.0 GFLOP/s (min 170.0, max 190.0)" in text   # three rows' same-run sgemm bounds
    assert "A/A noise (the reference timed twice per round on resnet18): 3.0%" in text
    assert "rows: 4 (1 failed); below the bar (0.98x, bf16 1.00x): 1" in text
    # per dtype and batch: the rows at the bar, the median and the lowest (the failed row is not counted)
    assert "- fp32, batch 1: 1/2 at >= 0.98x, 1/2 at >= 1.00x; median 1.25x, lowest 0.91x (fastvit_sa12)" in lines
    assert "- fp32, batch 8: 1/1 at >= 0.98x, 1/1 at >= 1.00x; median 1.30x, lowest 1.30x (resnet18)" in lines
    row = next(ln for ln in lines if ln.startswith("| resnet18 | torchvision.resnet18 | 1 | fp32"))
    assert row == ("| resnet18 | torchvision.resnet18 | 1 | fp32 | 20.0 | - | 21.0 | 16.0 (channels_last) | - "
                   "| 1.25x | 1.60x | 4.0e-07 |")
    slow = next(ln for ln in lines if ln.startswith("| fastvit_sa12 | timm.fastvit_sa12 | 1 | fp32"))
    assert "| 12.0 | 9.10 | 14.0 | 10.0 (channels_last) |" in slow and "| **0.91x** |" in slow
    failed = next(ln for ln in lines if ln.startswith("| swin_t |"))
    assert "failed: timed out after 1800 s" in failed and failed.count("|") == row.count("|")   # 12 columns
    # the row below the threshold has its section, the profile of both forms side by side
    sec = text.split("## Rows below the bar (0.98x, bf16 1.00x)", 1)[1]
    assert "### fastvit_sa12, batch 1, fp32: 0.91x (deploy 10.0 ms, ref_deploy 9.10 ms; layout channels_last" in sec
    assert "| aten::mkldnn_convolution 6.00 (30) | aten::mkldnn_convolution 5.50 (30) |" in sec
    assert "| aten::add 1.00 (12) |  |" in sec
    assert "Total self CPU per forward: ours 9.50 ms, reference 8.00 ms" in sec
    assert "resnet18, batch 1" not in sec


def test_a_failing_or_hanging_network_is_a_row_with_its_error() -> None:
    net = {"id": "broken", "spec": "x.arch:broken", "reference": "timm.x", "input": [3, 8, 8],
           "error": "x.arch:3:5: unknown op 'conv9d'"}
    seen: list[tuple[str, Any]] = []
    cfg = {"net": net, "rows": [[1, "fp32"], [8, "fp32"]], "threads": 1, "rounds": 1, "compile": False,
           "threshold": 0.98, "aa": False}
    rows = bdl._run_worker(cfg, 120, lambda kind, obj: seen.append((kind, obj)))
    assert [(r["batch"], r["error"]) for r in rows] == [(1, "setup: RuntimeError: x.arch:3:5: unknown op 'conv9d'"),
                                                        (8, "setup: RuntimeError: x.arch:3:5: unknown op 'conv9d'")]
    assert [k for k, _ in seen] == ["ROW", "ROW"]
    # a worker over its time limit is stopped; its rows say so and the run goes on
    ok = dict(net, spec="specs/resnet.arch:resnet18", reference="torchvision.resnet18")
    ok.pop("error")
    rows = bdl._run_worker(dict(cfg, net=ok), 0.5, lambda kind, obj: None)
    assert [(r["batch"], r["error"]) for r in rows] == [(1, "timed out after 0.5 s"), (8, "timed out after 0.5 s")]


def test_again_measures_the_rows_below_the_threshold_and_the_table_keeps_both() -> None:
    results = json.loads((ROOT / "tests" / "data" / "bench_deploy_library_small.json").read_text())
    slow = bdl.row_key("fastvit_sa12", 1, "fp32")
    assert bdl.measure_again(results, 0.98, ["resnet18"]) == []          # only the networks asked for
    assert bdl.measure_again(results, 0.98) == [slow]                    # failed rows are not "below"
    assert slow not in results["rows"] and results["first_measure"] == {slow: pytest.approx(0.91)}
    assert bdl.pending_rows(["fastvit_sa12"], [1], ["fp32"], results, resume=True) == [("fastvit_sa12", 1, "fp32")]
    text = bdl.render_markdown(results)
    assert "## Rows measured again (`--again`)" in text and "| fastvit_sa12, b1, fp32 | 0.91x | - |" in text
    results["rows"][slow] = dict(net="fastvit_sa12", batch=1, dtype="fp32", reference="timm.fastvit_sa12",
                                 ratio=1.02, times_ms={"deploy": 9.0, "ref": 9.2}, best_ref_form="ref")
    assert "| fastvit_sa12, b1, fp32 | 0.91x | 1.02x |" in bdl.render_markdown(results)


def test_redo_measures_every_row_of_the_networks_again_and_the_table_keeps_before_and_after() -> None:
    results = json.loads((ROOT / "tests" / "data" / "bench_deploy_library_small.json").read_text())
    slow = bdl.row_key("fastvit_sa12", 1, "fp32")
    bdl.measure_again(results, 0.98, ["fastvit_sa12"])
    results["rows"][slow] = dict(net="fastvit_sa12", batch=1, dtype="fp32", reference="timm.fastvit_sa12",
                                 ratio=0.97, times_ms={"deploy": 9.0, "ref": 8.7}, best_ref_form="ref")
    finished = sorted(k for k, r in results["rows"].items() if r["net"] == "fastvit_sa12" and not r.get("error"))
    assert bdl.measure_anew(results, ["fastvit_sa12"], "fused linears") == finished
    assert not any(r["net"] == "fastvit_sa12" for r in results["rows"].values() if not r.get("error"))
    assert results["redone"][slow] == {"before": 0.97, "first": pytest.approx(0.91), "why": "fused linears"}
    assert slow not in results["first_measure"]                          # its history moved with it
    assert ("fastvit_sa12", 1, "fp32") in bdl.pending_rows(["fastvit_sa12"], [1], ["fp32"], results, resume=True)
    results["rows"][slow] = dict(results["rows"].get(slow) or {}, net="fastvit_sa12", batch=1, dtype="fp32",
                                 reference="timm.fastvit_sa12", ratio=1.05, times_ms={"deploy": 8.0, "ref": 8.4},
                                 best_ref_form="ref")
    text = bdl.render_markdown(results)
    assert "## Rows measured again after a change to the deploy form (`--redo`)" in text
    assert "| fastvit_sa12, b1, fp32 | fused linears | 0.97x (first 0.91x) | 1.05x |" in text
    assert bdl.main(["--redo", "x", "--only", "fastvit_sa12"]) == 1      # needs --resume: nothing is dropped

def test_aa_line_names_the_worst_row_and_keeps_the_full_round_rows_apart() -> None:
    rows = [{"net": "resnet18", "batch": 1, "dtype": "fp32", "aa_ratio": 1.02, "rounds": 7},
            {"net": "resnet18", "batch": 8, "dtype": "fp32", "aa_ratio": 0.95, "rounds": 7},
            {"net": "replknet_xl", "batch": 1, "dtype": "bf16", "aa_ratio": 1.15, "rounds": 3},
            {"net": "alexnet", "batch": 1, "dtype": "fp32", "rounds": 7}]   # measured no A/A
    line = bdl.aa_line(rows, 7)
    assert line == ("- A/A noise (the reference timed twice per round on replknet_xl, resnet18): 15.0% at most "
                    "(replknet_xl, batch 1, bf16, 3 rounds), median 5.0%; 5.0% at most in the rows timed 7 rounds")
    assert bdl.aa_line(rows[:2], 7).endswith("5.0% at most (resnet18, batch 8, fp32, 7 rounds), median 5.0%")
    assert bdl.aa_line(rows[3:], 7).endswith("on no network): -")


def test_replknet_rows_show_how_much_of_the_ratio_is_the_layout() -> None:
    results = json.loads((ROOT / "tests" / "data" / "bench_deploy_library_small.json").read_text())
    assert "how much of the ratio is the layout" not in bdl.render_markdown(results)
    results["rows"]["replknet_31b|b1|fp32"] = dict(
        net="replknet_31b", batch=1, dtype="fp32", reference="replknet.RepLKNet_31B", ratio=3.0, layout="channels_last",
        layout_timings={"channels_last": 0.25, "contiguous": 0.74}, best_ref_form="ref_deploy",
        times_ms={"ref": 730.0, "ref_deploy": 723.0, "deploy": 240.0})
    text = bdl.render_markdown(results)
    assert "RepLKNet, how much of the ratio is the layout" in text
    assert "| replknet_31b | 1 | fp32 | 723.0 | 740.0 | 250.0 (channels_last) |" in text.splitlines()


def test_compiled_rows_have_their_summary_lines() -> None:
    results = json.loads((ROOT / "tests" / "data" / "bench_deploy_library_small.json").read_text())
    assert "compiled," not in bdl.render_markdown(results)
    rows = [dict(net="a", batch=1, dtype="fp32", best_ref_form="ref", times_ms={"ref": 12.0, "deploy": 10.0,
                                                                                 "compiled": 8.0}),
            dict(net="b", batch=1, dtype="fp32", best_ref_form="ref_deploy",
                 times_ms={"ref": 30.0, "ref_deploy": 20.0, "deploy": 10.0, "compiled": 10.0}),
            dict(net="c", batch=1, dtype="fp32", best_ref_form="ref", times_ms={"ref": 9.0, "deploy": 8.0})]
    assert bdl.compiled_lines(rows) == [
        "- compiled, fp32, batch 1 (2 rows): median 2.00x the best reference form (lowest 1.50x), 1.25x our "
        "deploy form (lowest 1.00x, b)"]


def test_a_bf16_row_must_reach_the_reference_its_bar_is_one() -> None:
    """Issue 24's bar: fp32 within the A/A noise (0.98x), bf16 at least the reference's time (1.00x)."""
    results = json.loads((ROOT / "tests" / "data" / "bench_deploy_library_small.json").read_text())
    key = bdl.row_key("resnet18", 8, "bf16")
    results["rows"][key] = dict(net="resnet18", batch=8, dtype="bf16", reference="torchvision.resnet18", ratio=0.99,
                                times_ms={"deploy": 50.0, "ref": 49.5}, best_ref_form="ref", layout="channels_last")
    text = bdl.render_markdown(results)
    assert "below the bar (0.98x, bf16 1.00x): 2" in text
    assert "### resnet18, batch 8, bf16: 0.99x" in text.split("## Rows below the bar", 1)[1]
    assert bdl.measure_again(results, 0.98, ["resnet18"]) == [key]          # an fp32 row at 0.99x would stay
