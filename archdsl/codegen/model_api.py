"""timm's model API on every built network (imports torch): methods the generated network class gets when
its source is loaded (:func:`install`), not text in the generated source, which depends on torch only.

* ``set_grad_checkpointing(enable=True)``: the forward of every block (:func:`block_paths`) runs under
  ``torch.utils.checkpoint`` (activations recomputed in backward), as timm's ``checkpoint_seq`` does.
* ``group_matcher(coarse=False)``: stem / blocks / head groups for layer-wise learning-rate decay
  (``timm.optim.param_groups_layer_decay``); timm's own for a ``timm.X`` reference (same module paths),
  else derived from the blocks (:class:`BlockMatcher`).
* ``forward_intermediates(x, indices, norm, output_fmt, intermediates_only, stop_early)``: timm's semantics
  over the network's feature levels (:func:`feature_levels`).
* ``feature_levels()``: the levels -- timm's for a ``timm.X`` reference, else the stage taps.
"""
from __future__ import annotations

import functools
import re
from typing import Any, Callable, Sequence

import torch
import torch.utils.checkpoint
from torch import nn

from ..ir import Graph
from ..passes.features import FeatureInfo, feature_taps
from ..passes.head import head_features
from ..passes.sizes import fixed_input_size, min_input_size, shapes_at

__all__ = ["features_graph", "install", "bind", "block_paths", "BlockMatcher", "reference_levels", "feature_levels", "set_grad_checkpointing",
           "group_matcher", "forward_intermediates", "features_model", "graph_cfg"]


_INSTANTIATE: list[Callable[[Graph], Any]] = []


def bind(instantiate: Callable[[Graph], Any]) -> None:
    """Set the function building a graph's module (:func:`archdsl.codegen.build.instantiate`, which installs
    this API on the classes it loads: it is handed over, not imported, so the two modules stay acyclic)."""
    _INSTANTIATE[:] = [instantiate]


def _builder() -> Callable[[Graph], Any]:
    if not _INSTANTIATE:
        from importlib import import_module
        import_module("archdsl.codegen.build")   # binds itself on import
    return _INSTANTIATE[0]


# ---- the reference's facts (timm models with the same module paths) ---------------------------------------
def _timm_name(reference: str | None) -> str | None:
    family, _, name = (reference or "").partition(".")
    return name if family == "timm" and name else None


@functools.lru_cache(maxsize=64)
def _timm_facts(name: str) -> dict[str, Any] | None:
    """timm's feature levels (all of them, and the indices features_only taps by default) and group
    matchers of model ``name``; None without timm or for a model it cannot build."""
    try:
        import timm
        with torch.no_grad():
            feat = timm.create_model(name, pretrained=False, features_only=True)
            model = timm.create_model(name, pretrained=False)
    except Exception:   # noqa: BLE001 - no timm, an unknown name, a model without features_only
        return None
    fi: Any = feat.feature_info
    levels = [{k: d[k] for k in ("num_chs", "reduction", "module")} for d in fi.info]
    matcher = getattr(model, "group_matcher", None)
    return {"levels": levels, "default": tuple(fi.out_indices),
            "matcher": {c: matcher(coarse=c) for c in (False, True)} if matcher is not None else None}


def reference_levels(reference: str | None) -> tuple[list[dict[str, Any]], tuple[int, ...]] | None:
    """timm's feature levels of ``reference`` (``timm.X``) and its default ``out_indices``, or None."""
    name = _timm_name(reference)
    facts = _timm_facts(name) if name else None
    return (facts["levels"], facts["default"]) if facts else None


def feature_levels(graph: Graph) -> FeatureInfo:
    """All feature levels of ``graph`` (timm's where the reference is timm's and fits, else the stage taps)."""
    ref = reference_levels(graph.reference)
    _, info = feature_taps(graph, levels=ref[0] if ref else None)
    return info


# ---- blocks, gradient checkpointing, group matcher ---------------------------------------------------------
def _numbered(m: nn.Module) -> bool:
    names = [n for n, _ in m.named_children()]
    return bool(names) and all(n.isdigit() for n in names)


