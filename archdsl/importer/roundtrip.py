"""The round-trip verifier: does a spec *be* a PyTorch model? check -> build -> strict load -> equal outputs.

:func:`roundtrip` is what proves an imported spec (``archdsl.import_module``) or a hand-written one mirrors its
source model: the spec compiles and passes the checks, its module builds, the source model's ``state_dict``
loads into it with ``strict=True`` (same keys, same shapes), and both give the same eval-mode outputs on a
seeded random input, within ``rtol_scale x max(1, max |reference|)`` (1e-4 by default, the project's rule).

A freshly initialized model hides mistakes: BatchNorm in eval mode with zero means and unit variances is an
identity, and a branch scaled by a zero-initialized (or 1e-6) layer scale contributes nothing. So the source
model's BatchNorm statistics and affine parameters, and every parameter whose elements are all equal (or all
negligible), are given random values first (:func:`randomize_constants`) -- *in place*, on the source model,
before its weights are copied.

Torch is imported only when a round trip runs; importing this module stays torch-free.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import ArchError, did_you_mean
from ..lang.loader import is_spec_text, load_program, load_source, split_address
from ..limits import Limits
from ..pipeline import Resolved, compile_graph, generate_source, network_address, resolve
from ..plugins import load_plugins, verifying_shapes

__all__ = ["RoundTrip", "STAGES", "roundtrip", "randomize_constants", "randomize_bn", "TINY"]

#: the stages of a round trip, in order; :attr:`RoundTrip.stage` is the last one reached
STAGES = ("check", "build", "load", "outputs")

#: a parameter whose elements are all at most this small (``normal(std=1e-6)`` tokens, 1e-6 layer scales) is
#: treated like a constant one: at that size a wrong branch behind it would stay under the tolerance
TINY = 1e-4


@dataclass
class RoundTrip:
    """What :func:`roundtrip` found.

    ``stage``: the last stage reached (one of :data:`STAGES`): where it failed, or ``"outputs"`` when ``ok``.
    ``max_diff``/``tolerance``: the largest absolute output difference and the bound it was held to (set once
    outputs were compared). ``error``: why it failed (an archdsl error as its located text: file:line:col, the
    source line, a caret, the hint). ``times``: seconds per step (``randomize``, then each stage reached).
    ``network``: the name of the network built from the spec; ``randomized``: how many source parameters got
    random values because they were constant (BatchNorm statistics not counted).
    """

    stage: str
    ok: bool
    max_diff: float | None = None
    tolerance: float | None = None
    error: str | None = None
    times: dict[str, float] = field(default_factory=dict)
    network: str | None = None
    randomized: int = 0

    @property
    def total_time(self) -> float:
        """Seconds the whole round trip took."""
        return sum(self.times.values())

    def summary(self) -> str:
        """One line: ``ok (max diff 3.1e-06 <= 1.2e-04)`` or ``failed at load: <first line of the error>``."""
        if self.ok:
            return f"ok (max diff {self.max_diff:.3g} <= {self.tolerance:.3g})"
        first = (self.error or "").strip().splitlines()
        return f"failed at {self.stage}: {first[0] if first else 'no message'}"


def randomize_bn(model: Any, seed: int = 0) -> None:
    """Give every BatchNorm (with running statistics) random running means and variances and random affine
    parameters, so eval mode is a real test of the normalization (fresh statistics make it an identity)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        mean, var = getattr(m, "running_mean", None), getattr(m, "running_var", None)
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and mean is not None and var is not None:
            with torch.no_grad():
                dev = mean.device
                mean.copy_((torch.randn(mean.shape, generator=g) * 0.1).to(dev))
                var.copy_((torch.rand(var.shape, generator=g) * 0.5 + 0.75).to(dev))
                if m.weight is not None and m.bias is not None:   # affine (both or neither)
                    m.weight.copy_((torch.rand(m.weight.shape, generator=g) * 0.5 + 0.75).to(dev))
                    m.bias.copy_((torch.randn(m.bias.shape, generator=g) * 0.1).to(dev))


