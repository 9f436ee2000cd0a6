"""Helpers shared by the test modules: reference counts and model-equivalence checks."""
from __future__ import annotations

import json
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Reference data measured once from the reference implementations (tests/data/README.md says how); the
# suite reads nothing outside the repository, so a bare clone runs it.
DATA = ROOT / "tests" / "data"


@lru_cache(maxsize=1)
def reference_counts() -> dict[str, Any]:
    """tests/data/reference-counts.json, keyed 'torchvision.<builder>' / 'timm.<name>' / 'replknet.<model>'."""
    return json.loads((DATA / "reference-counts.json").read_text())


@lru_cache(maxsize=1)
def replknet_state_dict_keys() -> dict[str, Any]:
    """tests/data/replknet-state-dict-keys.json: {'RepLKNet-31B': {'train': {key: shape}, 'deploy': ...}, ...}."""
    return json.loads((DATA / "replknet-state-dict-keys.json").read_text())


def make_reference(ref: str, num_classes: int | None = None) -> Any:
    """Build the reference model named like 'torchvision.resnet50' or 'timm.repvgg_a0' (random weights)."""
    family, _, name = ref.partition(".")
    kwargs: dict[str, Any] = {}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if family == "torchvision":
        import torchvision
        if name in ("googlenet", "inception_v3"):
            kwargs.update(aux_logits=False, init_weights=False)
        # the video models (r3d_18) live in torchvision.models.video
        builder = getattr(torchvision.models, name, None) or getattr(torchvision.models.video, name)
        return builder(weights=None, **kwargs)
    if family == "timm":
        import timm
        return timm.create_model(name, pretrained=False, **kwargs)
    raise ValueError(f"unknown reference family in {ref!r}")


