"""The pure half of bench/import_zoo.py: the failure classifier and the Markdown table (no torch, no models).

A result record (one per model, as the worker writes it into bench/results/import_zoo.json) has: ``id``,
``source`` (torchvision / timm / spec), ``family``, ``model``, ``input``, ``stage`` (the last one reached:
create, import, check, build, load, outputs), ``ok``, ``max_diff``, ``tolerance``, ``imported`` (the importer
returned a spec), ``located`` (its failure was an archdsl error with a location), ``import_s``,
``roundtrip_s``, ``total_s``, ``wall_s``, ``category``/``detail``/``reason`` (see :func:`classify`),
``error`` (the full message, cut at 4000 characters).
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Any, Iterable

__all__ = ["CATEGORIES", "classify", "first_line", "family_ok", "summary_lines", "write_table"]

#: every failure reason, in the order the tables list them
CATEGORIES = ("unsupported op", "data-dependent control flow", "buffer", "shared weights", "trace failure",
              "import error",
              "check error", "build error", "load mismatch", "output mismatch", "forward error", "model error",
              "timeout", "memory", "crash")

_MEMORY = re.compile(r"MemoryError|can't allocate memory|not enough memory|out of memory|std::bad_alloc",
                     re.IGNORECASE)
_UNSUPPORTED = re.compile(r"\bunsupported\b|\bnot supported\b|\bno (?:archdsl )?op\b|\bhas no op\b|"
                          r"\bunknown (?:op|operation|function|method|module)\b|\bcannot (?:be )?import(?:ed)?\b",
                          re.IGNORECASE)
_CONTROL = re.compile(r"control flow|data[- ]dependent|symbolically traced variables|iterate over a proxy|"
                      r"proxy object cannot be iterated|cannot be used as inputs to control flow", re.IGNORECASE)
_BUFFER = re.compile(r"\bbuffers?\b|register_buffer", re.IGNORECASE)
_TRACE = re.compile(r"\btrac(?:e|ed|ing)\b|torch\.fx|\bproxy\b|\bfx\b|meta (?:tensor|device)", re.IGNORECASE)
_QUOTED = re.compile(r"[`'\"]([^`'\"\s][^`'\"]{0,60})[`'\"]")
_WHY = re.compile(r"cannot be imported: (.+)")
_SHARED = re.compile(r"called twice|shared weights")
_KEY = re.compile(r"(?:lacks|has) \d+ key\(s\)[^:]*: ([^,;\s]+)")


def first_line(text: str | None, limit: int = 160) -> str:
    """The first non-empty line of ``text``, cut to ``limit`` characters (an empty string for none)."""
    for line in (text or "").splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else line[:limit - 3] + "..."
    return ""


def classify(stage: str, error: str | None, exc_type: str | None = None) -> tuple[str, str]:
    """(category, detail) of a model that did not round-trip, from the stage where it stopped, the error
    text and the exception's type name (``ArchError``: a located report).

    ``stage``: create (building the zoo model or finding an input it takes), import, check, build, load,
    outputs; or timeout / crash (the worker gave no verdict: killed at the time limit, or it died)."""
    text = error or ""
    if stage == "timeout":
        return "timeout", first_line(text)
    if _MEMORY.search(text) or exc_type == "MemoryError":
        return "memory", first_line(text)
    if stage == "crash":
        return "crash", first_line(text)
    if stage == "create":
        return "model error", first_line(text)
    if stage == "import":
        m = _WHY.search(text)
        if m:       # the importer's located report: "module 'cpe1' (Class) cannot be imported: WHY (at `...`)"
            why = m.group(1).split(" (at `")[0]
            cat = ("data-dependent control flow" if _CONTROL.search(why) else "shared weights" if _SHARED.search(why)
                   else "buffer" if _BUFFER.search(why) else "trace failure" if _TRACE.search(why)
                   else "unsupported op")
            return cat, first_line(why, 100)
        if _UNSUPPORTED.search(text):
            m = _QUOTED.search(text)
            return "unsupported op", m.group(1) if m else first_line(text, 60)
        if _CONTROL.search(text):
            return "data-dependent control flow", first_line(text)
        if _BUFFER.search(text):
            return "buffer", first_line(text)
        if exc_type == "TraceError" or _TRACE.search(text):
            return "trace failure", first_line(text)
        # a located archdsl error the importer raised, or an exception it let escape (a crash of the importer)
        return ("import error" if exc_type == "ArchError" else "crash"), first_line(text)
    if stage == "check":
        return "check error", first_line(text)
    if stage == "build":
        return "build error", first_line(text)
    if stage == "load":
        m = _KEY.search(text)
        return "load mismatch", m.group(1) if m else first_line(text, 80)
    if stage == "outputs":
        if text.startswith(("the built module fails", "the source model fails")):
            return "forward error", first_line(text)
        return "output mismatch", first_line(text)
    return "crash", first_line(text) or f"stopped at stage {stage!r}"


def family_ok(records: Iterable[dict[str, Any]]) -> bool:
    """A family round-trips when every one of its models does."""
    recs = list(records)
    return bool(recs) and all(r.get("ok") for r in recs)


def _pct(a: int, b: int) -> str:
    return f"{a}/{b} ({100.0 * a / b:.0f}%)" if b else f"{a}/0"


def summary_lines(results: dict[str, dict[str, Any]], mode: str = "zoo",
                  zoo_size: int | None = None) -> list[str]:
    """The summary bullets: families and models that round-trip weight-exact, imports without a crash,
    torchvision's classification models; how much of the zoo the results cover."""
    recs = list(results.values())
    fams: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        fams[r["family"]].append(r)
    ok_fams = sum(family_ok(v) for v in fams.values())
    ok_models = sum(bool(r.get("ok")) for r in recs)
    what = "spec files" if mode == "specs" else "families"
    lines = [f"- {what} that round-trip weight-exact (every model of the family): **{_pct(ok_fams, len(fams))}**",
             f"- models that round-trip weight-exact: **{_pct(ok_models, len(recs))}**"]
    if mode == "zoo":
        imported = sum(bool(r.get("imported")) for r in recs)
        located = sum(1 for r in recs if not r.get("imported") and r.get("located"))
        other = sum(1 for r in recs if r.get("stage") == "create")   # the zoo model itself failed: no import ran
        tried = len(recs) - other
        crashed = tried - imported - located
        lines.append(f"- models imported without a crash (a spec written): **{_pct(imported, tried)}**; the rest: "
                     f"{located} with a located report, {crashed} crashed (an unexpected exception, a timeout or "
                     "a dead worker)" + (f"; {other} zoo model(s) could not be created or run" if other else ""))
        tv = [r for r in recs if r.get("source") == "torchvision"]
        lines.append(f"- torchvision classification models that round-trip: **{_pct(sum(bool(r.get('ok')) for r in tv), len(tv))}**")
        pure = [r for r in recs if r.get("ok") and not r.get("kept_modules")]
        pure_fams = sum(all(r.get("ok") and not r.get("kept_modules") for r in v) for v in fams.values())
        lines.append(f"- of these, written wholly in the language (no class kept whole as a plugin op): "
                     f"**{_pct(len(pure), len(recs))}** of the models, **{_pct(pure_fams, len(fams))}** of the "
                     "families")
        tm = [r for r in recs if r.get("source") == "timm"]
        lines.append(f"- timm model files whose model round-trips: **{_pct(sum(bool(r.get('ok')) for r in tm), len(tm))}**")
    if zoo_size is not None and zoo_size != len(recs):
        lines.append(f"- coverage: {len(recs)} of the {zoo_size} models of the {'library' if mode == 'specs' else 'zoo'}"
                     " have a result (the others were not run: `--resume` runs them)")
    return lines


