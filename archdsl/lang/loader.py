"""Spec loading: spec addresses, files, imports and the namespace each block sees.

A spec address is ``path/to/file.arch``, ``path/to/file.arch:network`` or the text of a spec itself.
Imports are resolved relative to the importing file and may not leave the project root
(the directory of the top-level spec) unless explicitly allowed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from . import ast as A
from ..errors import ArchError, Reporter, did_you_mean
from .parser import parse
from ..source import Source

__all__ = ["Namespace", "Program", "load_program", "load_source", "split_address", "find_specs"]


@dataclass
class Namespace:
    """What names a file's blocks can see: its own definitions plus what it imports."""

    path: str
    blocks: dict[str, A.BlockDef] = field(default_factory=dict)


@dataclass
class Program:
    """All files reachable from one spec, parsed, with a namespace per file."""

    root: A.SpecFile
    files: dict[str, A.SpecFile]
    namespaces: dict[str, Namespace]

    def namespace_of(self, d: A.BlockDef) -> Namespace:
        return self.namespaces[d.path]


def split_address(spec: str) -> tuple[str, str | None]:
    """``'specs/resnet.arch:resnet50'`` -> (path, network); a path alone -> (path, None)."""
    if "\n" in spec:
        return spec, None
    if ":" in spec:
        head, _, tail = spec.rpartition(":")
        if head.endswith(".arch") and tail.isidentifier():
            return head, tail
    return spec, None


def load_source(spec: str) -> Source:
    """A spec address or spec text -> its Source (text is recognised by a newline or a keyword)."""
    stripped = spec.lstrip()
    if "\n" in spec or stripped.startswith(("network ", "block ", "import ", "from ", "#")):
        return Source(spec, "<spec>")
    p = Path(spec)
    if not p.exists():
        raise ArchError(f"spec file '{spec}' does not exist", None,
                        hint="give a path to a .arch file, 'file.arch:network', or the spec text")
    if p.is_dir():
        raise ArchError(f"'{spec}' is a directory; give a .arch file", None)
    try:
        return Source.from_file(p)
    except UnicodeDecodeError:
        raise ArchError(f"'{spec}' is not a UTF-8 text file", None) from None


def load_program(source: Source, *, allow_outside: bool = False, max_files: int = 256) -> Program:
    """Parse ``source`` and every file it imports (transitively), reporting all errors found."""
    rep = Reporter()
    files: dict[str, A.SpecFile] = {}
    root_dir = Path(source.path).resolve().parent if source.path != "<spec>" else Path.cwd().resolve()

    def key_of(src: Source) -> str:
        return src.path if src.path in ("<spec>", "<string>") else _display(Path(src.path))

    def load(src: Source, stack: list[str]) -> A.SpecFile | None:
        k = key_of(src)
        if k in files:
            return files[k]
        try:
            spec = parse(src)
        except ArchError as e:
            rep.extend(e)
            return None
        for d in [*spec.blocks.values(), *spec.networks.values()]:
            d.path = k
        files[k] = spec
        if len(files) > max_files:
            raise ArchError(f"more than {max_files} files imported", None,
                            hint="check for runaway imports; the limit is Limits.max_files")
        for imp in spec.imports:
            target = _resolve_import(src, imp, root_dir, allow_outside, rep)
            if target is None:
                continue
            tk = _display(target)
            if tk in stack:
                cycle = " -> ".join(Path(s).name for s in stack[stack.index(tk):] + [tk])
                rep.error(f"import cycle: {cycle}", imp.span, hint="move the shared blocks into a third file")
                continue
            try:
                child = Source.from_file(tk)
            except (OSError, UnicodeDecodeError) as e:
                rep.error(f"cannot read '{imp.path}': {e}", imp.span)
                continue
            load(child, stack + [tk])
        return spec

    root = load(source, [key_of(source)])
    rep.raise_if_errors()
    assert root is not None
    namespaces: dict[str, Namespace] = {}
    for k, spec in files.items():
        ns = Namespace(k)
        for imp in spec.imports:
            target = _resolve_import(Source("", k), imp, root_dir, allow_outside, Reporter())
            if target is None or _display(target) not in files:
                continue
            other = files[_display(target)]
            if imp.names is None:
                for name, d in other.blocks.items():
                    ns.blocks.setdefault(name, d)
            else:
                for name, span in imp.names:
                    if name in other.blocks:
                        ns.blocks[name] = other.blocks[name]
                    else:
                        rep.error(f"'{imp.path}' defines no block '{name}'", span,
                                  hint=did_you_mean(name, other.blocks) or
                                  "defined there: " + (", ".join(sorted(other.blocks)) or "nothing"))
        for name, d in spec.blocks.items():
            ns.blocks[name] = d  # own definitions shadow imported ones
        namespaces[k] = ns
    rep.raise_if_errors()
    return Program(root, files, namespaces)


def _resolve_import(src: Source, imp: A.Import, root_dir: Path, allow_outside: bool,
                    rep: Reporter) -> Path | None:
    raw = imp.path
    if not raw.endswith(".arch"):
        rep.error(f"can only import .arch files, not '{raw}'", imp.span)
        return None
    if os.path.isabs(raw) or raw.startswith("~"):
        # even with --allow-outside: a spec that names absolute paths does not work on another machine
        rep.error(f"absolute import path '{raw}' is not allowed", imp.span,
                  hint="import relative to the importing file, e.g. import \"blocks.arch\"")
        return None
    base = Path(src.path).resolve().parent if src.path not in ("<spec>", "<string>") else root_dir
    target = (base / raw).resolve()
    if not allow_outside:
        try:
            target.relative_to(root_dir)
        except ValueError:
            rep.error(f"import '{raw}' leaves the spec's directory", imp.span,
                      hint="keep imported files in the spec's directory or below it "
                           "(or allow it with --allow-outside)")
            return None
    if not target.is_file():
        near = [p.name for p in target.parent.glob("*.arch")] if target.parent.is_dir() else []
        rep.error(f"imported file '{raw}' not found", imp.span,
                  hint=did_you_mean(Path(raw).name, near))
        return None
    return target


def _display(p: Path) -> str:
    """How a file is named in messages: relative to the working directory when it is below it."""
    full = p.resolve()
    try:
        return str(full.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(full)


def find_specs(path: str | Path) -> list[Path]:
    """Every .arch file under ``path`` (or ``path`` itself), sorted."""
    p = Path(path)
    if p.is_file():
        return [p]
    return sorted(q for q in p.rglob("*.arch") if q.is_file())
