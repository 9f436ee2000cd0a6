"""The one checkpoint reader: ``archc deploy --weights``, ``archdsl.build(spec, weights=PATH)``,
``pretrained=True`` and :mod:`archdsl.hub` all read state-dict files through :func:`load_checkpoint`, with the
same checks, in this order, each failure one clean :class:`ArchError`:

1. **The file**: a regular file (a FIFO or device is never opened for reading), not empty, at most ``budget``
   bytes (what the network's tensors can take in float64, plus the container).
2. **The archive** (torch's zip format): every entry stored, none compressed (``torch.save`` never compresses,
   so nothing can inflate: a 2 MB file whose DEFLATEd entry holds a 500M-float storage is refused from the zip
   directory alone), the declared entry sizes within ``budget``.
3. **The declared tensors, before any data is read**: the pickle is loaded with ``weights_only=True`` (no
   pickled code ever runs) onto the *meta* device, which gives every tensor's dtype and shape and every
   storage's declared size without touching the data; the declared storages must fit the data in the file
   and the budget, and every dtype must be one archdsl handles (below).
4. **The data**: loaded memory-mapped (bounded by the file, never copied whole), then checked finite.

Dtypes, one rule each (:func:`dtype_problem`): float32, float64, float16 and bfloat16 are read and converted to
the model's dtype by rounding to nearest (``load_state_dict``; a value that would overflow the model's dtype
is refused); integer and bool tensors are accepted only where the model's tensor is an integer too (a
BatchNorm's ``num_batches_tracked``, an index buffer); float8, float4, complex and the unsigned 16-64 bit
types are refused with one line (a float8 checkpoint is usually scaled: casting it would silently give
another model). Values must be finite; BatchNorm running variances non-negative.

A legacy (pre-zip, ``_use_new_zipfile_serialization=False``) file has its data inline: it cannot be mapped
or pre-scanned, but its size is bounded by step 1, and it is loaded with ``weights_only=True`` too.
"""
from __future__ import annotations

import math
import os
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import ArchError
from ..fsutil import NotRegularFile, open_regular

__all__ = [
    "FLOAT_DTYPES",
    "SHOW_KEYS",
    "WRAPPERS",
    "budget_for",
    "check_bn_vars",
    "check_finite_values",
    "check_tensors",
    "dtype_problem",
    "finite",
    "listed",
    "load_checkpoint",
    "read_checkpoint",
]

SHOW_KEYS = 5            # keys listed per problem (the rest are counted)
_OVERHEAD = 1 << 20      # container bytes a torch.save file may add to its tensor data
_PER_KEY = 1024
FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool)
#: keys under which training scripts wrap a state_dict (``{"state_dict": sd, "epoch": 3}``), tried in order
WRAPPERS = ("state_dict", "model", "model_state_dict", "module", "net", "weights")
_SAVE_HINT = "save the weights with torch.save(model.state_dict(), 'model.pt')"


def budget_for(numels: Mapping[str, int] | int, keys: int = 0, *, slack: int = 1) -> int:
    """The most bytes a checkpoint of tensors with these element counts may take: float64 for every element
    plus the container, times ``slack`` (for a checkpoint allowed extra keys, e.g. a 1000-class head)."""
    numel = numels if isinstance(numels, int) else sum(numels.values())
    n_keys = keys if isinstance(numels, int) else len(numels)
    return slack * (8 * numel + _PER_KEY * n_keys + _OVERHEAD)


def listed(keys: list[str]) -> str:
    """At most SHOW_KEYS keys, comma-separated, and how many more."""
    shown = ", ".join(keys[:SHOW_KEYS])
    return shown + (f" (and {len(keys) - SHOW_KEYS} more)" if len(keys) > SHOW_KEYS else "")


def finite(v: Any) -> bool:
    """No NaN or infinity in ``v``. One float64 sum is exact for it (NaN/inf propagate; float32 values cannot
    add up to a float64 overflow) and reads the tensor once; a non-finite sum is confirmed element-wise."""
    if not v.is_floating_point() or v.numel() == 0:
        return True
    if math.isfinite(float(torch.sum(v, dtype=torch.float64))):
        return True
    return bool(v.isfinite().all())


