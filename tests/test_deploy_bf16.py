"""The low-precision deploy form (issue 16, CPU part): ``archdsl.deploy(model, dtype=torch.bfloat16)``.

Weights are fused in float32 and converted last; the forward takes float32 inputs (converted inside) and
returns bf16; the function equals the float32 deploy form within bf16 rounding. Runs on any CPU (where bf16
is not native PyTorch emulates it: slower, same numbers); the speed is bench/bench_bf16.py's business.
"""
from __future__ import annotations

import pytest
from helpers import randomize_bn

import archdsl
from archdsl.codegen.deploy import native_bf16

torch = pytest.importorskip("torch")

TINY = """
block Block(c):
    add:
        identity
        seq:
            g: reparam add:
                [conv2d(c, 3, padding=1, bias=false), batchnorm]
                [conv2d(c, 1, bias=false), batchnorm]
                batchnorm
            relu
network tiny(num_classes=5):
    input [3, 32, 32]
    stem: [conv2d(16, 3, stride=2, padding=1, bias=false), batchnorm, relu]
    blocks: Block(16) * 2
    adaptive_avgpool(1)
    flatten
    fc: linear(num_classes)
"""


def _model() -> object:
    m = archdsl.build(TINY)
    randomize_bn(m, seed=1)
    return m.eval()


@pytest.mark.parametrize("dtype", [torch.bfloat16, "bfloat16", torch.float16])
def test_low_precision_deploy_equals_float32_within_rounding(dtype: object) -> None:
    model = _model()
    dep32 = archdsl.deploy(model, memory_format="contiguous")
    dep = archdsl.deploy(model, memory_format="contiguous", dtype=dtype)
    want = torch.float16 if dtype == torch.float16 else torch.bfloat16
    assert {p.dtype for p in dep.parameters()} == {want}
    assert dep.deploy_info["dtype"] == str(want).replace("torch.", "")
    assert isinstance(dep.deploy_info["native_bf16"], bool)
    x = torch.randn(4, 3, 32, 32)                      # float32 callers need no change
    with torch.inference_mode():
        a, b = dep32(x), dep(x)
    assert b.dtype == want
    scale = max(1.0, a.abs().max().item())
    eps = 2.0 ** -7 if want == torch.bfloat16 else 2.0 ** -10   # the dtype's relative rounding step
    assert (b.float() - a).abs().max().item() <= 16 * eps * scale
    assert (b.float() - a).abs().max().item() > 0      # it really computed in low precision


def test_the_fused_weights_are_rounded_once_from_float32() -> None:
    """Fusing happens in float32 and the result is converted last: each deploy weight is exactly the
    float32 deploy weight rounded to bf16 (fusing in bf16 would round every branch first)."""
    model = _model()
    dep32 = archdsl.deploy(model, memory_format="contiguous")
    dep16 = archdsl.deploy(model, memory_format="contiguous", dtype=torch.bfloat16)
    for (k, a), (k2, b) in zip(dep32.state_dict().items(), dep16.state_dict().items()):
        assert k == k2 and torch.equal(a.to(torch.bfloat16), b), k


def test_generated_forward_converts_the_input_and_auto_layout_times_in_bf16() -> None:
    model = _model()
    dep = archdsl.deploy(model, memory_format="auto", dtype=torch.bfloat16, repeats=1)
    assert dep.deploy_info["memory_format"] in ("contiguous", "channels_last")
    assert set(dep.deploy_info["timings_s"]) == {"contiguous", "channels_last"}
    src = type(dep).__archdsl_source__
    assert "x.to(torch.bfloat16) if x.is_floating_point() else x" in src
    with torch.inference_mode():
        assert dep(torch.randn(1, 3, 32, 32).to(torch.bfloat16)).dtype == torch.bfloat16


def test_bad_dtype_is_refused() -> None:
    with pytest.raises(ValueError, match="dtype must be"):
        archdsl.deploy(_model(), dtype=torch.int8)


def test_native_bf16_reads_the_cpu_flags() -> None:
    flags = open("/proc/cpuinfo").read()
    assert native_bf16("cpu") == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_cli_deploy_writes_bf16_weights_and_a_module_that_takes_float32(tmp_path: object) -> None:
    import importlib.util
    from pathlib import Path

    from helpers import run_archc
    tmp = Path(str(tmp_path))
    (tmp / "tiny.arch").write_text(TINY)
    model = _model()
    torch.save(model.state_dict(), tmp / "train.pt")
    r = run_archc("deploy", str(tmp / "tiny.arch"), "-w", str(tmp / "train.pt"), "-o", str(tmp / "dep.pt"),
                  "--source", str(tmp / "dep.py"), "--dtype", "bfloat16")
    assert r.returncode == 0, r.stderr
    assert "in bfloat16" in r.stdout
    sd = torch.load(tmp / "dep.pt", weights_only=True)
    assert {v.dtype for v in sd.values() if v.is_floating_point()} == {torch.bfloat16}
    spec = importlib.util.spec_from_file_location("dep_bf16", tmp / "dep.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    cls = next(v for v in vars(mod).values() if isinstance(v, type) and getattr(v, "input_shape", None))
    dep = cls().to(torch.bfloat16).eval()
    dep.load_state_dict(sd, strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        a, b = model(x), dep(x)
    assert (b.float() - a).abs().max().item() <= 16 * 2.0 ** -7 * max(1.0, a.abs().max().item())
    r = run_archc("deploy", str(tmp / "tiny.arch"), "-w", str(tmp / "train.pt"), "-o", str(tmp / "x.pt"),
                  "--dtype", "int8")
    assert r.returncode == 1 and "--dtype must be float32, bfloat16 or float16" in r.stderr
    assert not (tmp / "x.pt").exists()
