"""Benchmark: the deploy form of every library network with a reference, against the reference's best form (CPU).

    .venv/bin/python bench/bench_deploy_library.py [--threads 2] [--rounds 7] [--batch 1,8] [--dtype auto]
        [--only 'resnet18,mobilenet*'] [--compile] [--resume [--again | --redo WHY]] [--timeout 1800]

Networks: every ``network ... reference X`` of the shipped library and every family scale with a reference
(``archc list``; a scale is named ``network:scale``). Per network, batch size and dtype (fp32, and bf16 where
the CPU has native bf16: ``avx512_bf16``/``amx_bf16``) the forms are, on the same (BN-randomized) weights:

- ``ref``: the reference eager model (torchvision/timm, eval; in bf16 ``ref.to(torch.bfloat16)``);
- ``ref_deploy``: the reference's own deploy form where it has one: timm's ``reparameterize_model`` for nets
  with ``reparameterize``/``fuse`` modules; for RepLKNet (the official code is not a dependency, so its
  reference is our train form) ``archdsl.deploy(fold_bn=False)``, which is node for node the official
  ``structural_reparam`` form (large kernels merged, BatchNorms kept);
- ``built``: ours built (eager, the train form in eval mode);
- ``deploy``: ``archdsl.deploy(model, batch_size=B, dtype=...)`` (layout chosen by deploy, as a user gets it);
- ``compiled`` (``--compile``): the deploy form with ``compile=True`` (tens of seconds per model on CPU).

The forms are warmed up together until two consecutive warm-up medians of each agree within 5%, then timed in
interleaved rounds (A B C D, A B C D, ...: load changes on a shared machine hit all alike); figures are medians.
The same process measures the sgemm bound (``archdsl.sweep.measure.sgemm_gflops``: fp32 GFLOP/s at 1024^3)
and, on a few networks, the A/A noise (the reference timed twice per round, as two forms). ``ratio`` is the
best reference form's time over our deploy form's (>= 1: ours is faster); rows below their bar (``--threshold``;
in bf16 1.00x, the reference's own time) carry the torch.profiler top ops of both forms.

Each network runs in its own worker process with a time limit (``--timeout``): a network that fails or hangs
is a row with its error, never the end of the run. Rows are saved to ``bench/results/deploy_library_cpu.json``
as they finish (``--resume`` keeps the finished ones; ``--resume --again`` measures the rows below their
bar again, keeping their first ratio; ``--resume --redo WHY --only NETS`` measures every row of NETS
again after a change to their deploy form, keeping the ratios from before it and WHY) and the table
``bench/results/deploy_library_cpu.md`` is rewritten after every network.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import queue
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Iterable

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT / "bench", ROOT, ROOT / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

__all__ = ["library_networks", "row_key", "pending_rows", "measure_again", "measure_anew", "load_results",
           "save_results", "render_markdown", "summary_lines", "compiled_lines", "aa_line", "main"]

from deploy_library_table import (HEAVY_ROUND_S, aa_line, bar, compiled_lines,  # noqa: E402  (path set-up first)
                                   render_markdown, summary_lines)

RESULTS = ROOT / "bench" / "results" / "deploy_library_cpu.json"
TABLE = ROOT / "bench" / "results" / "deploy_library_cpu.md"
REF_FORMS = ("ref", "ref_deploy")
AA_NETS = ("resnet18", "mobilenet_v3_small", "vit_tiny_patch16_224")


# ---- pure parts (no torch): the network list, the results file, the table ----

def library_networks(only: str | None = None, *, skip_twins: bool = False,
                     entries: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every library network with a reference, as ``{"id", "spec", "reference", "input", "error"?}``.

    ``id`` is the network's name, or ``network:scale`` for a family's variant (as ``archc list`` names it).
    ``only``: comma-separated names or shell patterns (``resnet18,mobilenet*``). ``skip_twins`` leaves out a
    family variant whose reference a network of its own already mirrors (the same graph, timed twice)."""
    if entries is None:
        from archdsl.library import library_dir
        from archdsl.pipeline import list_networks
        entries = list_networks(str(library_dir()))
    nets = [e for e in entries if e.get("reference")]
    twins = {e["reference"] for e in nets if not e.get("scale")}
    out = []
    for e in nets:
        if skip_twins and e.get("scale") and e["reference"] in twins:
            continue
        nid = f"{e['network']}:{e['scale']}" if e.get("scale") else e["network"]
        item = {"id": nid, "spec": e["spec"], "reference": e["reference"], "input": e.get("input")}
        if e.get("error"):
            item["error"] = e["error"]
        out.append(item)
    if only:
        pats = [p.strip() for p in only.split(",") if p.strip()]
        out = [n for n in out if any(fnmatch.fnmatchcase(n["id"], p) for p in pats)]
    return out