def dtype_problem(key: str, dtype: Any, want: Any | None) -> str | None:
    """Why a checkpoint tensor of ``dtype`` cannot be loaded where the model holds ``want`` (None: unknown
    key, any handled dtype), or None. The rule is in the module docstring."""
    want_int = want is not None and not (want.is_floating_point or want.is_complex)
    if dtype in FLOAT_DTYPES:
        if want_int:
            what = "a batch counter" if key.endswith("num_batches_tracked") else f"the model's tensor ({want})"
            return f"'{key}' has dtype {dtype}; {what} is an integer"
        return None
    if dtype in _INT_DTYPES:
        if want is None or want_int:
            return None
        return f"'{key}' has dtype {dtype}; weights must be floating point"
    return (f"'{key}' has dtype {dtype}, which archdsl does not load (float32, float64, float16 and bfloat16 "
            "weights are read; integers only for integer buffers)")


def _clean(message: str) -> str:
    """torch's load error as one line, without its advice to unpickle arbitrary code (never shown)."""
    sentences = [t.strip() for line in message.splitlines() for t in re.split(r"(?<=\.)\s+", line) if t.strip()]
    keep = [t for t in sentences if "weights_only" not in t and "weights only" not in t.lower()
            and not t.startswith(("Check the documentation", "Please file an issue", "Do it only if"))]
    text = keep[0] if keep else "the file holds objects other than tensors"
    return text.replace("WeightsUnpickler error: ", "")[:300]


def _check_archive(path: Path, budget: int) -> list[zipfile.ZipInfo] | None:
    """A zip checkpoint's entries (all stored, declared sizes within ``budget``), or None for a non-zip file."""
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic[:2] != b"PK":
        return None
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise ArchError(f"cannot read weights from '{path}': the file is truncated or not a torch checkpoint "
                        "(its zip directory is missing or damaged)", None, hint=_SAVE_HINT) from None
    packed = [i.filename for i in infos if i.compress_type != zipfile.ZIP_STORED]
    if packed:
        raise ArchError(f"'{path}' holds compressed entries ({listed(packed)}); torch.save writes none, and "
                        "they are not inflated here", None, hint=_SAVE_HINT)
    declared = sum(i.file_size for i in infos)
    if declared > budget:
        raise ArchError(f"'{path}' declares {declared:,} bytes of data; the weights of this network need at most "
                        f"{budget:,}", None, hint="is this the checkpoint of another (bigger) network?")
    return infos


def _load(path: Path, *, meta: bool, mmap: bool, head: bytes) -> Any:
    """``torch.load`` with ``weights_only`` (on the meta device: shapes and dtypes, no data); one clean error."""
    try:
        with warnings.catch_warnings():   # torch's notes on sparse/typed storages are not the user's business
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="meta" if meta else "cpu", weights_only=True, mmap=mmap)
    except Exception as e:   # truncated, foreign or holding objects: one line, without torch's advice
        text = str(e)
        if isinstance(e, EOFError) or "Ran out of input" in text or "EOF" in text:
            why = "the file is truncated"
        elif head[:2] != b"PK" and head[:1] != b"\x80":   # neither torch's zip format nor its legacy pickle
            why = "not a torch checkpoint (torch.save format)"
        else:
            why = _clean(text)
        raise ArchError(f"cannot read weights from '{path}': {why}", None,
                        hint="archdsl reads tensors only; " + _SAVE_HINT) from None


