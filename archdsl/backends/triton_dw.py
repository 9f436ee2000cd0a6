"""Triton depthwise convolution (forward): two kernels for large kernels, direct and banded-GEMM.

Each program computes a tile of ``BLOCK_P`` output pixels x ``BLOCK_C`` channels of one image. It walks the
kernel rows, and within a row takes ``BLOCK_K`` taps at a time: it gathers the ``[BLOCK_P, BLOCK_K, BLOCK_C]``
input window for those taps (masked at the borders, which implements zero padding), multiplies it with the
``[BLOCK_K, BLOCK_C]`` weights and reduces over the taps into an fp32 ``[BLOCK_P, BLOCK_C]`` accumulator.
No ``tl.dot``: a depthwise conv has no reduction over channels to feed tensor cores directly; the kernel is
bound by loads from L1/L2, which the tap tiling keeps contiguous along the width.

The same kernel serves NCHW and NHWC tensors (it takes strides); only the tile shape differs: NHWC tiles
are wide in channels (contiguous there), NCHW tiles are wide in pixels. The output keeps the input's layout.

A second kernel, ``_dwconv_banded`` (backend ``triton_dw_gemm``), puts the tensor cores to work on the same
layer by a banded-GEMM mapping. For one channel, one kernel row ``i`` contributes
``out[y, x0:x0+BX] += in[y+i-ph, x0-pw : x0-pw+BK] @ T_i`` where ``T_i[r, x] = w[i, r - x]`` (zero off the
band ``0 <= r - x < KW``) is a ``[BK, BX]`` Toeplitz matrix gathered from the weights (the kernel starts the
input tile ``AL - pw`` columns further left, for aligned loads, and shifts the band to match). The M dimension of the
product stacks output rows of ``NB`` images of the same channel, so every program is a ``[BM, BK] x [BK, BX]``
``tl.dot`` per kernel row. Only ``KW / BK`` of the multiplies are useful (about half for k=31 with
``BX=32, BK=64``), but the tensor cores are an order of magnitude faster than the FMA units, which is what a
31x31 depthwise layer is bound by. float32 inputs use TF32 products with fp32 accumulation when
``torch.backends.cudnn.allow_tf32`` is on (PyTorch's own default for fp32 convolutions) and the three-pass
``tf32x3`` split (fp32 accuracy) otherwise.

Triton is optional: this module is imported only when a ``triton_dw*`` backend runs. On a CPU it runs only
under ``TRITON_INTERPRET=1`` (set before this module is first imported), which the tests use on tiny shapes.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import triton
import triton.language as tl

__all__ = ["conv_triton", "conv_triton_gemm", "dwconv2d", "dwconv2d_banded", "tile_config", "banded_config", "banded_align", "banded_shift",
           "launch_direct", "launch_banded", "banded_candidates"]


@triton.jit
def _dwconv_fwd(x_ptr, w_ptr, b_ptr, y_ptr,
                C, H, W, OH, OW, KH, KW, PH, PW, DH, DW,
                sxn, sxc, sxh, sxw, syn, syc, syh, syw,
                HAS_BIAS: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_p = tl.program_id(0)
    pid_c = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)      # flattened output pixels
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)      # channels
    t = tl.arange(0, BLOCK_K)                        # taps along a kernel row
    p_ok = p < OH * OW
    c_ok = c < C
    oh = p // OW
    ow = p % OW
    x_img = x_ptr + n * sxn
    x_ch = (c * sxc)[None, None, :]                  # [1, 1, C]
    w_ch = (c * (KH * KW))[None, :]                  # weights are contiguous (C, 1, KH, KW)
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    for kh in range(0, KH):
        ih = oh - PH + kh * DH
        row_ok = p_ok & (ih >= 0) & (ih < H)
        row_off = ih * sxh
        for k0 in range(0, KW, BLOCK_K):
            kw = k0 + t
            k_ok = kw < KW
            iw = ow[:, None] - PW + kw[None, :] * DW                        # [P, K]
            ok = row_ok[:, None] & k_ok[None, :] & (iw >= 0) & (iw < W)     # [P, K]
            off = row_off[:, None] + iw * sxw                               # [P, K]
            xv = tl.load(x_img + off[:, :, None] + x_ch, mask=ok[:, :, None] & c_ok[None, None, :], other=0.0)
            wv = tl.load(w_ptr + w_ch + (kh * KW + kw)[:, None], mask=k_ok[:, None] & c_ok[None, :], other=0.0)
            acc += tl.sum(xv.to(tl.float32) * wv.to(tl.float32)[None, :, :], axis=1)
    if HAS_BIAS:
        acc += tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    y_off = n * syn + (oh * syh + ow * syw)[:, None] + (c * syc)[None, :]
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=p_ok[:, None] & c_ok[None, :])


@triton.jit
def _dwconv_banded(x_ptr, w_ptr, b_ptr, y_ptr,
                   N, C, H, W, OH, OW, KH, KW, PH, PW, NYT,
                   sxn, sxc, sxh, sxw, syn, syc, syh, syw,
                   HAS_BIAS: tl.constexpr, NB: tl.constexpr, BY: tl.constexpr, BX: tl.constexpr,
                   BK: tl.constexpr, AL: tl.constexpr, PREC: tl.constexpr):
    pid_m = tl.program_id(0)                         # (image block, row tile)
    pid_x = tl.program_id(1)                         # column tile
    c = tl.program_id(2).to(tl.int64)                # channel
    BM: tl.constexpr = NB * BY
    m = tl.arange(0, BM)
    img = (pid_m // NYT) * NB + m // BY              # M stacks NB images x BY rows of one channel
    oy = (pid_m % NYT) * BY + m % BY
    m_ok = (img < N) & (oy < OH)
    x0 = pid_x * BX
    kk = tl.arange(0, BK)                            # input columns of one K chunk
    xo = tl.arange(0, BX)                            # output columns of the tile
    x_base = x_ptr + c * sxc + img.to(tl.int64) * sxn
    w_base = w_ptr + c * (KH * KW)
    acc = tl.zeros([BM, BX], dtype=tl.float32)
    for i in range(0, KH):
        iy = oy - PH + i
        r_ok = m_ok & (iy >= 0) & (iy < H)
        x_row = x_base + iy * sxh
        # The A tile starts AL >= PW columns left of the output tile (AL a multiple of 16 bytes), not PW:
        # then its loads are aligned and vectorize; the band shifts right by AL - PW to match.
        for j0 in range(0, BX + KW - 1 + AL - PW, BK):   # one chunk when BK covers the band
            col = x0 - AL + j0 + kk
            a = tl.load(x_row[:, None] + (col * sxw)[None, :],
                        mask=r_ok[:, None] & ((col >= 0) & (col < W))[None, :], other=0.0)
            tap = (j0 + kk - (AL - PW))[:, None] - xo[None, :]  # T_i[r, x] = w[i, r - x] on the band
            b = tl.load(w_base + i * KW + tap, mask=(tap >= 0) & (tap < KW), other=0.0)
            acc = tl.dot(a, b.to(a.dtype), acc, input_precision=PREC)
    ox = x0 + xo
    if HAS_BIAS:
        acc += tl.load(b_ptr + c).to(tl.float32)
    y_off = (img.to(tl.int64) * syn + oy * syh)[:, None] + (ox * syw)[None, :] + c * syc
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & (ox < OW)[None, :])


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _is_nhwc(x: torch.Tensor) -> bool:
    # an ambiguous tensor (C == 1 or H == W == 1) counts as NCHW, like PyTorch's suggest_memory_format
    return x.dim() == 4 and x.stride(1) == 1 and not x.is_contiguous()


def tile_config(channels: int, kw: int, nhwc: bool, interpret: bool = False) -> tuple[int, int, int, int]:
    """(BLOCK_P, BLOCK_K, BLOCK_C, num_warps): wide in the contiguous dimension, about 4K elements a tile.

    Under the interpreter (numpy, one program at a time) fewer, bigger programs run much faster; the tap
    tile keeps its GPU size there so the masked partial tap blocks are still exercised.
    """
    bk = min(8 if nhwc else 4, _pow2(kw))
    if interpret:
        return 32, bk, min(16, _pow2(channels)), 1
    # the best tiles of an H100 sweep at (64, 384, 64, 64) k=31 (bench/tune_triton_dw.py)
    if nhwc:
        return 32, min(4, bk), min(64, _pow2(channels)), 4
    return 128, min(4, bk), min(2, _pow2(channels)), 4


def banded_align(pw: int, elsize: int) -> int:
    """How far left of its output tile the banded kernel's input tile starts: ``pw`` rounded up to 16 bytes."""
    v = max(1, 16 // elsize)
    return -(-pw // v) * v


def banded_shift(pw: int, elsize: int) -> int:
    """``AL - PW``: how many columns the band moves right because the input tile starts at ``AL``."""
    return banded_align(pw, elsize) - pw


def banded_config(n: int, oh: int, ow: int, kw: int, interpret: bool = False, shift: int = 0
                  ) -> tuple[int, int, int, int, int]:
    """(NB, BY, BX, BK, num_warps) for the banded kernel.

    The column tile ``BX`` and the K chunk ``BK = pow2(BX + KW - 1)`` (at most 128, in chunks beyond) are
    chosen to waste the fewest multiplies: useful work per output is ``KW`` taps, done is ``chunks x BK``, and
    a last partial column tile is waste too. ``shift`` (``AL - PW``, see :func:`banded_align`) widens the band's
    input span. The M tile (``NB`` images x ``BY`` rows) is about 128 rows
    (``tl.dot`` needs at least 16).
    """
    best: tuple[float, int, int] | None = None
    for bx in (16, 32, 64):
        if bx > max(16, _pow2(ow)):
            break
        span = bx + kw - 1 + shift
        bk = min(128, _pow2(span))
        chunks = -(-span // bk)
        eff = kw / (chunks * bk) * ow / (-(-ow // bx) * bx)
        if best is None or eff >= best[0] - 1e-9:
            best = (eff, bx, bk)
    assert best is not None
    _, bx, bk = best
    by = min(32 if interpret else 64, _pow2(oh))
    nb = max(min((32 if interpret else 128) // by, _pow2(n)), -(-16 // by))
    return nb, by, bx, bk, 4


def _out_hw(h: int, w: int, kh: int, kw: int, padding: list[int], dilation: list[int]) -> tuple[int, int]:
    return (h + 2 * padding[0] - dilation[0] * (kh - 1), w + 2 * padding[1] - dilation[1] * (kw - 1))


def _empty_like_layout(x: torch.Tensor, shape: tuple[int, int, int, int]) -> torch.Tensor:
    fmt = torch.channels_last if _is_nhwc(x) else torch.contiguous_format
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt)


def launch_direct(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], y: torch.Tensor,
                  padding: list[int], dilation: list[int], bp: int, bk: int, bc: int, warps: int,
                  stages: int | None = None) -> None:
    """Run the direct kernel into ``y`` with an explicit tile (the benchmark sweeps tiles through this)."""
    n, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    oh, ow = y.shape[-2:]
    wt = weight.contiguous()
    extra = {} if stages is None else {"num_stages": stages}
    grid = (triton.cdiv(oh * ow, bp), triton.cdiv(c, bc), n)
    _dwconv_fwd[grid](x, wt, bias if bias is not None else wt, y,
                      c, h, w, oh, ow, kh, kw, padding[0], padding[1], dilation[0], dilation[1],
                      *x.stride(), *y.stride(),
                      HAS_BIAS=bias is not None, BLOCK_P=bp, BLOCK_K=bk, BLOCK_C=bc, num_warps=warps, **extra)


def launch_banded(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], y: torch.Tensor,
                  padding: list[int], prec: str, nb: int, by: int, bx: int, bk: int, warps: int,
                  stages: int | None = None) -> None:
    """Run the banded kernel into ``y`` with an explicit tile and ``tl.dot`` input precision."""
    n, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    oh, ow = y.shape[-2:]
    wt = weight.contiguous()
    # two stages: on an H100 a third (Triton's default) was slower for every tile measured (up to 3x)
    extra = {"num_stages": 2 if stages is None else stages}
    nyt = triton.cdiv(oh, by)
    al = banded_align(padding[1], x.element_size())
    grid = (triton.cdiv(n, nb) * nyt, triton.cdiv(ow, bx), c)
    _dwconv_banded[grid](x, wt, bias if bias is not None else wt, y,
                         n, c, h, w, oh, ow, kh, kw, padding[0], padding[1], nyt,
                         *x.stride(), *y.stride(),
                         HAS_BIAS=bias is not None, NB=nb, BY=by, BX=bx, BK=bk, AL=al, PREC=prec,
                         num_warps=warps, **extra)


@torch.library.custom_op("archdsl::dwconv2d_triton", mutates_args=())
def dwconv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], padding: list[int],
             dilation: list[int]) -> torch.Tensor:
    """Depthwise conv, stride 1: ``weight`` is ``(C, 1, KH, KW)``; output in the input's layout.

    A registered custom op, so torch.compile treats it as one opaque node (with a shape function).
    """
    n, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    oh, ow = _out_hw(h, w, kh, kw, padding, dilation)
    y = _empty_like_layout(x, (n, c, oh, ow))
    if y.numel() == 0:
        return y
    bp, bk, bc, warps = tile_config(c, kw, _is_nhwc(x), interpret=x.device.type == "cpu")
    launch_direct(x, weight, bias, y, padding, dilation, bp, bk, bc, warps)
    return y


@dwconv2d.register_fake
def _dwconv2d_fake(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], padding: list[int],
                   dilation: list[int]) -> torch.Tensor:
    n, c, h, w = x.shape
    oh, ow = _out_hw(h, w, weight.shape[-2], weight.shape[-1], padding, dilation)
    return _empty_like_layout(x, (n, c, oh, ow))


@torch.library.custom_op("archdsl::dwconv2d_triton_banded", mutates_args=())
def dwconv2d_banded(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], padding: list[int],
                    tf32: bool) -> torch.Tensor:
    """Depthwise conv, stride 1, dilation 1, by banded GEMMs on tensor cores; output in the input's layout.

    ``tf32`` picks TF32 products for float32 inputs (else the fp32-accurate ``tf32x3`` split); half-precision
    inputs multiply in their own dtype. Accumulation is fp32 throughout.
    """
    n, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    oh, ow = _out_hw(h, w, kh, kw, padding, [1, 1])
    y = _empty_like_layout(x, (n, c, oh, ow))
    if y.numel() == 0:
        return y
    prec = ("tf32" if tf32 else "tf32x3") if x.dtype == torch.float32 else "ieee"
    if x.device.type == "cuda":
        nb, by, bx, bk, warps = _tuned_banded(x, weight, bias, y, padding, prec)
    else:
        nb, by, bx, bk, warps = banded_config(n, oh, ow, kw, interpret=True,
                                              shift=banded_shift(padding[1], x.element_size()))
    launch_banded(x, weight, bias, y, padding, prec, nb, by, bx, bk, warps)
    return y


