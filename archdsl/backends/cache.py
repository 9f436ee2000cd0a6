"""On-disk decision cache: measured layer times and chosen backends, as JSON, one file per device.

Layout of ``<cache_dir>/<device-key>.json``::

    {"version": 1, "device": "cpu-Intel_Xeon_..-t2",
     "entries": {"float32|b8,c128->128,56x56,k31x31,s1x1,p15x15,d1x1,g128,bias":
                   {"times_ms": {"torch_nchw@nchw": 812.4, "fft@nchw": 70.1, ...},
                    "choice": "fft", "method": "autotune"}},
     "convert_ms": {"float32|<input bytes>": 0.42}}

Keys are device (the file), dtype and layer shape (the entry key). The directory is ``cache_dir`` when given,
else ``$ARCHDSL_CACHE_DIR``, else ``~/.cache/archdsl/backends``. Writes are atomic (temporary file + rename).
"""
from __future__ import annotations

import json
import os
import platform
import re
from pathlib import Path
from typing import Any

from ..fsutil import atomic_write

__all__ = ["DecisionCache", "default_cache_dir", "cpu_device_key"]

_VERSION = 1


def default_cache_dir() -> Path:
    env = os.environ.get("ARCHDSL_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "archdsl" / "backends"


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


class DecisionCache:
    """Measured times and decisions for one cache directory (files are loaded lazily, per device)."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self._data: dict[str, dict[str, Any]] = {}
        self._dirty: set[str] = set()

    def path(self, device_key: str) -> Path:
        return self.directory / f"{_safe(device_key)}.json"

    def _load(self, device_key: str) -> dict[str, Any]:
        if device_key not in self._data:
            data: dict[str, Any] = {"version": _VERSION, "device": device_key, "entries": {}, "convert_ms": {}}
            p = self.path(device_key)
            if p.exists():
                try:
                    loaded = json.loads(p.read_text())
                    # a file from another format version or device is ignored, not trusted
                    if loaded.get("version") == _VERSION and loaded.get("device") == device_key:
                        data = loaded
                        data.setdefault("entries", {})
                        data.setdefault("convert_ms", {})
                except (OSError, ValueError):
                    pass
            self._data[device_key] = data
        return self._data[device_key]

    @staticmethod
    def entry_key(dtype: str, spec_key: str) -> str:
        return f"{dtype}|{spec_key}"

    def time(self, device_key: str, dtype: str, spec_key: str, variant: str) -> float | None:
        """A measured time (ms) for ``variant`` (``backend@layout``), or ``None``."""
        e = self._load(device_key)["entries"].get(self.entry_key(dtype, spec_key))
        if not e:
            return None
        v = e.get("times_ms", {}).get(variant)
        return float(v) if v is not None else None

    def put_time(self, device_key: str, dtype: str, spec_key: str, variant: str, ms: float) -> None:
        entries = self._load(device_key)["entries"]
        e = entries.setdefault(self.entry_key(dtype, spec_key), {"times_ms": {}})
        e.setdefault("times_ms", {})[variant] = round(float(ms), 6)
        self._dirty.add(device_key)

    def choice(self, device_key: str, dtype: str, spec_key: str) -> str | None:
        e = self._load(device_key)["entries"].get(self.entry_key(dtype, spec_key))
        return e.get("choice") if e else None

    def put_choice(self, device_key: str, dtype: str, spec_key: str, backend: str, method: str) -> None:
        entries = self._load(device_key)["entries"]
        e = entries.setdefault(self.entry_key(dtype, spec_key), {"times_ms": {}})
        if e.get("choice") != backend or e.get("method") != method:
            e["choice"], e["method"] = backend, method
            self._dirty.add(device_key)

    def convert_time(self, device_key: str, dtype: str, nbytes: int) -> float | None:
        v = self._load(device_key)["convert_ms"].get(f"{dtype}|{nbytes}")
        return float(v) if v is not None else None

    def put_convert_time(self, device_key: str, dtype: str, nbytes: int, ms: float) -> None:
        self._load(device_key)["convert_ms"][f"{dtype}|{nbytes}"] = round(float(ms), 6)
        self._dirty.add(device_key)

    def entries(self, device_key: str) -> dict[str, Any]:
        return dict(self._load(device_key)["entries"])

    def save(self) -> list[Path]:
        """Write every device file that changed; returns the paths written."""
        written = []
        for key in sorted(self._dirty):
            p = self.path(key)
            atomic_write(p, json.dumps(self._data[key], indent=1, sort_keys=True) + "\n")
            written.append(p)
        self._dirty.clear()
        return written