def block_paths(model: nn.Module) -> list[str]:
    """The module paths of the network's blocks, in order: the children of numbered containers
    (``layer1.0``, ``blocks.3``, ``features.1.0``) that hold parameters and are neither single layers nor
    numbered containers themselves (those are looked into); nothing inside a block is a block."""
    out: list[str] = []

    def walk(m: nn.Module, prefix: str) -> None:
        numbered = _numbered(m)
        for name, child in m.named_children():
            path = f"{prefix}.{name}" if prefix else name
            leaf = not any(True for _ in child.children())
            if numbered and not leaf and not _numbered(child) and any(True for _ in child.parameters()):
                out.append(path)
            elif not leaf:
                walk(child, path)

    walk(model, "")
    return out


class _Checkpointed:
    """A block's forward run under ``torch.utils.checkpoint`` while gradients are recorded."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, *args: Any) -> Any:
        fwd = type(self.module).forward
        if torch.is_grad_enabled() and not torch.jit.is_scripting():
            return torch.utils.checkpoint.checkpoint(fwd, self.module, *args, use_reentrant=False)
        return fwd(self.module, *args)


def set_grad_checkpointing(self: nn.Module, enable: bool = True) -> None:
    """Run each block (:func:`block_paths`) under ``torch.utils.checkpoint`` in training, as timm does:
    the same outputs and gradients, the blocks' activations recomputed in backward. ``False`` undoes it."""
    paths = block_paths(self)
    if enable and not paths:
        raise RuntimeError(f"{type(self).__name__} has no blocks to checkpoint")
    for p in paths:
        m = self.get_submodule(p)
        if enable:
            m.__dict__["forward"] = _Checkpointed(m)
        else:
            m.__dict__.pop("forward", None)
    self.__dict__["grad_checkpointing"] = bool(enable)


class BlockMatcher:
    """A timm group matcher (a callable: parameter name -> ordinal) from the blocks of a model: the
    parameters before the first block are the stem (0,), block k is (1, k) (with ``coarse``, the blocks of
    one numbered container are one group), what follows the last block in ``forward_features`` is
    (1, 99999), the classifier ``inf``."""

    def __init__(self, model: nn.Module, coarse: bool = False) -> None:
        self.blocks = block_paths(model)
        self.coarse = coarse
        names = [n for n, _ in model.named_parameters()]
        head = getattr(model, "get_classifier", None)
        cls_path = next((p for p, m in model.named_modules() if head is not None and m is head()), None) \
            if head is not None else None
        self.head_prefix = (cls_path.split(".")[0] + ".") if cls_path else None
        stages = {b.rpartition(".")[0] for b in self.blocks}
        self.stage_of = {b: sorted(stages).index(b.rpartition(".")[0]) for b in self.blocks}
        self.order: dict[str, tuple[float, ...]] = {}
        seen_block = False
        for n in names:
            b = next((k for k, p in enumerate(self.blocks) if n.startswith(p + ".")), None)
            if b is not None:
                seen_block = True
                self.order[n] = (1.0, float(self.stage_of[self.blocks[b]] if coarse else b))
            elif self.head_prefix and n.startswith(self.head_prefix):
                self.order[n] = (float("inf"),)
            else:
                self.order[n] = (1.0, 99999.0) if seen_block else (0.0,)

    def __call__(self, name: str) -> tuple[float, ...]:
        return self.order.get(name, (float("inf"),))

    def __repr__(self) -> str:
        return f"BlockMatcher(blocks={len(self.blocks)}, coarse={self.coarse})"


def group_matcher(self: nn.Module, coarse: bool = False) -> Any:
    """timm's group matcher: the timm reference's own (its regexes name the same module paths), else a
    :class:`BlockMatcher` derived from the blocks."""
    graph = getattr(self, "arch_graph", None)
    name = _timm_name(getattr(graph, "reference", None) or getattr(self, "reference", None))
    facts = _timm_facts(name) if name else None
    if facts and facts["matcher"] is not None:
        m = facts["matcher"][bool(coarse)]
        params = [n for n, _ in self.named_parameters()]
        if _matches_all(m, params):
            return m
    return BlockMatcher(self, coarse)


