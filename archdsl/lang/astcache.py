"""The parse cache: ASTs as JSON, read back by a strict decoder that can only build AST nodes.

Parsing is most of the time of ``archc check`` (a library changes a file at a time), so successful
parses are kept, in memory and on disk, keyed by the grammar, the archdsl version, the source bounds,
the file name and the exact text: like Python's ``.pyc`` files.

Why JSON and not pickle (issue 11): unpickling runs code chosen by whoever wrote the file. A cache
entry here is plain JSON (``json.loads`` builds only dicts, lists, strings and numbers), and
:func:`decode` turns it into AST nodes through a closed table of the dataclasses of
:mod:`archdsl.lang.ast`, checking every field against its type annotation. A damaged, stale or
planted entry therefore yields either a well-typed AST or a miss (then the file is parsed again);
never code, never an exception. The directory is :func:`archdsl.cachedir.cache_dir` ``("ast")``, which
is used only if it is private to the current user; ``ARCHDSL_NO_CACHE=1`` turns the disk cache off.

A well-typed planted entry is still a different model (``conv2d(6)`` read back as ``conv2d(40)``, issue 20),
so every disk entry is sealed with an HMAC keyed by the cache directory's secret
(:func:`archdsl.cachedir.seal`) and read only when it verifies for its own key; a file that is not a regular
file (a FIFO, device, socket or symbolic link) is a miss, opened without blocking and never written through.
Keeping the cache was decided by measurement (``bench/bench_parse.py``, ``bench/results/parse.md``).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, Callable

from ..cachedir import cache_dir, seal, unseal
from ..fsutil import NotRegularFile, atomic_write, output_problem, read_regular
from ..source import Source, Span
from . import ast as A

__all__ = ["cache_key", "encode", "decode", "get", "put", "FORMAT"]

FORMAT = "archdsl-ast-json-1"
_MEMO: dict[str, str] = {}
_MEMO_MAX = 256              # a long-lived process (fuzzing, a notebook) must not grow without end
_MAX_ENTRY = 64 * 1024 * 1024  # a larger entry is not ours: skip it without reading

_CLASSES: dict[str, type] = {name: getattr(A, name) for name in A.__all__
                             if isinstance(getattr(A, name), type) and dataclasses.is_dataclass(getattr(A, name))}


class _Bad(Exception):
    """An entry that does not decode to a well-typed AST (treated as a cache miss)."""


def cache_key(source: Source, grammar_digest: str, salt: str) -> str:
    """The entry name: a hash of the format, grammar+version digest, ``salt`` (limits), path and text."""
    h = hashlib.sha256(f"{FORMAT}\0{grammar_digest}\0{salt}\0".encode())
    h.update(source.path.encode("utf-8", "surrogateescape") + b"\0")
    h.update(source.text.encode("utf-8", "surrogateescape"))
    return h.hexdigest()


# ---- encoding -----------------------------------------------------------------------------------------
def encode(spec: A.SpecFile) -> str:
    """``spec`` as JSON text: nodes ``{"n": class, "f": [fields]}``, spans ``{"s": [...]}``, tuples ``{"t": [...]}``."""
    return json.dumps(_enc(spec), separators=(",", ":"), allow_nan=True)


def _enc(v: Any) -> Any:
    if isinstance(v, Span):
        return {"s": [v.line, v.col, v.end_line, v.end_col]}
    if isinstance(v, A.SpecFile):
        return {"n": "SpecFile", "f": [v.path, _enc(v.imports), _enc(list(v.blocks.values())),
                                       _enc(list(v.networks.values())), _enc(list(v.scales.values()))]}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {"n": type(v).__name__, "f": [_enc(getattr(v, f.name)) for f in dataclasses.fields(v)]}
    if isinstance(v, list):
        return [_enc(x) for x in v]
    if isinstance(v, tuple):
        return {"t": [_enc(x) for x in v]}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise TypeError(f"cannot encode {type(v).__name__} in an AST")  # a new AST field type: extend _enc


# ---- strict decoding ----------------------------------------------------------------------------------
def decode(text: str, source: Source) -> A.SpecFile:
    """The AST encoded in ``text``, with spans into ``source``. Raises ValueError for anything else."""
    try:
        data = json.loads(text)
        spec = _dec_spec(data, source)
    except (_Bad, ValueError, TypeError, RecursionError) as e:
        raise ValueError(f"not a valid AST cache entry: {e}") from None
    return spec


def _dec_spec(data: Any, source: Source) -> A.SpecFile:
    if not (isinstance(data, dict) and data.keys() == {"n", "f"} and data["n"] == "SpecFile"
            and isinstance(data["f"], list) and len(data["f"]) == 5):
        raise _Bad("the top level is not a SpecFile")
    path, imports, blocks, networks, scales = data["f"]
    if not isinstance(path, str):
        raise _Bad("SpecFile.path")
    spec = A.SpecFile(path)
    spec.imports = _typed(imports, list[A.Import], source)
    for d in _typed(blocks, list[A.BlockDef], source):
        if isinstance(d, A.NetworkDef):
            raise _Bad("a network among the blocks")
        spec.blocks[d.name] = d
    for n in _typed(networks, list[A.NetworkDef], source):
        spec.networks[n.name] = n
    for t in _typed(scales, list[A.ScalesDef], source):
        spec.scales[t.network] = t
    return spec


def _typed(v: Any, hint: Any, source: Source) -> Any:
    """Decode ``v`` as a value of type ``hint`` (an annotation of an AST field), or raise _Bad."""
    return _decoder(hint)(v, source)


_Decoder = Callable[[Any, Source], Any]


@functools.lru_cache(maxsize=None)
def _decoder(hint: Any) -> _Decoder:
    """A decoding function for one annotation, built once (the type dispatch is not redone per value)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        alts = typing.get_args(hint)
        nodes = {a.__name__: a for a in alts if isinstance(a, type) and _CLASSES.get(a.__name__) is a}
        others = [_decoder(a) for a in alts if a not in nodes.values()]

        def union(v: Any, source: Source) -> Any:
            if nodes and isinstance(v, dict) and "n" in v:  # a node: its class must be one of the union's
                cls = nodes.get(v["n"]) if isinstance(v["n"], str) else None
                if cls is None:
                    raise _Bad(f"unexpected node {_short(v['n'])} where {hint} belongs")
                return _node(v, cls, source)
            for dec in others:
                try:
                    return dec(v, source)
                except _Bad:
                    continue
            raise _Bad(f"{_short(v)} is none of {hint}")
        return union
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        item = _decoder(item_hint)

        def list_(v: Any, source: Source) -> Any:
            if not isinstance(v, list):
                raise _Bad(f"expected a list, got {_short(v)}")
            return [item(x, source) for x in v]
        return list_
    if origin is tuple:
        parts = tuple(_decoder(a) for a in typing.get_args(hint))

        def tuple_(v: Any, source: Source) -> Any:
            if not (isinstance(v, dict) and v.keys() == {"t"} and isinstance(v["t"], list)
                    and len(v["t"]) == len(parts)):
                raise _Bad(f"expected a {len(parts)}-tuple, got {_short(v)}")
            return tuple(dec(x, source) for x, dec in zip(v["t"], parts))
        return tuple_
    if hint is Span:
        return _span
    if isinstance(hint, type) and _CLASSES.get(hint.__name__) is hint:
        return lambda v, source: _node(v, hint, source)
    if hint in (type(None), bool, int, float, str):
        def scalar(v: Any, source: Source) -> Any:
            # exact types: a bool is not an int here, an int is not a float (JSON keeps them apart)
            if type(v) is not hint:
                raise _Bad(f"expected {hint.__name__}, got {_short(v)}")
            return v
        return scalar
    raise TypeError(f"the AST cache cannot decode fields of type {hint}")  # a new AST field type: extend this


