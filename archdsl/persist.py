"""Pickling compiled models by spec, not by source: a pickle carries data, and unpickling compiles it.

A model made by ``archdsl.build``, ``archdsl.deploy`` or the hub's entry points pickles (``pickle``,
``copy.deepcopy``, ``torch.save(model)``, spawn-based multiprocessing) as:

- a **recipe**, plain data: the texts of the spec and of every file it imports (and how each import was
  resolved), the network's name, the parameters it was built with (``num_classes=10``, ``--set``), the input
  shape, how the module was derived from the graph (feature taps, a deploy form) and the digest of the
  generated source;
- the **plugin factories** its ops use, pickled by reference like any class (``attention.ECA``), so the
  unpickler imports their modules by name exactly as it would for a plugin module held in the model — and
  decides, if it restricts what it imports; archdsl itself imports nothing a pickle names;
- the module's **state** (parameters, buffers, submodules), restored as for any ``nn.Module``.

:func:`rebuild_model` compiles the recipe with archdsl's own compiler (parse, lower, check, generate: specs
are data, bounded by the default :class:`~archdsl.limits.Limits`), checks that the generated source has the
recorded digest, and returns an empty instance of the class the state then fills. No source text from the
pickle is ever executed, so an unpickler that allows ``archdsl.persist.rebuild_model`` runs no code it did
not choose. A plugin op must be registered in the unpickling process by the factory the pickle names (its
module, once imported, registers it); another factory under that op name is refused.

This module is torch-free when imported; torch is imported when a model is pickled or rebuilt.
"""
from __future__ import annotations

import copy
import math
import pickle
from typing import Any, Mapping, Sequence, cast

from .errors import ArchError
from .ir import Graph
from .limits import Limits
from .pipeline import Resolved, compile_graph, resolve_kept, source_with_params

__all__ = ["remember", "remember_deploy", "rebuild_model", "FORMAT"]

#: The recipe format; a recipe of another format is refused (with a message), never guessed at.
FORMAT = 1
_FORMS = ("params", "plain", "features", "features-list")
_GRAPHS: dict[str, Graph] = {}   # source digest -> the graph, for models rebuilt in the process that built them
_MAX_GRAPHS = 64


def remember(model: Any, resolved: Resolved, graph: Graph, *, params: Mapping[str, Any] | None = None,
             input_shape: Sequence[int] | None = None, form: str = "params",
             out_indices: Sequence[int] | None = None, labels: Sequence[str] | None = None) -> Any:
    """Make ``model`` (just instantiated from ``graph``, compiled from ``resolved``) pickle by spec; returns it.

    ``form`` says how its source was generated from the graph: ``"params"`` (:func:`source_with_params`, what
    ``archdsl.build`` does), ``"plain"`` (``generate(graph)``, the hub's models) or ``"features"`` (the
    graph's :func:`~archdsl.passes.features.feature_taps` with ``out_indices``/``labels``)."""
    from .codegen.build import source_digest
    prog = resolved.program
    if graph.scale is not None and "scale" not in (params or {}):   # a family's variant (file:net:scale)
        params = {**(params or {}), "scale": graph.scale}
    root_key = next(k for k, f in prog.files.items() if f is prog.root)
    recipe: dict[str, Any] = {
        "format": FORMAT, "root_path": resolved.address.rpartition(":")[0], "root_key": root_key,
        "network": resolved.network.name, "texts": dict(prog.texts),
        "links": {k: dict(v) for k, v in prog.links.items()},
        "params": dict(params or {}), "input_shape": list(input_shape) if input_shape is not None else None,
        "form": form, "out_indices": list(out_indices) if out_indices is not None else None,
        "labels": list(labels) if labels is not None else None, "deploy": None,
        "digest": source_digest(type(model).__archdsl_source__),
    }
    if all(isinstance(k, str) and _data(v) for k, v in recipe["params"].items()):
        _install(type(model), recipe, graph)   # else pickling it says it cannot (a parameter is no spec value)
    return model


def remember_deploy(deployed: Any, trained: Any) -> Any:
    """Make a deploy form (``archdsl.deploy(trained)``) pickle by spec: the trained model's recipe plus the
    deploy options it was made with (checked to give its source). A deploy form of a model that does not
    pickle by spec, or a compiled (``torch.compile``) one, is left as it is."""
    from .codegen.build import source_digest
    base = getattr(type(trained), "__archdsl_recipe__", None)
    info = getattr(deployed, "deploy_info", None)
    if base is None or not isinstance(info, dict) or info.get("compiled") or \
            not hasattr(type(deployed), "__archdsl_source__"):
        return deployed
    dtype = info.get("dtype") if info.get("dtype") in ("bfloat16", "float16") else None
    recipe = dict(base, deploy={"fold_bn": bool(info.get("fold_bn", True)),
                                "memory_format": str(info.get("memory_format")), "dtype": dtype},
                  digest=source_digest(type(deployed).__archdsl_source__))
    graph = getattr(deployed, "arch_graph", None)
    try:
        src = _deploy_source(trained.arch_graph, recipe["deploy"])
    except (ArchError, ValueError):
        return deployed
    if source_digest(src) == recipe["digest"] and isinstance(graph, Graph):
        _install(type(deployed), recipe, graph)
    return deployed