def _matches_all(matcher: Any, names: list[str]) -> bool:
    """The regexes of a timm matcher dict group the model's own parameters (its module paths are timm's)."""
    if not isinstance(matcher, dict):
        return callable(matcher)
    pats = []
    for spec in matcher.values():
        if spec is None:
            continue
        pats += [re.compile(s[0]) for s in spec] if isinstance(spec, (list, tuple)) else [re.compile(spec)]
    return any(p.match(n) for n in names for p in pats)


# ---- forward_intermediates ---------------------------------------------------------------------------------
def _select(n: int, indices: int | Sequence[int] | None) -> list[int]:
    if indices is None:
        return list(range(n))
    if isinstance(indices, int):
        if not 0 < indices <= n:
            raise ValueError(f"indices={indices}: the network has {n} feature levels")
        return list(range(n - indices, n))
    out = []
    for i in indices:
        if not -n <= i < n:
            raise ValueError(f"index {i} is not one of the {n} feature levels")
        out.append(i % n)
    return out


def _levels(model: nn.Module, graph: Graph) -> list[dict[str, Any]]:
    """The feature levels with the layout of each map ('NCHW' or 'NHWC'), cached on the model."""
    hit = model.__dict__.get("_archdsl_levels")
    if hit is not None and hit[0] is graph:
        return hit[1]   # type: ignore[no-any-return]
    info = feature_levels(graph)
    taps, _ = feature_taps(graph, levels=list(info))
    levels = []
    for d, (_, nid) in zip(info, taps.outputs):
        shape = taps.node(nid).shape
        nhwc = len(shape) == 3 and shape[-1] == d["num_chs"] and shape[0] != d["num_chs"]
        levels.append(dict(d, layout="NHWC" if nhwc else "NCHW"))
    model.__dict__["_archdsl_levels"] = (graph, levels)
    return levels


def _shared(model: nn.Module, graph: Graph, levels: list[dict[str, Any]], picked: list[int],
            with_features: bool) -> nn.Module:
    """A module computing the levels ``picked`` (and, ``with_features``, what forward_features returns),
    made of ``model``'s own parameters and buffers (gradients and BatchNorm statistics are the model's);
    cached on the model."""
    cache = model.__dict__.setdefault("_archdsl_intermediates", {})
    key = (tuple(picked), with_features)
    hit = cache.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[1], model.parameters())):
        return hit[0]   # type: ignore[no-any-return]
    instantiate = _builder()
    taps, _ = feature_taps(graph, levels=[{k: levels[i][k] for k in ("num_chs", "reduction", "module")}
                                          for i in picked], as_list=True)
    if with_features:
        taps = _with_features(graph, taps, _feature_node(graph, levels))
    sub = instantiate(taps)
    own = dict(model.named_parameters())
    own_b = dict(model.named_buffers())
    for name, _ in list(sub.named_parameters()):
        mod, _, leaf = name.rpartition(".")
        (sub.get_submodule(mod) if mod else sub)._parameters[leaf] = own[name]
    for name, _ in list(sub.named_buffers()):
        mod, _, leaf = name.rpartition(".")
        (sub.get_submodule(mod) if mod else sub)._buffers[leaf] = own_b[name]
    cache[key] = (sub, list(model.parameters()))
    return sub


def _feature_node(graph: Graph, levels: list[dict[str, Any]]) -> int:
    """The node whose value forward_features returns (where the generated forward_head starts); for a
    network without one linear classifier (the distilled heads of DeiT and RepViT average two) the last node
    every path to the output passes through that is not a parameter-free step of the head (of the network
    itself or of the output's own container): DeiT's final ``norm``, RepViT's last block, as timm's
    ``forward_features`` ends there."""
    h = head_features(graph)
    if h is not None:
        return int(h["feature_node"])
    if len(graph.outputs) == 1:
        out = graph.outputs[0][1]
        head = {f.path for f in graph.node(out).scope if f.kind in ("block", "group") and f.path}
        for nid in _dominators(graph, out):
            n = graph.node(nid)
            if n.op == "input" or n.params or any(f.kind in ("block", "group") and f.path and f.path not in head
                                                  for f in n.scope):
                return nid
    last, _ = feature_taps(graph, levels=[{k: levels[-1][k] for k in ("num_chs", "reduction", "module")}])
    return last.outputs[0][1]


