"""``archdsl.import_module``: a PyTorch model in, ``.arch`` text out, proven by a round trip.

The steps: trace (:mod:`.trace`), convert each traced body to spec-level nodes (:mod:`.convert`), one block
per class (:mod:`.blocks`), print (:mod:`.emit`); classes kept whole become plugin ops (:mod:`.plugin`).
Then the text is compiled and checked (:mod:`archdsl.pipeline`), built, the source model's state_dict is
loaded strictly and both models run on the same input: :func:`verify` is :func:`.roundtrip.roundtrip`
(BatchNorm statistics and constant parameters randomized first, so they prove nothing by accident); any
difference is an error naming the stage.
"""
from __future__ import annotations

import copy
import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..errors import ArchError
from .blocks import dedupe
from .convert import convert
from .formindex import form_index
from .emit import print_spec
from .fallback import Where, cannot_import, kept_lines, root_failure, where_of
from .plugin import plugin_ops, plugin_source
from .roundtrip import roundtrip
from .trace import ImportFailure, class_name, is_container, trace_model

__all__ = ["ImportResult", "import_model", "import_module", "verify", "TOLERANCE"]

#: outputs are equal when they differ by at most TOLERANCE * max(1, max |reference|)
TOLERANCE = 1e-4


@dataclass
class ImportResult:
    """The imported spec text, the plugin file's source (None when no class was kept whole) and the
    modules kept as plugins with the reason for each (module path -> why; ``kept_classes``: module path ->
    its class's qualified name)."""

    spec: str
    name: str
    plugin: str | None = None
    kept: dict[str, str] = field(default_factory=dict)
    max_diff: float | None = None
    plugin_ops: list[str] = field(default_factory=list)
    kept_classes: dict[str, str] = field(default_factory=dict)


def _example(example_input: Any) -> Any:
    import torch
    if isinstance(example_input, (tuple, list)) and all(isinstance(v, int) for v in example_input):
        return torch.zeros((1, *example_input))
    if not isinstance(example_input, torch.Tensor):
        raise ArchError("example_input must be a tensor with a batch axis (e.g. torch.randn(1, 3, 224, 224)) "
                        "or a per-sample shape (3, 224, 224)", None)
    return example_input[:1]


def _default_name(model: Any) -> str:
    base = type(model).__name__
    out = "".join(ch if ch.isalnum() else "_" for ch in base).lower() or "net"
    return out if out[0].isalpha() else "net_" + out


#: classes kept whole by retrying an import (:class:`_KeepClass`) at most
MAX_KEEP_RETRIES = 8


class _KeepClass(Exception):
    """An import failed in the code of a module traced through as part of its caller: retry with its class
    kept whole (each call a plugin op bound to it, :mod:`.bound`); ``error`` is the failure to report if not."""

    def __init__(self, cls: str, why: str, error: ArchError) -> None:
        super().__init__(cls)
        self.cls, self.why, self.error = cls, why, error


def import_model(model: Any, example_input: Any, *, name: str | None = None, keep: Iterable[str] = (),
                 check: bool = True, source: str | None = None, paths: dict[str, str] | None = None,
                 auto_keep: bool = True) -> ImportResult:
    """Import ``model`` (an ``nn.Module``) traced on ``example_input``. ``keep`` names classes (by class name
    or qualified name) to keep whole as plugin ops. ``auto_keep``: a module the importer cannot see through
    is kept whole as a plugin op (the reason and source line in ``kept`` and the spec's header) rather than
    failing the import (:mod:`.fallback`); one the model calls with more than a tensor has its class kept
    whole and the import is tried again (at most :data:`MAX_KEEP_RETRIES` classes). ``check`` compiles the
    text and proves the round trip. ``paths`` maps a module name to the folder the plugin must put on
    ``sys.path`` to import it (a FILE.py source). Raises :class:`ArchError` with the module path, class and
    source line of what cannot be imported."""
    example = _example(example_input)
    name = name or _default_name(model)
    if not name.isidentifier():
        raise ArchError(f"--name '{name}' is not an identifier", None)
    extra: dict[str, _KeepClass] = {}          # class -> why it was kept by a retry
    while True:
        try:
            result = _import(model, example, name, set(keep) | set(extra), check, source, paths, auto_keep, extra)
        except _KeepClass as k:
            if k.cls in extra or len(extra) >= MAX_KEEP_RETRIES:
                raise k.error from None
            extra[k.cls] = k
            if os.environ.get("ARCHDSL_IMPORT_DEBUG"):
                print(f"retrying with {k.cls} kept whole: {k.why}")
            continue
        return result


def _keep_or(model: Any, where: Where, why: str, error: ArchError, auto_keep: bool) -> Exception:
    """``error``, or :class:`_KeepClass` when it is in the code of a module (at ``where``) that can be kept
    whole: not the model, not a container."""
    if not auto_keep or not where.path:
        return error
    try:
        m = model.get_submodule(where.path)
    except AttributeError:
        return error
    if m is model or is_container(m) or type(m).__name__ in ("ModuleList", "ModuleDict"):
        return error
    return _KeepClass(class_name(m), why, error)


