"""The zoo as archdsl's test (issue 21): import every torchvision classification model and the first model of
every timm model file, then prove each spec is its model (check -> build -> strict load -> equal outputs).

Usage (from the repository root):

    .venv/bin/python bench/import_zoo.py [--resume] [--only PATTERN] [--limit N] [--timeout S] [--jobs N]
    .venv/bin/python bench/import_zoo.py --specs      # the hand-written library specs through the same check
    .venv/bin/python bench/import_zoo.py --table      # rewrite the table from the results file only

Each model runs in a worker process of its own, forked from a server that imported torch, timm and archdsl
once, under a time limit (``--timeout``) and an address-space limit (``--mem-gb``): a hang, a crash or a
memory blow-up of one model never stops the run. Results go to bench/results/import_zoo.json after every model (``--resume``
skips those already there; without it the selected models are run again and the others' results kept;
``--fresh`` starts an empty file), and the table to bench/results/import_zoo.md (``--specs``:
import_zoo_specs.json / .md). ``--only`` takes a glob (or a substring) matched against a model's id
(``timm:resnet10t``, ``torchvision:vgg11``), its family (``timm/resnet``) or its name.

The zoo: ``torchvision.models.list_models(module=torchvision.models)`` (family: the builder's module) and, for
every file of timm's registry, its first registered model (family: the file), or the first at most
``--max-params`` parameters (counted on the meta device: a giant first model would need gigabytes twice), or the
file's smallest. Models are created with random weights (torchvision ``weights=None``; timm
``pretrained=False``, default ``num_classes``) and fed a small input: the default size (timm's pretrained cfg,
224 for torchvision), shrunk to the first of 64, 96, 128, ... the model runs at, unless its input size is fixed
(timm's ``fixed_input_size``: ViT, Swin); a fixed size over 384 (SAM's 1024) is rebuilt at 224 where
the timm model takes ``img_size``.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import multiprocessing
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from import_zoo_table import classify, first_line, write_table  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SIZES = (64, 96, 128, 160, 192, 224, 256, 288, 320, 384)
MAX_CANDIDATES = 12   # timm models of one file considered when the first is over --max-params
MAX_FIXED = 384       # a fixed input size above this is rebuilt at FIXED_SMALL where the model takes img_size
FIXED_SMALL = 224


# ------------------------------------------------------------------------------------------- the zoo lists
def torchvision_zoo() -> list[dict[str, Any]]:
    """Every torchvision classification builder; family = the module defining it (resnet, vgg, ...)."""
    import torchvision
    out = []
    for name in torchvision.models.list_models(module=torchvision.models):
        fam = torchvision.models.get_model_builder(name).__module__.rsplit(".", 1)[-1]
        out.append({"id": f"torchvision:{name}", "source": "torchvision", "family": f"torchvision/{fam}",
                    "model": name, "candidates": [name]})
    return out


def timm_files() -> dict[str, list[str]]:
    """timm's model files -> their models in registration order (the order of the file's definitions)."""
    import timm
    from timm.models import _registry as reg
    listed = {m: timm.list_models(module=m) for m in timm.list_modules()}   # (sorted; no deprecated names)
    by_file: dict[str, list[str]] = {m: [] for m in listed}
    valid = {n for names in listed.values() for n in names}
    to_module = getattr(reg, "_model_to_module", {})
    for name in getattr(reg, "_model_entrypoints", {}):   # a dict filled by @register_model, in file order
        mod = to_module.get(name)
        if mod in by_file and name in valid:
            by_file[mod].append(name)
    for mod, names in by_file.items():   # (a timm without those internals: the public, sorted listing)
        if not names:
            names.extend(listed[mod])
    return {m: v for m, v in by_file.items() if v}


def timm_zoo() -> list[dict[str, Any]]:
    """The first model of every timm model file (the worker may take a later one: ``--max-params``)."""
    return [{"id": f"timm:{names[0]}", "source": "timm", "family": f"timm/{mod}", "model": names[0],
             "candidates": names[:MAX_CANDIDATES]} for mod, names in timm_files().items()]


def zoo() -> list[dict[str, Any]]:
    """The whole zoo: torchvision's classification models, then timm's files."""
    return torchvision_zoo() + timm_zoo()


def specs_zoo() -> list[dict[str, Any]]:
    """Every library network (specs/) whose reference is a torchvision or timm model, one per reference."""
    from archdsl.pipeline import list_networks
    out, seen = [], set()
    for e in list_networks(str(ROOT / "specs"), contracts=True):
        ref = e.get("reference") or ""
        if not ref.startswith(("torchvision.", "timm.")) or ref in seen or e.get("error"):
            continue
        seen.add(ref)
        spec = os.path.relpath(e["spec"], ROOT)
        out.append({"id": f"spec:{e['name']}", "source": "spec", "family": f"specs/{Path(spec.split(':')[0]).stem}",
                    "model": ref, "spec": spec, "input": e["input"], "fixed": bool(e.get("fixed_input_size"))})
    return out


def select(entries: list[dict[str, Any]], only: str | None, limit: int | None) -> list[dict[str, Any]]:
    """The entries matching ``only`` (a glob, or a substring, against id, family or model), the first ``limit``."""
    if only:
        glob = any(c in only for c in "*?[")

        def hit(e: dict[str, Any]) -> bool:
            keys = (e["id"], e["family"], e["model"])
            return any(fnmatch.fnmatchcase(k, only) if glob else only in k for k in keys)
        entries = [e for e in entries if hit(e)]
    return entries[:limit] if limit is not None else entries


# --------------------------------------------------------------------------------------------- the worker
def _write(path: Path, rec: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec))
    os.replace(tmp, path)


def _runs_at(model: Any, shape: tuple[int, ...]) -> bool:
    import torch
    try:
        with torch.no_grad():
            model(torch.zeros((1, *shape)))
        return True
    except Exception:
        return False


def _pick_input(model: Any, default: tuple[int, ...], fixed: bool) -> tuple[int, ...]:
    """The smallest of :data:`SIZES` (below the default, aspect kept) the model runs at, else the default."""
    if fixed or len(default) != 3:
        return default
    c, h, w = default
    for s in SIZES:
        if s >= h:
            break
        shape = (c, s, max(1, round(s * w / h)))
        if _runs_at(model, shape):
            return shape
    return default


def _create(entry: dict[str, Any], max_params: int | None) -> tuple[Any, str, tuple[int, ...], bool]:
    """(model in eval mode, its name, default input shape, whether the size is fixed) for a zoo entry."""
    import torch

    from archdsl.importer.plugin import remember_source
    if entry["source"] == "torchvision" or entry["model"].startswith("torchvision."):
        import torchvision
        name = entry["model"].removeprefix("torchvision.")
        kwargs: dict[str, Any] = {}
        if name in ("googlenet", "inception_v3"):
            # the form torchvision's published weights build (their builders drop the auxiliary heads, which
            # only training runs): an eval forward never calls them, so no trace can see their weights
            kwargs.update(aux_logits=False, init_weights=False)
        model = torchvision.models.get_model(name, weights=None, **kwargs)
        remember_source(model, "torchvision", name, kwargs)   # as archc import does: a kept class may come from it
        default = (3, 299, 299) if name == "inception_v3" else (3, 224, 224)
        return model.eval(), name, tuple(entry.get("input") or default), bool(entry.get("fixed"))
    import timm
    names = entry.get("candidates") or [entry["model"].removeprefix("timm.")]
    name = names[0]
    if max_params is not None and len(names) > 1:
        counts = {}
        for cand in names:
            with torch.device("meta"):
                counts[cand] = sum(p.numel() for p in timm.create_model(cand, pretrained=False).parameters())
            if counts[cand] <= max_params:
                break
        name = next((n for n in counts if counts[n] <= max_params), min(counts, key=lambda n: counts[n]))
    model = timm.create_model(name, pretrained=False)
    remember_source(model, "timm", name, {})
    cfg = getattr(model, "pretrained_cfg", None) or {}
    default = tuple(entry.get("input") or cfg.get("input_size") or (3, 224, 224))
    fixed = bool(entry.get("fixed")) if entry["source"] == "spec" else bool(cfg.get("fixed_input_size"))
    if fixed and entry["source"] != "spec" and len(default) == 3 and max(default[1:]) > MAX_FIXED:
        # a fixed size too large for a small input (SAM's 1024 px): built for FIXED_SMALL px where the
        # model takes img_size (the structure is the same; position tables are sized for the input)
        try:
            model = timm.create_model(name, pretrained=False, img_size=FIXED_SMALL)
            default = (default[0], FIXED_SMALL, FIXED_SMALL)
        except TypeError:
            pass
    return model.eval(), name, default, fixed


def worker(entry: dict[str, Any], opts: dict[str, Any], out: Path) -> None:
    """Run one model and write its record to ``out`` after every step (so a timeout still tells the stage)."""
    if opts.get("mem_gb"):
        import resource
        limit = int(opts["mem_gb"] * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    rec: dict[str, Any] = {k: entry[k] for k in ("id", "source", "family", "model")}
    rec.update(stage="create", ok=False, imported=False, located=False)
    _write(out, rec)
    import warnings
    warnings.filterwarnings("ignore")
    import torch

    import archdsl
    from archdsl.importer import import_model, roundtrip
    torch.set_num_threads(int(opts.get("threads", 1)))
    t_start = time.perf_counter()

    def fail(stage: str, e: BaseException | str, *, unexpected: bool = False) -> None:
        """Record the failure at ``stage``; ``unexpected``: an exception the step does not raise by design
        (classified as a crash, or memory exhaustion)."""
        err = e if isinstance(e, str) else str(e) if _is_arch(e) else f"{type(e).__name__}: {e}"
        exc_type = None if isinstance(e, str) else type(e).__name__
        rec.update(stage=stage, ok=False, error=err[:4000], exc_type=exc_type)
        rec["category"], rec["detail"] = classify("crash" if unexpected else stage, err, exc_type)
        rec["reason"] = first_line(err)
        rec["total_s"] = time.perf_counter() - t_start
        rec["finished"] = True
        _write(out, rec)

    try:
        torch.manual_seed(0)
        from archdsl.importer import recording_inits
        with recording_inits():   # constructor arguments of classes the importer keeps whole, as archc import does
            model, name, default, fixed = _create(entry, opts.get("max_params"))
        rec["model"] = name if entry["source"] != "spec" else entry["model"]
        shape = _pick_input(model, default, fixed)
        rec["input"] = list(shape)
        x = torch.zeros((1, *shape))
        if not _runs_at(model, shape):
            return fail("create", f"the model does not run at its input {list(shape)}")
    except BaseException as e:   # noqa: BLE001 - whatever the zoo model does, it is this model's failure
        return fail("create", e)
    rec["create_s"] = time.perf_counter() - t_start

    spec, name_arg = entry.get("spec"), None
    plugins: list[str] = []
    if entry["source"] != "spec":
        rec["stage"] = "import"
        _write(out, rec)
        t = time.perf_counter()
        try:
            # the round trip below is the check (import_module would run it a second time)
            imp = import_model(model, x, check=False)
        except BaseException as e:   # noqa: BLE001
            rec["import_s"] = time.perf_counter() - t
            rec["located"] = _is_arch(e)
            return fail("import", e)
        spec = imp.spec
        rec["import_s"] = time.perf_counter() - t
        rec["imported"] = True
        rec["spec_lines"] = len(spec.splitlines())
        # classes kept whole as plugin ops: the round trip loads the plugin file the importer wrote
        rec["kept"] = sorted({f"{type(m).__module__}.{type(m).__qualname__}"
                              for m in (model.get_submodule(p) for p in imp.kept)})
        rec["kept_why"] = sorted(set(imp.kept.values()))[:3]
        rec["kept_modules"] = len(imp.kept)
        if imp.plugin is not None:
            plugin_file = Path(tempfile.mkdtemp(prefix="import-zoo-plugin-")) / f"{imp.name}_plugins.py"
            plugin_file.write_text(imp.plugin)
            plugins = [str(plugin_file)]
        if opts.get("save_specs"):
            d = Path(opts["save_specs"])
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{rec['model']}.arch").write_text(spec)
    rec["stage"] = "check"
    _write(out, rec)
    try:
        r = roundtrip(model, spec or "", x, name=name_arg, seed=0, plugins=plugins or None)
    except BaseException as e:   # noqa: BLE001 - roundtrip reports failures; this is one it did not expect
        return fail(rec["stage"], "".join(traceback.format_exception_only(type(e), e)), unexpected=True)
    rec.update(stage=r.stage, ok=r.ok, max_diff=r.max_diff, tolerance=r.tolerance, roundtrip_s=r.total_time,
               times=r.times, network=r.network, randomized=r.randomized)
    if not r.ok:
        return fail(r.stage, r.error or "")
    rec["total_s"] = time.perf_counter() - t_start
    rec["finished"] = True
    _write(out, rec)


def _child(entry: dict[str, Any], opts: dict[str, Any], out: str, log: str) -> None:
    """A worker process: its output to ``log`` (not over the progress display), then :func:`worker`."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    worker(entry, opts, Path(out))