def _dominators(graph: Graph, out: int) -> list[int]:
    """The nodes on every path from the input to ``out`` (``out`` first, then towards the input): walking the
    graph backwards in reverse topological order, a node is one when it is the whole open frontier."""
    order = [n.id for n in graph.records()]
    pos = {nid: k for k, nid in enumerate(order)}
    open_: set[int] = {out}
    found: list[int] = []
    for nid in reversed(order[:pos[out] + 1]):
        if nid not in open_:
            continue
        if len(open_) == 1:
            found.append(nid)
        open_.discard(nid)
        open_.update(graph.node(nid).inputs)
    return found


def _with_features(graph: Graph, taps: Graph, fnode: int) -> Graph:
    """``taps`` with one more output: the node ``fnode`` of ``graph`` (and the nodes it needs)."""
    out = taps.derive(f"{graph.name}_intermediates")
    out.address = taps.address + " + features"
    have: set[int] = set()
    need = {fnode}
    stack = [fnode]
    while stack:
        nid = stack.pop()
        for i in graph.node(nid).inputs:
            if i not in need:
                need.add(i)
                stack.append(i)
    kept = {n.id for n in taps.records()}
    for n in graph.records():   # graph order first (topological), then the taps' own added nodes
        if n.id in need or n.id in kept:
            out.add(n)
            have.add(n.id)
    for n in taps.records():
        if n.id not in have:
            out.add(n)
    out.outputs = list(taps.outputs) + [("__features__", fnode)]
    out.output_list = True
    kept_groups = {n.reparam for n in out.records() if n.reparam}
    out.reparam_groups = {p: v for p, v in graph.reparam_groups.items() if p in kept_groups}
    out.fused_nodes = {nid for nid in graph.fused_nodes if nid in have}
    return out.verify()


def _to_fmt(t: torch.Tensor, layout: str, fmt: str) -> torch.Tensor:
    if layout == "NHWC" and fmt == "NCHW":
        return t.permute(0, 3, 1, 2)
    if layout != "NHWC" and fmt == "NHWC":
        return t.permute(0, 2, 3, 1)
    if fmt == "NLC":
        return t.flatten(1, 2) if layout == "NHWC" else t.flatten(2).transpose(1, 2)
    return t


