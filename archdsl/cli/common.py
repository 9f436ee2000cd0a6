"""What every ``archc`` command shares: the typer app, the consoles, the common options, the guard that turns
errors into diagnostics and exit statuses, and the checks of paths and numbers."""
from __future__ import annotations

import sys
import os
from pathlib import Path
from typing import Callable

import typer
from rich.console import Console

from .._version import LANGUAGE_VERSION, __version__
from ..errors import ArchError, Diagnostic
from ..fsutil import output_problem
from ..source import printable
from ..limits import Limits
from ..pipeline import (atomic_write, parse_set)

__all__ = ["app", "out", "err"]

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="archc: check, summarize, render and compile .arch architecture specs.")
# emoji=False: rich would turn ':smile:' in a spec or file name into an emoji, misquoting the source
out = Console(highlight=False, soft_wrap=True, emoji=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

SetOpt = typer.Option([], "--set", help="override a network parameter: --set num_classes=10 (repeatable)")
LimitOpt = typer.Option([], "--limit", help="raise or lower a resource bound: --limit max_nodes=50000 "
                        "(repeatable; names: " + ", ".join(Limits.names()) + ")")
OutsideOpt = typer.Option(False, "--allow-outside", help="let imports leave the spec's directory tree")
ScaleOpt = typer.Option(None, "--scale", help="build the variant NAME of the network's scales table (a family)")
PluginOpt = typer.Option([], "--plugin", help="load a Python module or .py file that registers ops "
                         "(repeatable; also ARCHDSL_PLUGINS; see docs/extending.md)")


def _print_version(value: bool) -> None:
    """``archc --version``: the package and the language version (docs/compat.md), then exit."""
    if value:
        out.print(f"archc (archdsl) {__version__}, .arch language {LANGUAGE_VERSION}", markup=False)
        raise typer.Exit(0)


@app.callback()
def _main(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                       help="print the archdsl and .arch language versions and exit")) -> None:
    """archc: check, summarize, render and compile .arch architecture specs."""


def _load_plugins(refs: list[str]) -> None:
    """Load ARCHDSL_PLUGINS and --plugin: a plugin that is missing or raises is one line and exit 1."""
    from ..plugins import load_plugins
    try:
        load_plugins(refs)
    except ArchError as e:
        err.print(f"archc: error: {e.diagnostics[0].message}", markup=False)
        raise typer.Exit(1)


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


_INTERNAL_ERROR = [False]   # set by _guard: status 2 is an internal error only then (see main)


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
    except BrokenPipeError:
        # the reader went away (`archc list | head`): stop quietly, as Unix tools do; point stdout at devnull
        # so the interpreter's final flush does not raise again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(0)
    except Exception as e:  # a bug in archc, not in the spec: still no traceback unless asked for
        if os.environ.get("ARCHC_DEBUG"):
            raise
        err.print(f"archc: internal error: {type(e).__name__}: {e}", markup=False)
        err.print("(this is a bug in archc; rerun with ARCHC_DEBUG=1 for the traceback)", markup=False)
        _INTERNAL_ERROR[0] = True
        raise typer.Exit(2)
    raise typer.Exit(code)


MAX_BATCH = 2**31 - 1     # a batch torch could index; larger is a typo, not a plan
MAX_DEPTH = 1_000_000     # deeper than any block hierarchy (a larger --depth would show the same)


def _check_number(option: str, value: int, lo: int, hi: int, *, hint: str | None = None) -> None:
    """A numeric option out of its range is the user's mistake: exit 1 with the range (never a usage error)."""
    if not lo <= value <= hi:
        raise ArchError(f"{option} must be an integer from {lo} to {hi:,}, got {value}", None, hint=hint)


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


def _write_output(path: Path, text: str | bytes) -> None:
    """Atomic write; an unwritable destination is the user's mistake, not an internal error."""
    if path.is_dir():
        raise ArchError(f"output '{path}' is a directory", None, hint="give a file name, e.g. -o model.py")
    _refuse_special(path, "output")
    try:
        atomic_write(path, text)
    except OSError as e:
        raise ArchError(f"cannot write '{path}': {e.strerror or e}", None) from None


def _refuse_special(path: Path, what: str) -> None:
    """An existing output that is not a regular file (a device such as /dev/null, a FIFO, a socket) is refused:
    the atomic write would replace the node with a regular file (as root, ``-o /dev/null`` breaks the machine)."""
    problem = output_problem(path)
    if problem is not None:
        raise ArchError(f"{what} '{printable(str(path))}' exists and {problem}; refusing to replace it", None,
                        hint="write to a regular file (and copy it where it should go)")


def _check_destination(path: Path, what: str, *, protect: tuple[str | Path, ...] = ()) -> None:
    """Refuse an output path before anything is computed or written: a directory, an existing path that is
    not a regular file, a missing parent folder, or a file that is one of the command's own inputs
    (``protect``: the spec, the weights)."""
    if path.is_dir():
        raise ArchError(f"{what} '{path}' is a directory", None, hint="give a file name, e.g. model.pt")
    _refuse_special(path, what)
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise ArchError(f"cannot write {what} '{path}': '{parent}' is not a directory", None)
    for other in protect:
        q = Path(other)
        try:
            same = q.exists() and path.exists() and path.resolve() == q.resolve()
        except OSError:
            same = False
        if same:
            raise ArchError(f"{what} '{path}' is the input file '{other}'; refusing to overwrite it", None,
                            hint="write the output to another file")


def _spec_file(spec: str) -> str:
    """The file part of a ``file.arch[:network]`` address."""
    from ..lang.loader import split_address
    return split_address(spec)[0]


def _params(set_: list[str], scale: str | None) -> dict:
    """--set values, and --scale as the variant to build (``compile_graph`` picks the row)."""
    params = parse_set(set_)
    if scale is not None:
        params["scale"] = scale
    return params


def _limits(items: list[str]) -> Limits:
    return Limits().with_overrides(items)


def _as_errors(diags: list[Diagnostic]) -> list[Diagnostic]:
    """--strict / -W error: every warning becomes an error (same message, marked as promoted)."""
    return [Diagnostic(d.message + " [-W error]", d.span, "error", d.hint, d.notes) if d.severity == "warning"
            else d for d in diags]