def _unwrap(obj: Any, where: str) -> dict[str, Any]:
    """The state_dict inside ``obj``: through up to three wrapper dicts (``{"model": {"state_dict": sd}}``),
    without a ``module.`` prefix shared by every key (DataParallel / DDP)."""
    for _ in range(3):
        if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in WRAPPERS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping):
        raise ArchError(f"'{where}' holds a {type(obj).__name__}, not a state_dict", None, hint=_SAVE_HINT)
    bad_keys = [repr(k) for k in obj if not isinstance(k, str)]
    if bad_keys:
        raise ArchError(f"'{where}': state_dict keys must be strings, got {listed(bad_keys)}", None)
    sd = dict(obj)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def check_tensors(sd: Mapping[str, Any], where: str, want: Mapping[str, Any] | None = None, *,
                  loaded: bool = True) -> None:
    """Every value a dense, non-meta, non-quantized tensor of a handled dtype (``want``: the model's dtype per
    key, see :func:`dtype_problem`). Data is not read: this runs on the meta pre-scan too (``loaded=False``)."""
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise ArchError(f"'{where}': '{k}' holds a value of type {type(v).__name__}, not a tensor", None)
        if loaded and v.is_meta:
            raise ArchError(f"'{where}': '{k}' is a meta tensor (it has no data)", None,
                            hint="save real weights, not a model created on the meta device")
        if v.layout != torch.strided:
            raise ArchError(f"'{where}': '{k}' is a sparse tensor ({v.layout}); weights must be dense", None,
                            hint="save tensor.to_dense()")
        if v.is_quantized:
            raise ArchError(f"'{where}': '{k}' is a quantized tensor; archdsl loads float weights", None,
                            hint="load the float weights, then quantize the built (or deployed) model")
        problem = dtype_problem(k, v.dtype, want.get(k) if want is not None else None)
        if problem:
            raise ArchError(f"'{where}': {problem}", None,
                            hint="convert the file: torch.save({k: v.float() for k, v in sd.items()}, 'f32.pt') "
                                 "(a scaled float8 checkpoint needs its scales applied first)"
                            if v.dtype not in FLOAT_DTYPES + _INT_DTYPES else
                            "save the trained model's own state_dict (its tensors keep their dtypes)")


def check_finite_values(sd: Mapping[str, Any], where: str, want: Mapping[str, Any] | None = None) -> None:
    """NaN or infinity refused; so is a value that becomes infinite in the model's dtype (``want``)."""
    nonfinite = [k for k, v in sd.items() if not finite(v)]
    if nonfinite:
        raise ArchError(f"'{where}' holds NaN or infinite values in {listed(nonfinite)}", None,
                        hint="the training diverged, or the file is damaged")
    if want is None:
        return
    overflow = [k for k, v in sd.items() if v.is_floating_point() and k in want and want[k].is_floating_point
                and want[k] != v.dtype and v.numel() and float(v.abs().max()) > torch.finfo(want[k]).max]
    if overflow:
        raise ArchError(f"'{where}': values in {listed(overflow)} overflow the model's dtype "
                        f"({want[overflow[0]]})", None, hint="the file is damaged or not these weights")


def _record_sizes(path: Path, infos: list[zipfile.ZipInfo]) -> dict[int, int]:
    """File offset of each data record's bytes -> its size (the local header's name and extra fields skipped)."""
    out: dict[int, int] = {}
    with path.open("rb") as fh:
        for i in infos:
            if "/data/" not in i.filename:
                continue
            fh.seek(i.header_offset + 26)
            lengths = fh.read(4)
            if len(lengths) < 4:
                continue
            start = i.header_offset + 30 + int.from_bytes(lengths[:2], "little") + int.from_bytes(lengths[2:], "little")
            out[start] = i.file_size
    return out


def _prescan(path: Path, infos: list[zipfile.ZipInfo], budget: int, head: bytes,
             want: Mapping[str, Any] | None) -> None:
    """Dtypes, shapes and declared storage sizes from a meta-device load (no data read), checked: each storage
    within its data record, all of them within the budget.

    Sparse and quantized tensors cannot be rebuilt on the meta device: then the pre-scan is skipped and the
    memory-mapped load below (bounded by the file, whose entries are stored and within the budget) finds them.
    """
    try:
        loaded = _load(path, meta=True, mmap=False, head=head)
    except ArchError:
        return
    shadow = _unwrap(loaded, str(path))
    check_tensors(shadow, str(path), want, loaded=False)
    records = _record_sizes(path, infos)
    storages: dict[Any, int] = {}
    for k, v in shadow.items():
        s = v.untyped_storage()
        storages[getattr(s, "_checkpoint_offset", k)] = s.nbytes()   # one storage may back several tensors
    # a storage without a record (a saved meta tensor) has no data to read: the load below says so
    short = [(off, n) for off, n in storages.items() if off in records and n > records[off]]
    declared = sum(storages.values())
    hint = "the file is damaged, or the checkpoint of another (bigger) network"
    if short:
        off, n = short[0]
        raise ArchError(f"'{path}' declares a tensor storage of {n:,} bytes where the file holds {records[off]:,}",
                        None, hint=hint)
    data = sum(records.values())
    # offsets computed by torch may miss a crafted record: the totals cannot (unless some storage has no
    # record at all, a saved meta tensor, which the memory-mapped load refuses by name)
    if declared > data and len(storages) <= len(records):
        raise ArchError(f"'{path}' declares {declared:,} bytes of tensors where the file holds {data:,}",
                        None, hint=hint)
    if declared > budget:
        raise ArchError(f"'{path}' declares {declared:,} bytes of tensors; this network needs at most {budget:,}",
                        None, hint=hint)