def row_key(net: str, batch: int, dtype: str) -> str:
    """The results file's key of one row."""
    return f"{net}|b{batch}|{dtype}"


def pending_rows(nets: Iterable[str], batches: Iterable[int], dtypes: Iterable[str], results: dict[str, Any],
                 *, resume: bool, retry_errors: bool = True) -> list[tuple[str, int, str]]:
    """The (net, batch, dtype) rows still to run: all of them, or with ``resume`` those without a finished
    row in ``results`` (a row that failed is run again unless ``retry_errors`` is off)."""
    rows = results.get("rows", {})
    todo = []
    for n in nets:
        for b in batches:
            for d in dtypes:
                r = rows.get(row_key(n, b, d)) if resume else None
                if r is None or (r.get("error") and retry_errors):
                    todo.append((n, b, d))
    return todo


def measure_again(results: dict[str, Any], threshold: float, only: Iterable[str] | None = None) -> list[str]:
    """``--again``: the finished rows below their bar (``threshold``, 1.00x in bf16: :func:`bar`) of the networks in
    ``only`` leave ``rows`` so that the run measures them again; their first ratio is kept in
    ``results["first_measure"]`` (the table shows both: a row that was noise once is not hidden, a row that is
    slow twice is not excused). Returns their keys."""
    nets = None if only is None else set(only)
    first = results.setdefault("first_measure", {})
    moved = []
    for k, r in list(results.get("rows", {}).items()):
        if (r.get("error") or r.get("ratio") is None or r["ratio"] >= bar(r["dtype"], threshold)
                or (nets and r["net"] not in nets)):
            continue
        first[k] = r["ratio"]
        del results["rows"][k]
        moved.append(k)
    return moved


def measure_anew(results: dict[str, Any], nets: Iterable[str], why: str) -> list[str]:
    """``--redo WHY``: every finished row of ``nets`` leaves ``rows`` so that the run measures it again after a
    change to those networks' deploy form; ``results["redone"]`` keeps each row's ratio from before the change
    (and its first one, where ``--again`` had measured it twice) and ``why`` (the table shows before and after).
    Returns their keys."""
    names = set(nets)
    first = results.setdefault("first_measure", {})
    redone = results.setdefault("redone", {})
    moved = []
    for k, r in list(results.get("rows", {}).items()):
        if r["net"] not in names or r.get("error") or r.get("ratio") is None:
            continue
        redone[k] = {"before": r["ratio"], "why": why, **({"first": first.pop(k)} if k in first else {})}
        del results["rows"][k]
        moved.append(k)
    return moved


def load_results(path: Path, *, resume: bool, meta: dict[str, Any]) -> dict[str, Any]:
    """The results to continue from: the file's with ``resume`` (refused when it was measured with other
    settings: ``threads``/``rounds``/``cpu``), else a fresh one."""
    if resume and path.exists():
        old = json.loads(path.read_text())
        for k in ("threads", "rounds", "cpu"):
            if old.get("meta", {}).get(k) != meta.get(k):
                raise SystemExit(f"--resume: {path} was measured with {k}={old.get('meta', {}).get(k)!r}, this run "
                                 f"has {meta.get(k)!r}; run without --resume (or with the same settings)")
        old.setdefault("rows", {})
        return old
    return {"meta": dict(meta), "rows": {}}


def save_results(path: Path, results: dict[str, Any]) -> None:
    """Write the results atomically (a run stopped mid-write leaves the previous file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True))
    os.replace(tmp, path)


# ---- the worker (one process per network; imports torch) ----

def _output(y: Any) -> Any:
    if isinstance(y, (list, tuple)):
        return y[0]
    return y


def _rel_err(a: Any, b: Any) -> float | None:
    import torch
    a, b = _output(a), _output(b)
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape:
        return None
    return float((a.float() - b.float()).abs().max()) / max(1.0, float(b.float().abs().max()))


def _profile(model: Any, x: Any, reps: int = 3, top: int = 8) -> tuple[list[dict[str, Any]], float]:
    """The ``top`` ops by self CPU time per forward, and the total self CPU ms per forward."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    with torch.inference_mode():
        model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(reps):
                model(x)
    ev = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ev) / 1e3 / reps
    return [{"op": e.key, "ms": e.self_cpu_time_total / 1e3 / reps, "calls": e.count / reps}
            for e in ev[:top]], total


