"""Kernel backends for convolutions, and the selector that picks one per layer.

Torch-free parts (importable by ``archc summary --backends`` without PyTorch): the registry
(:mod:`.registry`), layer specs (:mod:`.spec`), the cost model (:mod:`.cost`), the decision cache
(:mod:`.cache`) and the planner (:mod:`.plan`). The torch parts, :func:`apply`, :func:`restore` and
:class:`BackendConv2d` (in :mod:`.impl`), and the Triton kernel (:mod:`.triton_dw`, optional), are loaded
on first use.

Typical use::

    model = archdsl.build("specs/replknet.arch:replknet_31b")
    plan = archdsl.backends.apply(model, torch.randn(8, 3, 224, 224))          # cost model
    plan = archdsl.backends.apply(model, x, method="autotune")                 # measure, cache on disk

or ``archdsl.build(spec, backends="auto")``. See docs/backends.md.
"""
from __future__ import annotations

from typing import Any

from .cache import DecisionCache, cpu_device_key, default_cache_dir
from .cost import CostModel, fit
from .plan import METHODS, LayerChoice, Plan, make_plan
from .registry import BACKENDS, Backend, candidates, get, register
from .spec import ConvSpec, from_node

__all__ = ["BACKENDS", "Backend", "register", "get", "candidates", "ConvSpec", "CostModel", "fit",
           "DecisionCache", "default_cache_dir", "Plan", "LayerChoice", "make_plan", "METHODS", "plan_graph",
           "apply", "restore", "BackendConv2d", "measure", "measure_convert", "trace_convs", "spec_of"]

_TORCH_NAMES = {"apply", "restore", "BackendConv2d", "measure", "measure_convert", "trace_convs", "spec_of"}


def __getattr__(name: str) -> Any:
    # the torch-backed API is loaded lazily so that importing this package never imports torch
    if name in _TORCH_NAMES:
        from . import impl
        return getattr(impl, name)
    raise AttributeError(f"module 'archdsl.backends' has no attribute '{name}'")


def plan_graph(graph: Any, *, batch: int = 1, dtype: str = "float32", device: str = "cpu",
               method: str = "auto", cache_dir: str | None = None, threads: int | None = None) -> Plan:
    """The plan for every conv of a compiled graph (no torch: cost model and cached measurements only).

    ``archc summary --backends`` prints this. ``method`` is ``auto`` or ``default`` here; autotuning needs
    the model itself (:func:`apply`).
    """
    layers = [(n.module or n.name, from_node(n, batch, dtype, device)) for n in graph.nodes() if n.op == "conv2d"]
    devkey = cpu_device_key(threads) if device == "cpu" else device
    return make_plan(layers, method=method, device_key=devkey, cache=DecisionCache(cache_dir))