def _is_arch(e: BaseException) -> bool:
    from archdsl.errors import ArchError
    return isinstance(e, ArchError)


# --------------------------------------------------------------------------------------------- the runner
class Runner:
    """Runs entries in worker processes (``jobs`` at a time), keeps and saves the results as they come."""

    def __init__(self, opts: dict[str, Any], results_path: Path, data: dict[str, Any]) -> None:
        self.opts, self.path, self.data = opts, results_path, data
        self.lock = threading.Lock()
        self.procs: dict[int, Any] = {}
        self.tmp = Path(tempfile.mkdtemp(prefix="import-zoo-"))
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(["torch", "torchvision", "timm", "archdsl", "archdsl.importer"])

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def one(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Run ``entry`` in a process of its own; its record, with the harness's verdict on a timeout or a
        death. The process is forked from a server that has imported torch, torchvision, timm and archdsl
        once (a fresh interpreter per model would spend more time importing than most models take)."""
        key = "".join(c if c.isalnum() else "_" for c in entry["id"])
        out, log = self.tmp / f"{key}.json", self.tmp / f"{key}.log"
        t0 = time.perf_counter()
        p = self.ctx.Process(target=_child, args=(entry, self.opts, str(out), str(log)), daemon=True)
        p.start()
        with self.lock:
            self.procs[id(p)] = p
        p.join(self.opts["timeout"])
        timed_out = p.exitcode is None
        if timed_out:
            p.kill()
            p.join()
        rc = p.exitcode
        with self.lock:
            self.procs.pop(id(p), None)
        rec: dict[str, Any] = {k: entry[k] for k in ("id", "source", "family", "model")}
        rec.update(stage="create", ok=False)
        try:
            rec.update(json.loads(out.read_text()))
        except (OSError, ValueError):
            pass
        rec["wall_s"] = time.perf_counter() - t0
        if not rec.get("finished"):
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            if timed_out:
                why = f"no verdict within {self.opts['timeout']} s (it was at stage {rec.get('stage')})"
                rec["category"], rec["detail"] = classify("timeout", why)
            else:
                last = first_line("\n".join(reversed(tail.strip().splitlines()[-1:]))) or "no output"
                why = f"the worker died (exit status {rc}) at stage {rec.get('stage')}: {last}"
                rec["category"], rec["detail"] = classify("crash", why + "\n" + tail)
            rec.update(ok=False, reason=first_line(why), error=(why + "\n" + tail)[:4000])
        rec.pop("finished", None)
        return rec

    def kill(self, p: Any) -> None:
        if p.exitcode is None:
            p.kill()

    def run(self, entries: list[dict[str, Any]]) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)
        running: dict[str, float] = {}
        ok = failed = 0
        columns = (SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("[green]{task.fields[ok]} ok[/] [red]{task.fields[failed]} failed[/]"),
                   TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, transient=False) as progress, \
                ThreadPoolExecutor(max_workers=self.opts["jobs"]) as pool:
            task = progress.add_task("starting", total=len(entries), ok=0, failed=0)

            def job(e: dict[str, Any]) -> dict[str, Any]:
                with self.lock:
                    running[e["id"]] = time.perf_counter()
                    progress.update(task, description=", ".join(running)[:60])
                try:
                    return self.one(e)
                finally:
                    with self.lock:
                        running.pop(e["id"], None)
                        progress.update(task, description=", ".join(running)[:60] or "done")

            from rich.markup import escape as _escape
            futures = [pool.submit(job, e) for e in entries]
            try:
                for fut in as_completed(futures):
                    rec = fut.result()
                    with self.lock:
                        self.data["results"][rec["id"]] = rec
                        self.save()
                    ok, failed = ok + bool(rec.get("ok")), failed + (not rec.get("ok"))
                    progress.update(task, advance=1, ok=ok, failed=failed)
                    verdict = "[green]ok[/]" if rec.get("ok") else f"[red]{rec.get('category')}[/]"
                    progress.console.print(f"{rec['id']:<48} {verdict} {rec.get('wall_s', 0):6.1f}s  "
                                           f"{'' if rec.get('ok') else _escape(rec.get('reason', ''))}",
                                           highlight=False, no_wrap=True, overflow="ellipsis")
            except KeyboardInterrupt:
                for f in futures:
                    f.cancel()
                with self.lock:
                    for p in list(self.procs.values()):
                        self.kill(p)
                raise


# ------------------------------------------------------------------------------------------------- the CLI
def _meta_now(argv: list[str]) -> dict[str, Any]:
    import importlib.metadata as md
    cpu = platform.processor() or "?"
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    from archdsl import __version__

    def ver(pkg: str) -> str:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "not installed"
    return {"machine": f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
            "python": platform.python_version(), "torch": ver("torch"), "torchvision": ver("torchvision"),
            "timm": ver("timm"), "archdsl": f"{__version__}" + (f" (git {commit})" if commit else ""),
            "run": {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "command": "python bench/import_zoo.py " + shlex.join(argv)}}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--specs", action="store_true", help="round-trip the library specs against their references "
                    "(no import step): the harness's own check")
    ap.add_argument("--resume", action="store_true", help="skip models the results file already has")
    ap.add_argument("--fresh", action="store_true", help="start from an empty results file")
    ap.add_argument("--only", metavar="PATTERN", help="only models whose id, family or name match (glob/substring)")
    ap.add_argument("--limit", type=int, metavar="N", help="at most N models (after --only and --resume)")
    ap.add_argument("--timeout", type=float, default=300.0, metavar="S", help="seconds per model (default 300)")
    ap.add_argument("--jobs", type=int, default=1, metavar="N", help="models run side by side (default 1)")
    ap.add_argument("--threads", type=int, default=1, metavar="N", help="torch threads per model (default 1)")
    ap.add_argument("--mem-gb", type=float, default=12.0, metavar="G",
                    help="address-space limit per model in GiB (default 12; 0: none)")
    ap.add_argument("--max-params", type=float, default=300e6, metavar="N",
                    help="timm: the first model of the file with at most N parameters (default 3e8)")
    ap.add_argument("--results", metavar="JSON", help="the results file (default bench/results/import_zoo.json, "
                    "with --specs import_zoo_specs.json); the table is written beside it as .md")
    ap.add_argument("--save-specs", metavar="DIR", help="also write each imported spec to DIR/<model>.arch")
    ap.add_argument("--table", action="store_true", help="only rewrite the table from the results file")
    ap.add_argument("--list", action="store_true", help="print the selected models (id, family) and exit")
    args = ap.parse_args(argv)

    mode = "specs" if args.specs else "zoo"
    results_path = Path(args.results) if args.results else RESULTS / (
        "import_zoo_specs.json" if args.specs else "import_zoo.json")
    table_path = results_path.with_suffix(".md")
    data: dict[str, Any] = {"meta": {}, "results": {}}
    if results_path.exists() and not args.fresh:
        try:
            data = json.loads(results_path.read_text())
        except ValueError:
            print(f"error: {results_path} is not a results file (invalid JSON)", file=sys.stderr)
            return 1
    entries = specs_zoo() if args.specs else zoo()
    zoo_size = len(entries)
    if args.table:
        table_path.write_text(write_table(data["results"], data["meta"], mode=mode, zoo_size=zoo_size))
        print(f"wrote {table_path.relative_to(ROOT) if table_path.is_relative_to(ROOT) else table_path}")
        return 0
    todo = [e for e in entries if not (args.resume and e["id"] in data["results"])]
    todo = select(todo, args.only, args.limit)
    if args.list:
        for e in todo:
            print(f"{e['id']:<50} {e['family']}")
        return 0
    if not todo:
        print("nothing to run" + (" (every selected model has a result: drop --resume to run them again)"
                                  if args.resume else f": no model matches --only {args.only!r}"), file=sys.stderr)
        return 0 if args.resume else 1
    if not args.specs:
        import archdsl
        if not hasattr(archdsl, "import_module"):
            print("error: this archdsl has no importer (archdsl.import_module, issue 21) yet: the zoo cannot be "
                  "imported.\nhint: `python bench/import_zoo.py --specs` checks the round-trip harness on the "
                  "hand-written library specs", file=sys.stderr)
            return 1
    meta = _meta_now(argv)
    run = meta.pop("run")
    data["meta"] = {**meta, "runs": [*data.get("meta", {}).get("runs", []), run][-10:]}
    opts = {"timeout": args.timeout, "jobs": max(1, args.jobs), "threads": max(1, args.threads),
            "mem_gb": args.mem_gb or None, "max_params": int(args.max_params) if args.max_params else None,
            "save_specs": str(Path(args.save_specs).resolve()) if args.save_specs else None}
    results_path.parent.mkdir(parents=True, exist_ok=True)
    runner = Runner(opts, results_path, data)
    try:
        runner.run(todo)
    except KeyboardInterrupt:
        print("interrupted: the results so far are kept (--resume goes on from there)", file=sys.stderr)
    finally:
        runner.save()
        table_path.write_text(write_table(data["results"], data["meta"], mode=mode, zoo_size=zoo_size))
        print(f"results: {results_path}\ntable:   {table_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
