"""On-disk decision cache: measured layer times and chosen backends, as JSON, one file per device.

Layout of ``<cache_dir>/<device-key>.json``::

    {"version": 1, "device": "cpu-Intel_Xeon_..-t2",
     "entries": {"float32|b8,c128->128,56x56,k31x31,s1x1,p15x15,d1x1,g128,bias":
                   {"times_ms": {"torch_nchw@nchw": 812.4, "fft@nchw": 70.1, ...},
                    "choice": "fft", "method": "autotune"}},
     "convert_ms": {"float32|<input bytes>": 0.42}}

Keys are device (the file), dtype and layer shape (the entry key). The directory is ``directory`` when given,
else :func:`archdsl.cachedir.cache_dir` ``("backends")`` (``$ARCHDSL_CACHE_DIR/backends`` or the per-user cache
directory, used only when private to the user; none at all under ``ARCHDSL_NO_CACHE``).

The file is data, never trusted. It is sealed (issue 20): its first line is an HMAC of its content keyed by
the directory's secret (:func:`archdsl.cachedir.seal`), and a file whose MAC does not verify (planted,
edited, or written before sealing) is ignored with one warning and re-measured. Only a regular file is read,
opened without blocking (a FIFO, device or socket at the path is ignored, never written through, and the
save is skipped with a warning). Then it is read as JSON with a size limit, and everything that is not a
well-formed value is ignored with a one-line warning on the ``archdsl.backends`` logger (a non-object file, a
file of another version or device, a timing that is not a positive finite number, a choice that is not a
string). A cache can only make archdsl re-measure, never crash it or pick a backend from a planted number it
cannot parse.

Saving is safe with concurrent writers (several processes autotuning at once): under a lock file
(``filelock``) the file is re-read, this process's new entries are merged into it, and the result replaces
the file atomically — no writer loses another's entries, no reader sees a partial file. A directory that
cannot be written only costs the persistence: a warning, and the results stay in memory for this process.
"""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import re
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..cachedir import base_dir, cache_dir, check_private_dir, seal, unseal
from ..fsutil import NotRegularFile, atomic_write, output_problem, read_regular

__all__ = ["DecisionCache", "default_cache_dir", "cpu_device_key", "MAX_CACHE_BYTES"]

_VERSION = 1
MAX_CACHE_BYTES = 32 << 20   # a decision file is ~100 bytes per layer shape; anything near this is not ours
_SEAL_BYTES = 128            # the MAC line in front of the JSON
_LOCK_TIMEOUT_S = 30.0       # a writer holds the lock for one read-merge-write (milliseconds)
_log = logging.getLogger("archdsl.backends")
_WARNED_DIRS: set[str] = set()  # unusable default directories already reported by this process


def default_cache_dir() -> Path | None:
    """The decision cache's directory by the one cache-directory rule (:mod:`archdsl.cachedir`), or None."""
    return cache_dir("backends")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def cpu_device_key(threads: int | None = None) -> str:
    """``cpu-<model>-t<threads>``: measurements on a CPU depend on its model and the thread count."""
    t = threads if threads is not None else (os.cpu_count() or 1)
    return f"cpu-{_cpu_model()}-t{t}"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "device"


def _empty(device_key: str) -> dict[str, Any]:
    return {"version": _VERSION, "device": device_key, "entries": {}, "convert_ms": {}}


