"""Freeze today's specs into the compatibility corpus (run once per corpus addition, never to update).

    python tests/compat/freeze.py            # copy what is not frozen yet; never overwrites a frozen file

Copies every ``specs/**/*.arch`` and ``examples/*.arch`` (with ``examples/plugins/*.py``) to
``tests/compat/specs/`` and ``tests/compat/examples/`` (same relative layout, so their imports still resolve;
a spec whose header says ``--plugin examples/plugins/x.py`` is built with the frozen plugin), and writes every fenced
code block of ``README.md`` and ``docs/*.md`` that is a complete spec (it defines a network and every network
in it compiles on its own) to ``tests/compat/docs/<doc>_<hash of the text>.arch``. A file already in the corpus is left as
it is: the corpus is what users wrote against an earlier version, so it never follows the language.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "compat"

__all__ = ["doc_snippets", "main"]

_FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
_NETWORK = re.compile(r"^network\s+(\w+)", re.MULTILINE)


def doc_snippets(path: Path) -> list[str]:
    """The fenced blocks of a Markdown file that are complete specs: at least one ``network`` and every
    network in the block compiles from the block's text alone (snippets that show an error are not specs)."""
    sys.path.insert(0, str(ROOT))
    import archdsl
    found = []
    for m in _FENCE.finditer(path.read_text()):
        text = m.group(1)
        names = _NETWORK.findall(text)
        if not names:
            continue
        with tempfile.TemporaryDirectory() as d:
            f = Path(d) / "snippet.arch"
            f.write_text(text)
            try:
                for name in names:
                    archdsl.graph(f"{f}:{name}")
            except archdsl.ArchError:
                continue
        found.append(text)
    return found


def _copy(src: Path, dst: Path) -> bool:
    if dst.exists():
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return True


def main() -> int:
    added = []
    for f in sorted((ROOT / "specs").rglob("*.arch")):
        dst = CORPUS / "specs" / f.relative_to(ROOT / "specs")
        if _copy(f, dst):
            added.append(dst)
    # the examples, and the plugins some of them name in their header (``--plugin examples/plugins/x.py``)
    for f in [*sorted((ROOT / "examples").glob("*.arch")), *sorted((ROOT / "examples" / "plugins").glob("*.py"))]:
        dst = CORPUS / "examples" / f.relative_to(ROOT / "examples")
        if _copy(f, dst):
            added.append(dst)
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for text in doc_snippets(doc):
            # named by content, so a snippet added to the docs later never shifts an older one's name
            dst = CORPUS / "docs" / f"{doc.stem.lower()}_{hashlib.sha256(text.encode()).hexdigest()[:8]}.arch"
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_text(f"# frozen from {doc.relative_to(ROOT)}\n{text}")
                added.append(dst)
    for p in added:
        print(f"froze {p.relative_to(ROOT)}")
    print(f"{len(added)} file(s) added; existing corpus files are never changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
