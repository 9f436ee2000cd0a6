"""Caches, outputs, CLI numbers and checkpoints against what a hostile (or unlucky) user can put in their way.

Issue 20: a planted, well-typed parse-cache entry changed the built model; a FIFO at a cache path hung archc;
``-o`` replaced a device node with a regular file; ``check /dev/zero`` said ok; ``--batch -1`` was a usage
error with the exit status reserved for internal errors. Each case asserts the exact outcome.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import archdsl
from archdsl.backends.cache import DecisionCache
from archdsl.cachedir import SECRET_NAME, cache_dir, seal, secret, unseal
from archdsl.lang import astcache, parser
from archdsl.source import Source
from helpers import ROOT, run_archc

SPEC = "network n:\n    input [3, 8, 8]\n    c: conv2d(6, 3)\n"
DEV = "cpu-Test_CPU-t1"


def _entry(src: Source) -> Path:
    key = astcache.cache_key(src, parser._grammar_digest(), parser._bounds_salt(archdsl.Limits()))
    d = cache_dir("ast")
    assert d is not None
    return d / key[:2] / key


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("ARCHDSL_NO_CACHE", raising=False)
    monkeypatch.setenv("ARCHDSL_CACHE_DIR", str(tmp_path / "cache"))
    astcache._MEMO.clear()
    yield tmp_path / "cache"
    astcache._MEMO.clear()


def _channels(spec: str) -> int:
    """The output channels of the one conv of ``spec``, parsed as a fresh process would (memo cleared)."""
    astcache._MEMO.clear()
    (conv,) = [n for n in archdsl.graph(spec).records() if n.op == "conv2d"]
    return int(conv.shape[0])


# ------------------------------------------------------------------------------------------- parse cache
def _forge(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


def test_a_planted_well_typed_parse_entry_never_changes_the_model(fresh_cache: Path, tmp_path: Path) -> None:
    spec = tmp_path / "net.arch"
    spec.write_text(SPEC)
    assert _channels(str(spec)) == 6
    entry = _entry(Source.from_file(spec))
    blob = entry.read_bytes()
    head, _, body = blob.partition(b"\n")
    assert head.startswith(b"archdsl-mac-1 ") and json.loads(body)["n"] == "SpecFile"
    forged = _forge(body.decode(), '{"s":[3,15,3,16]},6]', '{"s":[3,15,3,16]},40]')
    # the attack: a well-typed AST with another channel count, (a) unsealed, (b) under the old MAC
    for planted in (forged.encode(), head + b"\n" + forged.encode()):
        entry.write_bytes(planted)
        assert astcache.decode(forged, Source.from_file(spec)) is not None   # it does decode: only the MAC stops it
        assert _channels(str(spec)) == 6
        assert entry.read_bytes() != planted, "the entry was not recomputed"
        assert unseal(entry.parent.parent, entry.name, entry.read_bytes()) is not None


def test_an_entry_sealed_for_another_spec_is_a_miss(fresh_cache: Path, tmp_path: Path) -> None:
    """A valid entry moved to another key's name (same secret) is refused: the MAC covers the name."""
    a, b = tmp_path / "a.arch", tmp_path / "b.arch"
    a.write_text(SPEC.replace("conv2d(6", "conv2d(40"))
    b.write_text(SPEC)
    assert _channels(str(a)) == 40 and _channels(str(b)) == 6
    _entry(Source.from_file(b)).write_bytes(_entry(Source.from_file(a)).read_bytes())
    assert _channels(str(b)) == 6


def test_the_secret_is_private_and_a_shared_one_is_not_trusted(fresh_cache: Path, tmp_path: Path) -> None:
    spec = tmp_path / "net.arch"
    spec.write_text(SPEC)
    _channels(str(spec))
    d = cache_dir("ast")
    assert d is not None
    key_file = d / SECRET_NAME
    st = key_file.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == 32 and secret(d) == key_file.read_bytes()
    key_file.chmod(0o644)                    # others could read it: it is no secret, nothing is trusted
    assert secret(d) is None and seal(d, "x", b"data") is None
    assert _channels(str(spec)) == 6         # parsed again, still right
    key_file.unlink()
    key_file.symlink_to(tmp_path / "elsewhere")   # a link is never followed to a key
    (tmp_path / "elsewhere").write_bytes(b"k" * 32)
    (tmp_path / "elsewhere").chmod(0o600)
    assert secret(d) is None


