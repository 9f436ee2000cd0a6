"""The pipeline: spec address -> program -> graph -> {source, summary}. No torch here.

Everything the CLI does without PyTorch goes through these functions, so ``archc check``,
``summary``, ``list`` and ``compile`` never import torch.
"""
from __future__ import annotations

import functools
import json
import math
import multiprocessing
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .lang import ast as A
from .codegen.emit import generate
from .fsutil import atomic_write
from .errors import ArchError, Diagnostic, did_you_mean
from .ir import Graph
from .lang.loader import Program, find_specs, load_program, load_source, split_address
from .library import LIBRARY_PREFIX, is_library_name, library_address, library_index
from .lang.scales import ScaleSettings, check_scales, scale_names, scale_settings
from .limits import Limits
from .lower import lower_network
from .passes import run_checks
from .passes.sizes import fixed_input_size, min_input_size
from .source import Source

__all__ = ["Resolved", "resolve", "compile_graph", "lower_checked", "check_paths", "list_networks", "parse_set",
           "generate_source", "source_with_params", "atomic_write", "network_address", "resolve_kept"]


_SCALED = re.compile(r"(.+\.arch):([A-Za-z_][A-Za-z0-9_]*):([A-Za-z_][A-Za-z0-9_]*)")


@dataclass
class Resolved:
    program: Program
    network: A.NetworkDef
    address: str
    scale: ScaleSettings | None = None      # the variant of a family (``--scale``), if one was asked for


def _pick_network(spec: A.SpecFile, name: str | None, source: Source) -> A.NetworkDef:
    if name is not None:
        if name in spec.networks:
            return spec.networks[name]
        hint = did_you_mean(name, spec.networks) or (
            "networks here: " + ", ".join(spec.networks) if spec.networks else "this file defines no network")
        raise ArchError(f"no network '{name}' in {source.path}", None, hint=hint)
    if len(spec.networks) == 1:
        return next(iter(spec.networks.values()))
    if not spec.networks:
        raise ArchError(f"{source.path} defines no network", None,
                        hint="a spec to build needs 'network name(...):' with an input line")
    raise ArchError(f"{source.path} defines {len(spec.networks)} networks; say which one", None,
                    hint="use " + " or ".join(f"{source.path}:{n}" for n in list(spec.networks)[:3]))


def resolve(spec: str, *, allow_outside: bool = False, limits: Limits | None = None,
            scale: str | None = None) -> Resolved:
    """Parse the spec at ``spec`` (path, ``path:network``, ``path:network:scale``, text, or a library network's
    name: ``resnet50`` or ``zoo:resnet50``, see :mod:`archdsl.library`) and pick its network (and its
    ``scale``: a variant of the network's scales table)."""
    if is_library_name(spec):
        spec = library_address(spec)
    m = _SCALED.fullmatch(spec) if "\n" not in spec else None
    if m is not None and not Path(spec).exists():   # file.arch:network:scale, the address of a family's variant
        spec, picked = f"{m.group(1)}:{m.group(2)}", m.group(3)
        if scale is not None and scale != picked:
            raise ArchError(f"two scales asked for: '{picked}' (in the address) and '{scale}'", None)
        scale = picked
    path, name = split_address(spec)
    source = load_source(path, limits)
    program = load_program(source, allow_outside=allow_outside, limits=limits)
    net = _pick_network(program.root, name, source)
    settings = scale_settings(program.root, net, scale) if scale is not None else None
    return Resolved(program, net, network_address(source.path, net.name), settings)


def resolve_kept(root_path: str, root_key: str, network: str, texts: dict[str, str],
                 links: dict[str, dict[str, str]], *, limits: Limits | None = None) -> Resolved:
    """A program kept as data (:attr:`Program.texts`/``links``, e.g. in a pickled model) parsed again and
    its ``network`` picked, reading no file: the same :class:`Resolved` :func:`resolve` gave when the
    texts were read (``root_path``: the path the spec was given as, ``root_key``: its key in ``texts``)."""
    if root_key not in texts:
        raise ArchError(f"the kept program has no file '{root_key}'", None)
    source = Source(texts[root_key], root_path)
    program = load_program(source, limits=limits, texts=texts, links=links, root_key=root_key)
    net = _pick_network(program.root, network, source)
    return Resolved(program, net, network_address(source.path, net.name))


def network_address(path: str, name: str) -> str:
    return f"{path}:{name}"


