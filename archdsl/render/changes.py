"""The changes of a spec diff drawn on the new network's diagram (``archc diff --render``).

Each box that stands for a layer the diff found added, changed or renamed is coloured by that kind (a
collapsed block by the strongest change inside it); layers only in the old network cannot be drawn in the
new one, so they are listed in the diagram's notes.
"""
from __future__ import annotations

from typing import Mapping

from .model import View

__all__ = ["CHANGE_COLORS", "mark_changes"]

# kind -> (fill, border): green added, orange changed, blue renamed; the layers the diff left alone are
# drawn grey, so the changes stand out whatever colour their op family has
CHANGE_COLORS: dict[str, tuple[str, str]] = {
    "added": ("#6fd36a", "#1b5e20"),
    "changed": ("#ffb347", "#b35900"),
    "renamed": ("#8fb8ff", "#1a4fa0"),
    "same": ("#f3f3f3", "#b0b0b0"),
}
_RANK = {"renamed": 1, "changed": 2, "added": 3}


def mark_changes(view: View, changes: Mapping[int, str], removed: list[str] | None = None) -> None:
    """Set ``change`` on the view's boxes from ``changes`` (IR node id -> kind) and add the legend notes."""
    for n in view.nodes.values():
        kinds = [changes[i] for i in n.ir if i in changes]
        if kinds:
            n.change = max(kinds, key=lambda k: _RANK.get(k, 0))
        elif n.kind in ("op", "block"):
            n.change = "same"
    counts = {k: sum(1 for v in changes.values() if v == k) for k in _RANK}
    view.notes.append("changes: " + ", ".join(f"{c} {k} ({'green' if k == 'added' else 'orange' if k == 'changed' else 'blue'})"
                                             for k, c in counts.items()))
    if removed:
        shown = ", ".join(removed[:8]) + (f", ... ({len(removed)} in all)" if len(removed) > 8 else "")
        view.notes.append(f"removed: {shown}")
