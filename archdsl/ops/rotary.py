"""The rotary position embedding tables of a ``buffer``: ``init="rotary_sin_cos"`` (timm's
``RotaryEmbeddingCat.pos_embed``: sin and cos concatenated), ``"rotary_sin"`` and ``"rotary_cos"``
(``RotaryEmbedding.pos_embed_sin`` / ``pos_embed_cos``).

The table of a ``window=[h, w]`` grid of patches is timm's ``build_rotary_pos_embed`` with ``in_pixels=False``
(EVA-02, ViT-RoPE): an index grid ``0 .. h-1`` x ``0 .. w-1`` plus ``offset`` (rescaled onto ``ref_window``
when given: EVA's fine-tuning scheme), ``num_bands`` inverse frequencies ``1 / temperature ** (i / num_bands)``
and the sin / cos of every position times every band, laid out interleaved ``[f0, f0, f1, f1, ...]`` or, with
``rotate_half``, in halves ``[f0, f1, ..., f0, f1, ...]``. ``indexing="xy"`` puts the x coordinate's bands first.
The number of bands comes from the shape: ``[h*w, 8*num_bands]`` for sin_cos, ``[h*w, 4*num_bands]`` for the
others. Every argument is a number, a pair, a boolean or a choice of fixed words: the generated code calls the
helper below with them as repr literals.
"""
from __future__ import annotations

import math
from typing import Any

from .core import EmitArgs, Expr, Lit, ShapeError
from .tensor import HELPERS

__all__ = ["ROTARY_DEFAULTS", "ROTARY_INITS", "rotary_ctor", "rotary_norm"]

#: init name -> which table (the helper's ``part``)
ROTARY_INITS = {"rotary_sin_cos": "sin_cos", "rotary_sin": "sin", "rotary_cos": "cos"}
#: the buffer arguments read only by the rotary inits, with their defaults (timm's)
ROTARY_DEFAULTS: dict[str, Any] = {"temperature": 10000.0, "ref_window": None, "offset": 0.0,
                                   "rotate_half": False, "indexing": "ij"}

# timm.layers.pos_embed_sincos: freq_bands(step=1), _build_grid(grid_type="index"), build_fourier_pos_embed,
# _rope_layout and RotaryEmbeddingCat._build_embed_cat, in the same float32 operations and order (the values
# match timm's bit for bit; the importer runs this same text, archdsl.importer.tables.rotary_table, to compare
# a buffer's values before it names the buffer by this init)
HELPERS["rotary_embedding"] = '''
def _rotary_embedding(win_h: int, win_w: int, num_bands: int, temperature: float, ref_h: int, ref_w: int,
                      offset: float, xy: bool, rotate_half: bool, part: str) -> torch.Tensor:
    # timm build_rotary_pos_embed(in_pixels=False): sin/cos of index-grid positions times inverse frequencies
    exp = torch.arange(0, num_bands, 1, dtype=torch.int64).to(torch.float32) / num_bands
    bands = 1.0 / (temperature ** exp)
    sizes, refs = [win_h, win_w], [ref_h, ref_w]
    if xy:
        sizes, refs = sizes[::-1], refs[::-1]
    t = [torch.arange(s, dtype=torch.int64).to(torch.float32) + offset for s in sizes]
    if ref_h > 0:
        t = [x / f * r for x, f, r in zip(t, sizes, refs)]
    grid = torch.stack(torch.meshgrid(t, indexing="xy" if xy else "ij"), dim=-1).to(dtype=torch.float32)
    pos = grid.unsqueeze(-1) * bands
    out = []
    for v in (pos.sin(), pos.cos()):
        v = v.flatten(-2).flatten(0, -2)
        out.append(torch.cat([v, v], dim=-1) if rotate_half else v.repeat_interleave(2, -1))
    if part == "sin":
        return out[0]
    if part == "cos":
        return out[1]
    return torch.cat(out, -1)
'''

def _pair(v: Any, name: str) -> tuple[int, int]:
    h, w = (v, v) if isinstance(v, int) else (v[0], v[1])
    if h < 1 or w < 1:
        raise ShapeError(f"buffer {name}={v} must be positive", arg=name)
    return h, w


def rotary_norm(a: dict[str, Any]) -> dict[str, Any]:
    """Check a rotary buffer's arguments (``a``: bound and partly normalized by the buffer op); any other init
    must leave the rotary arguments at their defaults."""
    init = a["init"]
    if init not in ROTARY_INITS:
        for k, default in ROTARY_DEFAULTS.items():
            if a[k] != default:
                raise ShapeError(f"buffer {k}= is read only by the rotary inits ({', '.join(ROTARY_INITS)}), "
                                 f"not \"{init}\"", arg=k)
        return a
    if a["window"] is None:
        raise ShapeError(f"buffer init=\"{init}\" needs window=[h, w] (the grid of patches)", arg="init")
    h, w = _pair(a["window"], "window")
    a["window"] = (h, w)
    if a["ref_window"] is not None:
        a["ref_window"] = _pair(a["ref_window"], "ref_window")
    if a["dtype"] != "float32":
        raise ShapeError(f"buffer init=\"{init}\" makes sines and cosines: dtype must be \"float32\"", arg="dtype")
    per_band = 8 if init == "rotary_sin_cos" else 4
    shape = a["shape"]
    if len(shape) != 2 or shape[0] != h * w or shape[1] % per_band:
        raise ShapeError(f"buffer init=\"{init}\" of a {h}x{w} window has shape [{h * w}, {per_band} * bands], got "
                         f"{list(shape)}", arg="shape")
    temperature = a["temperature"]
    if not math.isfinite(temperature) or temperature <= 0:
        raise ShapeError(f"buffer temperature={temperature!r} must be a positive finite number", arg="temperature")
    if not math.isfinite(a["offset"]):
        raise ShapeError(f"buffer offset={a['offset']!r} must be finite", arg="offset")
    a["temperature"], a["offset"] = float(temperature), float(a["offset"])
    return a


def rotary_ctor(e: EmitArgs, shape: Lit) -> Expr:
    """The constructor expression of a rotary buffer (every argument a checked literal)."""
    a = e.args
    h, w = a["window"]
    ref_h, ref_w = a["ref_window"] if a["ref_window"] is not None else (0, 0)
    num_bands = a["shape"][1] // (8 if a["init"] == "rotary_sin_cos" else 4)
    return ("_rotary_embedding(", Lit(h, "win_h"), ", ", Lit(w, "win_w"), ", ", Lit(num_bands, "num_bands"),
            ", ", Lit(a["temperature"], "temperature"), ", ", Lit(ref_h, "ref_h"), ", ", Lit(ref_w, "ref_w"), ", ",
            Lit(a["offset"], "offset"), ", ", Lit(a["indexing"] == "xy", "xy"), ", ",
            Lit(bool(a["rotate_half"]), "rotate_half"), ", ", Lit(ROTARY_INITS[a["init"]], "part"),
            ").reshape(", shape, ")")