FIFO_CHILD = textwrap.dedent("""
    import sys
    from archdsl.lang import parser
    from archdsl.source import Source
    print(parser.parse(Source.from_file(sys.argv[1])).networks["n"].name)
""")


def _node(path: Path, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        s, cwd = socket.socket(socket.AF_UNIX), os.getcwd()
        os.chdir(path.parent)   # a socket's path is limited to ~100 bytes: bind the short relative name
        try:
            s.bind(path.name)
        finally:
            os.chdir(cwd)
            s.close()
    elif kind == "symlink-devzero":
        path.symlink_to("/dev/zero")
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["fifo", "socket", "symlink-devzero"])
def test_a_special_file_at_a_parse_cache_path_is_a_miss_and_left_alone(fresh_cache: Path, tmp_path: Path,
                                                                       kind: str) -> None:
    spec = tmp_path / "net.arch"
    spec.write_text(SPEC)
    entry = _entry(Source.from_file(spec))
    _node(entry, kind)
    before = os.lstat(entry)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, "-c", FIFO_CHILD, str(spec)], env=env, capture_output=True, text=True,
                         timeout=60)   # a blocking open would hang here until the timeout fails the test
    assert (run.returncode, run.stdout, run.stderr) == (0, "n\n", "")
    after = os.lstat(entry)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino), "the special file was replaced"


DECISION_CHILD = textwrap.dedent("""
    import sys
    from archdsl.backends.cache import DecisionCache
    c = DecisionCache(sys.argv[1])
    print(c.entries(sys.argv[2]))
    c.put_time(sys.argv[2], "float32", "k", "fft@nchw", 1.0)
    print(c.save())
""")


@pytest.mark.parametrize("where", ["file", "lock"])
@pytest.mark.parametrize("kind", ["fifo", "symlink-devzero"])
def test_a_special_file_at_a_decision_cache_path_is_ignored_not_written(tmp_path: Path, where: str,
                                                                        kind: str) -> None:
    p = tmp_path / (f"{DEV}.json" + (".lock" if where == "lock" else ""))
    _node(p, kind)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, "-c", DECISION_CHILD, str(tmp_path), DEV], env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0 and run.stdout == "{}\n[]\n", run.stderr
    what = "a FIFO" if kind == "fifo" else "a symbolic link"
    lines = run.stderr.splitlines()
    if where == "file":
        assert lines[0] == (f"archdsl: backend decision cache {tmp_path / (DEV + '.json')}: ignored: is not read: "
                            f"it is {what}, not a regular file" if kind == "fifo" else
                            f"archdsl: backend decision cache {tmp_path / (DEV + '.json')}: ignored: is not read: "
                            "it is a symbolic link, not a regular file")
    reason = "it is a FIFO, not a regular file" if kind == "fifo" else "it is a symbolic link"
    assert lines[-1] == (f"archdsl: could not save backend decisions to {tmp_path / (DEV + '.json')} ({p.name}: "
                         f"{reason}); they are kept in memory for this process")
    assert stat.S_ISFIFO(os.lstat(p).st_mode) if kind == "fifo" else os.path.islink(p)


def test_a_planted_unsealed_decision_file_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p = tmp_path / f"{DEV}.json"
    p.write_text(json.dumps({"version": 1, "device": DEV, "convert_ms": {},
                             "entries": {"float32|k": {"times_ms": {"fft@nchw": 0.001}, "choice": "fft",
                                                       "method": "autotune"}}}))
    with caplog.at_level(logging.WARNING, logger="archdsl.backends"):
        c = DecisionCache(tmp_path)
        assert c.choice(DEV, "float32", "k") is None and c.time(DEV, "float32", "k", "fft@nchw") is None
    assert [r.getMessage() for r in caplog.records] == [
        f"archdsl: backend decision cache {p}: ignored: its MAC does not verify (not written by archdsl for this "
        "cache directory)"]
    c.put_choice(DEV, "float32", "k", "torch_nchw", "model")
    (written,) = c.save()                   # re-measured and saved sealed: the next reader trusts it
    assert DecisionCache(tmp_path).choice(DEV, "float32", "k") == "torch_nchw"
    assert unseal(tmp_path, written.name, written.read_bytes()) is not None


