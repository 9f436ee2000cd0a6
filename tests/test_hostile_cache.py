"""The backend decision cache against hostile and broken files, unusable directories and concurrent writers.

A decision file is data someone else may have written (a shared or planted cache): whatever is malformed in
it is ignored with exactly one warning line and never trusted, a directory that cannot be written costs only
the persistence, and several processes saving at once lose nothing. Each case asserts the exact outcome.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from archdsl.backends import cache as C
from archdsl.backends.cache import MAX_CACHE_BYTES, DecisionCache
from archdsl.cachedir import seal, unseal
from helpers import ROOT

DEV = "cpu-Test_CPU-t1"
LOGGER = "archdsl.backends"


def _sealed(p: Path, data: bytes) -> Path:
    """Write ``data`` at ``p`` sealed with the directory's secret, as archdsl itself would (the content is still
    checked field by field: a file written by an older or buggy archdsl is authentic but not trusted)."""
    p.parent.mkdir(parents=True, exist_ok=True)
    blob = seal(p.parent, p.name, data)
    assert blob is not None
    p.write_bytes(blob)
    return p


def _plant(directory: Path, content: Any, *, raw: bool = False) -> Path:
    return _sealed(directory / f"{DEV}.json", (content if raw else json.dumps(content)).encode())


def _unsealed(p: Path) -> Any:
    """The JSON of a sealed decision file (its MAC verified)."""
    payload = unseal(p.parent, p.name, p.read_bytes())
    assert payload is not None, f"{p} is not sealed for its directory"
    return json.loads(payload)


def _file(entries: dict[str, Any] | None = None, convert: dict[str, Any] | None = None, **top: Any
          ) -> dict[str, Any]:
    return {"version": 1, "device": DEV, "entries": entries or {}, "convert_ms": convert or {}} | top


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def _load(directory: Path, caplog: pytest.LogCaptureFixture) -> tuple[DecisionCache, list[str]]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        c = DecisionCache(directory)
        c.entries(DEV)  # loads the device file
    return c, _warnings(caplog)


# ------------------------------------------------------------------------------------ malformed files
@pytest.mark.parametrize("content, kind", [
    ([], "list"), ("cache", "str"), (1, "int"), (None, "NoneType"), (1.5, "float"), (True, "bool"),
])
def test_a_non_object_file_is_ignored_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                       content: Any, kind: str) -> None:
    p = _plant(tmp_path, content)
    c, warned = _load(tmp_path, caplog)
    assert c.entries(DEV) == {}
    assert warned == [f"archdsl: backend decision cache {p}: ignored: the file is a JSON {kind}, not an object"]


@pytest.mark.parametrize("text", ["{", "", '{"version": 1,}', "[1, 2", "NaN garbage"])
def test_invalid_json_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str) -> None:
    with pytest.raises(ValueError) as parse_error:  # the parser's own words (they vary across Pythons)
        json.loads(text)
    p = _plant(tmp_path, text, raw=True)
    c, warned = _load(tmp_path, caplog)
    assert c.entries(DEV) == {}
    assert warned == [f"archdsl: backend decision cache {p}: ignored: is not valid JSON ({parse_error.value})"]


def test_invalid_utf8_and_huge_integers_are_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p = _sealed(tmp_path / f"{DEV}.json", b'{"version": 1, "device": "\xff"}')
    _, warned = _load(tmp_path, caplog)
    assert len(warned) == 1 and warned[0].startswith(f"archdsl: backend decision cache {p}: ignored: is not "
                                                     "valid JSON ('utf-8' codec can't decode byte 0xff")
    _sealed(p, ('{"version": 1, "device": "x", "n": ' + "9" * 5000 + "}").encode())
    _, warned = _load(tmp_path, caplog)
    assert len(warned) == 1 and warned[0].startswith(f"archdsl: backend decision cache {p}: ignored: is not "
                                                     "valid JSON (Exceeds the limit (4300 digits)")


def test_a_file_over_the_size_limit_is_not_parsed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p = _plant(tmp_path, " " * (MAX_CACHE_BYTES + 1), raw=True)
    c, warned = _load(tmp_path, caplog)
    assert c.entries(DEV) == {}
    assert warned == [f"archdsl: backend decision cache {p}: ignored: is larger than 32 MB"]


def test_another_version_or_device_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = {"f|k": {"times_ms": {"fft@nchw": 1.0}}}
    p = _plant(tmp_path, _file(good, version=2))
    c, warned = _load(tmp_path, caplog)
    assert c.entries(DEV) == {}
    assert warned == [f"archdsl: backend decision cache {p}: ignored: format version 2, expected 1"]
    _plant(tmp_path, _file(good, device="cuda-H100"))
    c, warned = _load(tmp_path, caplog)
    assert c.entries(DEV) == {}
    assert warned == [f"archdsl: backend decision cache {p}: ignored: written for device \"cuda-H100\", not "
                      f"'{DEV}'"]


@pytest.mark.parametrize("value, problem", [
    ("1.0", 'str "1.0" is not a number'),
    (-3.5, "-3.5 is not a positive finite number"),
    (0, "0 is not a positive finite number"),
    (float("nan"), "nan is not a positive finite number"),
    (float("inf"), "inf is not a positive finite number"),
    (float("-inf"), "-inf is not a positive finite number"),
    (True, "bool true is not a number"),
    (None, "NoneType null is not a number"),
    ([1.0], "list [1.0] is not a number"),
    ({"ms": 1.0}, 'dict {"ms": 1.0} is not a number'),
])
def test_a_bad_timing_is_dropped_and_the_rest_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                   value: Any, problem: str) -> None:
    # json.dumps writes NaN / Infinity / -Infinity, which Python's json (and so a planted file) accepts
    p = _plant(tmp_path, _file({"float32|k": {"times_ms": {"fft@nchw": value, "torch_nchw@nchw": 2.5},
                                              "choice": "torch_nchw", "method": "autotune"}},
                               {"float32|64": value, "float32|128": 0.25}))
    c, warned = _load(tmp_path, caplog)
    assert c.time(DEV, "float32", "k", "fft@nchw") is None
    assert c.time(DEV, "float32", "k", "torch_nchw@nchw") == 2.5
    assert c.choice(DEV, "float32", "k") == "torch_nchw"
    assert c.convert_time(DEV, "float32", 64) is None and c.convert_time(DEV, "float32", 128) == 0.25
    assert warned == [f'archdsl: backend decision cache {p}: ignored: entries["float32|k"].times_ms["fft@nchw"]: '
                      f"{problem} (and 1 more)"]


def test_wrong_types_at_every_level_are_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p = _plant(tmp_path, _file({"float32|a": "fast", "float32|b": {"times_ms": [1, 2]},
                                "float32|c": {"times_ms": {"fft@nchw": 1.0}, "choice": 7, "method": ["x"]},
                                "float32|d": {"times_ms": {"fft@nchw": 4.0}, "choice": "fft"}}))
    c, warned = _load(tmp_path, caplog)
    assert c.entries(DEV) == {"float32|c": {"times_ms": {"fft@nchw": 1.0}},
                              "float32|d": {"times_ms": {"fft@nchw": 4.0}, "choice": "fft"}}
    assert c.choice(DEV, "float32", "c") is None
    assert warned == [f'archdsl: backend decision cache {p}: ignored: entries["float32|a"] is a str, not an '
                      "object (and 3 more)"]
    p = _plant(tmp_path, _file() | {"entries": [1], "convert_ms": "x"})
    c, warned = _load(tmp_path, caplog)
    assert c.entries(DEV) == {}
    assert warned == [f"archdsl: backend decision cache {p}: ignored: 'entries' is a list, not an object "
                      "(and 1 more)"]


def test_a_well_formed_file_loads_silently_and_round_trips(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    c = DecisionCache(tmp_path)
    c.put_time(DEV, "float32", "k", "fft@nchw", 1.25)
    c.put_choice(DEV, "float32", "k", "fft", "autotune")
    c.put_convert_time(DEV, "float32", 64, 0.5)
    c.put_time(DEV, "float32", "k", "bad@nchw", float("nan"))  # a failed measurement is not stored
    (p,) = c.save()
    assert _unsealed(p) == _file({"float32|k": {"times_ms": {"fft@nchw": 1.25}, "choice": "fft",
                                                             "method": "autotune"}}, {"float32|64": 0.5})
    again, warned = _load(tmp_path, caplog)
    assert warned == [] and again.entries(DEV) == c.entries(DEV)


def test_a_planted_timing_cannot_choose_the_backend(tmp_path: Path) -> None:
    """A negative time (which would win every comparison if trusted) is ignored: the cost model decides."""
    from archdsl.backends.plan import make_plan
    from archdsl.backends.registry import BACKENDS
    from archdsl.backends.spec import ConvSpec

    spec = ConvSpec(batch=1, cin=8, cout=8, h=16, w=16, kernel=(7, 7), padding=(3, 3), groups=8)
    clean = make_plan([("dw", spec)], method="auto", device_key=DEV, cache=DecisionCache(tmp_path / "clean"))
    planted = {f"float32|{spec.key()}": {"times_ms": {f"{b}@{lay}": -1e9 for b in BACKENDS
                                                      for lay in ("nchw", "nhwc")}}}
    _plant(tmp_path / "planted", _file(planted))
    plan = make_plan([("dw", spec)], method="auto", device_key=DEV, cache=DecisionCache(tmp_path / "planted"))
    assert [(c.backend, c.layout_in, c.ms) for c in plan.layers] == \
        [(c.backend, c.layout_in, c.ms) for c in clean.layers]
    assert all(c.source == "model" and c.ms > 0 for c in plan.layers)


# -------------------------------------------------------------------------------- unusable directories
def test_an_unwritable_directory_warns_and_keeps_the_results_in_memory(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    c = DecisionCache(blocker / "backends")
    c.put_time(DEV, "float32", "k", "fft@nchw", 3.0)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert c.save() == []
    p = blocker / "backends" / f"{DEV}.json"
    assert _warnings(caplog) == [f"archdsl: could not save backend decisions to {p} (Not a directory); they are "
                                 "kept in memory for this process"]
    assert c.time(DEV, "float32", "k", "fft@nchw") == 3.0      # still known in this process
    assert blocker.read_text() == "a file where the cache directory should be"


def test_autotuning_with_an_unwritable_cache_directory_returns_the_plan(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    torch = pytest.importorskip("torch")
    from archdsl import backends as B

    blocker = tmp_path / "file"
    blocker.write_text("")
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 5, padding=2, groups=4), torch.nn.Conv2d(4, 4, 1))
    x = torch.randn(1, 4, 12, 12)
    with torch.no_grad():
        want = model(x)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        plan = B.apply(model, x, method="autotune", cache_dir=blocker, budget_s=0.005, prune=0)
    assert len(plan.layers) == 2 and all(c.source == "measured" for c in plan.layers)
    (warned,) = _warnings(caplog)
    assert warned.startswith(f"archdsl: could not save backend decisions to {blocker}/") and \
        warned.endswith("; they are kept in memory for this process")
    with torch.no_grad():
        assert torch.allclose(model(x), want, atol=1e-5)


def test_the_default_directory_follows_the_one_cache_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    base = tmp_path / "cache"
    monkeypatch.setenv("ARCHDSL_CACHE_DIR", str(base))
    monkeypatch.delenv("ARCHDSL_NO_CACHE", raising=False)
    assert DecisionCache().directory == base / "backends"
    assert (base / "backends").stat().st_mode & 0o777 == 0o700
    # a directory others may write is not read from (it could hold their data): memory only, said once
    (base / "backends").chmod(0o777)
    monkeypatch.setattr(C, "_WARNED_DIRS", set())
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert DecisionCache().directory is None
        assert DecisionCache().directory is None
    assert _warnings(caplog) == [f"archdsl: no backend decision cache in {base / 'backends'} (it is writable by "
                                 "group or others (mode 777)); measurements are kept in memory"]
    memory = DecisionCache()
    memory.put_time(DEV, "float32", "k", "fft@nchw", 1.0)
    assert memory.save() == [] and memory.time(DEV, "float32", "k", "fft@nchw") == 1.0
    # ARCHDSL_NO_CACHE: no directory and nothing to warn about
    monkeypatch.setenv("ARCHDSL_NO_CACHE", "1")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert DecisionCache().directory is None
    assert _warnings(caplog) == []


# ------------------------------------------------------------------------------------ concurrent writers
WRITER = textwrap.dedent("""
    import sys, time
    from archdsl.backends.cache import DecisionCache
    directory, who, rounds, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    while time.time() < start:  # every writer starts at the same moment
        time.sleep(0.001)
    for i in range(rounds):
        c = DecisionCache(directory)          # load, add one entry, save: the read-modify-write that races
        c.entries("%s")
        c.put_time("%s", "float32", f"w{who}-r{i}", "fft@nchw", 1.0 + who + i / 100)
        c.put_convert_time("%s", "float32", 1000 * who + i, 0.5)
        assert c.save(), "nothing written"
