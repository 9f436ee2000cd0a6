"""``archc fmt``: write specs in the one canonical layout of the language (docs/fmt.md). Never imports torch."""
from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path
from typing import List

import typer

from ..errors import ArchError, Diagnostic
from ..lang.fmt import format_text
from ..lang.loader import find_specs, read_source
from ..source import printable

from .common import app, err, LimitOpt, _guard, _limits, _write_output

__all__: list[str] = []   # the command registers itself on ``app``

STDIN = "-"


@app.command("fmt")
def fmt(files: List[str] = typer.Argument(..., help="spec files or directories (every .arch below); "
                                          "- formats stdin to stdout"),
        check: bool = typer.Option(False, "--check", help="write nothing; list the files that would change and "
                                   "exit 1 if any would"),
        diff: bool = typer.Option(False, "--diff", help="write nothing; print a unified diff of the changes"),
        limit: List[str] = LimitOpt) -> None:
    """Rewrite specs in the canonical layout: 4-space indents, one space around operators and ->, minimal
    parentheses, long lines wrapped inside brackets, comments kept where they were. The result parses to
    the same AST as the input. A file with a syntax error is reported (file:line:col) and nothing is written."""
    def run() -> int:
        limits = _limits(limit)
        targets: list[str] = []
        missing: list[Diagnostic] = []
        for f in files:
            if f == STDIN:
                targets.append(f)
            elif not Path(f).exists():
                missing.append(Diagnostic(f"no such file or directory: '{printable(f)}'", None))
            else:
                targets.extend(str(p) for p in find_specs(f))
        if missing:
            raise ArchError(missing)
        if not targets:
            raise ArchError(f"no .arch files in {', '.join(printable(f) for f in files)}", None)
        # every file is formatted before anything is written: one error anywhere writes nothing
        results: list[tuple[str, str, str]] = []
        diags: list[Diagnostic] = []
        for t in dict.fromkeys(targets):
            try:
                text = sys.stdin.read() if t == STDIN else read_source(t, limits).text
                results.append((t, text, format_text(text, "<stdin>" if t == STDIN else t, limits)))
            except ArchError as e:
                diags.extend(e.diagnostics)
        if diags:
            raise ArchError(diags)
        changed = [(t, old, new) for t, old, new in results if old != new]
        if diff:
            for t, old, new in changed:
                name = "<stdin>" if t == STDIN else t
                sys.stdout.writelines(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                                           fromfile=name, tofile=f"{name} (formatted)"))
        if check:
            for t, _, _ in changed:
                err.print(f"would reformat {printable('<stdin>' if t == STDIN else t)}", markup=False)
            _summary(len(changed), len(results) - len(changed), "would be reformatted", "would be left unchanged")
            return 1 if changed else 0
        if diff:
            return 0
        for t, _, new in results:
            if t == STDIN:
                sys.stdout.write(new)
        for t, _, new in changed:
            if t != STDIN:
                # through a symlink to the file it names (the link stays a link), keeping the file's mode
                target = Path(t).resolve()
                mode = target.stat().st_mode & 0o7777
                _write_output(target, new)
                os.chmod(target, mode)
                err.print(f"reformatted {printable(t)}", markup=False)
        if STDIN not in targets or len(results) > 1:
            files_changed = sum(1 for t, _, _ in changed if t != STDIN)
            _summary(files_changed, len([r for r in results if r[0] != STDIN]) - files_changed,
                     "reformatted", "left unchanged")
        return 0
    _guard(run)


def _summary(n_changed: int, n_same: int, changed: str, same: str) -> None:
    def files(n: int) -> str:
        return f"{n} file{'s' if n != 1 else ''}"
    err.print(f"{files(n_changed)} {changed}, {files(n_same)} {same}.", markup=False)

