"""The selector: one backend per conv layer, chosen to minimise the predicted time of the whole network.

Layers are taken in execution order. Every backend reads and writes a memory layout (NCHW, NHWC, or
"any" = keeps what it gets), and the ops between convs (batchnorm, activations, adds) keep the layout of
their input, so a layer whose backend wants another layout than the one the previous conv produced pays a
conversion. The choice is therefore a shortest path over (layer, layout) states, solved exactly by dynamic
programming: ``cost[i][L] = min over backends b and previous layouts L' of cost[i-1][L'] + convert(L'->in(b))
+ time(b, layer i)``. (Treating the graph as the chain of its convs in execution order is an approximation
for branching networks: a branch's convs are charged as if they followed each other.)

``time`` comes from the decision cache when the layer was measured, else from measuring it now
(``method="autotune"``), else from the cost model (:mod:`.cost`). No torch here: measuring is a callback.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .cache import DecisionCache, cpu_device_key
from .cost import CostModel
from .registry import BACKENDS, Backend, candidates
from .spec import ConvSpec

__all__ = ["LayerChoice", "Plan", "make_plan", "METHODS"]

METHODS = ("auto", "cost", "autotune", "default")
Measure = Callable[[ConvSpec, str, str], float]          # (spec, backend, input layout) -> ms
MeasureConvert = Callable[[ConvSpec], float]             # (spec) -> ms to change its input's layout


@dataclass
class LayerChoice:
    """The decision for one conv layer."""

    name: str
    spec: ConvSpec
    backend: str
    layout_in: str            # the layout the backend reads
    layout_out: str           # the layout it leaves for the next layers
    ms: float                 # predicted or measured time of the conv
    convert_ms: float         # layout change paid before it (0 when none)
    source: str               # 'measured', 'model' or 'forced'
    options: dict[str, float] = field(default_factory=dict)  # backend@layout -> ms, every candidate

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (an infinite estimate, i.e. a backend that is never a choice here, becomes null)."""
        return {"name": self.name, "layer": self.spec.describe(), "spec": self.spec.to_dict(),
                "backend": self.backend, "layout_in": self.layout_in, "layout_out": self.layout_out,
                "ms": _finite(self.ms), "convert_ms": self.convert_ms, "source": self.source,
                "options": {k: _finite(v) for k, v in self.options.items()}}


def _finite(v: float) -> float | None:
    return v if v != float("inf") else None


@dataclass
class Plan:
    """Backends for every conv layer, with the predicted total and the all-default baseline."""

    device_key: str
    method: str
    layers: list[LayerChoice]
    total_ms: float
    baseline_ms: float
    # whole-model forward times (ms) of the plans compared by ``apply(..., validate=True)`` and the one kept
    validation: dict[str, Any] = field(default_factory=dict)

    def backend_for(self, name: str) -> str | None:
        for c in self.layers:
            if c.name == name:
                return c.backend
        return None

    @property
    def speedup(self) -> float:
        return self.baseline_ms / self.total_ms if self.total_ms > 0 else 1.0

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.layers:
            out[c.backend] = out.get(c.backend, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device_key, "method": self.method, "total_ms": self.total_ms,
                "baseline_ms": self.baseline_ms, "speedup": self.speedup, "counts": self.counts(),
                "validation": self.validation,
                "layers": [c.to_dict() for c in self.layers]}


def _out_layouts(b: Backend, layout_in: str) -> tuple[str, str]:
    """(layout the backend reads, layout it leaves) given the incoming layout."""
    if b.layout == "any":
        return layout_in, layout_in
    return b.layout, b.layout