def _install(cls: type, recipe: dict[str, Any], graph: Graph) -> None:
    from .codegen.build import generated_classes
    from .ops.user import user_ops
    used = {n.op for n in graph.records()}
    plugins = tuple((name, op.factory) for name, op in sorted(user_ops().items()) if name in used)
    for c in generated_classes(cls):
        c.__archdsl_recipe__ = recipe       # type: ignore[attr-defined]
        c.__archdsl_plugins__ = plugins     # type: ignore[attr-defined]
        c.__archdsl_pickle__ = _reduce_ex   # type: ignore[attr-defined]
    if len(_GRAPHS) >= _MAX_GRAPHS:
        _GRAPHS.pop(next(iter(_GRAPHS)))
    _GRAPHS[recipe["digest"]] = graph


def _reduce_ex(self: Any, protocol: int) -> tuple[Any, ...]:
    cls = type(self)
    state = dict(self.__dict__)
    with_graph = isinstance(state.pop("arch_graph", None), Graph)   # compiled again, never unpickled
    return (rebuild_model, (cls.__archdsl_recipe__, cls.__qualname__, cls.__archdsl_plugins__, with_graph),
            state)


def rebuild_model(recipe: Any, qualname: Any, plugins: Any = (), with_graph: Any = False) -> Any:
    """Unpickling: compile ``recipe`` (see the module docstring) and return an empty instance of its class
    ``qualname`` (with ``arch_graph`` set when ``with_graph``). Raises :class:`pickle.UnpicklingError` for
    a recipe that is not well-formed data, and :class:`ArchError` when its spec does not compile here."""
    r = _valid(recipe)
    if not isinstance(qualname, str) or not qualname.isidentifier():
        raise pickle.UnpicklingError("an archdsl pickle names its class by an identifier")
    from .codegen.build import cached_module
    mod = cached_module(r["digest"])
    graph = _GRAPHS.get(r["digest"]) if mod is not None else None
    if mod is None or (with_graph and graph is None):
        mod, graph = _compile(r, plugins)
    cls: Any = getattr(mod, qualname, None)
    if not isinstance(cls, type) or cls.__module__ != mod.__name__:
        raise pickle.UnpicklingError(f"the spec's generated code has no class '{qualname}'")
    obj: Any = cast(Any, cls).__new__(cls)   # an empty instance: the pickled state fills it
    if with_graph and graph is not None:
        obj.__dict__["arch_graph"] = copy.deepcopy(graph)
    return obj


def _compile(r: dict[str, Any], plugins: Any) -> tuple[Any, Graph]:
    """The module and graph of a valid recipe, compiled from its spec texts (and checked to be the one the
    model was pickled with)."""
    from .codegen.build import load_source, source_digest
    from .codegen.emit import generate
    _check_plugins(plugins)
    res = resolve_kept(r["root_path"], r["root_key"], r["network"], r["texts"], r["links"], limits=Limits())
    shape = tuple(r["input_shape"]) if r["input_shape"] is not None else None
    g = compile_graph(res, dict(r["params"]), input_shape=shape, limits=Limits())
    if r["form"] in ("features", "features-list"):   # the graph archdsl.build(features_only=True) built
        from .codegen.model_api import features_graph
        g, _ = features_graph(g, out_indices=r["out_indices"], labels=r["labels"],
                              as_list=r["form"] == "features-list")
    if r["form"] in ("features", "features-list", "plain"):   # what instantiate(graph) generates
        src = generate(g, source_note=getattr(g, "address", g.name))
    else:
        src = source_with_params(res, dict(r["params"]), g, shape, Limits())
    if r["deploy"] is not None:
        from .passes.deploy import deploy_plan
        src = _deploy_source(g, r["deploy"])
        g = deploy_plan(g, fold_bn=r["deploy"]["fold_bn"]).graph
    if source_digest(src) != r["digest"]:
        raise ArchError("the pickled model's spec compiles to other code with this archdsl version than with the "
                        "one that pickled it", None,
                        hint="load it where it was made and save its state_dict; build the spec here with "
                             "archdsl.build and load that state_dict")
    mod = load_source(src, g.name)
    classes = [c for c in vars(mod).values() if isinstance(c, type) and c.__module__ == mod.__name__]
    if classes and not hasattr(classes[0], "__archdsl_recipe__"):
        _install(classes[0], r, g)   # so the rebuilt model pickles again
    return mod, g