def _setup(net: dict[str, Any]) -> tuple[Any, Any, Any, str | None]:
    """(reference, its deploy form or None, ours built with the reference's weights, what ref_deploy is)."""
    import archdsl
    from helpers import make_reference, randomize_bn
    ref_name = net["reference"]
    ours = archdsl.build(net["spec"])
    if ref_name.startswith("replknet."):   # no official code here: the reference is our own train form
        randomize_bn(ours, seed=0)
        ours.eval()
        return ours, archdsl.deploy(ours, fold_bn=False, memory_format="contiguous"), ours, \
            "official structural_reparam form (archdsl.deploy(fold_bn=False))"
    ref = make_reference(ref_name)
    randomize_bn(ref, seed=0)
    ref.eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    if ref_name.startswith("timm.") and any(hasattr(m, "reparameterize") or hasattr(m, "fuse")
                                            for m in ref.modules()):
        from timm.utils.model import reparameterize_model
        return ref, reparameterize_model(ref, inplace=False).eval(), ours, "timm reparameterize_model"
    return ref, None, ours, None


def _run_row(net: dict[str, Any], models: tuple[Any, Any, Any, str | None], batch: int, dtype: str,
             cfg: dict[str, Any], gflops: float) -> dict[str, Any]:
    import copy

    import torch

    import archdsl
    from benchlib import round_robin, warm_up_interleaved
    ref, ref_dep, ours, ref_dep_kind = models
    t0 = time.perf_counter()
    low = dtype == "bf16"
    tdt = torch.bfloat16 if low else torch.float32
    torch.manual_seed(0)
    x = torch.randn(batch, *net["input"])
    dep = archdsl.deploy(ours, memory_format="auto", batch_size=batch, dtype=tdt if low else None)
    info = dep.deploy_info
    forms: dict[str, Any] = {"ref": ref}
    if ref_dep is not None:
        forms["ref_deploy"] = ref_dep
    if ours is not ref:
        forms["built"] = ours
    if low:   # the reference and ours eager converted with .to(bf16), as a user would
        forms = {k: copy.deepcopy(m).to(torch.bfloat16) for k, m in forms.items()}
    forms["deploy"] = dep
    xi = x.to(tdt)
    with torch.inference_mode():
        want = ours(x) if ours is ref else ref(x)
        err = _rel_err(dep(xi), want)
    row: dict[str, Any] = {"layout": info["memory_format"],
                           "layout_timings": info.get("timings_s") or {}, "err": err}
    if cfg.get("compile"):
        try:
            forms["compiled"] = archdsl.deploy(ours, memory_format=info["memory_format"], batch_size=batch,
                                               dtype=tdt if low else None, compile=True)
        except Exception as e:   # a compile failure (no C++ compiler, an inductor bug) costs the column only
            row["compile_error"] = f"{type(e).__name__}: {e}"[:500]
    if cfg.get("aa"):
        forms["ref_aa"] = forms["ref"]   # the same module as a second form: the A/A noise
    xd = xi.contiguous(memory_format=torch.channels_last) if info["memory_format"] == "channels_last" else xi
    runs = [(m, xd if k in ("deploy", "compiled") else xi) for k, m in forms.items()]
    rounds, per, tries = cfg["rounds"], 3, 8
    t = time.perf_counter()
    round_robin(runs, 1, warm=0)   # one untimed round: how long a round takes
    if time.perf_counter() - t > HEAVY_ROUND_S:   # seconds per forward: the noise is small, the time is not
        rounds, per, tries = max(3, rounds // 2), 2, 4
    row["warm_blocks"] = warm_up_interleaved(runs, per=per, max_tries=tries)
    row["rounds"] = rounds
    secs = round_robin(runs, rounds, warm=0)
    times = {k: s * 1e3 for k, s in zip(forms, secs)}
    if cfg.get("aa"):
        row["aa_ratio"] = times.pop("ref_aa") / times["ref"]
    best = min((f for f in REF_FORMS if f in times), key=lambda f: times[f])
    macs = dep.arch_graph.total_macs * batch
    row.update(times_ms=times, best_ref_form=best, ratio=times[best] / times["deploy"], macs=macs,
               bound_ms=2 * macs / (gflops * 1e9) * 1e3, ref_deploy_kind=ref_dep_kind)
    row["x_bound"] = times["deploy"] / row["bound_ms"]
    if row["ratio"] < bar(dtype, cfg["threshold"]):
        ours_top, ours_tot = _profile(dep, xd)
        ref_top, ref_tot = _profile(forms[best], xi)
        row["profile"] = {"ours": ours_top, "ref": ref_top, "total_ms": {"ours": ours_tot, "ref": ref_tot}}
    row["elapsed_s"] = time.perf_counter() - t0
    return row


def worker(cfg: dict[str, Any]) -> None:
    """Measure one network's rows; each finished row is one ``ROW <json>`` line on stdout."""
    import torch

    from archdsl.sweep.measure import sgemm_gflops

    def emit(kind: str, obj: Any) -> None:
        print(kind, json.dumps(obj), flush=True)

    torch.set_num_threads(cfg["threads"])
    net = cfg["net"]
    base = {"net": net["id"], "spec": net["spec"], "reference": net["reference"]}
    try:
        if net.get("error"):   # the spec does not compile: nothing to measure
            raise RuntimeError(net["error"])
        emit("STAGE", "sgemm bound")
        gflops = sgemm_gflops("cpu")
        emit("STAGE", "building the reference and ours")
        models = _setup(net)
    except Exception as e:
        err = "".join(traceback.format_exception_only(type(e), e)).strip()
        for b, d in cfg["rows"]:
            emit("ROW", dict(base, batch=b, dtype=d, error=f"setup: {err}"))
        return
    for b, d in cfg["rows"]:
        emit("STAGE", f"batch {b} {d}")
        try:
            row = _run_row(net, models, b, d, cfg, gflops)
        except Exception as e:
            row = {"error": "".join(traceback.format_exception_only(type(e), e)).strip()[-2000:]}
        emit("ROW", dict(base, batch=b, dtype=d, sgemm_gflops=gflops, **row))


# ---- the driver ----

def _run_worker(cfg: dict[str, Any], timeout: float, on_line: Any) -> list[dict[str, Any]]:
    """Run one network's worker; its rows, with the ones it did not deliver as errors (crash or timeout)."""
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT),
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                                [str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)))
    lines: queue.Queue[str | None] = queue.Queue()
    err_tail: list[str] = []

    def pump(stream: Any, sink: Any) -> None:
        for ln in stream:
            sink(ln)
        if stream is proc.stdout:
            lines.put(None)

    def keep_tail(s: str) -> None:   # the worker's last stderr lines: the reason of a crash
        err_tail.append(s)
        del err_tail[:-40]

    threading.Thread(target=pump, args=(proc.stdout, lines.put), daemon=True).start()
    threading.Thread(target=pump, args=(proc.stderr, keep_tail), daemon=True).start()
    rows: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    why = None
    while True:
        try:
            ln = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            why = f"timed out after {timeout:g} s"
            proc.kill()
            break
        if ln is None:
            break
        kind, _, payload = ln.strip().partition(" ")
        if kind in ("ROW", "STAGE"):
            try:
                obj = json.loads(payload)
            except ValueError:   # a library's own print that happened to start like ours: not a row
                continue
            if kind == "ROW":
                rows.append(obj)
            on_line(kind, obj)
    rc = proc.wait()
    done = {(r["batch"], r["dtype"]) for r in rows}
    if why is None and rc != 0:
        why = f"worker exited with status {rc}: " + "".join(err_tail[-5:]).strip()[-1000:]
    net = cfg["net"]
    for b, d in cfg["rows"]:
        if (b, d) not in done:
            r = {"net": net["id"], "spec": net["spec"], "reference": net["reference"], "batch": b, "dtype": d,
                 "error": why or "the worker delivered no row"}
            rows.append(r)
            on_line("ROW", r)
    return rows