def randomize_bn(model: Any, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial running statistics and affine params (so eval mode is a real test).

    One definition for the tests and the round-trip verifier: :func:`archdsl.importer.randomize_bn` (the same
    draws as this helper always made, so every seeded test sees the numbers it saw before)."""
    from archdsl.importer.roundtrip import randomize_bn as _randomize_bn
    _randomize_bn(model, seed)


def assert_same_outputs(ours: Any, ref: Any, shape: tuple[int, ...], batch: int = 1, seed: int = 0) -> float:
    """Eval-mode outputs equal within 1e-4 x max(1, max|ref|). Returns the max abs difference."""
    import torch
    ours.eval()
    ref.eval()
    x = torch.randn((batch, *shape), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        a = ours(x)
        b = ref(x)
    if isinstance(b, (list, tuple)):
        b = b[0]
    assert a.shape == b.shape, f"output shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}"
    diff = (a - b).abs().max().item()
    tol = 1e-4 * max(1.0, b.abs().max().item())
    assert diff <= tol, f"max abs diff {diff:.3g} > tolerance {tol:.3g}"
    return diff


def run_archc(*args: str, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess (as a user would)."""
    return subprocess.run([sys.executable, "-m", "archdsl", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def net(body: str, shape: list[int]) -> str:
    """A one-network spec: ``input shape``, then ``body`` (lines already indented by four spaces)."""
    return f"network n():\n    input {shape}\n{body}"


def error_of(src: str) -> str:
    """The formatted ArchError that compiling ``src`` must raise."""
    import pytest

    import archdsl
    with pytest.raises(archdsl.ArchError) as ei:
        archdsl.graph(src)
    return str(ei.value)


def compile_run(src: str, x: Any) -> tuple[Any, Any, Any]:
    """(graph, built model in eval mode, its output on ``x`` without grad) of the spec text ``src``."""
    import torch

    import archdsl
    g = archdsl.graph(src)
    model = archdsl.build(src).eval()
    with torch.no_grad():
        y = model(x)
    return g, model, y


def fvcore_macs(model: Any, x: Any) -> int:
    """fvcore's conv/linear/matmul count for one forward on ``x`` (the definition reference-counts.json uses)."""
    from fvcore.nn import FlopCountAnalysis
    fca = FlopCountAnalysis(model.eval(), x)
    fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return sum(v for k, v in fca.by_operator().items()
               if k in ("conv", "linear", "addmm", "matmul", "einsum", "bmm"))


def assert_close(a: Any, b: Any) -> None:
    """The issues' tolerance: max abs diff <= 1e-4 x max(1, max |reference|) (``b`` is the reference)."""
    scale = max(1.0, b.abs().max().item())
    assert (a - b).abs().max().item() <= 1e-4 * scale, ((a - b).abs().max().item(), scale)


def assert_group_fuses_to_one_conv(text: str) -> None:
    """The network ``text`` (one reparam group) deploys to a single Conv2d computing the same eval function,
    with BatchNorm statistics and every per-channel scale randomized (so no term hides behind its init)."""
    import torch

    import archdsl
    g = archdsl.graph(text)
    model = archdsl.build(text)
    randomize_bn(model, seed=3)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.dim() == 3:     # layer_scale over channels: (C, 1, 1)
                p.copy_(torch.randn(p.shape))
    model.eval()
    dep = archdsl.deploy(model, memory_format="contiguous")
    assert [type(m) for m in dep.modules() if not list(m.children())] == [torch.nn.Conv2d]
    assert not list(dep.parameters())[2:]   # the fused conv's weight and bias only
    x = torch.randn(2, *g.input_shape)
    with torch.no_grad():
        assert_close(dep(x), model(x))


def float64_error(model: Any, x: Any) -> tuple[Any, float]:
    """``(output, err)``: ``model``'s float32 eval output on ``x`` and how far float32 arithmetic alone can
    move it: the larger of its distance from the same forward in float64, and how much the float64 forward
    moves when every weight and buffer is perturbed by half a float32 ulp (what re-rounding a fused or
    converted weight to float32 does).

    A deep, randomly initialized network (random BatchNorm statistics especially) can amplify rounding by
    orders of magnitude -- a weight perturbation, systematic across positions, often far more than the
    activations' rounding; two correct float32 implementations of it then differ by about this much, so a
    comparison of them must allow for it (:func:`assert_close_to_float64`)."""
    import copy

    import torch
    model.eval()
    with torch.no_grad():
        y32 = model(x)
        m64 = copy.deepcopy(model).double()
        y64 = m64(x.double())
        g = torch.Generator().manual_seed(0)
        for t in m64.state_dict().values():
            if t.is_floating_point():
                t.mul_(1 + (torch.rand(t.shape, generator=g, dtype=torch.float64) - 0.5) * 2.0**-23)
        y64w = m64(x.double())
    if isinstance(y32, (list, tuple)):
        y32, y64, y64w = y32[0], y64[0], y64w[0]
    return y32, max((y32.double() - y64).abs().max().item(), (y64w - y64).abs().max().item())


def assert_close_to_float64(a: Any, b: Any, fp32_error: float, factor: float = 10.0) -> None:
    """``a`` equals the reference output ``b`` within the issues' tolerance (1e-4 x max(1, max |b|)) or
    ``factor`` times the reference forward's own float32 error (``fp32_error``, from :func:`float64_error`),
    whichever is larger: another float32 evaluation order of the same function (a fused deploy form, timm's
    reparameterize_model) lands about that far from the exact result too."""
    scale = max(1.0, b.abs().max().item())
    diff = (a - b).abs().max().item()
    tol = max(1e-4 * scale, factor * fp32_error)
    assert diff <= tol, (f"max abs diff {diff:.4g} > tolerance {tol:.4g} (output scale {scale:.4g}, the "
                         f"reference's own float32-vs-float64 error {fp32_error:.4g})")


def assert_deploy_is_exact(model: Any, deployed: Any, x: Any) -> float:
    """Prove ``deployed`` (``archdsl.deploy(model)``) is ``model``'s function without float32 getting in the
    way, and return how far the float32 deploy form may then stray from the exact result on ``x``.

    1. the same deploy done in float64 equals ``model`` in float64 (1e-9 of the output scale);
    2. every float32 deploy weight is that float64 weight rounded once (within one float32 ulp);
    3. what is left is the rounding of the fused weights, which a deep random network can amplify far
       beyond its activations' rounding (a random MobileOne-S4: 45% of the output scale for some draws,
       timm's reparameterize_model alike): returned as the distance of the float32 weights run in float64
       from the exact output, for :func:`assert_close_to_float64`."""
    import copy

    import torch

    import archdsl
    m64 = copy.deepcopy(model).double().eval()
    d64 = archdsl.deploy(m64, memory_format="contiguous")
    x64 = x.double()
    with torch.no_grad():
        exact = m64(x64)
        scale = max(1.0, exact.abs().max().item())
        assert (d64(x64) - exact).abs().max().item() <= 1e-9 * scale, "the float64 deploy form is not exact"
        sd64 = d64.state_dict()
        for k, v in deployed.state_dict().items():
            if v.is_floating_point():
                assert ((v.double() - sd64[k]).abs() <= sd64[k].abs() * 2.0**-23 + 1e-30).all(), \
                    f"{k}: the float32 deploy weight is not the exact fused weight rounded once"
        rounded = copy.deepcopy(deployed).double()
        return (rounded(x64) - exact).abs().max().item()


def module_from_text(folder: Path, name: str, text: str) -> Any:
    """Write ``text`` to ``folder/name.py`` and import it as the module ``name`` (a user's own model file, as
    ``archc import FILE.py:...`` reads one); the caller pops ``sys.modules[name]`` when done."""
    import importlib.util
    path = folder / f"{name}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def bench_script(name: str) -> Any:
    """Import ``bench/<name>.py`` as the module ``name`` (the bench scripts are not a package; their tests call
    their pure parts and their ``main``); imported once per test process."""
    import importlib.util
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
