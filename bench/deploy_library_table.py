"""The deploy library table (bench/results/deploy_library_cpu.md) from its results file: pure Python, no torch.

:mod:`bench_deploy_library` measures the rows; this module renders them (the summary per dtype and batch, the
A/A noise, the compiled form's medians, the rows below the threshold with their profiles, the rows measured
again) so that the table can be rewritten from the JSON alone: ``render_markdown(json.load(...))``.
"""
from __future__ import annotations

from typing import Any

__all__ = ["HEAVY_ROUND_S", "bar", "aa_line", "summary_lines", "compiled_lines", "render_markdown"]

# a round (one forward of every form) longer than this: half the rounds, shorter warm-up blocks (RepLKNet-XL,
# ConvNeXt-L, VGG at batch 8 take seconds per forward on 2 cores; their medians are steady)
HEAVY_ROUND_S = 4.0


def bar(dtype: str, threshold: float) -> float:
    """The ratio a row must reach: ``threshold`` (0.98x, the A/A noise allowed) in fp32; in bf16 at least 1.00x,
    issue 24's bar for bf16 ("bf16 deploy >= the reference in bf16"). A row below its bar is profiled, shown in
    its own section and measured again by ``--again``."""
    return max(threshold, 1.0) if dtype == "bf16" else threshold


def aa_line(rows: list[dict[str, Any]], rounds: int | None) -> str:
    """The table's A/A line: the largest noise with its row, the median, and the largest among the rows timed
    the full ``rounds`` (a heavy row timed half as many rounds is noisier: shown apart, not hidden)."""
    aa = [r for r in rows if r.get("aa_ratio")]
    nets = ", ".join(sorted({r["net"] for r in aa})) or "no network"
    head = f"- A/A noise (the reference timed twice per round on {nets}): "
    if not aa:
        return head + "-"
    dev = [abs(1 - r["aa_ratio"]) for r in aa]
    i = max(range(len(aa)), key=dev.__getitem__)
    text = f"{dev[i] * 100:.1f}%"
    if len(aa) > 1:
        text += (f" at most ({aa[i]['net']}, batch {aa[i]['batch']}, {aa[i]['dtype']}, {aa[i].get('rounds', '?')} "
                 f"rounds), median {sorted(dev)[len(dev) // 2] * 100:.1f}%")
        full = [d for d, r in zip(dev, aa) if r.get("rounds") == rounds]
        if full and len(full) < len(aa):
            text += f"; {max(full) * 100:.1f}% at most in the rows timed {rounds} rounds"
    return head + text


def _ms(v: float | None) -> str:
    return "-" if v is None else (f"{v:.2f}" if v < 10 else f"{v:.1f}")