def _span(v: Any, source: Source) -> Span:
    if not (isinstance(v, dict) and v.keys() == {"s"} and isinstance(v["s"], list) and len(v["s"]) == 4):
        raise _Bad("expected a span")
    line, col, end_line, end_col = v["s"]
    if type(line) is not int or type(col) is not int:
        raise _Bad("span line/col")
    if not all(x is None or type(x) is int for x in (end_line, end_col)):
        raise _Bad("span end")
    return Span(source, line, col, end_line, end_col)


def _node(v: Any, want: type, source: Source) -> Any:
    if not (isinstance(v, dict) and v.keys() == {"n", "f"} and isinstance(v["f"], list)):
        raise _Bad(f"expected a {want.__name__} node")
    cls = _CLASSES.get(v["n"]) if isinstance(v["n"], str) else None
    if cls is None or not issubclass(cls, want):  # only the AST's own classes, and only where they fit
        raise _Bad(f"unexpected node {_short(v['n'])} where a {want.__name__} belongs")
    decs = _field_decoders(typing.cast(Any, cls))  # a class is hashable; mypy judges its instances
    if len(v["f"]) != len(decs):
        raise _Bad(f"{cls.__name__} has {len(decs)} fields, not {len(v['f'])}")
    return cls(*[dec(x, source) for x, dec in zip(v["f"], decs)])


