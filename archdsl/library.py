"""The spec library that ships with the package: every network of ``specs/`` by its name.

``archdsl.build("resnet50")``, ``archdsl.build("zoo:resnet50")``, ``archc list`` (no path) and
``archdsl.hub.register_timm()`` find the library here, from any working directory: in an installed wheel the
specs are package data (``archdsl/_specs``, see ``[tool.hatch.build.targets.wheel.force-include]`` in
pyproject.toml); in a source checkout they are the repository's ``specs/`` next to the package.

A name is looked up by scanning the ``network <name>`` headers of the library's files (plain text matching:
nothing is parsed or run), so resolving a name costs a directory read, not a compile. Torch-free.
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from .errors import ArchError, did_you_mean

__all__ = ["LIBRARY_PREFIX", "library_dir", "library_index", "library_address", "is_library_name"]

LIBRARY_PREFIX = "zoo:"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER = re.compile(r"^network[ \t]+([A-Za-z_][A-Za-z0-9_]*)[ \t]*[(:]", re.MULTILINE)
# a family's table: `scales NET:` and its indented `NAME: ...` rows (each variant is `NET:NAME` in the index)
_SCALES = re.compile(r"^scales[ \t]+([A-Za-z_][A-Za-z0-9_]*)[ \t]*:[ \t]*\n((?:[ \t]+[^\n]*\n?|[ \t]*\n)*)",
                     re.MULTILINE)
_ROW = re.compile(r"^[ \t]+([A-Za-z_][A-Za-z0-9_]*)[ \t]*:", re.MULTILINE)


def library_dir() -> Path:
    """The folder holding the shipped specs: ``archdsl/_specs`` when installed, else the checkout's ``specs/``."""
    pkg = Path(__file__).resolve().parent
    for cand in (pkg / "_specs", pkg.parent / "specs"):
        if cand.is_dir():
            return cand
    raise ArchError("the archdsl spec library is missing from this installation", None,
                    hint=f"expected {pkg / '_specs'}; reinstall archdsl (the wheel ships specs/ as package data)")


@lru_cache(maxsize=4)
def _index(root: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for f in sorted(Path(root).rglob("*.arch")):
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):   # such a file is reported when it is compiled, not here
            continue
        for m in _HEADER.finditer(text):
            out.setdefault(m.group(1), f"{f}:{m.group(1)}")
        for m in _SCALES.finditer(text):
            for row in _ROW.finditer(m.group(2)):
                out.setdefault(f"{m.group(1)}:{row.group(1)}", f"{f}:{m.group(1)}:{row.group(1)}")
    return out


def library_index() -> dict[str, str]:
    """Network name -> its spec address (``<library>/resnet.arch:resnet50``), for every shipped network; a
    family's variant is ``network:scale`` (``efficientnet:b1`` -> ``<library>/efficientnet.arch:efficientnet:b1``)."""
    return dict(_index(str(library_dir())))


def is_library_name(spec: str) -> bool:
    """Whether ``spec`` names a library network rather than a file or spec text: ``zoo:<name>``, or a bare
    identifier that is not a file in the working directory."""
    if spec.startswith(LIBRARY_PREFIX):
        return True
    return bool(_NAME.fullmatch(spec)) and not Path(spec).exists()


def library_address(spec: str) -> str:
    """The spec address of the library network ``spec`` (``resnet50`` or ``zoo:resnet50``).

    An unknown name is one :class:`ArchError` with the closest names (or how to list them)."""
    name = spec[len(LIBRARY_PREFIX):] if spec.startswith(LIBRARY_PREFIX) else spec
    index = library_index()
    if name in index:
        return index[name]
    close = did_you_mean(name, index)
    what = (f"no network '{name}' in the archdsl library" if spec.startswith(LIBRARY_PREFIX)
            else f"spec file '{name}' does not exist, nor a network '{name}' in the archdsl library")
    raise ArchError(what, None,
                    hint=close or "'archc list' shows the library's networks; a spec of your own is built "
                                  "by its path ('my.arch:net')")