# ------------------------------------------------------------------------------------------- outputs
def _special(tmp_path: Path, kind: str, name: str) -> Path:
    """A node that must survive: a FIFO, or a symbolic link to /dev/null (never /dev/null itself: a
    regression would replace it for the whole machine)."""
    p = tmp_path / name
    if kind == "fifo":
        os.mkfifo(p)
    else:
        p.symlink_to("/dev/null")
    return p


def _intact(p: Path, kind: str) -> bool:
    if kind == "fifo":
        return stat.S_ISFIFO(os.lstat(p).st_mode)
    return os.path.islink(p) and os.readlink(p) == "/dev/null" and stat.S_ISCHR(os.stat("/dev/null").st_mode)


WHAT = {"fifo": "a FIFO", "devnull": "a character device"}


@pytest.mark.parametrize("kind", ["fifo", "devnull"])
@pytest.mark.parametrize("command", [
    ["compile", "specs/lenet.arch", "-o", "{out}"],
    ["compile", "specs/lenet.arch", "--deploy", "-o", "{out}"],
    ["render", "specs/lenet.arch", "-o", "{out}"],
    ["render", "specs/lenet.arch", "--html", "-o", "{out}"],
    ["deploy", "specs/repvgg.arch:repvgg_a0", "-w", "missing.pt", "-o", "{out}"],
    ["deploy", "specs/repvgg.arch:repvgg_a0", "-w", "missing.pt", "-o", "{tmp}/ok.pt", "--source", "{out}"],
])
def test_an_output_that_is_not_a_regular_file_is_refused_before_any_work(tmp_path: Path, kind: str,
                                                                         command: list[str]) -> None:
    out = _special(tmp_path, kind, "out.svg")
    args = [a.format(out=out, tmp=tmp_path) for a in command]
    run = run_archc(*args)
    what = "--source" if "--source" in command else "output"
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.splitlines()[0] == (f"error: {what} '{out}' exists and it is {WHAT[kind]}, not a regular "
                                          "file; refusing to replace it"), run.stderr
    assert _intact(out, kind) and sorted(p.name for p in tmp_path.iterdir()) == ["out.svg"]


@pytest.mark.parametrize("kind", ["fifo", "devnull"])
def test_the_python_writers_refuse_a_special_output(tmp_path: Path, kind: str) -> None:
    torch = pytest.importorskip("torch")
    from archdsl.export import to_onnx
    from archdsl.fsutil import NotRegularFile, atomic_write
    from archdsl.render import write_diagram
    out = _special(tmp_path, kind, "out.svg")
    with pytest.raises(archdsl.ArchError) as e:
        write_diagram(archdsl.graph("specs/lenet.arch"), out)
    assert e.value.diagnostics[0].message == (f"output '{out}' exists and it is {WHAT[kind]}, not a regular file; "
                                              "refusing to replace it")
    with pytest.raises(archdsl.ArchError) as e:
        to_onnx(torch.nn.Linear(2, 2), out, torch.randn(2, 2), dynamo=False)
    assert e.value.diagnostics[0].message == (f"to_onnx: '{out}' exists and it is {WHAT[kind]}, not a regular "
                                              "file; refusing to replace it")
    with pytest.raises(NotRegularFile):
        atomic_write(out, "data")
    assert _intact(out, kind) and [p.name for p in tmp_path.iterdir()] == ["out.svg"]


def test_a_regular_output_and_a_link_to_one_are_still_written(tmp_path: Path) -> None:
    target = tmp_path / "real.py"
    target.write_text("old")
    link = tmp_path / "link.py"
    link.symlink_to(target)
    for out in (target, link):
        run = run_archc("compile", "specs/lenet.arch", "-o", str(out))
        assert run.returncode == 0, run.stderr
    assert "class Lenet" in target.read_text() and "class Lenet" in link.read_text()