""" % (DEV, DEV, DEV))


def test_concurrent_writers_lose_no_entry(tmp_path: Path) -> None:
    writers, rounds = 4, 15
    start = time.time() + 2.0
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(w), str(rounds), str(start)],
                              env=env, stderr=subprocess.PIPE, text=True) for w in range(writers)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * writers, errors
    data = _unsealed(tmp_path / f"{DEV}.json")
    assert sorted(data["entries"]) == sorted(f"float32|w{w}-r{i}" for w in range(writers) for i in range(rounds))
    assert sorted(data["convert_ms"]) == sorted(f"float32|{1000 * w + i}" for w in range(writers)
                                                for i in range(rounds))
    assert data["entries"]["float32|w3-r14"] == {"times_ms": {"fft@nchw": 4.14}}
    # no temporary file left; the one secret all four writers agreed on (created atomically) is the only dot-file
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [".secret"]


def test_a_save_merges_what_another_process_wrote_meanwhile(tmp_path: Path) -> None:
    a, b = DecisionCache(tmp_path), DecisionCache(tmp_path)
    a.entries(DEV)
    b.entries(DEV)                                   # both loaded the same (empty) file
    a.put_time(DEV, "float32", "k", "fft@nchw", 1.0)
    b.put_time(DEV, "float32", "k", "torch_nchw@nchw", 2.0)
    b.put_time(DEV, "float32", "other", "fft@nchw", 3.0)
    a.save()
    b.save()
    merged = DecisionCache(tmp_path)
    assert merged.time(DEV, "float32", "k", "fft@nchw") == 1.0
    assert merged.time(DEV, "float32", "k", "torch_nchw@nchw") == 2.0
    assert merged.time(DEV, "float32", "other", "fft@nchw") == 3.0
    assert b.time(DEV, "float32", "k", "fft@nchw") == 1.0   # the saver sees the merged file too