def randomize_constants(model: Any, seed: int = 0) -> list[str]:
    """Randomize what initialization leaves constant, in place: BatchNorm statistics and affine parameters
    (:func:`randomize_bn`), then every floating-point parameter whose elements are all equal (layer scales,
    norm weights of ones, zero-initialized biases and gammas, learned scalars) or all at most :data:`TINY`
    in magnitude (``normal(std=1e-6)`` tokens).

    A constant ``c`` with ``|c| >= 0.1`` becomes ``c x U(0.75, 1.25)`` per element (a scale keeps its size and
    sign, so a deep network does not blow up); a smaller one (zero, 1e-6) becomes ``N(0, 0.1)``, large
    enough that a branch behind it changes the output far beyond the tolerance. Returns the names of the
    parameters changed this way (not the BatchNorm ones). Deterministic for a given ``seed``."""
    import torch
    randomize_bn(model, seed)
    g = torch.Generator().manual_seed(seed + 7919)   # a stream of its own: randomize_bn's draws stay as they were
    changed: list[str] = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.is_meta or not p.is_floating_point() or p.numel() == 0:
                continue
            flat = p.detach().reshape(-1)
            c = float(flat[0])
            constant = bool((flat == flat[0]).all())
            if not constant and float(flat.abs().max()) > TINY:
                continue
            if constant and abs(c) >= 0.1:
                new = c * (torch.rand(p.shape, generator=g, dtype=torch.float64) * 0.5 + 0.75)
            else:
                new = torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.1
            p.copy_(new.to(device=p.device, dtype=p.dtype))
            changed.append(name)
    return changed


def _resolve(spec: str, name: str | None, limits: Limits | None) -> Resolved:
    """The network to build: ``name``, else the spec's only (or last) network. ``spec`` is spec text or any
    address :func:`archdsl.pipeline.resolve` takes (``file.arch``, ``file.arch:net``, a library name)."""
    text = is_spec_text(spec)
    file = spec if text else split_address(spec)[0]
    if text or (name is not None and file.endswith(".arch") and os.path.isfile(file)):   # 'file.arch' + a name
        source = load_source(file, limits)
        program, path = load_program(source, limits=limits), source.path
    else:
        r = resolve(spec, limits=limits)
        if name is None or name == r.network.name:
            return r
        program, path = r.program, r.address.split(":")[0]
    nets = program.root.networks
    if not nets:
        raise ArchError("the spec defines no network", None,
                        hint="a spec to build needs 'network name(...):' with an input line")
    if name is None:
        net = list(nets.values())[-1]
    elif name in nets:
        net = nets[name]
    else:
        raise ArchError(f"no network '{name}' in the spec", None,
                        hint=did_you_mean(name, nets) or "networks here: " + ", ".join(nets))
    return Resolved(program, net, network_address(path, net.name))


def _has_meta(model: Any) -> bool:
    """Whether any tensor of ``model`` (parameter, buffer or plain tensor attribute) is still on meta."""
    import torch
    for mod in model.modules():
        tensors = [*mod.parameters(recurse=False), *mod.buffers(recurse=False),
                   *(v for v in vars(mod).values() if isinstance(v, torch.Tensor))]
        if any(t.is_meta for t in tensors):
            return True
    return False


def _key_mismatch(ref: dict[str, Any], ours: dict[str, Any]) -> str | None:
    """The difference between the two state_dicts' keys and shapes, as a message (None: they agree)."""
    missing = [k for k in ref if k not in ours]
    extra = [k for k in ours if k not in ref]
    shapes = [f"{k}: spec {list(ours[k].shape)} vs model {list(ref[k].shape)}"
              for k in ref if k in ours and tuple(ours[k].shape) != tuple(ref[k].shape)]

    def some(items: list[str]) -> str:
        return ", ".join(items[:8]) + (f", ... ({len(items) - 8} more)" if len(items) > 8 else "")

    parts = []
    if missing:
        parts.append(f"the spec lacks {len(missing)} key(s) of the source model: {some(missing)}")
    if extra:
        parts.append(f"the spec has {len(extra)} key(s) the source model lacks: {some(extra)}")
    if shapes:
        parts.append(f"{len(shapes)} shape(s) differ: {some(shapes)}")
    if not parts:
        return None
    return "the source model's state_dict does not load strictly: " + "; ".join(parts)


def _tensors(out: Any) -> list[Any]:
    """The output tensors of a forward, in order (a tensor, or a tuple/list/dict of them)."""
    import torch
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _tensors(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _tensors(v)]
    return []


def _message(e: BaseException) -> str:
    """An archdsl error as its located text; anything else as ``Type: message``."""
    if isinstance(e, ArchError):
        return e.format()
    return f"{type(e).__name__}: {e}"


