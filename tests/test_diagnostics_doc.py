"""docs/diagnostics.md is executable: every example produces exactly the output shown there."""
from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import ROOT

from archdsl.cli import app
from archdsl.limits import Limits

DOC = ROOT / "docs" / "diagnostics.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)


@dataclasses.dataclass
class Example:
    title: str
    files: dict[str, str]
    argv: list[str]
    output: str


def _examples() -> list[Example]:
    """Each ```console block that runs `archc check`, with the ```arch blocks just before it."""
    text = DOC.read_text(encoding="utf-8")
    out: list[Example] = []
    files: dict[str, str] = {}
    title = ""
    pos = 0
    for m in _FENCE.finditer(text):
        heads = re.findall(r"^### (.+)$", text[pos:m.start()], re.M)
        if heads:
            title, files = heads[-1], {}
        pos = m.end()
        lang, body = m.group(1), m.group(2)
        if lang == "arch":
            first, _, rest = body.partition("\n")
            if first.startswith("# file: "):
                files[first[len("# file: "):].strip()] = rest
            else:
                files["example.arch"] = body
        elif lang == "console" and body.startswith("$ archc check"):
            cmd, _, output = body.partition("\n")
            out.append(Example(title, dict(files), shlex.split(cmd[2:])[1:], output))
    return out


EXAMPLES = _examples()


def test_the_catalogue_covers_every_kind() -> None:
    assert len(EXAMPLES) >= 40
    sections = re.findall(r"^## (.+)$", DOC.read_text(encoding="utf-8"), re.M)
    for needed in ("Syntax", "Names", "Arguments", "Shapes", "Imports", "Resource limits", "Warnings"):
        assert needed in sections


def test_every_limit_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    for f in dataclasses.fields(Limits):
        assert f"| `{f.name}` | {f.default:,} |" in text, f.name


@pytest.mark.parametrize("ex", EXAMPLES, ids=[e.title for e in EXAMPLES])
def test_example_output_is_exact(ex: Example, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    for name, body in ex.files.items():
        (proj / name).write_text(body, encoding="utf-8")
    monkeypatch.chdir(proj)
    res = CliRunner().invoke(app, ex.argv)
    assert res.stderr == ex.output
    assert res.exit_code == (0 if "error" not in ex.output.splitlines()[-1] else 1)
    assert "Traceback" not in res.output
