"""``archc``: the command-line compiler. Never prints a traceback for a bad spec.

:mod:`.common` holds the typer app and what the commands share; :mod:`.commands` the commands over one spec
(check, list, summary, compile, deploy, ops, render); :mod:`.design` the design-space ones (diff, migrate,
sweep); :mod:`.fmt` the formatter; :mod:`.importer` ``archc import``. Importing this package registers them all.
"""
from __future__ import annotations

import sys

from . import commands, design, fmt, importer  # noqa: F401  (the commands register themselves on the app)
from .common import _INTERNAL_ERROR, app

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``archc`` script."""
    _INTERNAL_ERROR[0] = False
    try:
        app(args=argv, prog_name="archc")
    except SystemExit as e:
        if e.code == 2 and not _INTERNAL_ERROR[0]:
            # Click's usage errors (an option value that is not a number, an unknown option, a missing
            # argument) exit 2, but status 2 is reserved for archc's internal errors: a usage error is the
            # user's mistake, status 1, after the same message
            sys.exit(1)
        if e.code not in (0, None):
            sys.exit(e.code)
        raise


if __name__ == "__main__":  # pragma: no cover
    main()