def roundtrip(model: Any, spec_text: str, example_input: Any, *, name: str | None = None, seed: int = 0,
              rtol_scale: float = 1e-4, randomize: bool = True, plugins: list[str] | None = None,
              limits: Limits | None = None) -> RoundTrip:
    """Prove that ``spec_text`` is ``model``: check, build, strict load, equal eval outputs.

    ``spec_text``: the spec (its text, or an address: ``file.arch``, ``file.arch:network``, a library name);
    the network built is ``name``, else the only (for text: the last) network. It is compiled for the
    example input's shape (``example_input.shape[1:]``; the batch axis is not part of a spec's input).
    With ``randomize`` (the default) the *source model is changed in place* first: BatchNorm statistics and
    constant parameters get random values (:func:`randomize_constants` with ``seed``). Its ``state_dict``
    must then load into the built module with ``strict=True``; both run in eval mode on a random input of
    ``example_input``'s shape and dtype drawn with ``seed`` (an integer input is used as given), and every
    output tensor must agree within ``rtol_scale x max(1, max |reference output|)``.
    ``plugins``: op plugins (modules or ``.py`` files, see docs/extending.md) the spec needs, loaded first.

    Never raises for a failed round trip: the :class:`RoundTrip` says which stage failed and why.
    """
    import torch
    times: dict[str, float] = {}
    t = time.perf_counter()
    changed = randomize_constants(model, seed) if randomize else []
    times["randomize"] = time.perf_counter() - t
    result = RoundTrip(stage="check", ok=False, times=times, randomized=len(changed))

    t = time.perf_counter()
    try:
        load_plugins(plugins or (), env=False)
        with verifying_shapes():
            r = _resolve(spec_text, name, limits)
            result.network = r.network.name
            g = compile_graph(r, input_shape=tuple(int(d) for d in example_input.shape[1:]), limits=limits)
            source = generate_source(g)
    except Exception as e:   # an ArchError is the expected case; anything else is reported the same way
        result.error = _message(e)
        return result
    finally:
        times["check"] = time.perf_counter() - t

    from ..codegen.build import instantiate
    result.stage = "build"
    t = time.perf_counter()
    on_meta = True
    try:
        with verifying_shapes():
            try:   # on the meta device: no weight init, no memory; the source model's tensors are adopted below
                with torch.device("meta"):
                    ours = instantiate(g, source)
            except Exception:   # a module whose constructor needs real values: build it the ordinary way
                on_meta = False
                ours = instantiate(g, source)
    except Exception as e:
        result.error = _message(e)
        return result
    finally:
        times["build"] = time.perf_counter() - t

    result.stage = "load"
    t = time.perf_counter()
    try:
        ref_state = model.state_dict()
        mismatch = _key_mismatch(ref_state, ours.state_dict())
        if mismatch is not None:
            result.error = mismatch
            return result
        ours.load_state_dict(ref_state, strict=True, assign=on_meta)
        if on_meta and _has_meta(ours):   # a tensor the state_dict does not carry: build and load for real
            ours = instantiate(g, source)
            ours.load_state_dict(ref_state, strict=True)
        if not on_meta:
            dev = next((p.device for p in model.parameters()), None)
            if dev is not None:
                ours = ours.to(dev)
    except Exception as e:
        result.error = _message(e)
        return result
    finally:
        times["load"] = time.perf_counter() - t

    result.stage = "outputs"
    t = time.perf_counter()
    try:
        result.max_diff, result.tolerance, result.error = _compare(model, ours, example_input, seed, rtol_scale)
        result.ok = result.error is None
    except Exception as e:
        result.error = _message(e)
    finally:
        times["outputs"] = time.perf_counter() - t
    return result


def _compare(model: Any, ours: Any, example_input: Any, seed: int,
             rtol_scale: float) -> tuple[float | None, float | None, str | None]:
    """(max diff, tolerance, error or None) of the two models' eval outputs on a seeded random input."""
    import torch
    if example_input.is_floating_point():
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(tuple(example_input.shape), generator=gen, dtype=example_input.dtype)
        x = x.to(example_input.device)
    else:
        x = example_input
    model.eval()
    ours.eval()
    with torch.no_grad():
        try:   # each gets its own copy of the input: an in-place first op must not change the other's
            ref_out = model(x.clone())
        except Exception as e:
            return None, None, f"the source model fails on the input: {_message(e)}"
        try:
            our_out = ours(x.clone())
        except Exception as e:
            return None, None, f"the built module fails on the input: {_message(e)}"
    refs, outs = _tensors(ref_out), _tensors(our_out)
    if len(outs) == 1 and len(refs) > 1:   # a model returning (logits, aux...): the spec gives the first
        refs = refs[:1]
    if len(refs) != len(outs) or not refs:
        return None, None, f"the source model gives {len(refs)} output tensor(s), the built module {len(outs)}"
    worst, bound = 0.0, 0.0
    for i, (a, b) in enumerate(zip(outs, refs)):
        if tuple(a.shape) != tuple(b.shape):
            return None, None, f"output {i}: shape {list(a.shape)} from the spec, {list(b.shape)} from the model"
        b64 = b.double()
        tol = rtol_scale * max(1.0, float(b64.abs().max()))
        diff = float((a.double() - b64).abs().max())
        if diff != diff or diff > tol:   # NaN counts as a mismatch
            return diff, tol, (f"outputs differ: max abs diff {diff:.3g} > tolerance {tol:.3g}"
                               + (f" (output {i})" if len(refs) > 1 else ""))
        if diff / tol >= worst / max(bound, 1e-300):
            worst, bound = diff, tol
    return worst, bound, None
