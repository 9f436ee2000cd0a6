"""Torch implementations of the backends, the swap-in module, measuring, and :func:`apply`.

Every implementation has the signature of ``F.conv2d`` with explicit arguments:
``fn(x, weight, bias, stride, padding, dilation, groups) -> Tensor`` with integer-pair padding.
"""
from __future__ import annotations

import copy
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .cache import DecisionCache, cpu_device_key
from .cost import CostModel
from .plan import Plan, make_plan
from .registry import BACKENDS, get
from .spec import ConvSpec, dtype_name

__all__ = ["conv_nchw", "conv_channels_last", "conv_fft", "BackendConv2d", "apply", "trace_convs",
           "measure", "measure_convert", "device_key", "restore", "spec_of", "synchronize"]

Pair = tuple[int, int]


# ---- implementations ----------------------------------------------------------------------------------
def conv_nchw(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: Pair, padding: Pair,
              dilation: Pair, groups: int) -> torch.Tensor:
    """PyTorch's default path on a contiguous NCHW input."""
    return F.conv2d(x.contiguous(), weight, bias, stride, padding, dilation, groups)


def conv_channels_last(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: Pair,
                       padding: Pair, dilation: Pair, groups: int) -> torch.Tensor:
    """F.conv2d on an NHWC input; the result stays NHWC (channels_last)."""
    x = x.contiguous(memory_format=torch.channels_last)
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def conv_fft(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: Pair, padding: Pair,
             dilation: Pair, groups: int) -> torch.Tensor:
    """Depthwise cross-correlation through real 2-D FFTs (stride 1, zero padding).

    Why ``N >= size + pad`` is enough (per axis): output ``o`` needs input positions ``o + t - pad`` for taps
    ``t``, which range over ``[-pad, size + pad - 1]``. In a circular buffer of length ``N`` holding the
    input at ``[0, size)`` and zeros elsewhere, negative positions wrap to ``[N - pad, N)``, which are zeros
    exactly when ``N - pad >= size``. The kernel is placed at ``(t - pad) mod N`` so that the product of
    the input spectrum with the conjugate kernel spectrum is that shifted correlation.
    Half-precision inputs are transformed in float32 (and the result cast back).
    """
    b, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    (ph, pw), (dh, dw) = padding, dilation
    k = weight[:, 0]
    if (dh, dw) != (1, 1):  # a dilated kernel is the kernel with zeros between its taps
        kd = k.new_zeros(c, dh * (kh - 1) + 1, dw * (kw - 1) + 1)
        kd[:, ::dh, ::dw] = k
        k = kd
    eh, ew = k.shape[-2:]
    spec = ConvSpec(b, c, c, h, w, (eh, ew), (1, 1), (ph, pw), (1, 1), c)
    n1, n2 = spec.fft_size()
    oh, ow = h + 2 * ph - eh + 1, w + 2 * pw - ew + 1
    ct = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    xf = torch.fft.rfft2(x.to(ct), s=(n1, n2))
    kb = F.pad(k.to(ct), (0, n2 - ew, 0, n1 - eh)).roll((-ph, -pw), dims=(-2, -1))
    kf = torch.fft.rfft2(kb).conj()
    y = torch.fft.irfft2(xf * kf, s=(n1, n2))[..., :oh, :ow]
    if bias is not None:
        y = y + bias.to(ct).view(1, -1, 1, 1)
    return y.to(x.dtype).contiguous()


# ---- the swap-in module ----------------------------------------------------------------------------------
def _pair(v: tuple[int, ...]) -> tuple[int, int]:
    """A Conv2d size attribute (always two ints) as the pair its constructor is typed for."""
    return (v[0], v[1])


def _padding_arg(v: str | tuple[int, ...]) -> str | tuple[int, int]:
    """Conv2d's padding attribute (a mode string such as "same", or two ints) as its constructor takes it."""
    return v if isinstance(v, str) else _pair(v)