def _meta(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    import timm
    import torch
    import torchvision

    from archdsl.codegen.deploy import native_bf16
    from benchlib import cpu_flags, cpu_model
    return {"cpu": cpu_model(), "flags": cpu_flags(), "native_bf16": native_bf16("cpu"), "torch": torch.__version__,
            "timm": timm.__version__, "torchvision": torchvision.__version__, "threads": args.threads,
            "rounds": args.rounds, "cpu_count": os.cpu_count(),
            "command": "python bench/bench_deploy_library.py " + " ".join(argv)}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--only", help="comma-separated network names or patterns (resnet18,mobilenet*, resnet:*)")
    ap.add_argument("--batch", default="1,8", help="batch sizes (default 1,8)")
    ap.add_argument("--dtype", default="auto", help="fp32,bf16; auto: fp32, and bf16 where the CPU has native bf16")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    ap.add_argument("--rounds", type=int, default=7, help="timed interleaved rounds (default 7)")
    ap.add_argument("--compile", action="store_true", help="also time deploy(compile=True) (slow to compile)")
    ap.add_argument("--resume", action="store_true", help="keep the finished rows of the results file")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per network, all its rows (default 3600: "
                    "RepLKNet-XL's four rows take most of it on 2 cores)")
    ap.add_argument("--threshold", type=float, default=0.98, help="profile rows below this ratio (default 0.98; "
                    "bf16 rows below 1.00x too)")
    ap.add_argument("--skip-twins", action="store_true", help="leave out family variants equal to a network")
    ap.add_argument("--again", action="store_true", help="with --resume: measure the rows below --threshold "
                    "again (the first ratio stays in the table)")
    ap.add_argument("--redo", metavar="WHY", help="with --resume and --only: measure every row of those networks "
                    "again after a change to their deploy form (WHY names it; the ratios before stay in the table)")
    ap.add_argument("--aa", default=",".join(AA_NETS), help="networks that also measure the A/A noise")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--out", type=Path, default=TABLE)
    args = ap.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from archdsl.codegen.deploy import native_bf16
    batches = [int(b) for b in args.batch.split(",")]
    dtypes = (["fp32", "bf16"] if native_bf16("cpu") else ["fp32"]) if args.dtype == "auto" else \
        [d.strip() for d in args.dtype.split(",")]
    nets = library_networks(args.only, skip_twins=args.skip_twins)
    if not nets:
        print(f"no library network with a reference matches --only {args.only!r}", file=sys.stderr)
        return 1
    meta = _meta(args, argv)
    results = load_results(args.results, resume=args.resume, meta=meta)
    if args.again:
        if not args.resume:
            print("--again needs --resume (it measures again rows of the results file)", file=sys.stderr)
            return 1
        moved = measure_again(results, args.threshold, [n["id"] for n in nets])
        print(f"measuring again {len(moved)} rows below their bar: {', '.join(moved) or 'none'}")
    if args.redo:
        if not (args.resume and args.only) or args.again:
            print("--redo needs --resume and --only (it measures again every row of those networks), not --again",
                  file=sys.stderr)
            return 1
        moved = measure_anew(results, [n["id"] for n in nets], args.redo)
        print(f"measuring again after '{args.redo}': {len(moved)} rows")
    if results["meta"].get("command") != meta["command"]:   # a resumed run: the table names both commands
        results["meta"]["command"] = results["meta"]["command"] + "`, then `" + meta["command"]
    todo = pending_rows([n["id"] for n in nets], batches, dtypes, results, resume=args.resume)
    aa = {a for a in args.aa.split(",") if a} & {n["id"] for n in nets} or {nets[0]["id"]}
    t_start = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task("deploy library", total=len(todo))
        for net in nets:
            rows = [(b, d) for n, b, d in todo if n == net["id"]]
            if not rows:
                continue
            cfg = {"net": net, "rows": rows, "threads": args.threads, "rounds": args.rounds,
                   "compile": args.compile, "threshold": args.threshold, "aa": net["id"] in aa}

            def on_line(kind: str, obj: Any, nid: str = net["id"]) -> None:
                if kind == "STAGE":
                    bar.update(task, description=f"{nid}: {obj}")
                    return
                results["rows"][row_key(obj["net"], obj["batch"], obj["dtype"])] = obj
                save_results(args.results, results)
                bar.advance(task)
                msg = obj.get("error") or (f"ratio {obj['ratio']:.2f}x  deploy {obj['times_ms']['deploy']:.2f} ms  "
                                           f"best ref {obj['times_ms'][obj['best_ref_form']]:.2f} ms "
                                           f"({obj['layout']})")
                bar.console.print(f"{obj['net']} batch {obj['batch']} {obj['dtype']}: {str(msg)[:200]}")

            _run_worker(cfg, args.timeout, on_line)
            args.out.write_text(render_markdown(results, args.threshold))
    results["meta"]["elapsed_s"] = results["meta"].get("elapsed_s", 0) + time.perf_counter() - t_start
    save_results(args.results, results)
    args.out.write_text(render_markdown(results, args.threshold))
    print(f"wrote {args.out} and {args.results} ({time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