@pytest.mark.parametrize("node", ["/dev/zero", "/dev/null", "fifo"])
@pytest.mark.parametrize("command", ["check", "list", "summary"])
def test_reading_a_device_or_fifo_as_a_spec_is_an_error(tmp_path: Path, node: str, command: str) -> None:
    if node == "fifo":
        node = str(tmp_path / "pipe.arch")
        os.mkfifo(node)
    run = run_archc(command, node, timeout=60)
    kind = "a FIFO" if node.endswith("pipe.arch") else "a character device"
    assert run.returncode == 1 and f"error: '{node}' is {kind}, not a regular file" in run.stderr.splitlines()
    assert "ok:" not in run.stdout


# ------------------------------------------------------------------------------------------- CLI numbers
@pytest.mark.parametrize("args, message", [
    (["summary", "specs/lenet.arch", "--batch", "-1"], "error: --batch must be an integer from 1 to 2,147,483,647, got -1"),
    (["summary", "specs/lenet.arch", "--batch", "0"], "error: --batch must be an integer from 1 to 2,147,483,647, got 0"),
    (["summary", "specs/lenet.arch", "--batch", str(2**31)],
     f"error: --batch must be an integer from 1 to 2,147,483,647, got {2**31}"),
    (["summary", "specs/lenet.arch", "--backends", "--batch", "-3"],
     "error: --batch must be an integer from 1 to 2,147,483,647, got -3"),
    (["summary", "specs/lenet.arch", "--depth", "-5"], "error: --depth must be an integer from 0 to 1,000,000, got -5"),
    (["render", "specs/lenet.arch", "-o", "{tmp}/x.svg", "--depth", "-5"],
     "error: --depth must be an integer from 1 to 1,000,000, got -5"),
    (["render", "specs/lenet.arch", "-o", "{tmp}/x.svg", "--depth", "0"],
     "error: --depth must be an integer from 1 to 1,000,000, got 0"),
    (["summary", "specs/lenet.arch", "--input", "1,-32,32"], "error: --input expects positive sizes like 3,224,224, "
                                                            "got '1,-32,32'"),
    (["check", "specs/lenet.arch", "--limit", "max_nodes=-1"], "error: --limit max_nodes expects a positive integer, "
                                                              "got -1"),
])
def test_every_cli_number_is_validated_with_exit_1(tmp_path: Path, args: list[str], message: str) -> None:
    run = run_archc(*[a.format(tmp=tmp_path) for a in args])
    assert (run.returncode, run.stdout, run.stderr.splitlines()[0]) == (1, "", message)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, words", [
    (["summary", "specs/lenet.arch", "--batch", "abc"], "Invalid value for '--batch'"),
    (["render", "specs/lenet.arch", "-o", "x.svg", "--depth", "1.5"], "Invalid value for '--depth'"),
    (["check", "--bogus", "specs/lenet.arch"], "No such option: --bogus"),
    (["summary"], "Missing argument 'spec'"),
])
def test_usage_errors_exit_1_because_2_means_an_internal_error(args: list[str], words: str) -> None:
    run = run_archc(*args)
    assert run.returncode == 1 and words in run.stderr and "internal error" not in run.stderr, run.stderr


# ------------------------------------------------------------------------------------------- checkpoints
LENET = "specs/lenet.arch:lenet"
REPVGG = "examples/tiny_repvgg.arch"


@pytest.fixture(scope="module")
def lenet_sd() -> dict[str, object]:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return archdsl.build(LENET).state_dict()


def _conv_key(sd: dict[str, object]) -> str:
    return next(k for k, v in sd.items() if getattr(v, "dim", lambda: 0)() == 4)


def _bomb(tmp_path: Path, sd: dict[str, object], name: str = "bomb.pt", mb: int = 256) -> Path:
    """A torch checkpoint plus a DEFLATEd entry inflating to ``mb`` MB: a small file, a huge read."""
    import zipfile

    import torch
    good = tmp_path / "good.pt"
    torch.save(sd, good)
    bomb = tmp_path / name
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bomb, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        zi = zipfile.ZipInfo("good/data/99999")
        zi.compress_type = zipfile.ZIP_DEFLATED
        with dst.open(zi, "w", force_zip64=True) as fh:
            chunk = bytes(1 << 20)
            for _ in range(mb):
                fh.write(chunk)
    good.unlink()
    return bomb