def _numeric_padding(conv: nn.Conv2d) -> Pair:
    p = conv.padding
    if isinstance(p, str):
        if p == "valid":
            return (0, 0)
        # 'same' (stride 1): total padding d*(k-1), split evenly (odd totals are never swapped: _swappable)
        return tuple(d * (k - 1) // 2 for d, k in zip(conv.dilation, conv.kernel_size))  # type: ignore[return-value]
    return (int(p[0]), int(p[1]))


class BackendConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` that runs through a selected backend.

    It shares the original module's ``weight`` and ``bias`` Parameters (same names, so state_dicts load
    either way) and is still an ``nn.Conv2d``, so re-parameterization and BN folding code keep working.
    The forward is a plain function call, which torch.compile traces (the Triton one is a custom op).
    """

    def __init__(self, conv: nn.Conv2d, backend: str) -> None:
        # nn.Conv2d stores its sizes as tuple[int, ...]; its constructor is typed for pairs
        super().__init__(conv.in_channels, conv.out_channels, _pair(conv.kernel_size), _pair(conv.stride),
                         _padding_arg(conv.padding), _pair(conv.dilation), conv.groups, conv.bias is not None,
                         conv.padding_mode, device="meta", dtype=conv.weight.dtype)
        self.weight = conv.weight
        self.bias = conv.bias
        self.train(conv.training)
        self.backend = backend
        self._impl: Callable[..., torch.Tensor] = get(backend).function()
        self._pad: Pair = _numeric_padding(conv)
        self._forward_only = "forward-only" in get(backend).tags

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self._pad
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            pad = (0, 0)
        if self._forward_only and torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            # the kernel has no backward: let autograd go through PyTorch's conv for this call
            return F.conv2d(x, self.weight, self.bias, self.stride, pad, self.dilation, self.groups)
        return self._impl(x, self.weight, self.bias, self.stride, pad, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", backend={self.backend}"

    def to_conv2d(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` sharing the same parameters (undo)."""
        c = nn.Conv2d(self.in_channels, self.out_channels, _pair(self.kernel_size), _pair(self.stride),
                      _padding_arg(self.padding), _pair(self.dilation), self.groups, self.bias is not None,
                      self.padding_mode, device="meta", dtype=self.weight.dtype)
        c.weight, c.bias = self.weight, self.bias
        c.train(self.training)
        return c


# ---- tracing, measuring ----------------------------------------------------------------------------------
def device_key(device: torch.device | str) -> str:
    """The cache's device key: CPU model and torch thread count, or the CUDA device name."""
    dev = torch.device(device)
    if dev.type == "cuda":
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda-{torch.cuda.get_device_name(idx)}"
    return cpu_device_key(torch.get_num_threads())


def spec_of(conv: nn.Conv2d, x: torch.Tensor) -> ConvSpec:
    """The :class:`ConvSpec` of ``conv`` applied to ``x``."""
    b, c, h, w = x.shape
    return ConvSpec(b, c, conv.out_channels, h, w, tuple(conv.kernel_size), tuple(conv.stride),  # type: ignore[arg-type]
                    _numeric_padding(conv), tuple(conv.dilation), conv.groups,  # type: ignore[arg-type]
                    conv.bias is not None, conv.padding_mode, dtype_name(x.dtype), x.device.type)


def trace_convs(model: nn.Module, example_input: Any) -> list[tuple[str, nn.Conv2d, ConvSpec]]:
    """Every ``nn.Conv2d`` in execution order with the spec of its first call on ``example_input``.

    The forward runs on a copy of the model on the ``meta`` device (shapes only, no arithmetic: tracing a
    big model at its real batch size would otherwise cost a full slow forward). If the model cannot run on
    ``meta``, the real model runs once in eval mode under ``no_grad`` instead (batchnorm statistics are
    not touched) and gets its training flags back.
    """
    real = dict(model.named_modules())
    if isinstance(example_input, torch.Tensor):
        try:
            order = _trace(_meta_copy(model), example_input.to("meta"))
            return [(n, real[n], replace(s, device=example_input.device.type))  # type: ignore[misc]
                    for n, _, s in order]
        except Exception:  # noqa: BLE001 - e.g. a forward that creates CPU tensors itself: trace for real
            pass
    return _trace(model, example_input)


def _swappable(conv: nn.Conv2d) -> bool:
    """padding='same' with an odd total padding pads one side more: such convs keep their own module."""
    if isinstance(conv.padding, str) and conv.padding == "same":
        return all(d * (k - 1) % 2 == 0 for d, k in zip(conv.dilation, conv.kernel_size))
    return True


def _meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy whose parameters and buffers live on ``meta`` (no memory for the weights is copied)."""
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


def _trace(model: nn.Module, example_input: Any) -> list[tuple[str, nn.Conv2d, ConvSpec]]:
    names = {m: n for n, m in model.named_modules()}
    seen: set[nn.Module] = set()
    order: list[tuple[str, nn.Conv2d, ConvSpec]] = []

    def hook(mod: nn.Module, args: tuple[Any, ...]) -> None:
        if mod not in seen and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
            seen.add(mod)
            order.append((names[mod], mod, spec_of(mod, args[0])))  # type: ignore[arg-type]

    handles = [m.register_forward_pre_hook(hook) for m in model.modules()
               if isinstance(m, nn.Conv2d) and _swappable(m)]
    flags = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
        for m, f in flags.items():
            m.training = f
    return order


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued kernels (a no-op on CPU): GPU work is asynchronous, so a host clock
    read without this times only the launches."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_ms(fn: Callable[[], Any], device: torch.device, min_reps: int = 3, budget_s: float = 0.5) -> float:
    """Median wall time of ``fn`` after one warm-up call; repeats until ``budget_s`` or ``min_reps``."""
    fn()
    synchronize(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < budget_s and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _tensors(spec: ConvSpec, layout: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    dt = getattr(torch, spec.dtype)
    dev = torch.device(spec.device)
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(spec.batch, spec.cin, spec.h, spec.w, generator=g).to(dev, dt)
    if layout == "nhwc":
        x = x.contiguous(memory_format=torch.channels_last)
    wt = torch.randn(spec.cout, spec.cin // spec.groups, *spec.kernel, generator=g).to(dev, dt)
    b = torch.randn(spec.cout, generator=g).to(dev, dt) if spec.bias else None
    return x, wt, b


def measure(spec: ConvSpec, backend: str, layout: str = "nchw", budget_s: float = 0.5) -> float:
    """Median milliseconds of one call of ``backend`` on random tensors of ``spec``'s shape in ``layout``."""
    fn = get(backend).function()
    x, wt, b = _tensors(spec, layout)
    with torch.no_grad():
        return _time_ms(lambda: fn(x, wt, b, spec.stride, spec.padding, spec.dilation, spec.groups),
                        x.device, budget_s=budget_s)


def measure_convert(spec: ConvSpec, budget_s: float = 0.2) -> float:
    """Milliseconds to turn this layer's input from NCHW into NHWC (the reverse costs about the same)."""
    x, _, _ = _tensors(spec, "nchw")
    return _time_ms(lambda: x.contiguous(memory_format=torch.channels_last), x.device, budget_s=budget_s)


def _measure_hook() -> Callable[..., float]:
    # looked up at call time so that tests (and profilers) can substitute the module attribute
    return globals()["measure"]


def _measure_convert_hook() -> Callable[..., float]:
    return globals()["measure_convert"]


# ---- apply ----------------------------------------------------------------------------------------------
def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)  # nn.Module.__setattr__ registers numbered children ("0") too


