"""Spec loading: spec addresses, files, imports and the namespace each block sees.

A spec address is ``path/to/file.arch``, ``path/to/file.arch:network`` or the text of a spec itself.
The rule that tells them apart (:func:`is_spec_text`): a string is spec *text* only if it contains a
line break and is not the name of an existing file; everything else is a path (so a file called
``#bad.arch`` or ``network x.arch`` is always read as a file). Every spec has at least two lines (a
header and an indented body), so no spec text is mistaken for a path.

Imports are resolved relative to the importing file and may not leave the project root
(the directory of the top-level spec) unless explicitly allowed. Files are checked against
:class:`~archdsl.limits.Limits` ``.max_source_bytes`` before they are read.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from . import ast as A
from ..errors import ArchError, Diagnostic, Reporter, did_you_mean
from ..fsutil import NotRegularFile, read_regular
from ..limits import Limits
from .bounds import check_source, count_tokens
from .parser import parse
from ..source import Source, Span

__all__ = ["Namespace", "Program", "load_program", "load_source", "split_address", "find_specs", "is_spec_text",
           "read_source"]


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
    #: every file's text and how each import was resolved (file key -> import path -> file key): all a
    #: program is made of, as data, so it can be compiled again without the files (pickled models)
    texts: dict[str, str] = field(default_factory=dict)
    links: dict[str, dict[str, str]] = field(default_factory=dict)

    def namespace_of(self, d: A.BlockDef) -> Namespace:
        return self.namespaces[d.path]


def _exists(path: str) -> bool:
    try:
        return os.path.lexists(path)
    except (OSError, ValueError):  # a NUL or an over-long name is no existing file
        return False


def is_spec_text(spec: str) -> bool:
    """True when ``spec`` is the text of a spec, not a path: it has a line break and names no existing file."""
    return "\n" in spec and not _exists(spec)


def split_address(spec: str) -> tuple[str, str | None]:
    """``'specs/resnet.arch:resnet50'`` -> (path, network); a path alone, or spec text -> (it, None)."""
    if is_spec_text(spec) or _exists(spec):
        return spec, None
    if ":" in spec:
        head, _, tail = spec.rpartition(":")
        if head.endswith(".arch") and tail.isidentifier():
            return head, tail
    return spec, None


def load_source(spec: str, limits: Limits | None = None) -> Source:
    """A spec path or spec text -> its Source (the rule: see :func:`is_spec_text`)."""
    if is_spec_text(spec):
        return Source(spec, "<spec>")
    if "\0" in spec:
        raise ArchError(f"spec file name '{spec}' contains a NUL character", None)
    p = Path(spec)
    if not p.exists():
        raise ArchError(f"spec file '{spec}' does not exist", None,
                        hint="give a path to a .arch file, 'file.arch:network', or the spec text "
                             "(spec text has a line break)")
    if p.is_dir():
        raise ArchError(f"'{spec}' is a directory; give a .arch file", None)
    return read_source(p, limits, None)


def read_source(path: str | Path, limits: Limits | None = None, span: Span | None = None) -> Source:
    """Read a spec file, never more than ``limits.max_source_bytes``; every failure is an :class:`ArchError`.

    ``span`` is where the file was named (an import statement), for errors that have no place in the
    file itself. A UTF-8 byte-order mark is accepted (and dropped); other encodings are refused; a FIFO
    or device is refused before it is opened (reading it could block or never end).
    """
    limits = limits or Limits()
    name = str(path)
    notes: list[tuple[str, Span | None]] = [("imported here", span)] if span is not None else []
    try:   # opened without blocking and checked on the open file: a FIFO swapped in cannot hang the read
        data = read_regular(path, limits.max_source_bytes)   # (+1 byte, to know the limit was exceeded)
    except NotRegularFile as e:
        raise ArchError(f"'{name}' is {e.kind}, not a regular file", span,
                        hint="give a .arch file (a device, FIFO or socket is never read)") from None
    except (OSError, ValueError) as e:
        raise ArchError(f"cannot read '{name}': {getattr(e, 'strerror', None) or e}", span) from None
    if len(data) > limits.max_source_bytes:
        # located where the limit falls, in the part that was read
        head = Source(data[: limits.max_source_bytes].decode("utf-8-sig", errors="replace"), name)
        last = max(1, len(head.lines))
        raise ArchError(Diagnostic(f"the file is longer than {limits.max_source_bytes:,} bytes",
                                   Span(head, last, len(head.line(last)) + 1), notes=notes,
                                   hint="the limit is Limits.max_source_bytes "
                                        "(raise it with --limit max_source_bytes=N)"))
    try:
        return Source(data.decode("utf-8-sig"), name)
    except UnicodeDecodeError as e:
        raise ArchError(f"'{name}' is not a UTF-8 text file (byte {e.start + 1})", span) from None


def load_program(source: Source, *, allow_outside: bool = False, max_files: int | None = None,
                 limits: Limits | None = None, texts: Mapping[str, str] | None = None,
                 links: Mapping[str, Mapping[str, str]] | None = None, root_key: str | None = None) -> Program:
    """Parse ``source`` and every file it imports (transitively), reporting all errors found.

    ``limits`` bounds each file (size, lines, nesting) and the number of files (``max_files``, which
    the ``max_files`` argument overrides). With ``texts`` and ``links`` (a :class:`Program`'s own, kept as
    data) the imports are taken from them and nothing is read from disk: file key -> text, and file key ->
    import path -> file key; ``root_key`` is then the key of ``source`` (its key when it was first loaded).
    """
    limits = limits or Limits()
    max_files = limits.max_files if max_files is None else max_files
    rep = Reporter()
    files: dict[str, A.SpecFile] = {}
    kept: dict[str, str] = {}
    edges: dict[str, dict[str, str]] = {}
    tokens_left = [limits.max_source_tokens]  # one parse budget for the spec and all it imports
    root_dir = Path(source.path).resolve().parent if source.path != "<spec>" else Path.cwd().resolve()

    def key_of(src: Source) -> str:
        if texts is not None:   # a kept program: the keys it was made with, whatever the directory now
            return root_key if src is source and root_key is not None else src.path
        return src.path if src.path in ("<spec>", "<string>") else _display(Path(src.path))

    def load(src: Source, stack: list[str]) -> A.SpecFile | None:
        k = key_of(src)
        if k in files:
            return files[k]
        try:
            check_source(src, limits)  # the file's own bounds first: they say more than the shared budget
            tokens_left[0] -= count_tokens(src, tokens_left[0], limits.max_source_tokens)
            spec = parse(src, limits)
        except ArchError as e:
            rep.extend(e)
            return None
        for d in [*spec.blocks.values(), *spec.networks.values()]:
            d.path = k
        files[k] = spec
        kept[k] = src.text
        if len(files) > max_files:
            raise ArchError(f"more than {max_files} files imported", None,
                            hint="check for runaway imports; the limit is Limits.max_files")
        for imp in spec.imports:
            if texts is not None:   # a kept program: its own links, never a file
                tk = (links or {}).get(k, {}).get(imp.path, "")
                if not isinstance(tk, str) or tk not in texts:
                    rep.error(f"imported file '{imp.path}' is not part of the kept program", imp.span)
                    continue
            else:
                target = _resolve_import(src, imp, root_dir, allow_outside, rep)
                if target is None:
                    continue
                tk = _display(target)
            edges.setdefault(k, {})[imp.path] = tk
            if tk in stack:
                cycle = " -> ".join(Path(s).name for s in stack[stack.index(tk):] + [tk])
                rep.error(f"import cycle: {cycle}", imp.span, hint="move the shared blocks into a third file")
                continue
            try:
                child = Source(texts[tk], tk) if texts is not None else read_source(tk, limits, imp.span)
            except ArchError as e:
                rep.extend(e)
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
            tk = edges.get(k, {}).get(imp.path)   # as load() resolved it
            if tk is None or tk not in files:
                continue
            other = files[tk]
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
    return Program(root, files, namespaces, kept, edges)


def _resolve_import(src: Source, imp: A.Import, root_dir: Path, allow_outside: bool,
                    rep: Reporter) -> Path | None:
    raw = imp.path
    bad = next((ch for ch in raw if ord(ch) < 0x20 or ord(ch) == 0x7f), None)
    if bad is not None:  # a NUL would make the OS calls below raise; any control character is a mistake
        rep.error(f"import path contains the control character {bad!r}", imp.span,
                  hint="write the file name without control characters")
        return None
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
        # similar names nearby, but never the importing file itself (importing it would be a cycle)
        me = Path(src.path).resolve() if src.path not in ("<spec>", "<string>") else None
        near = [p.name for p in target.parent.glob("*.arch") if p.resolve() != me] if target.parent.is_dir() else []
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
    if p.exists() and not p.is_dir():   # a device, FIFO or socket: listed, so that reading it says what it is
        return [p]
    return sorted(q for q in p.rglob("*.arch") if q.is_file())