def compile_graph(spec: str | Resolved, params: dict[str, Any] | None = None, *,
                  limits: Limits | None = None, input_shape: tuple[int, ...] | None = None,
                  allow_outside: bool = False, scale: str | None = None) -> Graph:
    """Spec -> validated, shape-annotated graph. ``params`` override the network's parameters (and those of
    the ``scale`` variant, whose ``input=`` an explicit ``input_shape`` overrides too)."""
    r = spec if isinstance(spec, Resolved) else resolve(spec, allow_outside=allow_outside, limits=limits)
    net = r.network
    if r.scale is not None and scale is None:
        scale = r.scale.name
    if params and "scale" in params and "scale" not in {p.name for p in net.params}:
        # build(spec, scale="b1"): the variant, where the network has a table and no parameter of that name
        params = dict(params)
        picked = params.pop("scale")
        if scale is not None and picked != scale:
            raise ArchError(f"two scales asked for: '{scale}' and '{picked}'", None)
        scale = str(picked)
    if scale is not None:
        r = Resolved(r.program, net, r.address, scale_settings(r.program.root, net, scale))
    if r.scale is not None:
        params = {**r.scale.params, **(params or {})}
        input_shape = input_shape or r.scale.input_shape
    if input_shape is not None:
        net = _with_input(net, input_shape)
    g = lower_checked(r.program, net, params or {}, limits=limits)
    g.address = r.address
    if r.scale is not None:
        g.address = f"{r.address}:{r.scale.name}"
        g.scale = r.scale.name
        g.reference = r.scale.reference or g.reference
    return g


def lower_checked(program: Program, net: A.NetworkDef, params: dict[str, Any] | None = None, *,
                  limits: Limits | None = None) -> Graph:
    """Lower ``net``, then run the check passes over the graph (the reparam proof, lint).

    Lowering does not depend on the passes (they sit above it); this is the one place that runs both. Raises
    :class:`ArchError` with every error (a group that cannot be fused points at its line); the warnings are
    left in ``graph.warnings``.
    """
    g = lower_network(program, net, params or {}, limits=limits)
    found = run_checks(g, program, net)
    if any(d.severity == "error" for d in found):
        raise ArchError([*g.warnings, *found])
    g.warnings = [*g.warnings, *found]
    return g


def _with_input(net: A.NetworkDef, shape: tuple[int, ...]) -> A.NetworkDef:
    """A copy of ``net`` whose input line is replaced by ``shape`` (for --input)."""
    import copy
    body = list(net.body)
    if body and isinstance(body[0], A.InputStmt):
        sp = body[0].span
        body[0] = A.InputStmt(sp, A.ListExpr(sp, [A.Num(sp, int(v)) for v in shape]))
    new = copy.copy(net)
    new.body = body
    return new


def generate_source(graph: Graph, *, spec: str | None = None, params: dict[str, Any] | None = None,
                    input_shape: tuple[int, ...] | None = None, limits: Limits | None = None,
                    allow_outside: bool = False) -> str:
    """The generated PyTorch source of ``graph``.

    With ``spec`` (the address ``graph`` was compiled from, and the same ``params``/``input_shape``), the
    numeric network parameters that only set root values become constructor arguments of the class, as
    :func:`source_with_params` does: ``type(model)(num_classes=10)``.
    """
    if spec is None:
        return generate(graph, source_note=getattr(graph, "address", graph.name))
    return source_with_params(spec, params or {}, graph, input_shape, limits, allow_outside=allow_outside)


def source_with_params(spec: str | Resolved, params: dict[str, Any], g: Graph, input_shape: tuple[int, ...] | None,
                       limits: Limits | None, *, allow_outside: bool = False) -> str:
    """The generated source, with the numeric network parameters that only set root values (a head's width)
    as constructor arguments of the class: ``type(model)(num_classes=10)``. Each parameter is probed by
    compiling the spec once more with it changed (a few ms per parameter); a probe value the spec rejects
    leaves that parameter fixed."""
    variants: dict[str, Graph] = {}
    for name, value in list(g.params_used.items())[:6]:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        probe = value + 1 if isinstance(value, int) else (value * 0.5 if value else 0.25)
        try:
            variants[name] = compile_graph(spec, {**params, name: probe}, input_shape=input_shape, limits=limits,
                                           allow_outside=allow_outside, scale=g.scale)
        except ArchError:
            continue
    return generate(g, source_note=g.address, variants=variants)


