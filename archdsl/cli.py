"""``archc``: the command-line compiler. Never prints a traceback for a bad spec."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import ArchError, Diagnostic
from .pipeline import (atomic_write, check_paths, compile_graph, generate_source, list_networks, parse_set)
from .summary import format_count, summary_dict

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="archc: check, summarize, render and compile .arch architecture specs.")
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

SetOpt = typer.Option([], "--set", help="override a network parameter: --set num_classes=10 (repeatable)")


def _print_diags(diags: list[Diagnostic]) -> None:
    for d in diags:
        err.print(d.format(), markup=False)
    n_err = sum(1 for d in diags if d.severity == "error")
    n_warn = sum(1 for d in diags if d.severity == "warning")
    if n_err or n_warn:
        parts = []
        if n_err:
            parts.append(f"{n_err} error{'s' if n_err != 1 else ''}")
        if n_warn:
            parts.append(f"{n_warn} warning{'s' if n_warn != 1 else ''}")
        err.print(", ".join(parts) + " generated.", markup=False)


def _guard(fn: Callable[[], int | None]) -> None:
    """Run a command: ArchError -> diagnostics + exit 1; anything unexpected -> one line + exit 2."""
    try:
        code = fn() or 0
    except ArchError as e:
        _print_diags(e.diagnostics)
        raise typer.Exit(1)
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130)
    except Exception as e:  # a bug in archc, not in the spec: still no traceback unless asked for
        if os.environ.get("ARCHC_DEBUG"):
            raise
        err.print(f"archc: internal error: {type(e).__name__}: {e}", markup=False)
        err.print("(this is a bug in archc; rerun with ARCHC_DEBUG=1 for the traceback)", markup=False)
        raise typer.Exit(2)
    raise typer.Exit(code)


def _parse_shape(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        vals = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise ArchError(f"--input expects sizes like 3,224,224, got '{text}'", None) from None
    if not vals or any(v <= 0 for v in vals):
        raise ArchError(f"--input expects positive sizes like 3,224,224, got '{text}'", None)
    return vals


@app.command()
def check(specs: List[str] = typer.Argument(..., help="files, directories or file.arch:network"),
          set_: List[str] = SetOpt,
          quiet: bool = typer.Option(False, "-q", "--quiet", help="print nothing when all is well")) -> None:
    """Check specs: parse, expand and shape-check every network. Exit 1 on any error."""
    def run() -> int:
        t = time.perf_counter()
        diags, count = check_paths(specs, params=parse_set(set_))
        if diags:
            _print_diags(diags)
        if any(d.severity == "error" for d in diags):
            return 1
        if not quiet:
            out.print(f"ok: {count} network{'s' if count != 1 else ''} checked in {time.perf_counter() - t:.2f}s")
        return 0
    _guard(run)


@app.command("list")
def list_(directory: str = typer.Argument("specs", help="directory (or file) to search for .arch files"),
          as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """List every network: its spec address, default input shape and the reference it mirrors."""
    def run() -> int:
        if not Path(directory).exists():
            raise ArchError(f"no such file or directory: '{directory}'", None)
        nets = list_networks(directory)
        if as_json:
            out.print(json.dumps(nets, indent=2), markup=False)
            return 0
        table = Table(show_edge=False, header_style="bold")
        for col in ("spec", "input", "reference"):
            table.add_column(col)
        for n in nets:
            table.add_row(n["spec"], str(n["input"]) if n["input"] else "[red]error[/red]", n["reference"] or "-")
        out.print(table)
        return 0
    _guard(run)


@app.command()
def summary(spec: str = typer.Argument(..., help="file.arch[:network]"),
            input_: Optional[str] = typer.Option(None, "--input", help="input shape C,H,W (overrides the spec's)"),
            set_: List[str] = SetOpt,
            as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Per-layer table (module name, op, output shape, params, MACs) and totals."""
    def run() -> int:
        g = compile_graph(spec, parse_set(set_), input_shape=_parse_shape(input_))
        data = summary_dict(g)
        if as_json:
            out.print(json.dumps(data, indent=2), markup=False)
            return 0
        table = Table(title=f"{data['spec']}  input {data['input']}", show_edge=False, header_style="bold")
        table.add_column("layer")
        table.add_column("op")
        table.add_column("output", justify="right")
        table.add_column("params", justify="right")
        table.add_column("MACs", justify="right")
        for r in data["layers"]:
            table.add_row(r["name"], r["op"], str(r["shape"]), f"{r['params']:,}" if r["params"] else "",
                          format_count(r["macs"]) if r["macs"] else "")
        out.print(table)
        tot = data["totals"]
        out.print(f"total: {tot['params']:,} params ({format_count(tot['params'])}), "
                  f"{tot['macs']:,} MACs ({format_count(tot['macs'])}), {tot['layers']} layers; "
                  f"output {next(iter(data['outputs'].values())) if len(data['outputs']) == 1 else data['outputs']}")
        return 0
    _guard(run)


@app.command("compile")
def compile_(spec: str = typer.Argument(..., help="file.arch[:network]"),
             output: Path = typer.Option(..., "-o", "--output", help="where to write the generated .py"),
             set_: List[str] = SetOpt) -> None:
    """Write the generated PyTorch source (depends only on torch)."""
    def run() -> int:
        g = compile_graph(spec, parse_set(set_))
        src = generate_source(g)
        atomic_write(output, src)
        out.print(f"wrote {output} ({len(src.splitlines())} lines, {g.total_params:,} params)")
        return 0
    _guard(run)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``archc`` script."""
    try:
        app(args=argv, prog_name="archc")
    except SystemExit as e:
        if e.code not in (0, None):
            sys.exit(e.code)
        raise


if __name__ == "__main__":  # pragma: no cover
    main()