def forward_intermediates(self: nn.Module, x: torch.Tensor, indices: int | Sequence[int] | None = None,
                          norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                          intermediates_only: bool = False) -> Any:
    """timm's ``forward_intermediates``: the feature maps of the levels ``indices`` (None: all; an int n:
    the last n; a list: those, negative ones counted from the end) as ``output_fmt`` ('NCHW', 'NHWC' or
    'NLC'), and unless ``intermediates_only`` also what ``forward_features`` returns: ``(final, maps)``.
    ``norm`` applies the network's final ``norm`` layer to the maps (ViT). With ``intermediates_only`` only
    the layers up to the last level run (``stop_early`` is then implied). The parameters are the model's."""
    if output_fmt not in ("NCHW", "NHWC", "NLC"):
        raise ValueError(f"output_fmt must be 'NCHW', 'NHWC' or 'NLC', got {output_fmt!r}")
    graph = getattr(self, "arch_graph", None)
    if not isinstance(graph, Graph):
        raise RuntimeError("forward_intermediates needs the graph the model was built from (model.arch_graph)")
    levels = _levels(self, graph)
    picked = _select(len(levels), indices)
    with_features = not intermediates_only
    sub = _shared(self, graph, levels, picked, with_features)
    sub.train(self.training)
    outs = sub(x)
    outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
    nrm = getattr(self, "norm", None) if norm else None
    maps = []
    for t, i in zip(outs[:len(picked)], picked):
        lay = levels[i]["layout"]
        if nrm is not None:
            t = nrm(t) if lay == "NHWC" else nrm(t.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        maps.append(_to_fmt(t, lay, output_fmt))
    if intermediates_only:
        return maps
    return outs[len(picked)], maps


# ---- timm entries ------------------------------------------------------------------------------------------
def features_graph(g: Graph, *, out_indices: Sequence[int] | None = None, labels: Sequence[str] | None = None,
                   as_list: bool = True) -> tuple[Graph, Any]:
    """The feature-tap graph (and its feature info) :func:`features_model` builds: timm's levels for a timm
    reference, else the stage outputs (also what a pickled backbone is compiled from again)."""
    ref = reference_levels(g.reference) if labels is None else None
    return feature_taps(g, out_indices=out_indices, labels=labels, levels=ref[0] if ref else None,
                        default_indices=ref[1] if ref else None, as_list=as_list)


def features_model(g: Graph, *, out_indices: Sequence[int] | None = None, labels: Sequence[str] | None = None,
                   as_list: bool = True) -> Any:
    """The features_only module of a compiled graph (see :func:`archdsl.hub.build_model`)."""
    instantiate = _builder()
    taps, info = features_graph(g, out_indices=out_indices, labels=labels, as_list=as_list)
    model = instantiate(taps)
    model.feature_info = info
    shapes = [taps.node(nid).shape for _, nid in taps.outputs]
    model.output_fmt = "NHWC" if shapes and all(len(sh) == 3 and sh[-1] == d["num_chs"] != sh[0]
                                                for sh, d in zip(shapes, info)) else \
        "NCTHW" if shapes and all(len(sh) == 4 for sh in shapes) else "NCHW"
    return model


def graph_cfg(g: Graph, input_size: tuple[int, ...] | None = None) -> dict[str, Any]:
    """timm's cfg keys that describe the network itself: ``first_conv``, ``classifier``, ``pool_size`` (the
    unpooled features' grid at the input size: ``input_size`` where given, the cfg's -- EfficientNet-B1's
    240 -- else the spec's), ``fixed_input_size`` (the input contract is bounded), ``min_input_size``
    (where timm's test sizes may be refused: :func:`archdsl.passes.sizes.min_input_size`)."""
    at = shapes_at(g, tuple(input_size)) if input_size and tuple(input_size) != tuple(g.input_shape) else None

    def shape_of(nid: int) -> tuple[int, ...]:
        return tuple(at[nid]) if at is not None else tuple(g.node(nid).shape)

    out: dict[str, Any] = {"fixed_input_size": fixed_input_size(g)}
    smallest = min_input_size(g)
    if smallest is not None:   # (MobileViT: multiples of 64; timm's tests then run at a size it takes)
        out["min_input_size"] = smallest
    first = next((n for n in g.records() if n.op in ("conv2d", "conv3d") and n.module), None)
    if first is not None:
        out["first_conv"] = first.module
    head = head_features(g)
    if head is not None:
        if head["classifier"]:
            out["classifier"] = head["classifier"]
        shape = shape_of(head["feature_node"])
        if (head["output_fmt"], len(shape)) in (("NCHW", 3), ("NCTHW", 4)):
            out["pool_size"] = tuple(shape[1:])
        elif head["output_fmt"] == "NHWC":
            out["pool_size"] = tuple(shape[:2])
        else:
            out["pool_size"] = None
    elif g.outputs and len(g.node(g.outputs[-1][1]).shape) == 3:
        out["pool_size"] = shape_of(g.outputs[-1][1])[1:]   # a backbone: its last map
    return out


_METHODS: dict[str, Callable[..., Any]] = {
    "set_grad_checkpointing": set_grad_checkpointing,
    "group_matcher": group_matcher,
    "forward_intermediates": forward_intermediates,
}


def install(cls: type) -> None:
    """Give a generated network class timm's model API (methods it does not define itself)."""
    for name, fn in _METHODS.items():
        if name not in cls.__dict__:
            setattr(cls, name, fn)
