"""The conv backends on a real CUDA device (skipped where there is none, e.g. in CI).

Run on a GPU machine with ``python -m pytest tests/test_backends_cuda.py``. What the CPU suite checks under
the Triton interpreter on tiny shapes is checked here on the RepLKNet layer shapes, in every dtype, through
the compiled kernels; and the selector end to end (autotuning on the device, state_dict unchanged,
torch.compile over the swapped modules).
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device", allow_module_level=True)
pytest.importorskip("triton")

import torch.nn.functional as F  # noqa: E402

import archdsl  # noqa: E402
from archdsl import backends as B  # noqa: E402
from archdsl.backends.registry import get  # noqa: E402

# fp32 through the banded kernel multiplies in TF32 (as cuDNN does by default): about 1e-3 relative
TOL = {"float32": 5e-3, "float16": 5e-3, "bfloat16": 3e-2}
SHAPES = [(8, 128, 56, 56, 31, True), (8, 256, 28, 28, 29, False), (8, 512, 14, 14, 27, True),
          (8, 1024, 7, 7, 13, False), (4, 64, 33, 17, 7, True), (2, 16, 64, 64, 31, False)]


@pytest.mark.parametrize("backend,layout", [("triton_dw", "nchw"), ("triton_dw", "nhwc"),
                                            ("triton_dw_gemm", "nchw")])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_triton_backends_match_conv2d(backend, layout, dtype):
    fn = get(backend).function()
    dt = getattr(torch, dtype)
    for n, c, h, w, k, bias in SHAPES:
        x = torch.randn(n, c, h, w, device="cuda").to(dt)
        if layout == "nhwc":
            x = x.contiguous(memory_format=torch.channels_last)
        wt = (torch.randn(c, 1, k, k, device="cuda") / k).to(dt)
        b = torch.randn(c, device="cuda").to(dt) if bias else None
        y = fn(x, wt, b, (1, 1), (k // 2, k // 2), (1, 1), c)
        ref = F.conv2d(x.double(), wt.double(), None if b is None else b.double(), 1, k // 2, 1, c)
        assert y.shape == ref.shape and y.dtype == dt
        assert y.is_contiguous(memory_format=torch.channels_last) == (layout == "nhwc")
        assert not torch.isnan(y).any()
        rel = (y.double() - ref).abs().max().item() / ref.abs().max().item()
        tol = TOL[dtype] if (backend == "triton_dw_gemm" or dtype != "float32") else 1e-5
        assert rel <= tol, (backend, layout, dtype, (n, c, h, w, k), rel)


def test_banded_fp32_accurate_without_tf32():
    """With TF32 off (torch.backends.cudnn.allow_tf32 = False) the banded kernel is fp32-accurate (tf32x3)."""
    fn = get("triton_dw_gemm").function()
    x = torch.randn(4, 64, 32, 32, device="cuda")
    wt = torch.randn(64, 1, 31, 31, device="cuda") / 31
    old = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = False
        y = fn(x, wt, None, (1, 1), (15, 15), (1, 1), 64)
    finally:
        torch.backends.cudnn.allow_tf32 = old
    ref = F.conv2d(x.double(), wt.double(), None, 1, 15, 1, 64)
    assert (y.double() - ref).abs().max().item() / ref.abs().max().item() < 1e-5


STAGE = """\
network lk_stage:
    input [64, 32, 32]
    add:
        seq:
            pw1: conv2d(64, 1)
            relu
            lk: conv2d(64, 31, padding=15, groups=64)
            relu
            pw2: conv2d(64, 1)
        identity
    small: conv2d(64, 5, padding=2, groups=64)
"""


def test_autotuned_selection_on_cuda(tmp_path):
    torch.manual_seed(0)
    model = archdsl.build(STAGE).cuda().eval()
    keys = list(model.state_dict())
    x = torch.randn(8, 64, 32, 32, device="cuda")
    with torch.no_grad():
        ref = model(x)
    plan = B.apply(model, x, method="autotune", cache_dir=tmp_path)
    assert all(get(c.backend).supports(c.spec) for c in plan.layers)
    assert plan.backend_for("add.seq.lk") is not None or len(plan.layers) == 4
    assert list(model.state_dict()) == keys
    with torch.no_grad():
        y = model(x)
        yc = torch.compile(model)(x)
    scale = ref.abs().max().item()
    assert (y - ref).abs().max().item() <= 5e-3 * scale
    assert (yc - ref).abs().max().item() <= 5e-3 * scale
