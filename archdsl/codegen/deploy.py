"""The deploy runtime (torch): a trained train-form module -> an inference module with the same function.

The work is split by stage:

- :mod:`archdsl.passes.deploy` (no torch) rewrites the IR: reparam groups fused into one conv, BatchNorms
  folded where that is exact, eval-mode identities dropped (:func:`deploy_plan`, :func:`deploy_graph`,
  re-exported here);
- :mod:`archdsl.codegen.weights` computes the deploy form's tensors from the train form's;
- this module (:func:`deploy`) applies them to a live module, emits the deploy module as generated source
  (:mod:`archdsl.codegen.emit`) and picks its memory layout.

With ``fold_bn=False`` only the reparam groups are fused (and identities dropped): for RepLKNet that
gives exactly the official deploy form (``large_kernel.lkb_reparam``, BatchNorms kept).

Memory layout rule (``memory_format="auto"``): time forwards at the deployment batch size (``batch_size``,
default 1) in both layouts on this machine, the two alternating, and keep the faster one (channels-last wins for dense convs on
oneDNN CPUs and on GPUs, often loses for depthwise-heavy models on CPU; measuring is cheaper than guessing).
The choice and the timings are in ``model.deploy_info``, with ``notes`` saying what was left unfused and why.
Long steps (layout timing, ``compile=True``) show a progress line on a terminal, nothing otherwise.
"""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Any, Iterator

from .emit import generate
from .weights import check_finite, computed_keys, deploy_state_dict
from ..ir import Graph
from ..limits import Limits
from ..passes.deploy import DeployPlan, Recipe, deploy_graph, deploy_note, deploy_plan

__all__ = ["Recipe", "DeployPlan", "deploy_graph", "deploy_plan", "deploy", "deploy_state_dict", "deploy_source",
           "deploy_note", "native_bf16"]


def deploy_source(graph: Graph, *, fold_bn: bool = True, memory_format: str = "contiguous",
                  limits: Limits | None = None) -> str:
    """The generated source of the deploy form of ``graph`` (no torch needed)."""
    return generate(deploy_graph(graph, fold_bn=fold_bn, limits=limits), source_note=deploy_note(graph),
                    memory_format=memory_format, inference=True)