def check_paths(paths: list[str], limits: Limits | None = None,
                params: dict[str, Any] | None = None, *,
                allow_outside: bool = False) -> tuple[list[Diagnostic], int]:
    """Check every network in every file under ``paths``. Returns (diagnostics, networks checked).

    The diagnostics are errors and warnings (see archdsl.lint), each reported once even when several
    networks share the block it points into.
    """
    diags: list[Diagnostic] = []
    count = 0
    files: list[Path] = []
    for p in paths:
        if "\n" not in p and is_library_name(p) and (p.startswith(LIBRARY_PREFIX) or p in library_index()):
            # ``archc check resnet50``: the library's network
            try:
                p = library_address(p)
            except ArchError as e:
                diags.extend(e.diagnostics)
                continue
        if "\n" not in p and not Path(split_address(p)[0]).exists():
            diags.append(Diagnostic(f"no such file or directory: '{p}'", None))
            continue
        if ":" in p and split_address(p)[1]:
            try:
                diags.extend(compile_graph(p, params, limits=limits, allow_outside=allow_outside).warnings)
                count += 1
            except ArchError as e:
                diags.extend(e.diagnostics)
            continue
        found = find_specs(p)
        if not found:
            diags.append(Diagnostic(f"no .arch files under '{p}'", None, "warning"))
        files.extend(found)
    job = functools.partial(_check_file, limits=limits, params=params, allow_outside=allow_outside)
    for file_diags, n in _map_files(job, files):
        diags.extend(file_diags)
        count += n
    return _dedupe(diags), count


def _check_file(f: Path, *, limits: Limits | None, params: dict[str, Any] | None,
                allow_outside: bool) -> tuple[list[Diagnostic], int]:
    """Check every network of one file: (its diagnostics, networks checked)."""
    diags: list[Diagnostic] = []
    count = 0
    try:
        src = load_source(str(f), limits)
        program = load_program(src, allow_outside=allow_outside, limits=limits)
    except ArchError as e:
        return list(e.diagnostics), 0
    table_errors = check_scales(program.root)
    diags.extend(table_errors)
    for net in program.root.networks.values():
        try:
            diags.extend(lower_checked(program, net, _applicable(net, params), limits=limits).warnings)
            count += 1
        except ArchError as e:
            diags.extend(e.diagnostics)
        if table_errors:
            continue
        for name in scale_names(program.root, net.name):   # every variant of a family builds too
            r = Resolved(program, net, network_address(src.path, net.name), scale_settings(program.root, net, name))
            try:
                diags.extend(compile_graph(r, _applicable(net, params), limits=limits).warnings)
                count += 1
            except ArchError as e:
                diags.extend(e.diagnostics)
    return diags, count


def _map_files(job: Any, files: list[Path]) -> list[tuple[list[Diagnostic], int]]:
    """``job`` over the files, in order; a library is checked by forked workers, one per core.

    Files are independent, so checking them in parallel changes nothing but the time. Forking is
    cheap here (archdsl is already imported, torch never is); ``ARCHDSL_JOBS=1`` keeps it serial, and
    platforms without fork always are.
    """
    jobs = int(os.environ.get("ARCHDSL_JOBS", "0") or 0) or min(4, os.cpu_count() or 1)
    if jobs <= 1 or len(files) < 4 or "fork" not in multiprocessing.get_all_start_methods():
        return [job(f) for f in files]
    # big files first, so one long file does not finish last on its own
    order = sorted(range(len(files)), key=lambda i: -files[i].stat().st_size)
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        results = pool.map(job, [files[i] for i in order], chunksize=1)
    out: list[tuple[list[Diagnostic], int]] = [([], 0)] * len(files)
    for i, r in zip(order, results):
        out[i] = r
    return out


def _dedupe(diags: list[Diagnostic]) -> list[Diagnostic]:
    """Drop repeats: a warning inside a shared block is found once per network that uses it."""
    seen: set[tuple[str, str, str | None, int | None, int | None]] = set()
    out = []
    for d in diags:
        key = (d.severity, d.message, d.span.path if d.span else None, d.span.line if d.span else None,
               d.span.col if d.span else None)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _applicable(net: A.NetworkDef, params: dict[str, Any] | None) -> dict[str, Any]:
    if not params:
        return {}
    names = {p.name for p in net.params}
    return {k: v for k, v in params.items() if k in names}


