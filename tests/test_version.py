"""Versions (docs/compat.md): `archc --version`, the language version in `archc check --json`, one definition."""
from __future__ import annotations

import json
import re
from pathlib import Path

from helpers import ROOT, run_archc

import archdsl
from archdsl._version import LANGUAGE_VERSION, __version__


def test_version_prints_both_versions() -> None:
    r = run_archc("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"archc (archdsl) {__version__}, .arch language {LANGUAGE_VERSION}"
    assert re.fullmatch(r"\d+\.\d+", LANGUAGE_VERSION) and re.fullmatch(r"\d+\.\d+\.\d+", __version__)
    assert (archdsl.__version__, archdsl.LANGUAGE_VERSION) == (__version__, LANGUAGE_VERSION)


def test_versions_are_defined_once_and_in_the_changelog() -> None:
    """archdsl/_version.py is the one definition; the CHANGELOG's newest section names the language version."""
    hits = [p for p in (ROOT / "archdsl").rglob("*.py")
            if re.search(r"LANGUAGE_VERSION\s*=", p.read_text())]
    assert [p.name for p in hits] == ["_version.py"]
    head = next(line for line in (ROOT / "CHANGELOG.md").read_text().splitlines() if line.startswith("## ["))
    assert f"language {LANGUAGE_VERSION}" in head


def test_check_json_reports_versions_result_and_sizes() -> None:
    r = run_archc("check", "--json", "specs/resnet.arch:resnet18")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["language_version"] == LANGUAGE_VERSION and data["archdsl_version"] == __version__
    assert (data["ok"], data["networks"], data["errors"], data["diagnostics"]) == (True, 1, 0, [])
    assert data["input_sizes"] == "[3, H, W], any size"
    r = run_archc("check", "--json", "specs/blocks")
    assert r.returncode == 0 and json.loads(r.stdout)["networks"] == 0


def test_check_json_carries_every_diagnostic_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.arch"
    bad.write_text("network a():\n    input [3, 8, 8]\n    conv2d(4, 3, padding=1)\n    nosuchop(3)\n\n"
                   "network b():\n    input [3, 8, 8]\n    x2 = y\n    conv2d(4, 3)\n")
    r = run_archc("check", "--json", str(bad))
    assert r.returncode == 1 and r.stderr == ""    # the diagnostics are in the JSON, nothing else printed
    data = json.loads(r.stdout)
    assert data["ok"] is False and data["language_version"] == LANGUAGE_VERSION
    assert data["errors"] == len([d for d in data["diagnostics"] if d["severity"] == "error"]) >= 2
    assert {(d["file"], d["line"]) for d in data["diagnostics"]} >= {(str(bad), 4), (str(bad), 8)}
    assert "input_sizes" not in data