@functools.lru_cache(maxsize=None)
def _field_decoders(cls: type) -> tuple[_Decoder, ...]:
    """The decoder of each field of an AST dataclass, in order, from its resolved annotations."""
    resolved = typing.get_type_hints(cls, vars(A))
    return tuple(_decoder(resolved[f.name]) for f in dataclasses.fields(cls))


def _short(v: Any) -> str:
    return repr(v)[:40]


# ---- memory + disk ------------------------------------------------------------------------------------
def get(key: str, source: Source) -> A.SpecFile | None:
    """A fresh AST for ``key`` from memory or disk, or None (a miss; a bad entry is a miss too)."""
    text = _MEMO.get(key)
    if text is None:
        text = _disk_read(key)
    if text is None:
        return None
    try:
        spec = decode(text, source)
    except ValueError:
        _MEMO.pop(key, None)
        return None
    _remember(key, text)
    return spec


def put(key: str, spec: A.SpecFile) -> None:
    """Keep ``spec`` under ``key`` (memory always; disk when the cache directory is private and writable)."""
    try:
        text = encode(spec)
    except (RecursionError, TypeError, ValueError):  # an extreme AST is not worth caching
        return
    _remember(key, text)
    d = cache_dir("ast")
    if d is None:
        return
    path = d / key[:2] / key
    try:
        if os.path.islink(path.parent) or os.path.islink(path) or output_problem(path) is not None:
            return   # a link, FIFO, device or socket where the entry goes: left alone, never written through
        blob = seal(d, key, text.encode("utf-8"))
        if blob is not None:
            atomic_write(path, blob)
    except (OSError, ValueError):  # a full disk must never break compilation
        pass


def _remember(key: str, text: str) -> None:
    if len(_MEMO) >= _MEMO_MAX:
        _MEMO.clear()
    _MEMO[key] = text


def _disk_read(key: str) -> str | None:
    d = cache_dir("ast")
    if d is None:
        return None
    path = Path(d) / key[:2] / key
    try:   # regular files only, opened without blocking (a FIFO here must not hang archc)
        blob = read_regular(path, _MAX_ENTRY, follow=False)
    except (NotRegularFile, OSError, ValueError):
        return None
    if len(blob) > _MAX_ENTRY:
        return None
    payload = unseal(d, key, blob)   # a planted, copied or unsealed entry is a miss
    if payload is None:
        return None
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return None