def list_networks(path: str, *, contracts: bool = False) -> list[dict[str, Any]]:
    """Every network under ``path``: its address, default input shape and reference; with ``contracts``
    also ``fixed_input_size`` (the network takes no smaller or larger input than declared, timm's key: a
    ViT's position embedding, Swin's windows) and ``min_input_size`` (timm's key where the network needs a
    size multiple over 32, else None: :func:`archdsl.passes.sizes.min_input_size`).

    A file that does not load (a syntax or import error) does not stop the listing: it gets one entry
    with ``"name": None`` and its first error in ``"error"``.
    """
    out: list[dict[str, Any]] = []
    for f in find_specs(path):
        try:
            src = load_source(str(f))
            program = load_program(src)
        except ArchError as e:
            out.append({"spec": str(f), "name": None, "reference": None, "input": None, "params": {},
                        "error": e.diagnostics[0].format().splitlines()[0]})
            continue
        for net in program.root.networks.values():
            for scale in [None, *scale_names(program.root, net.name)]:
                entry: dict[str, Any] = {"spec": network_address(src.path, net.name), "name": net.name,
                                         "network": net.name,
                                         "reference": net.reference, "input": None,
                                         "params": {p.name: None for p in net.params}}
                try:
                    if scale is None:
                        g = lower_checked(program, net)
                    else:   # a family's variant: its own entry and address (file.arch:network:scale)
                        entry["scale"] = scale
                        entry["spec"] = f"{entry['spec']}:{scale}"
                        entry["name"] = f"{net.name}_{scale}"
                        r = Resolved(program, net, entry["spec"], scale_settings(program.root, net, scale))
                        entry["reference"] = r.scale.reference if r.scale and r.scale.reference else net.reference
                        g = compile_graph(r)
                    entry["input"] = list(g.input_shape)
                    entry["params"] = {k: v for k, v in g.params_used.items() if _jsonable(v)}
                    entry["outputs"] = {k: list(v) for k, v in g.output_shapes.items()}
                    if contracts:
                        entry["fixed_input_size"] = fixed_input_size(g)
                        entry["min_input_size"] = min_input_size(g)
                except ArchError as e:
                    entry["error"] = e.diagnostics[0].format().splitlines()[0]
                out.append(entry)
    return out


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["num_classes=10", "width=0.5", "act=\\"relu\\""]`` -> values, parsed as .arch literals.

    A value is data, never code: a number (finite), ``true``/``false``/``none``, a JSON list of those and of
    strings, a quoted string, or else the text itself. Anything else is a one-line error; lowering then
    checks the value against the limits like any spec value (located at the network).
    """
    out: dict[str, Any] = {}
    for it in items:
        if "=" not in it:
            raise ArchError(f"--set expects name=value, got '{_shown(it)}'", None, hint="e.g. --set num_classes=10")
        k, _, v = it.partition("=")
        k, v = k.strip(), v.strip()
        if not k.isidentifier():
            raise ArchError(f"--set: '{_shown(k)}' is not a parameter name", None)
        out[k] = _literal(k, v)
    return out


def _shown(text: str, limit: int = 80) -> str:
    """``text`` safe to print in a message: control characters escaped, cut at ``limit`` characters."""
    out = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text[:limit])
    return out + ("..." if len(text) > limit else "")


_INT = re.compile(r"[+-]?\d[\d_]*")


def _literal(k: str, v: str) -> Any:
    low = {"true": True, "false": False, "none": None}
    if v in low:
        return low[v]
    if _INT.fullmatch(v):
        try:
            return int(v)
        except ValueError:   # more digits than Python converts (4,300)
            raise ArchError(f"--set {k}: the integer has {len(v):,} digits, too many", None,
                            hint="numbers in a spec are sizes and rates") from None
    try:
        f = float(v)
    except ValueError:
        pass
    else:
        if not math.isfinite(f):
            raise ArchError(f"--set {k}: '{_shown(v)}' is not a finite number", None,
                            hint=f"inf and nan cannot be used in a spec; for the text write --set {k}='\"{_shown(v)}\"'")
        return f
    if v.startswith("["):
        try:
            value = json.loads(v, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            raise ArchError(f"--set {k}: cannot read the list '{_shown(v)}'", None,
                            hint="a JSON list of numbers, strings, true/false/null and lists, e.g. --set sizes=[1,2,3]"
                            ) from None
        bad = _not_data(value)
        if bad is not None:
            raise ArchError(f"--set {k}: the list holds {bad}", None,
                            hint="a list holds numbers, strings, true/false/null and lists")
        return value
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
        return v[1:-1]
    return v


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def _not_data(v: Any) -> str | None:
    """What in a parsed JSON value is not spec data (an object, a non-finite number), or None."""
    stack = [v]
    while stack:
        x = stack.pop()
        if isinstance(x, list):
            stack.extend(x)
        elif isinstance(x, dict):
            return "an object"
        elif isinstance(x, float) and not math.isfinite(x):
            return f"the number {x}"
    return None