def apply(model: nn.Module, example_input: Any, *, method: str = "auto", cache_dir: str | Path | None = None,
          allowed: Sequence[str] | None = None, force: dict[str, str] | None = None,
          calibration: dict[str, Any] | None = None, save: bool = True, budget_s: float = 0.5,
          prune: float = 8.0, validate: bool | None = None) -> Plan:
    """Choose a backend for every ``nn.Conv2d`` of ``model`` and swap in :class:`BackendConv2d` modules.

    ``example_input`` fixes the shapes, dtype and device the choice is made for (use the real batch size).
    ``method``: ``"auto"`` (cost model, plus cached measurements), ``"autotune"`` (measure each distinct
    layer shape on this device, cached on disk), ``"default"`` (PyTorch's NCHW path everywhere), or
    the name of one backend to use wherever it applies. Layers whose best choice is ``torch_nchw`` keep
    their plain ``nn.Conv2d``. ``budget_s`` bounds the timing of each (layer shape, backend) when autotuning;
    candidates predicted more than ``prune`` times slower than the best are not measured (0: measure all).

    ``validate`` (default: on for CUDA inputs, where a forward is cheap) times whole-model forwards on
    ``example_input`` and keeps the fastest of: the per-layer plan, the best plan that never leaves NCHW, and
    PyTorch's defaults. Per-layer timings miss what happens between convs (elementwise ops on mixed layouts,
    launch gaps), so the selected model is never kept slower than the unchanged one. The times are in
    ``plan.validation``.

    Returns the :class:`Plan` (also stored as ``model.backend_plan``); the model is changed in place.
    """
    restore(model)
    layers = trace_convs(model, example_input)
    if method not in ("auto", "cost", "autotune", "default"):
        try:
            get(method)
        except KeyError as e:
            raise ValueError(f"unknown method '{method}': expected auto, autotune, default or a backend name "
                             f"({e.args[0].split('known: ')[-1]})") from None
        force = {name: method for name, _, _ in layers} | (force or {})
        method = "auto"
    dev = layers[0][2].device if layers else "cpu"
    devkey = device_key(example_input.device if isinstance(example_input, torch.Tensor) else dev)
    cache = DecisionCache(cache_dir)
    if validate is None:
        validate = isinstance(example_input, torch.Tensor) and example_input.device.type == "cuda"
    # autotuning takes seconds to minutes: say what is being measured (on a terminal only)
    with _progress(method == "autotune" or bool(validate and layers)) as progress:
        task = progress.add_task("selecting conv backends", total=None)
        measured = 0

        def timed(s: ConvSpec, b: str, lay: str) -> float:
            nonlocal measured
            measured += 1
            progress.update(task, description=f"autotuning conv backends: {measured} measured, now {b}@{lay} "
                                              f"on {s.describe()}")
            return _measure_hook()(s, b, lay, budget_s)

        def plan_with(only: Sequence[str] | None, how: str) -> Plan:
            return make_plan([(n, s) for n, _, s in layers], method=how, device_key=devkey, cache=cache,
                             model=CostModel(dev, calibration), allowed=only, force=force, prune=prune,
                             measure=timed,
                             measure_convert=lambda s: _measure_convert_hook()(s, min(budget_s, 0.2)))

        plan = plan_with(allowed, method)
        if validate and method != "default" and layers:
            nchw_only = [b.name for b in BACKENDS.values() if b.layout in ("nchw", "any")
                         and (allowed is None or b.name in allowed)]
            options = {"per-layer": plan, "nchw-only": plan_with(nchw_only, method),
                       "default": plan_with(None, "default")}
            times: dict[str, float] = {}
            for label, p in options.items():
                progress.update(task, description=f"validating: timing whole-model forwards ({label})")
                _swap(model, layers, p)
                times[label] = _time_forward(model, example_input)
                restore(model)
            kept = min(times, key=times.__getitem__)
            plan = options[kept]
            plan.validation = {"forward_ms": times, "kept": kept}
    if save:
        cache.save()  # never raises: an unwritable cache directory is a warning, the plan stays in memory
    _swap(model, layers, plan)
    model.backend_plan = plan  # type: ignore[assignment]
    return plan