def make_plan(layers: Sequence[tuple[str, ConvSpec]], *, method: str = "auto", device_key: str | None = None,
              cache: DecisionCache | None = None, model: CostModel | None = None,
              allowed: Sequence[str] | None = None, force: dict[str, str] | None = None,
              input_layout: str = "nchw", measure: Measure | None = None,
              measure_convert: MeasureConvert | None = None, prune: float = 8.0) -> Plan:
    """Choose a backend for every ``(name, spec)`` layer.

    ``method``: ``auto``/``cost`` use cached measurements and otherwise the cost model; ``autotune`` also
    measures (through ``measure``/``measure_convert``) every candidate the cache does not know and stores it;
    ``default`` keeps PyTorch's default (``torch_nchw``) everywhere. ``allowed`` restricts the backends;
    ``force`` maps layer names to a backend (used as long as it supports the layer). When autotuning,
    a candidate the cost model predicts to be more than ``prune`` times slower than the layer's best
    prediction is not measured (large-kernel NCHW layers take seconds each on a CPU); ``prune=0`` measures all.
    """
    if method not in METHODS:
        raise ValueError(f"unknown selection method '{method}'; expected one of {', '.join(METHODS)}")
    if method == "autotune" and (measure is None or measure_convert is None):
        raise ValueError("method='autotune' needs the measure callbacks (use archdsl.backends.apply)")
    devkey = device_key or cpu_device_key()
    device = layers[0][1].device if layers else "cpu"
    model = model or CostModel(device)
    force = force or {}

    def conv_time(spec: ConvSpec, b: Backend, lay: str, best_model: float = 0.0) -> tuple[float, str]:
        variant = f"{b.name}@{lay}"
        if cache is not None:
            t = cache.time(devkey, spec.dtype, spec.key(), variant)
            if t is not None:
                return t, "measured"
        predicted = model.estimate(b.name, spec, lay)
        hopeless = prune > 0 and predicted > prune * best_model
        if method == "autotune" and b.autotune_default and measure is not None and not hopeless:
            t = measure(spec, b.name, lay)
            if cache is not None:
                cache.put_time(devkey, spec.dtype, spec.key(), variant, t)
            return t, "measured"
        return predicted, "model"

    def convert_time(spec: ConvSpec) -> float:
        if cache is not None:
            t = cache.convert_time(devkey, spec.dtype, spec.in_bytes)
            if t is not None:
                return t
        if method == "autotune" and measure_convert is not None:
            t = measure_convert(spec)
            if cache is not None:
                cache.put_convert_time(devkey, spec.dtype, spec.in_bytes, t)
            return t
        return model.convert(spec)

    # state: layout -> (total ms, decisions so far)
    states: dict[str, tuple[float, list[LayerChoice]]] = {input_layout: (0.0, [])}
    baseline = 0.0
    for name, spec in layers:
        cands = candidates(spec)
        if allowed is not None:
            cands = [b for b in cands if b.name in allowed] or [b for b in cands if b.name == "torch_nchw"]
        if method == "default":
            cands = [b for b in cands if b.name == "torch_nchw"]
        forced = force.get(name)
        if forced is not None:
            sel = [b for b in cands if b.name == forced]
            if sel:
                cands = sel
        if not cands:
            raise ValueError(f"no conv backend supports layer '{name}' ({spec.describe()}, {spec.dtype} on "
                             f"{spec.device}); registered: {', '.join(BACKENDS)}")
        conv_ms = convert_time(spec) if any(b.layout != "any" for b in cands) else 0.0
        options: dict[str, float] = {}
        new: dict[str, tuple[float, list[LayerChoice]]] = {}
        best_model = min(model.estimate(b.name, spec, lay) for b in cands
                         for lay in ((b.layout,) if b.layout != "any" else ("nchw", "nhwc")))
        for lay_prev, (acc, hist) in states.items():
            for b in cands:
                lay_in, lay_out = _out_layouts(b, lay_prev)
                t, src = conv_time(spec, b, lay_in, best_model)
                options[f"{b.name}@{lay_in}"] = t
                change = conv_ms if lay_in != lay_prev else 0.0
                total = acc + change + t
                if lay_out not in new or total < new[lay_out][0]:
                    choice = LayerChoice(name, spec, b.name, lay_in, lay_out, t, change,
                                         "forced" if forced == b.name else src)
                    new[lay_out] = (total, hist + [choice])
        states = new
        ref = BACKENDS.get("torch_nchw")
        if "torch_nchw@nchw" in options:
            baseline += options["torch_nchw@nchw"]
        elif ref is not None and ref.supports(spec):
            baseline += model.estimate(ref.name, spec, "nchw")
        for lay in states:
            states[lay][1][-1].options = dict(sorted(options.items(), key=lambda kv: kv[1]))
    total, hist = min(states.values(), key=lambda s: s[0]) if states else (0.0, [])
    if cache is not None:
        for c in hist:
            cache.put_choice(devkey, c.spec.dtype, c.spec.key(), c.backend, method)
    return Plan(devkey, method, hist, total, baseline)