@contextlib.contextmanager
def _progress(description: str) -> Iterator[Any]:
    """A transient spinner with elapsed time on stderr when it is a terminal; silent otherwise."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    quiet = not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True, disable=quiet) as bar:
        yield (bar, bar.add_task(description, total=None))


def _time_both(models: dict[str, Any], x: Any, repeats: int) -> dict[str, float]:
    """Median seconds per forward of each model on ``x``, the models alternating forward by forward (A B A B:
    a load change on a shared machine hits both alike, where timing one after the other let a busy moment
    pick the layout); one untimed round first (oneDNN primitives, the allocator), as before."""
    import torch

    def sync() -> None:
        if x.device.type == "cuda":   # kernels run asynchronously: wait for them before reading the clock
            torch.cuda.synchronize(x.device)
    ts: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for m in models.values():
            m(x)
        sync()
        for _ in range(max(1, repeats)):
            for k, m in models.items():
                t = time.perf_counter()
                m(x)
                sync()
                ts[k].append(time.perf_counter() - t)
    return {k: sorted(v)[len(v) // 2] for k, v in ts.items()}


def _compile_frozen(model: Any, x: Any) -> Any:
    """``torch.compile`` with inductor's freezing, compiled now on ``x``: the weights become constants, so
    convs run oneDNN's prepacked kernels with bias/ReLU/residual add fused into them (CPU), and the
    pointwise rest is fused into generated loops."""
    import torch
    import torch._inductor.config as inductor_config

    compiled = torch.compile(model, dynamic=False)
    with inductor_config.patch(freezing=True), torch.inference_mode():
        compiled(x)
    return compiled


def _input_dtype(module: Any, dtype: Any) -> Any:
    """The dtype the deploy form computes in: ``dtype``, else the train form's parameters'."""
    import torch
    return dtype or next((p.dtype for p in module.parameters()), torch.float32)


def native_bf16(device: Any = None) -> bool:
    """Whether ``device`` computes bf16 natively: a CUDA GPU with bf16 support, or a CPU whose flags list
    ``avx512_bf16`` or AMX (elsewhere PyTorch emulates bf16 and a bf16 deploy form is slower, not faster)."""
    import torch
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _copy_computed_buffers(m: Any, module: Any) -> None:
    """Give the non-persistent buffers of ``m`` (built on the meta device: no state_dict key fills them) the
    values ``module`` computed when it was built (a rotary table, a mask, BEiT's zero ``k_bias``)."""
    source = dict(module.named_buffers())
    for name, buf in list(m.named_buffers()):
        if buf is not None and buf.is_meta:
            if name not in source:
                raise ValueError(f"deploy: the buffer {name} has no value (no state_dict key, none in the module)")
            owner, _, leaf = name.rpartition(".")
            setattr(m.get_submodule(owner) if owner else m, leaf, source[name].detach().clone())


def deploy(module: Any, *, fold_bn: bool = True, memory_format: str = "auto", repeats: int = 3,
           batch_size: int = 1, compile: bool = False, dtype: Any = None, limits: Limits | None = None) -> Any:
    """The deploy (inference) form of a compiled train-form module, with the same eval-mode function.

    ``module`` comes from :func:`archdsl.build` (it carries ``arch_graph``) and holds trained weights.
    ``memory_format``: ``"auto"`` (measure both on a ``batch_size`` input, keep the faster), ``"channels_last"``
    or ``"contiguous"``. The faster layout can depend on the batch size, so pass the batch you will deploy
    at.

    ``compile=True`` also compiles the deploy module with ``torch.compile`` and inductor's weight freezing,
    for a ``batch_size`` input (the compile happens here, ~20 s for ResNet-50 on 2 CPU cores, and needs a C++
    compiler on CPU). Call the result under ``torch.inference_mode()``: it is an inference artefact.

    ``dtype=torch.bfloat16`` (or ``torch.float16``) gives a low-precision deploy form: the weights are fused
    in the train form's precision and converted last, and ``forward`` converts a floating input to that
    dtype, so float32 callers need no change; the outputs are in that dtype. Worth it where the hardware
    has native bf16 (a GPU, or a CPU with ``avx512_bf16``/AMX: ``deploy_info["native_bf16"]`` says); the
    results equal the float32 form within bf16 rounding.
    The result is in eval mode; ``model.deploy_info`` records what was done (``notes``: BatchNorms that
    could not be folded exactly and how they were kept). A deploy form over the size checks of
    :mod:`archdsl.passes.deploy` raises :class:`~archdsl.errors.ArchError`, as do NaN/infinite folded weights.
    """
    import torch

    from .build import module_class
    graph: Graph | None = getattr(module, "arch_graph", None)
    if graph is None:
        raise TypeError("deploy() needs a module compiled by archdsl (it carries .arch_graph); "
                        "build it with archdsl.build(spec) and load the trained weights into it")
    if memory_format not in ("auto", "channels_last", "contiguous"):
        raise ValueError(f"memory_format must be 'auto', 'channels_last' or 'contiguous', got {memory_format!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    low = {None: None, torch.float32: None, torch.bfloat16: "bfloat16", torch.float16: "float16"}
    if isinstance(dtype, str) and dtype in ("float32", "bfloat16", "float16"):
        dtype = getattr(torch, dtype)   # the name, as archc deploy --dtype writes it
    if dtype not in low:
        raise ValueError(f"dtype must be None, torch.float32, torch.bfloat16 or torch.float16, got {dtype!r}")
    cast = low[dtype]
    plan = deploy_plan(graph, fold_bn=fold_bn, limits=limits)
    # torch's channels_last is for 4-D tensors: a 3-D layer's 5-D weight cannot take it
    volumetric = any(n.op in ("conv3d", "conv_transpose3d") for n in plan.graph.records())
    if memory_format == "channels_last" and volumetric:
        raise ValueError("memory_format='channels_last' needs 4-D weights; this network has 3-D layers "
                         "(conv3d): use 'contiguous' or 'auto'")
    sd = deploy_state_dict(plan, {k: v.detach().cpu() for k, v in module.state_dict().items()})
    check_finite(sd, "the deploy weights", computed_keys(plan))   # folding must not overflow
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    note = deploy_note(graph)

    def make(fmt: str) -> Any:
        src = generate(plan.graph, source_note=note, memory_format=fmt, dtype=cast, inference=True)
        with torch.device("meta"):   # no random init: every tensor comes from the state_dict
            m = module_class(plan.graph, src)()
        m.load_state_dict(sd, strict=True, assign=True)
        _copy_computed_buffers(m, module)
        m.to(device).eval()
        if dtype is not None:
            m.to(dtype)   # floating parameters and buffers; integer buffers (an index) keep theirs
        if fmt == "channels_last":
            m.to(memory_format=torch.channels_last)
        m.arch_graph = plan.graph
        return m

    timings: dict[str, float] = {}
    chosen = memory_format
    model = make("contiguous")
    if memory_format == "auto":
        chosen = "contiguous"
        if len(graph.input_shape) == 3 and not volumetric:
            x = torch.randn(batch_size, *graph.input_shape, device=device, dtype=_input_dtype(module, dtype))
            with _progress("deploy: timing both memory layouts"):
                cl = make("channels_last")
                timings.update(_time_both({"contiguous": model, "channels_last": cl}, x, repeats))
            if timings["channels_last"] < timings["contiguous"]:
                model, chosen = cl, "channels_last"
    elif memory_format == "channels_last":
        model = make("channels_last")
    info = {"fused_groups": len(plan.fused_groups), "folded_bn": plan.folded_bn,
            "bn_as_conv": plan.bn_as_conv, "folded_scales": plan.folded_scales,
            "fused_mul_add": plan.fused_mul_add, "fused_linear_act": plan.fused_linear_act,
            "fused_linear_add": plan.fused_linear_add, "memory_format": chosen, "timings_s": timings,
            "timed_batch": batch_size if timings else None, "fold_bn": fold_bn, "compiled": False,
            "params": plan.graph.total_params, "notes": list(plan.notes),
            "dtype": str(dtype or _input_dtype(module, None)).replace("torch.", ""), "native_bf16": native_bf16(device)}
    model.deploy_info = info
    if compile:
        if len(graph.input_shape) != 3:
            raise ValueError("deploy(compile=True) needs a network with an image input [C, H, W]")
        x = torch.randn(batch_size, *graph.input_shape, device=device, dtype=_input_dtype(module, dtype))
        if chosen == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        with _progress("deploy: torch.compile with frozen weights"):
            model = _compile_frozen(model, x)
        model.deploy_info = dict(info, compiled=True)
    return model