# (device, dtype, precision, N, C, H, W, KH, KW, padding, has bias) -> the fastest tile measured
_TUNED: dict[tuple[Any, ...], tuple[int, int, int, int, int]] = {}


def banded_candidates(n: int, oh: int, ow: int, kw: int, shift: int) -> list[tuple[int, int, int, int, int]]:
    """Tiles worth timing for one layer shape: the column tile of :func:`banded_config`, M tiles of 128 or
    256 rows made of 16-, 32- or 64-row slices, 4 or 8 warps (H100 sweeps: the best tile moves with dtype,
    precision and image size, by up to 1.5x)."""
    _, _, bx, bk, _ = banded_config(n, oh, ow, kw, shift=shift)
    out = []
    for by in (16, 32, 64):
        if by > max(16, _pow2(oh)):
            continue
        for bm in (128, 256):
            nb = max(1, bm // by)
            for warps in (4, 8):
                if bm == 256 and warps == 4:
                    continue
                out.append((nb, by, bx, bk, warps))
    return out


def _tuned_banded(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], y: torch.Tensor,
                  padding: list[int], prec: str) -> tuple[int, int, int, int, int]:
    """The fastest of :func:`banded_candidates` for this exact layer, timed once per process on the device
    (a few hundred milliseconds per new layer shape; the result is in the output buffer either way)."""
    n, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    key = (str(x.device), x.dtype, prec, n, c, h, w, kh, kw, tuple(padding), bias is not None)
    cfg = _TUNED.get(key)
    if cfg is not None:
        return cfg
    shift = banded_shift(padding[1], x.element_size())
    static = banded_config(n, y.shape[2], y.shape[3], kw, shift=shift)
    if torch.cuda.is_current_stream_capturing():
        # inside a CUDA-graph capture nothing may synchronize: take the static choice, tune next time
        return static
    from triton.testing import do_bench
    best: tuple[float, tuple[int, int, int, int, int]] | None = None
    for cand in banded_candidates(n, y.shape[2], y.shape[3], kw, shift):
        try:
            ms = do_bench(lambda: launch_banded(x, weight, bias, y, padding, prec, *cand),
                          warmup=10, rep=60, return_mode="median")
        except Exception:   # a tile the device cannot hold (shared memory): not a candidate here
            continue
        if best is None or ms < best[0]:
            best = (ms, cand)
    cfg = _TUNED[key] = best[1] if best is not None else static
    return cfg