def _deploy_source(graph: Graph, opts: Mapping[str, Any]) -> str:
    from .codegen.emit import generate
    from .passes.deploy import deploy_note, deploy_plan
    plan = deploy_plan(graph, fold_bn=opts["fold_bn"])
    return generate(plan.graph, source_note=deploy_note(graph), memory_format=opts["memory_format"],
                    dtype=opts["dtype"], inference=True)


def _check_plugins(plugins: Any) -> None:
    """Every plugin factory the pickle names must be the registered factory of its op (importing its module,
    which the unpickler did to give us the object, registers it); nothing else is loaded."""
    from .ops.user import user_ops
    if not isinstance(plugins, tuple) or len(plugins) > 1024:
        raise pickle.UnpicklingError("an archdsl pickle lists its plugin ops as a tuple")
    ops = user_ops()
    for item in plugins:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise pickle.UnpicklingError("an archdsl pickle lists its plugin ops as (name, factory) pairs")
        name, factory = item
        op = ops.get(name)
        if op is None or op.factory is not factory:
            where = f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', '?')}"
            raise ArchError(f"the pickled model uses plugin op '{name}' ({where}), which is "
                            + ("not registered here" if op is None else f"registered here by {op.where()}"), None,
                            hint="import the plugin module that registers it before unpickling (archdsl "
                                 "imports nothing a pickle names)")


# ---- validation: a recipe is data, checked before any of it is used ----------------------------------------
def _valid(recipe: Any) -> dict[str, Any]:
    lim = Limits()
    bad = pickle.UnpicklingError
    if not isinstance(recipe, dict) or recipe.get("format") != FORMAT:
        raise bad(f"not an archdsl model pickle of format {FORMAT}")
    r = dict(recipe)
    for k in ("root_path", "root_key", "network", "digest", "form"):
        if not isinstance(r.get(k), str) or len(r[k]) > 4096:
            raise bad(f"an archdsl pickle's '{k}' must be a string")
    if r["form"] not in _FORMS or not r["network"].isidentifier():
        raise bad("an archdsl pickle names an unknown form or network")
    texts, links = r.get("texts"), r.get("links")
    if not isinstance(texts, dict) or not 1 <= len(texts) <= lim.max_files or not all(
            isinstance(k, str) and isinstance(v, str) and len(v) <= lim.max_source_bytes for k, v in texts.items()):
        raise bad("an archdsl pickle's spec texts must be at most Limits().max_files strings")
    if not isinstance(links, dict) or not all(
            isinstance(k, str) and isinstance(v, dict) and all(isinstance(a, str) and isinstance(b, str)
                                                               for a, b in v.items()) for k, v in links.items()):
        raise bad("an archdsl pickle's import links must map strings to strings")
    if not isinstance(r.get("params"), dict) or not all(isinstance(k, str) and k.isidentifier() and _data(v)
                                                        for k, v in r["params"].items()):
        raise bad("an archdsl pickle's parameters must be spec values")
    shape = r.get("input_shape")
    if shape is not None and not (isinstance(shape, list) and 1 <= len(shape) <= 4 and all(
            type(d) is int and 1 <= d <= lim.max_channels for d in shape)):
        raise bad("an archdsl pickle's input shape must be a list of positive ints")
    if r.get("out_indices") is not None and not (isinstance(r["out_indices"], list) and len(r["out_indices"]) <= 64
                                                 and all(type(i) is int for i in r["out_indices"])):
        raise bad("an archdsl pickle's out_indices must be a list of ints")
    if r.get("labels") is not None and not (isinstance(r["labels"], list) and len(r["labels"]) <= 64
                                            and all(isinstance(s, str) and len(s) < 1024 for s in r["labels"])):
        raise bad("an archdsl pickle's labels must be a list of strings")
    dep = r.get("deploy")
    if dep is not None and not (isinstance(dep, dict) and set(dep) == {"fold_bn", "memory_format", "dtype"}
                                and isinstance(dep["fold_bn"], bool)
                                and dep["memory_format"] in ("contiguous", "channels_last")
                                and dep["dtype"] in (None, "bfloat16", "float16")):
        raise bad("an archdsl pickle's deploy options are not ones archdsl.deploy writes")
    return r


def _data(v: Any, depth: int = 0) -> bool:
    """A value a spec parameter can take (what ``--set`` and ``build(**params)`` accept)."""
    if v is None or isinstance(v, (bool, int, str)):
        return not isinstance(v, str) or len(v) <= 4096
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, (list, tuple)) and depth < 8 and len(v) <= 4096:
        return all(_data(x, depth + 1) for x in v)
    return False
