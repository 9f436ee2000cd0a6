"""The axes of a sweep (``--grid name=v1,v2,...``) and the variants they span (their Cartesian product)."""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import ArchError
from ..pipeline import parse_set

__all__ = ["Variant", "parse_grid", "variants", "MAX_VARIANTS"]

MAX_VARIANTS = 10_000   # a grid is typed by a person: more than this is a mistake (a range typed as a list)


@dataclass(frozen=True)
class Variant:
    """One point of the grid: the network parameters it sets (over the spec's defaults and ``--set``)."""

    index: int
    params: dict[str, Any] = field(hash=False)

    @property
    def name(self) -> str:
        return ",".join(f"{k}={_show(v)}" for k, v in self.params.items()) or "default"

    def key(self, salt: str) -> str:
        """A stable id of this variant's result under ``salt`` (spec text, settings): its cache file name."""
        blob = json.dumps([salt, sorted(self.params.items())], sort_keys=True, default=repr)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _show(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (list, str)) else str(v).lower() if isinstance(v, bool) else str(v)


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["width=32,48", "depth=1,2"]`` -> ``{"width": [32, 48], "depth": [1, 2]}`` (values are .arch literals,
    as with ``--set``; a list value is written as JSON: ``--grid 'sizes=[1,2];[2,2]'`` separates by ``;``)."""
    axes: dict[str, list[Any]] = {}
    for it in items:
        if "=" not in it:
            raise ArchError(f"--grid expects name=v1,v2,..., got '{it[:80]}'", None,
                            hint="e.g. --grid width_mult=0.5,0.75,1.0")
        name, _, rest = it.partition("=")
        name = name.strip()
        sep = ";" if rest.lstrip().startswith("[") else ","
        raw = [v.strip() for v in rest.split(sep)]
        if not rest.strip() or any(not v for v in raw):
            raise ArchError(f"--grid {name}: empty value in '{it[:80]}'", None, hint="e.g. --grid depth=1,2,3")
        if name in axes:
            raise ArchError(f"--grid {name} is given twice", None, hint="list every value in one --grid")
        values = [parse_set([f"{name}={v}"])[name] for v in raw]
        seen: set[str] = set()
        axes[name] = []
        for v in values:   # a value typed twice is one variant
            if json.dumps(v) not in seen:
                seen.add(json.dumps(v))
                axes[name].append(v)
    return axes


def variants(axes: dict[str, list[Any]], base: dict[str, Any] | None = None) -> list[Variant]:
    """Every combination of the axes' values, in the order the axes and values were written."""
    n = 1
    for vals in axes.values():
        n *= len(vals)
    if n > MAX_VARIANTS:
        raise ArchError(f"the grid spans {n:,} variants, more than {MAX_VARIANTS:,}", None,
                        hint="sweep fewer values per axis, or split the sweep")
    names = list(axes)
    out = []
    for i, combo in enumerate(itertools.product(*(axes[k] for k in names))):
        out.append(Variant(i, {**(base or {}), **dict(zip(names, combo))}))
    return out