def _import(model: Any, example: Any, name: str, keep: set[str], check: bool, source: str | None,
            paths: dict[str, str] | None, auto_keep: bool, retried: dict[str, _KeepClass]) -> ImportResult:
    """One try of :func:`import_model` (``retried``: classes kept by earlier tries, with why)."""
    form_keys = {t for (k, t) in form_index() if k == "module"}
    plugins: dict[int, str] = {}
    paths_of: dict[int, str] = {}

    def kept(m: Any) -> bool:
        return id(m) in plugins or type(m).__name__ in keep or class_name(m) in keep

    def leaf(m: Any) -> bool:
        if kept(m) or class_name(m) in form_keys:
            return True
        mod = type(m).__module__
        return mod.startswith("torch.nn") and not is_container(m) and type(m).__name__ not in ("ModuleList", "ModuleDict")

    def fallback(path: str, m: Any, why: str) -> bool:
        if m is model or not path:
            return False
        info = infos.get(id(m)) if infos else None
        if info is not None and (not info.single or info.calls != 1):
            return False
        if not auto_keep:
            raise cannot_import(path, class_name(m), why, keep_hint=True)
        plugins[id(m)] = why
        paths_of[id(m)] = path
        if os.environ.get("ARCHDSL_IMPORT_DEBUG"):
            print(f"kept {path} ({class_name(m)}): {why}")
        return True

    infos: dict[int, Any] = {}
    failures: dict[str, str] = {}

    def on_fail(path: str, m: Any, why: str, where: Where) -> None:
        why += where.text()
        failures[path] = why
        if not path or m is model:
            raise _keep_or(model, where, why, root_failure(class_name(model), why, where), auto_keep)
        if not auto_keep:
            raise cannot_import(where.path or path, where.cls or class_name(m), why, keep_hint=True)
        plugins[id(m)] = why
        paths_of[id(m)] = path

    try:
        infos, bodies = trace_model(model, example, leaf=leaf, on_fail=on_fail)
    except ImportFailure as e:
        w = where_of(e) or Where()
        raise _keep_or(model, w, str(e), root_failure(class_name(model), str(e), w), auto_keep) from None
    for path, why in list(failures.items()):
        m = model.get_submodule(path)
        info = infos.get(id(m))
        if info is None or not info.single or info.calls != 1:
            raise _keep_or(model, Where(path, class_name(m)), why, cannot_import(path, class_name(m), why),
                           auto_keep)
    if "" not in bodies:
        raise ArchError(f"the model ({class_name(model)}) cannot be traced", None)
    try:
        root = convert(bodies[""], bodies, kept, fallback)
    except ImportFailure as e:
        first = retried.get(getattr(e, "kept_class", ""))
        if first is not None:       # a class kept by a retry whose calls cannot be plugin ops: the first cause
            raise first.error from None
        w = where_of(e) or Where()
        raise _keep_or(model, w, str(e), root_failure(class_name(model), str(e), w), auto_keep) from None
    kept_modules = _plugin_modules(root)
    bindings = _bindings(root)
    for m in kept_modules:
        paths_of.setdefault(id(m), _path_of(model, m))
    try:
        shapes: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        for m in kept_modules:
            info = infos.get(id(m))
            b = bindings.get(id(m))
            if b is not None:
                shapes[id(m)] = (b.in_shape, b.out_shape)
            elif info is not None and info.inputs and info.out_shape is not None:
                shapes[id(m)] = (tuple(int(d) for d in info.inputs[0].shape[1:]), info.out_shape)
        ops, uses = plugin_ops(kept_modules, name, shapes, root=model, paths=paths_of, bindings=bindings)
    except ValueError as e:
        raise ArchError(f"a class kept whole cannot be written as a plugin: {e}", None) from None
    _name_plugins(root, uses)           # their arguments are slots: blocks holding them get parameters
    plugin = plugin_source(ops, name, paths or {}) if ops else None
    header = [f"{name}: imported from {source or class_name(model)} by `archc import`.",
              "Labels are the model's module paths: its state_dict loads strictly."]
    reasons = {paths_of[id(m)]: plugins.get(id(m)) or _why_kept(retried, class_name(m))
               for m in kept_modules}
    classes = {paths_of[id(m)]: class_name(m) for m in kept_modules}
    if plugin is not None:
        header.append(f"Load the classes kept whole with --plugin {name}_plugins.py.")
        header += ["Kept whole: " + line for line in kept_lines(reasons, classes)]
    # variants of a class as one block with conditions first; where that cannot be written (or does not
    # check), one block per variant
    for merge in (True, False):
        try:
            text = print_spec(root, dedupe(root, merge), name=name, input_shape=tuple(example.shape[1:]),
                              header=header, plugin_ops={op.name: op.defaults for op in ops})
        except ValueError as e:
            if merge:
                continue
            raise ArchError(f"the model ({class_name(model)}) cannot be written as a spec: {e}", None) from None
        result = ImportResult(text, name, plugin, reasons, plugin_ops=[op.name for op in ops], kept_classes=classes)
        if not check:
            return result
        try:
            result.max_diff = verify(model, result, example)
        except ArchError:
            if merge:
                continue
            raise
        return result
    raise AssertionError("unreachable")