def _progress(wanted: bool) -> Any:
    """A transient rich progress line on stderr; disabled unless ``wanted`` and stderr is a terminal."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                    transient=True, disable=not (wanted and console.is_terminal))


def _swap(model: nn.Module, layers: list[tuple[str, nn.Conv2d, ConvSpec]], plan: Plan) -> None:
    mods = {n: m for n, m, _ in layers}
    for choice in plan.layers:
        if choice.backend != "torch_nchw":
            _set_submodule(model, choice.name, BackendConv2d(mods[choice.name], choice.backend))


def _time_forward(model: nn.Module, x: Any, reps: int = 3) -> float:
    """Median milliseconds of an eval-mode, no-grad forward of ``model`` on ``x`` (after one warm-up)."""
    flags = {m: m.training for m in model.modules()}
    dev = x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
    try:
        model.eval()
        with torch.no_grad():
            return _time_ms(lambda: model(x), dev, min_reps=reps, budget_s=0.0)
    finally:
        for m, f in flags.items():
            m.training = f


def restore(model: nn.Module) -> int:
    """Put plain ``nn.Conv2d`` modules back wherever :func:`apply` swapped one in; returns how many."""
    swapped = [(n, m) for n, m in model.named_modules() if isinstance(m, BackendConv2d)]
    for name, m in swapped:
        _set_submodule(model, name, m.to_conv2d())
    return len(swapped)
