"""Running a sweep: one job per variant, locally over a process pool or on Ray, cached per variant.

A job compiles the variant (an invalid variant is a result holding its located error, never an abort),
reads its metrics off the graph and, with ``measure``, times its eager and deploy forms. Results are JSON
files named by a hash of the spec's text, the variant and the settings (``cache/<key>.json``), so a sweep
that was interrupted, or re-run with more values, computes only what is new. A cache file is data: numbers
and strings checked on reading; one that does not parse or fit is recomputed.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .._version import __version__
from ..errors import ArchError
from ..fsutil import atomic_write
from ..lang.loader import split_address
from ..limits import Limits
from .grid import Variant

__all__ = ["SweepResult", "run_sweep", "evaluate", "sweep_salt"]

_RESULT_KEYS = {"variant", "params", "ok"}
_MAX_CACHE_BYTES = 1 << 20


@dataclass
class SweepResult:
    """The rows of a sweep (one dict per variant, in grid order) and the run's figures."""

    spec: str
    rows: list[dict[str, Any]]
    sgemm_gflops: float | None = None
    cached: int = 0
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["ok"]]

    @property
    def invalid(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if not r["ok"]]


def evaluate(job: dict[str, Any]) -> dict[str, Any]:
    """One variant: ``{"spec", "variant", "params", "batch", "measure", "limits"}`` -> its result row.

    A top-level function of plain data in and out, so a process pool or a Ray worker can run it."""
    from ..pipeline import compile_graph
    from .metrics import graph_metrics
    row: dict[str, Any] = {"variant": job["variant"], "params": job["params"], "ok": False}
    try:
        g = compile_graph(job["spec"], job["params"], limits=Limits().with_overrides(job.get("limits", [])))
    except ArchError as e:
        row["error"] = "\n".join(d.format() for d in e.diagnostics)
        return row
    row.update(graph_metrics(g, batch=job["batch"]))
    if job.get("measure"):
        from .measure import measure_graph
        try:
            row.update(measure_graph(g, batch=job["batch"], device=job["measure"]))
        except Exception as e:   # a variant that builds but cannot run here: reported, the sweep goes on
            row["error"] = f"measuring failed: {type(e).__name__}: {e}"
            return row
    row["ok"] = True
    return row


def sweep_salt(spec: str, settings: dict[str, Any]) -> str:
    """What a cached result depends on besides the variant: every spec file's text, settings, archdsl version."""
    path, _ = split_address(spec)
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(p.parent.rglob("*.arch")) if p.is_file() else []
    for f in files[:2000]:
        try:
            h.update(str(f).encode() + b"\0" + f.read_bytes() + b"\0")
        except OSError:
            continue
    if not files:
        h.update(spec.encode())
    h.update(json.dumps(settings, sort_keys=True).encode())
    h.update(__version__.encode())
    return h.hexdigest()


def _read_cached(path: Path) -> dict[str, Any] | None:
    """A cached row, or None: only a regular file (no link, FIFO or device), opened without blocking."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_CACHE_BYTES:
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = json.loads(fh.read().decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    finally:
        os.close(fd)
    if not isinstance(data, dict) or not _RESULT_KEYS <= data.keys() or not isinstance(data["ok"], bool):
        return None
    for k, v in data.items():   # numbers, strings, lists and small dicts of those: nothing else is a result
        if not isinstance(k, str) or not isinstance(v, (int, float, str, bool, list, dict, type(None))):
            return None
    return data


def run_sweep(spec: str, variants: list[Variant], *, batch: int = 1, measure: str | None = None,
              jobs: int = 1, cache_dir: Path | None = None, ray: str | None = None,
              limits: list[str] | None = None,
              progress: Callable[[int, int, dict[str, Any]], None] | None = None) -> SweepResult:
    """Evaluate every variant (cached results are reused) and return the rows in grid order.

    ``jobs``: processes for the local pool (measurement runs one variant at a time whatever ``jobs`` says:
    timings taken side by side would measure each other). ``ray``: ``"auto"`` or a cluster address runs one
    Ray task per variant instead (the optional ``ray`` extra). ``progress(done, total, row)`` after each.
    """
    settings = {"batch": batch, "measure": measure, "limits": sorted(limits or [])}
    salt = sweep_salt(spec, settings)
    rows: dict[int, dict[str, Any]] = {}
    todo: list[tuple[Variant, dict[str, Any]]] = []
    cached = 0
    for v in variants:
        hit = _read_cached(cache_dir / f"{v.key(salt)}.json") if cache_dir is not None else None
        if hit is not None:
            rows[v.index] = hit
            cached += 1
        else:
            todo.append((v, {"spec": spec, "variant": v.name, "params": v.params, "batch": batch,
                             "measure": measure, "limits": list(limits or [])}))
    done = cached
    total = len(variants)
    if progress is not None:
        for r in rows.values():
            progress(done, total, r)

    def finish(v: Variant, row: dict[str, Any]) -> None:
        nonlocal done
        rows[v.index] = row
        done += 1
        if cache_dir is not None and "measuring failed" not in str(row.get("error", "")):
            try:
                atomic_write(cache_dir / f"{v.key(salt)}.json", json.dumps(row, sort_keys=True))
            except OSError:   # not a regular file there (a FIFO, a device) or no room: never written through
                pass
        if progress is not None:
            progress(done, total, row)

    sgemm = None
    if measure:
        from .measure import sgemm_gflops
        sgemm = sgemm_gflops(measure)
    if ray is not None and todo:
        for v, row in _run_ray(ray, todo):
            finish(v, row)
    elif jobs > 1 and len(todo) > 1 and not measure:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futs = {pool.submit(evaluate, job): v for v, job in todo}
            for fut in as_completed(futs):
                finish(futs[fut], fut.result())
    else:
        for v, job in todo:
            finish(v, evaluate(job))
    return SweepResult(spec, [rows[v.index] for v in variants], sgemm, cached, settings)


def _run_ray(address: str, todo: list[tuple[Variant, dict[str, Any]]]) -> Iterable[tuple[Variant, dict[str, Any]]]:
    """One Ray task per variant; results gathered as they finish (``ray`` is an optional dependency)."""
    try:
        import ray
    except ImportError:
        raise ArchError("--ray needs the Ray package", None, hint="pip install 'archdsl[ray]'") from None
    started = not ray.is_initialized()
    if started:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address != "local":   # "auto": the running cluster; else its address. "local": start one here
            kwargs["address"] = address
        try:
            ray.init(**kwargs)
        except ConnectionError as e:
            raise ArchError(f"--ray {address}: no Ray cluster to connect to ({e})", None,
                            hint="start one with 'ray start --head', or use --ray local for one on this machine"
                            ) from None
    try:
        task = ray.remote(evaluate)
        refs = {task.remote(job): v for v, job in todo}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                yield refs[ref], ray.get(ref)
    finally:
        if started:
            ray.shutdown()