def _build_error(weights: Path | dict[str, object], spec: str = LENET) -> str:
    from archdsl import hub
    with pytest.raises(archdsl.ArchError) as e:
        if isinstance(weights, dict):
            hub.load_weights(archdsl.build(spec), weights)
        else:
            archdsl.build(spec, weights=str(weights))
    assert len(e.value.diagnostics) == 1
    return e.value.diagnostics[0].message


def test_build_weights_refuses_a_compressed_bomb_without_inflating(tmp_path: Path,
                                                                   lenet_sd: dict[str, object]) -> None:
    bomb = _bomb(tmp_path, lenet_sd)
    assert bomb.stat().st_size < 2_000_000
    import time
    t = time.process_time()
    msg = _build_error(bomb)
    assert time.process_time() - t < 5   # the 256 MB entry is never inflated
    assert msg == (f"'{bomb}' holds compressed entries (good/data/99999); torch.save writes none, and they are not "
                   "inflated here")


def test_an_oversized_checkpoint_is_refused_before_it_is_read(tmp_path: Path, lenet_sd: dict[str, object]) -> None:
    import torch
    p = tmp_path / "big.pt"
    torch.save({**lenet_sd, "junk": torch.zeros(2_000_000)}, p)
    msg = _build_error(p)
    assert msg.startswith(f"weights file '{p}' is ") and msg.endswith(
        "bytes; a state_dict of this network takes at most 1,552,464")