def _cell(text: Any) -> str:
    """A Markdown table cell: pipes escaped, no line breaks."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _plugins(r: dict[str, Any]) -> str:
    """How many modules the importer kept whole as plugin ops, and their classes."""
    n = r.get("kept_modules")
    if not n:
        return "-" if r.get("imported") else ""
    return _cell(f"{n}: " + ", ".join(str(c).rsplit(".", 1)[-1] for c in r.get("kept", [])))


def _secs(v: Any) -> str:
    return f"{v:.1f}" if isinstance(v, (int, float)) else "-"


def _diff(r: dict[str, Any]) -> str:
    return f"{r['max_diff']:.2g}" if isinstance(r.get("max_diff"), (int, float)) else "-"


def write_table(results: dict[str, dict[str, Any]], meta: dict[str, Any], *, mode: str = "zoo",
                zoo_size: int | None = None) -> str:
    """The Markdown report of ``results`` (id -> record): summary, failure reasons, one row per family and
    one per model; ``meta`` gives the machine, the versions and the command lines that produced them."""
    recs = sorted(results.values(), key=lambda r: (r.get("source", ""), r["family"], r.get("model", r["id"])))
    title = ("archc import: the zoo round trip (issue 21)" if mode == "zoo" else
             "The round-trip verifier on the hand-written library specs (bench/import_zoo.py --specs)")
    out = [f"# {title}", ""]
    if mode == "zoo":
        out += ["Each model: created with random weights, imported (`archdsl.import_module`), then the spec is "
                "checked, built, loaded with the model's state_dict (strict) and run beside it in eval mode on a "
                "seeded random input: equal within 1e-4 x max(1, max |reference|), BatchNorm statistics and "
                "constant-initialized parameters randomized first (`archdsl.importer.roundtrip`).", ""]
    else:
        out += ["Each library network with a torchvision/timm reference, through the same `roundtrip()` the "
                "importer's specs go through (no import step): check, build, strict load, equal outputs.", ""]
    out += ["## Summary", "", *summary_lines(results, mode, zoo_size), ""]

    failed = [r for r in recs if not r.get("ok")]
    if failed:
        by_cat: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in failed:
            by_cat[r.get("category") or "crash"].append(r)
        out += ["## Failure reasons", "", "| reason | models | families | most frequent detail |", "|---|---|---|---|"]
        for cat in sorted(by_cat, key=lambda c: (-len(by_cat[c]), CATEGORIES.index(c) if c in CATEGORIES else 99)):
            rs = by_cat[cat]
            detail, n = Counter(r.get("detail") or "" for r in rs).most_common(1)[0]
            out.append(f"| {cat} | {len(rs)} | {len({r['family'] for r in rs})} | "
                       f"{_cell(detail)}{f' ({n}x)' if n > 1 else ''} |")
        out.append("")

    fams: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        fams[r["family"]].append(r)
    out += ["## Families", "", "| family | models | round-trip | reasons |", "|---|---|---|---|"]
    for fam, rs in fams.items():
        cats = Counter(r.get("category") for r in rs if not r.get("ok"))
        reasons = ", ".join(f"{c} ({n})" if n > 1 else str(c) for c, n in cats.most_common()) or "-"
        out.append(f"| {_cell(fam)} | {len(rs)} | {'yes' if family_ok(rs) else 'no'} "
                   f"({sum(bool(r.get('ok')) for r in rs)}/{len(rs)}) | {_cell(reasons)} |")
    out.append("")

    out += ["## Models", "", "Times in seconds: import (the importer), round trip (check, build, load, outputs), "
            "total (from creating the model to the verdict; a worker's Python start not counted).", "",
            "| model | family | input | stage | ok | max diff | plugins | import | round trip | total | reason |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
        reason = "" if r.get("ok") else f"{r.get('category')}: {r.get('reason') or r.get('detail') or ''}"
        inp = "x".join(str(v) for v in r["input"]) if r.get("input") else "-"
        out.append(f"| {_cell(r.get('model', r['id']))} | {_cell(r['family'])} | {inp} | {r.get('stage', '-')} | "
                   f"{'yes' if r.get('ok') else 'no'} | {_diff(r)} | {_plugins(r)} | {_secs(r.get('import_s'))} | "
                   f"{_secs(r.get('roundtrip_s'))} | {_secs(r.get('total_s'))} | {_cell(reason)} |")
    out.append("")

    out += ["## How these numbers were made", ""]
    for key in ("machine", "python", "torch", "torchvision", "timm", "archdsl"):
        if meta.get(key):
            out.append(f"- {key}: {meta[key]}")
    for run in meta.get("runs", []):
        out.append(f"- {run.get('date', '?')}: `{run.get('command', '?')}`")
    out.append("")
    return "\n".join(out)