def _median(vals: list[float]) -> float | None:
    vals = sorted(vals)
    return vals[len(vals) // 2] if vals else None


def _by_dtype_batch(rows: list[dict[str, Any]]) -> list[tuple[str, int, list[dict[str, Any]]]]:
    """``rows`` grouped per (dtype, batch size): fp32 first, batch sizes ascending; empty groups left out."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dtype"], r["batch"]), []).append(r)
    return [(d, b, groups[d, b]) for d, b in sorted(groups, key=lambda k: (k[0] != "fp32", k[0], k[1]))]


def summary_lines(rows: list[dict[str, Any]], threshold: float = 0.98) -> list[str]:
    """One line per dtype and batch size: how many rows reach ``threshold`` and 1.00x, the median and the lowest
    ratio (the issue's bar: >= 0.98x in fp32, >= 1.00x in bf16)."""
    out = []
    for dtype, b, rs in _by_dtype_batch([r for r in rows if r.get("ratio") is not None]):
        ratios = [r["ratio"] for r in rs]
        worst = min(rs, key=lambda r: r["ratio"])
        out.append(f"- {dtype}, batch {b}: {sum(x >= threshold for x in ratios)}/{len(rs)} at >= {threshold:.2f}x, "
                   f"{sum(x >= 1.0 for x in ratios)}/{len(rs)} at >= 1.00x; median {_median(ratios):.2f}x, "
                   f"lowest {worst['ratio']:.2f}x ({worst['net']})")
    return out


def compiled_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per dtype and batch size for the rows that timed ``deploy(compile=True)``: its speed-up over the
    best reference form and over our deploy form (medians, and the lowest with its network)."""
    out = []
    timed = [r for r in rows if "compiled" in r.get("times_ms", {}) and r.get("best_ref_form")]
    for dtype, b, sel in _by_dtype_batch(timed):
        vs_ref = [r["times_ms"][r["best_ref_form"]] / r["times_ms"]["compiled"] for r in sel]
        vs_dep = [r["times_ms"]["deploy"] / r["times_ms"]["compiled"] for r in sel]
        low = min(range(len(sel)), key=lambda i: vs_dep[i])
        out.append(f"- compiled, {dtype}, batch {b} ({len(sel)} rows): median {_median(vs_ref):.2f}x the best "
                   f"reference form (lowest {min(vs_ref):.2f}x), {_median(vs_dep):.2f}x our deploy form "
                   f"(lowest {vs_dep[low]:.2f}x, {sel[low]['net']})")
    return out


def render_markdown(results: dict[str, Any], threshold: float = 0.98) -> str:
    """The table of ``results`` (bench/results/deploy_library_cpu.md)."""
    meta = results.get("meta", {})
    rows = sorted(results.get("rows", {}).values(), key=lambda r: (r["net"], r["dtype"] != "fp32", r["batch"]))
    ok = [r for r in rows if not r.get("error")]
    gf = [r["sgemm_gflops"] for r in ok if r.get("sgemm_gflops")]
    below = [r for r in ok if r.get("ratio") is not None and r["ratio"] < bar(r["dtype"], threshold)]
    bars = f"below the bar ({threshold:.2f}x, bf16 {bar('bf16', threshold):.2f}x)"
    lines = [
        f"# Deploy form vs the best reference form, {len({r['net'] for r in rows})} library networks (CPU"
        + (", with `deploy(compile=True)`)" if any("compiled" in r.get("times_ms", {}) for r in ok) else ")"), "",
        f"`{meta.get('command', 'bench/bench_deploy_library.py')}`", "",
        f"- CPU: {meta.get('cpu', '?')}; flags: {', '.join(meta.get('flags', [])) or '-'}; "
        f"native bf16: {'yes' if meta.get('native_bf16') else 'no'}",
        f"- torch {meta.get('torch', '?')}, timm {meta.get('timm', '?')}, torchvision {meta.get('torchvision', '?')}; "
        f"{meta.get('threads', '?')} threads; {meta.get('rounds', '?')} interleaved rounds after warm-up "
        f"(until two consecutive warm-up medians agree within 5%; half as many where one round takes over "
        f"{HEAVY_ROUND_S:g} s)",
        f"- sgemm bound (fp32, 1024^3, measured in each network's process): median "
        f"{_ms(_median(gf))} GFLOP/s (min {_ms(min(gf) if gf else None)}, max {_ms(max(gf) if gf else None)})",
        aa_line(ok, meta.get("rounds")),
        f"- rows: {len(rows)} ({len(rows) - len(ok)} failed); {bars}: {len(below)}",
        *summary_lines(ok, threshold), *compiled_lines(ok), "",
        "Median ms per forward. `ref`: the reference eager; `ref deploy`: its own deploy form (timm "
        "`reparameterize_model`; RepLKNet: the official structural_reparam form, see below); `built`: ours eager; "
        "`deploy`: `archdsl.deploy` (layout it chose); `ratio` = best reference form / ours deployed (>= 1.00x: "
        "ours is as fast or faster); `x bound`: deploy time over the time its multiply-adds take at the sgemm rate; "
        "`err`: max |deploy - ref| / max(1, max |ref|).", "",
        "| network | reference | batch | dtype | ref | ref deploy | built | deploy (layout) | compiled | ratio "
        "| x bound | err |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['net']} | {r.get('reference', '?')} | {r['batch']} | {r['dtype']} | "
                         f"failed: {str(r['error']).splitlines()[-1][:120].replace('|', '/')} |" + " - |" * 7)
            continue
        t = r["times_ms"]
        ratio = r.get("ratio")
        mark = "**" if ratio is not None and ratio < bar(r["dtype"], threshold) else ""
        comp = _ms(t.get("compiled")) if "compiled" in t else (r.get("compile_error") and "failed") or "-"
        lines.append(
            f"| {r['net']} | {r['reference']} | {r['batch']} | {r['dtype']} | {_ms(t.get('ref'))} | "
            f"{_ms(t.get('ref_deploy'))} | {_ms(t.get('built'))} | {_ms(t.get('deploy'))} ({r.get('layout', '?')}) | "
            f"{comp} | {mark}{'-' if ratio is None else f'{ratio:.2f}x'}{mark} | "
            f"{'-' if not r.get('x_bound') else format(r['x_bound'], '.2f') + 'x'} | "
            f"{'-' if r.get('err') is None else format(r['err'], '.1e')} |")
    lines += ["", f"## Rows {bars}", ""]
    if not below:
        lines.append("None.")
    for r in below:
        lines += [f"### {r['net']}, batch {r['batch']}, {r['dtype']}: {r['ratio']:.2f}x "
                  f"(deploy {_ms(r['times_ms']['deploy'])} ms, {r['best_ref_form']} "
                  f"{_ms(r['times_ms'][r['best_ref_form']])} ms; layout {r.get('layout')}, timed "
                  f"{', '.join(f'{k} {v * 1e3:.2f} ms' for k, v in (r.get('layout_timings') or {}).items())})", ""]
        prof = r.get("profile") or {}
        if prof:
            lines += ["torch.profiler, self CPU ms per forward (calls per forward), top ops:", "",
                      f"| ours (deploy) | {r['best_ref_form']} |", "|---|---|"]
            a, b = prof.get("ours", []), prof.get("ref", [])
            for i in range(max(len(a), len(b))):
                cell = [f"{o['op']} {o['ms']:.2f} ({o['calls']:g})" if o else "" for o in
                        (a[i] if i < len(a) else None, b[i] if i < len(b) else None)]
                lines.append(f"| {cell[0]} | {cell[1]} |")
            tot = prof.get("total_ms", {})
            if tot:
                lines += ["", f"Total self CPU per forward: ours {tot.get('ours', 0):.2f} ms, reference "
                          f"{tot.get('ref', 0):.2f} ms (the rest of the wall time is Python and waiting)."]
        if r.get("note"):
            lines += ["", r["note"]]
        lines.append("")
    again = results.get("first_measure", {})
    if again:
        lines += ["", "## Rows measured again (`--again`)", "",
                  f"Rows {bars} in their first measurement, measured again in a later worker process "
                  "(the table above holds the second):", "", "| row | first | again |", "|---|---|---|"]
        for k in sorted(again):
            r = results.get("rows", {}).get(k)
            second = "-" if not r or r.get("ratio") is None else f"{r['ratio']:.2f}x"
            lines.append(f"| {k.replace('|', ', ')} | {again[k]:.2f}x | {second} |")
    redone = results.get("redone", {})
    if redone:
        lines += ["", "## Rows measured again after a change to the deploy form (`--redo`)", "",
                  "Every row of these networks was measured again after the change named; `before` is the ratio "
                  "the table held until then (`first`: its first measurement, where `--again` measured it twice):",
                  "", "| row | change | before | after |", "|---|---|---|---|"]
        for k in sorted(redone):
            rd, r = redone[k], results.get("rows", {}).get(k)
            after = "-" if not r or r.get("ratio") is None else f"{r['ratio']:.2f}x"
            before = f"{rd['before']:.2f}x" + (f" (first {rd['first']:.2f}x)" if "first" in rd else "")
            lines.append(f"| {k.replace('|', ', ')} | {str(rd['why']).replace('|', '/')} | {before} | {after} |")
    lines += ["", "RepLKNet: the official code is not a dependency, so `ref` is our own train form and `ref "
              "deploy` is `archdsl.deploy(fold_bn=False)` (large kernels merged, BatchNorms kept: the official "
              "`structural_reparam` form, checked key for key in tests/test_deploy.py)."]
    lines += _layout_share(rows, lambda r: r["reference"].startswith("replknet."), "RepLKNet")
    return "\n".join(lines + [""])


def _layout_share(rows: list[dict[str, Any]], pick: Any, what: str) -> list[str]:
    """How much of ``what``'s ratio is the layout: ours deployed in the contiguous layout (the reference's), as
    deploy timed it when choosing, beside the best reference form and the layout deploy chose."""
    out = []
    for r in rows:
        lt = r.get("layout_timings") or {}
        if pick(r) and r.get("ratio") is not None and "contiguous" in lt and r["layout"] != "contiguous":
            out.append(f"| {r['net']} | {r['batch']} | {r['dtype']} | {_ms(r['times_ms'][r['best_ref_form']])} "
                       f"| {_ms(lt['contiguous'] * 1e3)} | {_ms(lt[r['layout']] * 1e3)} ({r['layout']}) |")
    if not out:
        return []
    return ["", f"{what}, how much of the ratio is the layout: ours deployed in the reference's contiguous "
            "layout against the best reference form (deploy's own layout timing, a few forwards before the warm-up: "
            "rough):", "",
            "| network | batch | dtype | best ref | ours, contiguous | ours, layout chosen |",
            "|---|---|---|---|---|---|",
            *out]