@pytest.mark.parametrize("dtype", ["float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "complex64", "uint16"])
@pytest.mark.parametrize("how", ["file", "dict"])
def test_an_unhandled_dtype_is_refused_in_one_line(tmp_path: Path, lenet_sd: dict[str, object], dtype: str,
                                                   how: str) -> None:
    import torch
    key = _conv_key(lenet_sd)
    sd = {**lenet_sd, key: lenet_sd[key].to(getattr(torch, dtype))}   # type: ignore[union-attr]
    p = tmp_path / "w.pt"
    torch.save(sd, p)
    msg = _build_error(p if how == "file" else sd)
    where = str(p) if how == "file" else "the state_dict"
    assert msg == (f"'{where}': '{key}' has dtype torch.{dtype}, which archdsl does not load (float32, float64, "
                   "float16 and bfloat16 weights are read; integers only for integer buffers)")


@pytest.mark.parametrize("dtype", ["int64", "int32", "uint8", "bool"])
def test_integer_weights_for_float_parameters_are_refused(tmp_path: Path, lenet_sd: dict[str, object],
                                                          dtype: str) -> None:
    import torch
    key = _conv_key(lenet_sd)
    p = tmp_path / "w.pt"
    torch.save({**lenet_sd, key: lenet_sd[key].to(getattr(torch, dtype))}, p)   # type: ignore[union-attr]
    assert _build_error(p) == f"'{p}': '{key}' has dtype torch.{dtype}; weights must be floating point"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("how", ["file", "dict"])
def test_non_finite_weights_are_refused(tmp_path: Path, lenet_sd: dict[str, object], bad: float, how: str) -> None:
    import torch
    key = _conv_key(lenet_sd)
    t = lenet_sd[key].clone()   # type: ignore[union-attr]
    t.view(-1)[3] = bad
    sd = {**lenet_sd, key: t}
    p = tmp_path / "w.pt"
    torch.save(sd, p)
    where = str(p) if how == "file" else "the state_dict"
    assert _build_error(p if how == "file" else sd) == f"'{where}' holds NaN or infinite values in {key}"


def test_a_float64_value_overflowing_the_model_dtype_is_refused(tmp_path: Path, lenet_sd: dict[str, object]) -> None:
    import torch
    key = _conv_key(lenet_sd)
    t = lenet_sd[key].double()   # type: ignore[union-attr]
    t.view(-1)[0] = 1e300
    p = tmp_path / "w.pt"
    torch.save({**lenet_sd, key: t}, p)
    assert _build_error(p) == f"'{p}': values in {key} overflow the model's dtype (torch.float32)"


@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16"])
def test_other_float_dtypes_load_rounded_to_the_model_dtype(tmp_path: Path, lenet_sd: dict[str, object],
                                                            dtype: str) -> None:
    import torch
    p = tmp_path / "w.pt"
    sd = {k: v.to(getattr(torch, dtype)) if v.is_floating_point() else v for k, v in lenet_sd.items()}  # type: ignore
    torch.save(sd, p)
    model = archdsl.build(LENET, weights=str(p))
    for k, v in model.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, sd[k].to(torch.float32))


def test_a_checkpoint_at_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    p = tmp_path / "w.pt"
    os.mkfifo(p)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code = f"import archdsl\ntry:\n    archdsl.build({LENET!r}, weights={str(p)!r})\nexcept archdsl.ArchError as e:\n" \
           "    print(e.diagnostics[0].message)\n"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert run.stdout == f"weights '{p}' is a FIFO, not a regular file\n", run.stderr


def test_a_pickle_in_a_checkpoint_never_runs(tmp_path: Path, lenet_sd: dict[str, object]) -> None:
    import torch
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[object, ...]:
            return (os.system, (f"touch {marker}",))
    p = tmp_path / "w.pt"
    torch.save({**lenet_sd, "x": Evil()}, p)
    msg = _build_error(p)
    assert msg.startswith(f"cannot read weights from '{p}': ") and "posix.system" in msg and not marker.exists()


def test_pretrained_reads_through_the_same_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    from archdsl import hub
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("ARCHDSL_OFFLINE", "1")
    url = hub.pretrained_cfg(archdsl.graph("specs/resnet.arch:resnet18"))["url"]
    ckpt = tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    ckpt.parent.mkdir(parents=True)
    model = archdsl.build("specs/resnet.arch:resnet18")
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["conv1.weight"].view(-1)[0] = float("nan")
    torch.save(sd, ckpt)
    with pytest.raises(archdsl.ArchError) as e:
        hub.load_pretrained(model)
    assert e.value.diagnostics[0].message == f"'{ckpt}' holds NaN or infinite values in conv1.weight"
    _bomb(ckpt.parent, {k: v for k, v in model.state_dict().items()}, ckpt.name, mb=64)
    with pytest.raises(archdsl.ArchError, match=r"holds compressed entries \(good/data/99999\)"):
        hub.load_pretrained(model)


@pytest.mark.parametrize("dtype", ["float8_e4m3fn", "float8_e5m2", "complex64", "int64"])
def test_deploy_of_an_unhandled_dtype_is_a_one_line_error_not_an_internal_one(tmp_path: Path, dtype: str) -> None:
    import torch
    sd = archdsl.build(REPVGG).state_dict()
    key = _conv_key(sd)
    w = tmp_path / "w.pt"
    torch.save({**sd, key: sd[key].to(getattr(torch, dtype))}, w)
    run = run_archc("deploy", REPVGG, "-w", str(w), "-o", str(tmp_path / "out.pt"))
    tail = ("weights must be floating point" if dtype == "int64" else
            "which archdsl does not load (float32, float64, float16 and bfloat16 weights are read; integers only "
            "for integer buffers)")
    assert run.returncode == 1 and run.stderr.splitlines()[0] == (
        f"error: '{w}': '{key}' has dtype torch.{dtype}" + ("; " if dtype == "int64" else ", ") + tail)
    assert not (tmp_path / "out.pt").exists()


@pytest.mark.parametrize("short", ["data/0", "data/1"])
def test_a_storage_declared_larger_than_its_data_is_refused_before_loading(tmp_path: Path, short: str) -> None:
    """The pickle says 100,000 floats, the stored record holds 40 bytes: refused from the meta pre-scan."""
    import zipfile

    import torch
    from archdsl.codegen.checkpoint import load_checkpoint
    full, crafted = tmp_path / "full.pt", tmp_path / "w.pt"
    torch.save({"w": torch.zeros(100_000), "b": torch.ones(100_000)}, full)
    with zipfile.ZipFile(full) as src, zipfile.ZipFile(crafted, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, data[:40] if info.filename.endswith(short) else data)
    with pytest.raises(archdsl.ArchError) as e:
        load_checkpoint(crafted, budget=10_000_000)
    assert e.value.diagnostics[0].message == (
        f"'{crafted}' declares a tensor storage of 400,000 bytes where the file holds 40" if short == "data/0" else
        f"'{crafted}' declares 800,000 bytes of tensors where the file holds 400,040")
