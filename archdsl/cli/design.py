"""The design-space commands: ``archc diff``, ``archc migrate`` and ``archc sweep``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import ArchError
from ..source import printable
from ..pipeline import parse_set

from .common import (
    app,
    out,
    err,
    SetOpt,
    LimitOpt,
    OutsideOpt,
    ScaleOpt,
    PluginOpt,
    _load_plugins,
    _guard,
    _write_output,
    _check_destination,
    _spec_file,
    _params,
    _limits,
)

__all__: list[str] = []   # the commands register themselves on ``app``


@app.command("diff")
def diff_(a: str = typer.Argument(..., help="the old spec: file.arch[:network], optionally @REV (a git revision)"),
          b: str = typer.Argument(..., help="the new spec: file.arch[:network], optionally @REV"),
          as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
          depth: int = typer.Option(2, "--depth", help="module-path levels of the per-block deltas (1: stages)"),
          render_to: Optional[Path] = typer.Option(None, "--render", help="also draw B with the changes "
                                                   "highlighted: OUT.svg, .png, .pdf or .html"),
          set_: List[str] = SetOpt,
          scale: Optional[str] = ScaleOpt,
          limit: List[str] = LimitOpt,
          allow_outside: bool = OutsideOpt,
          plugin: List[str] = PluginOpt) -> None:
    """What changed between two specs: layers added, removed, changed or renamed (arguments and shapes),
    parameter/MAC deltas per block, and which checkpoint keys of A load into B. Exit 0 whether or not they
    differ (1 only for errors)."""
    def run() -> int:
        from ..design import spec_diff
        _load_plugins(plugin)
        if depth < 1:
            raise ArchError(f"--depth must be at least 1, got {depth}", None)
        if render_to is not None:
            _check_destination(render_to, "--render", protect=(_spec_file(a), _spec_file(b)))
        d, _, gb = spec_diff(a, b, params=_params(set_, scale), limits=_limits(limit), allow_outside=allow_outside,
                             depth=depth)
        if render_to is not None:   # graphviz only here; torch never
            from ..render import write_diagram
            write_diagram(gb, render_to, depth=None, changes=d.marks(gb), removed=d.removed(),
                          limits=_limits(limit))
        if as_json:
            out.print(json.dumps(d.to_json(), indent=2), markup=False)
        else:
            out.print(d.text(), markup=False)
        return 0
    _guard(run)


@app.command("migrate")
def migrate_(from_: str = typer.Option(..., "--from", help="the spec the weights were trained with (file.arch[:net][@REV])"),
             to: str = typer.Option(..., "--to", help="the edited spec (file.arch[:net][@REV])"),
             weights: Path = typer.Option(..., "--weights", help="state_dict of --from (torch.save)"),
             output: Path = typer.Option(..., "-o", "--output", help="where to write the migrated state_dict"),
             seed: int = typer.Option(0, "--seed", help="torch seed of the initialization of new tensors"),
             as_json: bool = typer.Option(False, "--json", help="print every decision as JSON"),
             set_: List[str] = SetOpt,
             scale: Optional[str] = ScaleOpt,
             limit: List[str] = LimitOpt,
             allow_outside: bool = OutsideOpt,
             plugin: List[str] = PluginOpt) -> None:
    """Carry trained weights across an edit: every tensor that transfers (same key, or a renamed layer matched
    by structure), the rest initialized as the module does; one decision per tensor. Refuses when nothing
    matches."""
    def run() -> int:
        from ..design import migrate
        _load_plugins(plugin)
        _check_destination(output, "output", protect=(weights, _spec_file(from_), _spec_file(to)))
        m = migrate(from_, to, weights, params=_params(set_, scale), limits=_limits(limit),
                    allow_outside=allow_outside, seed=seed)
        import io

        import torch
        buf = io.BytesIO()
        torch.save(m.state_dict, buf)
        _write_output(output, buf.getvalue())
        if as_json:
            out.print(json.dumps({"output": str(output), "decisions": [d.to_json() for d in m.decisions],
                                  "unused": m.unused}, indent=2), markup=False)
        else:
            out.print(m.text(), markup=False)
            out.print(f"wrote {output} ({len(m.state_dict)} tensors)", markup=False)
        return 0
    _guard(run)


@app.command("sweep")
def sweep_(spec: str = typer.Argument(..., help="file.arch[:network]"),
           grid: List[str] = typer.Option([], "--grid", help="an axis: --grid width=32,48,64 (repeatable; the "
                                          "variants are every combination)"),
           output: List[Path] = typer.Option(..., "-o", "--output", help="sweep.csv, sweep.html, sweep.png/.svg/.pdf "
                                             "or sweep.json (repeatable)"),
           measure: Optional[str] = typer.Option(None, "--measure", help="time the eager and deploy forms: cpu or cuda"),
           batch: int = typer.Option(1, "--batch", help="batch size of the MACs, memory and latency figures"),
           jobs: int = typer.Option(1, "-j", "--jobs", help="local processes (measurement runs one at a time)"),
           ray: Optional[str] = typer.Option(None, "--ray", help="run one Ray task per variant: local (start one "
                                             "here), auto (the running cluster) or a cluster address"),
           cost: Optional[str] = typer.Option(None, "--cost", help="the front's cost axis: deploy_ms, eager_ms, macs "
                                              "or activation_bytes (default deploy_ms with --measure, else macs)"),
           benefit: str = typer.Option("parameters", "--benefit", help="the front's benefit axis"),
           cache: Optional[Path] = typer.Option(None, "--cache", help="folder of per-variant results (default: "
                                                "beside the first output, NAME.cache/); a rerun computes only "
                                                "what is new"),
           no_cache: bool = typer.Option(False, "--no-cache", help="compute every variant again"),
           scales: List[str] = typer.Option([], "--scale", help="sweep these variants of the network's scales "
                                            "table too (repeatable: an axis of the grid)"),
           set_: List[str] = SetOpt,
           limit: List[str] = LimitOpt,
           plugin: List[str] = PluginOpt) -> None:
    """Sweep a design space: every combination of the --grid values, with parameters, MACs, peak activation
    memory and (--measure) latency per variant, the Pareto front, and a CSV / plot / interactive HTML report.
    Invalid variants are listed with their error; they never stop the sweep."""
    def run() -> int:
        from ..sweep import parse_grid, run_sweep, variants, write_report
        _load_plugins(plugin)
        if batch < 1 or jobs < 1:
            raise ArchError(f"--batch and -j must be at least 1, got {batch} and {jobs}", None)
        if measure not in (None, "cpu", "cuda"):
            raise ArchError(f"--measure must be cpu or cuda, got '{printable(measure or '')}'", None)
        for o in output:
            _check_destination(o, "output", protect=(_spec_file(spec),))
        axes = parse_grid(grid)
        if scales:
            if "scale" in axes:
                raise ArchError("--scale and --grid scale=... name the same axis", None, hint="use one of them")
            axes = {"scale": list(dict.fromkeys(scales)), **axes}
        vs = variants(axes, parse_set(set_))
        cache_dir = None if no_cache else (cache or output[0].with_name(output[0].stem + ".cache"))
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        with Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.description}"), console=err, transient=True,
                      disable=not err.is_terminal) as bar:
            task = bar.add_task("", total=len(vs))

            def step(done: int, total: int, row: dict) -> None:
                bar.update(task, completed=done, description=str(row.get("variant", ""))[:40])
            res = run_sweep(spec, vs, batch=batch, measure=measure, jobs=jobs, cache_dir=cache_dir, ray=ray,
                            limits=limit, progress=step)
        front = write_report(res, output, cost=cost, benefit=benefit)
        for r in res.invalid:
            err.print(f"archc: variant {r['variant']} is invalid:", markup=False)
            err.print("  " + r.get("error", "").replace("\n", "\n  "), markup=False)
        out.print(f"{len(res.rows)} variants ({len(res.valid)} valid, {len(res.invalid)} invalid, {res.cached} "
                  f"from the cache); Pareto front ({len(front)}): "
                  + (", ".join(res.rows[i]["variant"] for i in front[:6]) + (", ..." if len(front) > 6 else "")
                     if front else "empty")
                  + (f"; sgemm {res.sgemm_gflops:.1f} GFLOP/s" if res.sgemm_gflops else ""), markup=False)
        out.print("wrote " + ", ".join(str(o) for o in output), markup=False)
        return 0
    _guard(run)