def _time_problem(v: Any) -> str | None:
    """Why ``v`` is not a usable time in milliseconds (a positive finite number), or None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"{type(v).__name__} {_short(v)} is not a number"
    if not math.isfinite(v) or v <= 0:
        return f"{_short(v)} is not a positive finite number"
    return None


def _short(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, float) else repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _validated(raw: Any, device_key: str) -> tuple[dict[str, Any], list[str]]:
    """The well-formed part of a loaded decision file, and what was dropped (one line each)."""
    data = _empty(device_key)
    if not isinstance(raw, dict):
        return data, [f"the file is a JSON {type(raw).__name__}, not an object"]
    if raw.get("version") != _VERSION:
        return data, [f"format version {_short(raw.get('version'))}, expected {_VERSION}"]
    if raw.get("device") != device_key:
        return data, [f"written for device {_short(raw.get('device'))}, not {device_key!r}"]
    dropped: list[str] = []
    entries = raw.get("entries", {})
    if not isinstance(entries, dict):
        dropped.append(f"'entries' is a {type(entries).__name__}, not an object")
        entries = {}
    for key, e in entries.items():
        where = f"entries[{_short(key)}]"
        if not isinstance(e, dict):
            dropped.append(f"{where} is a {type(e).__name__}, not an object")
            continue
        clean: dict[str, Any] = {
            "times_ms": _timings(e.get("times_ms", {}), f"{where}.times_ms", f"{where}.times_ms", dropped)}
        for field in ("choice", "method"):
            if field in e:
                if isinstance(e[field], str):
                    clean[field] = e[field]
                else:
                    dropped.append(f"{where}.{field}: {type(e[field]).__name__} {_short(e[field])} is not a string")
        if clean["times_ms"] or "choice" in clean:
            data["entries"][key] = clean
    data["convert_ms"].update(_timings(raw.get("convert_ms", {}), "'convert_ms'", "convert_ms", dropped))
    return data, dropped


def _timings(obj: Any, what: str, prefix: str, dropped: list[str]) -> dict[str, float]:
    """The well-formed ``name -> milliseconds`` items of ``obj`` (a JSON object); each bad item, or a
    non-object, is reported in ``dropped`` (``what`` names the object, ``prefix[name]`` an item)."""
    if not isinstance(obj, dict):
        dropped.append(f"{what} is a {type(obj).__name__}, not an object")
        return {}
    out: dict[str, float] = {}
    for key, v in obj.items():
        problem = _time_problem(v)
        if problem:
            dropped.append(f"{prefix}[{_short(key)}]: {problem}")
        else:
            out[key] = float(v)
    return out


def read_decision_file(path: Path, device_key: str) -> tuple[dict[str, Any], list[str]]:
    """The validated content of one decision file (empty when missing) and the problems found in it."""
    try:   # a regular file only, opened without blocking: a FIFO here must not hang archc
        blob = read_regular(path, MAX_CACHE_BYTES + _SEAL_BYTES, follow=False)
    except (FileNotFoundError, NotADirectoryError):
        return _empty(device_key), []
    except NotRegularFile as e:
        return _empty(device_key), [f"is not read: {e.strerror}"]
    except OSError as e:
        return _empty(device_key), [f"cannot be read ({e.strerror or e})"]
    if len(blob) > MAX_CACHE_BYTES + _SEAL_BYTES:
        return _empty(device_key), [f"is larger than {MAX_CACHE_BYTES >> 20} MB"]
    payload = unseal(path.parent, path.name, blob)
    if payload is None:
        return _empty(device_key), ["its MAC does not verify (not written by archdsl for this cache directory)"]
    if len(payload) > MAX_CACHE_BYTES:
        return _empty(device_key), [f"is larger than {MAX_CACHE_BYTES >> 20} MB"]
    try:
        raw = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        return _empty(device_key), [f"is not valid JSON ({str(e).splitlines()[0][:80]})"]
    return _validated(raw, device_key)


def _warn_dropped(path: Path, dropped: list[str]) -> None:
    if dropped:
        more = f" (and {len(dropped) - 1} more)" if len(dropped) > 1 else ""
        _log.warning("archdsl: backend decision cache %s: ignored: %s%s", path, dropped[0], more)


def _not_writable(p: Path) -> str | None:
    """Why the cache path ``p`` must not be written (a link, FIFO, device, socket or directory there), or None."""
    if os.path.islink(p):
        return "it is a symbolic link"
    return output_problem(p)


class DecisionCache:
    """Measured times and decisions for one cache directory (files are loaded lazily, per device).

    ``directory``: where the per-device files live; default :func:`default_cache_dir`. When there is no usable
    directory the cache lives in memory only (``directory`` is None) and :meth:`save` writes nothing.
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory: Path | None = Path(directory) if directory is not None else default_cache_dir()
        if directory is None and self.directory is None:
            base = base_dir()
            if base is not None and str(base) not in _WARNED_DIRS:
                # caching is on but the directory is not private or cannot be created: say why, once
                _WARNED_DIRS.add(str(base))
                why = check_private_dir(base / "backends") or "it cannot be created"
                _log.warning("archdsl: no backend decision cache in %s (%s); measurements are kept in memory",
                             base / "backends", why)
        self._data: dict[str, dict[str, Any]] = {}
        # what this process changed, per device file: ("entries", entry key) / ("convert_ms", key)
        self._dirty: dict[str, set[tuple[str, str]]] = {}

    def path(self, device_key: str) -> Path | None:
        """The file holding ``device_key``'s decisions (None when the cache has no directory)."""
        return self.directory / f"{_safe(device_key)}.json" if self.directory is not None else None

    def _load(self, device_key: str) -> dict[str, Any]:
        if device_key not in self._data:
            p = self.path(device_key)
            data, dropped = read_decision_file(p, device_key) if p is not None else (_empty(device_key), [])
            if p is not None:
                _warn_dropped(p, dropped)
            self._data[device_key] = data
        return self._data[device_key]

    def _mark(self, device_key: str, section: str, key: str) -> None:
        self._dirty.setdefault(device_key, set()).add((section, key))

    @staticmethod
    def entry_key(dtype: str, spec_key: str) -> str:
        return f"{dtype}|{spec_key}"

    def time(self, device_key: str, dtype: str, spec_key: str, variant: str) -> float | None:
        """A measured time (ms) for ``variant`` (``backend@layout``), or ``None``."""
        e = self._load(device_key)["entries"].get(self.entry_key(dtype, spec_key))
        if not e:
            return None
        v = e["times_ms"].get(variant)
        return float(v) if v is not None else None

    def put_time(self, device_key: str, dtype: str, spec_key: str, variant: str, ms: float) -> None:
        if _time_problem(ms):  # a failed or zero-length measurement is not worth remembering
            return
        key = self.entry_key(dtype, spec_key)
        e = self._load(device_key)["entries"].setdefault(key, {"times_ms": {}})
        e["times_ms"][variant] = round(float(ms), 6)
        self._mark(device_key, "entries", key)

    def choice(self, device_key: str, dtype: str, spec_key: str) -> str | None:
        e = self._load(device_key)["entries"].get(self.entry_key(dtype, spec_key))
        return e.get("choice") if e else None

    def put_choice(self, device_key: str, dtype: str, spec_key: str, backend: str, method: str) -> None:
        key = self.entry_key(dtype, spec_key)
        e = self._load(device_key)["entries"].setdefault(key, {"times_ms": {}})
        if e.get("choice") != backend or e.get("method") != method:
            e["choice"], e["method"] = backend, method
            self._mark(device_key, "entries", key)

    def convert_time(self, device_key: str, dtype: str, nbytes: int) -> float | None:
        v = self._load(device_key)["convert_ms"].get(f"{dtype}|{nbytes}")
        return float(v) if v is not None else None

    def put_convert_time(self, device_key: str, dtype: str, nbytes: int, ms: float) -> None:
        if _time_problem(ms):
            return
        key = f"{dtype}|{nbytes}"
        self._load(device_key)["convert_ms"][key] = round(float(ms), 6)
        self._mark(device_key, "convert_ms", key)

    def entries(self, device_key: str) -> dict[str, Any]:
        return dict(self._load(device_key)["entries"])

    def _merged(self, device_key: str, on_disk: dict[str, Any]) -> dict[str, Any]:
        """``on_disk`` (what other processes wrote meanwhile) plus this process's changes to ``device_key``."""
        mine = self._data[device_key]
        merged = on_disk
        for section, key in self._dirty.get(device_key, ()):
            if section == "convert_ms":
                merged["convert_ms"][key] = mine["convert_ms"][key]
                continue
            ours = mine["entries"][key]
            theirs = merged["entries"].setdefault(key, {"times_ms": {}})
            theirs["times_ms"].update(ours["times_ms"])
            for field in ("choice", "method"):
                if field in ours:
                    theirs[field] = ours[field]
        return merged

    def save(self) -> list[Path]:
        """Merge every changed device file into its file on disk, under a lock; returns the paths written.

        A file that cannot be written (read-only or missing directory, lock held too long) is reported with
        a warning and its changes stay in memory (a later ``save`` retries them); nothing is raised.
        """
        written = []
        for key in sorted(self._dirty):
            p = self.path(key)
            if p is None:
                continue  # memory-only cache (said so when it was created)
            lock = Path(str(p) + ".lock")
            odd = next(((q, why) for q in (p, lock) for why in [_not_writable(q)] if why), None)
            if odd is not None:   # never written through, never replaced: the user put it there
                _log.warning("archdsl: could not save backend decisions to %s (%s: %s); they are kept in memory "
                             "for this process", p, odd[0].name, odd[1])
                continue
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
                with FileLock(str(lock), timeout=_LOCK_TIMEOUT_S):
                    # re-read under the lock: entries other processes saved since we loaded are kept; what is
                    # malformed in the file was reported when it was loaded and is dropped by this rewrite
                    on_disk, _ = read_decision_file(p, key)
                    merged = self._merged(key, on_disk)
                    text = json.dumps(merged, indent=1, sort_keys=True, allow_nan=False) + "\n"
                    blob = seal(p.parent, p.name, text.encode("utf-8"))
                    if blob is None:
                        raise OSError(f"no secret could be kept in {p.parent} to seal the file")
                    atomic_write(p, blob)
            except (OSError, Timeout) as e:
                reason = "its lock is held by another process" if isinstance(e, Timeout) else (e.strerror or str(e))
                _log.warning("archdsl: could not save backend decisions to %s (%s); they are kept in memory "
                             "for this process", p, reason)
                continue
            self._data[key] = merged
            written.append((key, p))
        for key, _ in written:
            del self._dirty[key]
        return [p for _, p in written]