def load_checkpoint(path: str | os.PathLike[str], *, budget: int | None, want: Mapping[str, Any] | None = None
                    ) -> dict[str, Any]:
    """A checked state_dict from the file ``path`` (steps 1-4 of the module docstring).

    ``budget``: the most bytes the file may hold (:func:`budget_for`); None when no network sizes it (then the
    file's own size: memory stays bounded by it, the declared tensors must still fit the data). ``want``: the model's dtype per key,
    for the dtype rule (keys it lacks get the generic rule; matching keys and shapes is the caller's).
    """
    p = Path(path)
    if p.is_dir():
        raise ArchError(f"weights '{p}' is a directory", None, hint="give the .pt file written by torch.save")
    if not p.exists():
        raise ArchError(f"no such weights file: '{p}'", None, hint=_SAVE_HINT)
    try:   # a regular file only, opened without blocking (a FIFO would hang the reader)
        fd = open_regular(p)
        size = os.fstat(fd).st_size
        head = os.read(fd, 4)
        os.close(fd)
    except NotRegularFile as e:
        raise ArchError(f"weights '{p}' is {e.kind}, not a regular file", None, hint=_SAVE_HINT) from None
    except OSError as e:
        raise ArchError(f"cannot read weights from '{p}': {e.strerror or e}", None) from None
    if size == 0:
        raise ArchError(f"weights file '{p}' is empty", None, hint=_SAVE_HINT)
    budget = size if budget is None else budget
    if size > budget:
        raise ArchError(f"weights file '{p}' is {size:,} bytes; a state_dict of this network takes at most "
                        f"{budget:,}", None, hint="is this the checkpoint of another (bigger) network?")
    if p.suffix == ".safetensors":   # no pickle at all, memory-mapped by the library
        try:
            from safetensors.torch import load_file
            sd = _unwrap(load_file(str(p)), str(p))
        except ArchError:
            raise
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ArchError(f"cannot read weights from '{p}': {first[:300]}", None, hint=_SAVE_HINT) from None
    else:
        infos = _check_archive(p, budget)
        if infos is not None:
            _prescan(p, infos, budget, head, want)
        sd = _unwrap(_load(p, meta=False, mmap=infos is not None, head=head), str(p))
    check_tensors(sd, str(p), want)
    check_finite_values(sd, str(p), want)
    return sd


def read_checkpoint(path: Path, expected: dict[str, tuple[int, ...]], *,
                    bn_vars: frozenset[str] = frozenset()) -> dict[str, Any]:
    """``archc deploy``'s train-form ``state_dict``: :func:`load_checkpoint` within the budget of the
    ``expected`` keys and shapes, then exactly those keys and shapes (missing / unexpected / mis-shaped keys
    listed), floating weights (an integer batch counter), BatchNorm variances (``bn_vars``) >= 0."""
    want = {k: torch.int64 if k.endswith("num_batches_tracked") else torch.float32 for k in expected}
    numels = {k: math.prod(s) for k, s in expected.items()}
    sd = load_checkpoint(path, budget=budget_for(numels), want=want)
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k} {list(sd[k].shape)} (expected {list(s)})" for k, s in expected.items()
             if k in sd and tuple(sd[k].shape) != s]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {listed(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {listed(unexpected)}")
        if wrong:
            parts.append(f"{len(wrong)} shapes differ: {listed(wrong)}")
        raise ArchError(f"the weights in '{path}' do not match the network: " + "; ".join(parts), None,
                        hint="pass the same --set values the model was trained with")
    check_bn_vars(sd, str(path), bn_vars)
    return sd


def check_bn_vars(sd: Mapping[str, Any], where: str, bn_vars: frozenset[str] | set[str]) -> None:
    """BatchNorm running variances (the keys ``bn_vars``) are never negative."""
    negative = [k for k in sorted(bn_vars) if k in sd and bool((sd[k] < 0).any())]
    if negative:
        raise ArchError(f"'{where}': BatchNorm running variance is negative in {listed(negative)}", None,
                        hint="a variance is never negative: the file is damaged or not these weights")