def _name_plugins(body: Any, uses: dict[int, tuple[str, dict[str, Any]]]) -> None:
    """Give each plugin node its op name and arguments."""
    for n in _plugin_nodes(body):
        if id(n.module) in uses:
            n.op, n.args = uses[id(n.module)][0], dict(uses[id(n.module)][1])


def _why_kept(retried: dict[str, _KeepClass], cls: str) -> str:
    k = retried.get(cls)
    return k.why if k is not None else "kept with --keep"


def _plugin_nodes(body: Any) -> Iterator[Any]:
    """Every plugin node of ``body`` and of the bodies it uses, in order."""
    for n in body.nodes:
        if n.kind == "plugin":
            yield n
        if n.child is not None:
            yield from _plugin_nodes(n.child)


def _bindings(body: Any) -> dict[int, Any]:
    """The :class:`~.bound.Binding` of each plugin op's module the model calls with more than a tensor."""
    out: dict[int, Any] = {}
    for n in _plugin_nodes(body):
        if n.bound is not None:
            if id(n.module) in out:
                raise ArchError(f"module {n.label} is called twice (shared weights)", None)
            out[id(n.module)] = n.bound
    return out


def _plugin_modules(body: Any) -> list[Any]:
    """The modules of the plugin nodes, each once, in order."""
    return list({id(n.module): n.module for n in _plugin_nodes(body)}.values())


def _path_of(model: Any, m: Any) -> str:
    for p, sub in model.named_modules():
        if sub is m:
            return p
    return "?"


def verify(model: Any, result: ImportResult, example: Any) -> float:
    """Prove the import with :func:`~archdsl.importer.roundtrip.roundtrip` (check, build, strict load, equal
    outputs; BatchNorm statistics and constant parameters randomized first) on a copy of ``model``, the
    plugin file (if any) loaded from a private temporary folder. Returns the largest output difference;
    raises :class:`ArchError` naming the stage that failed."""
    import torch
    ref = copy.deepcopy(model).eval()
    plugins: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        stem = None
        if result.plugin is not None:
            digest = hashlib.sha256(result.plugin.encode()).hexdigest()[:12]
            stem = f"{result.name}_plugins_{digest}"
            path = Path(tmp) / f"{stem}.py"
            path.write_text(result.plugin)
            plugins.append(str(path))
        # two samples: a batch of one would hide a mix-up of the batch axis
        x = torch.zeros((2, *example.shape[1:]), dtype=example.dtype)
        try:
            r = roundtrip(ref, result.spec, x, name=result.name, rtol_scale=TOLERANCE, plugins=plugins)
        finally:
            # the check's own copy of the plugin goes away: the user loads the written file
            from ..plugins import unregister_op
            for op in result.plugin_ops:
                try:
                    unregister_op(op)
                except (KeyError, ValueError):
                    pass
            if stem is not None:
                sys.modules.pop(stem, None)
    if r.ok:
        assert r.max_diff is not None
        return r.max_diff
    what = {"check": "does not compile", "build": "does not build",
            "load": "does not load the model's state_dict", "outputs": "gives other outputs than the model"}
    raise ArchError(f"the imported spec {what.get(r.stage, 'fails')} (round trip failed at {r.stage}):\n{r.error}",
                    None, hint="an importer bug; please report it with the model")


def import_module(model: Any, example_input: Any, *, name: str | None = None, keep: Iterable[str] = (),
                  plugin_path: str | os.PathLike[str] | None = None, check: bool = True) -> str:
    """The ``.arch`` text of ``model`` (an ``nn.Module``) traced on ``example_input`` (a batched tensor or
    a per-sample shape): one block per module class, labels equal to the module paths (its state_dict
    loads strictly), proven by a round trip when ``check``. Classes named in ``keep``, and classes the
    language cannot express, become plugin ops: their file is written to ``plugin_path`` (required then)."""
    r = import_model(model, example_input, name=name, keep=keep, check=check)
    if r.plugin is not None:
        if plugin_path is None:
            raise ArchError("classes are kept whole as plugin ops: " + ", ".join(f"{k} ({v})" for k, v in r.kept.items()),
                            None, hint="pass plugin_path= to write the plugin file")
        Path(plugin_path).write_text(r.plugin)
    return r.spec