@dwconv2d_banded.register_fake
def _dwconv2d_banded_fake(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], padding: list[int],
                          tf32: bool) -> torch.Tensor:
    n, c, h, w = x.shape
    oh, ow = _out_hw(h, w, weight.shape[-2], weight.shape[-1], padding, [1, 1])
    return _empty_like_layout(x, (n, c, oh, ow))


def conv_triton_gemm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int],
                     padding: tuple[int, int], dilation: tuple[int, int], groups: int) -> torch.Tensor:
    """Backend entry point of ``triton_dw_gemm`` (the registry guarantees stride 1, dilation 1, depthwise)."""
    if (tuple(stride) != (1, 1) or tuple(dilation) != (1, 1) or groups != x.shape[1]
            or weight.shape[0] != x.shape[1]):
        raise ValueError("triton_dw_gemm runs depthwise convs with stride 1 and dilation 1 only")
    return dwconv2d_banded(x, weight, bias, list(padding), bool(torch.backends.cudnn.allow_tf32))


def conv_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int],
                padding: tuple[int, int], dilation: tuple[int, int], groups: int) -> torch.Tensor:
    """The backend entry point (same signature as the other backends; the registry guarantees stride 1)."""
    if tuple(stride) != (1, 1) or groups != x.shape[1] or weight.shape[0] != x.shape[1]:
        raise ValueError("triton_dw runs depthwise convs with stride 1 only")
    return dwconv2d(x, weight, bias, list(padding), list(dilation))
