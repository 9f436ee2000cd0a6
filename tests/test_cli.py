"""The archc command line, run as a user runs it (subprocesses)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import ROOT, reference_counts, run_archc

RESNET50 = "specs/resnet.arch:resnet50"


def test_check_valid_spec_exits_zero() -> None:
    r = run_archc("check", RESNET50)
    assert r.returncode == 0, r.stderr
    assert "ok: 1 network checked" in r.stdout


def test_summary_json_totals_equal_reference_counts() -> None:
    r = run_archc("summary", RESNET50, "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    ref = reference_counts()["torchvision.resnet50"]
    assert data["totals"]["params"] == ref["params"]
    assert data["totals"]["macs"] == ref["macs"]
    assert data["outputs"] == {"out": [1000]}
    first = data["layers"][0]
    assert first == {**first, "name": "conv1", "op": "conv2d", "shape": [64, 112, 112], "params": 9408}


def test_summary_table_input_and_set_overrides() -> None:
    r = run_archc("summary", RESNET50, "--input", "3,160,160", "--set", "num_classes=10")
    assert r.returncode == 0, r.stderr
    assert "[3, 160, 160]" in r.stdout and "output [10]" in r.stdout
    assert "layer4.2.conv3" in r.stdout


def test_set_unknown_parameter_is_a_located_error() -> None:
    r = run_archc("summary", RESNET50, "--set", "num_clases=10")
    assert r.returncode == 1
    assert "has no parameter 'num_clases'" in r.stderr and "did you mean 'num_classes'" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_list_json_gives_address_input_and_reference() -> None:
    r = run_archc("list", "specs", "--json")
    assert r.returncode == 0, r.stderr
    nets = {n["spec"]: n for n in json.loads(r.stdout)}
    assert nets[RESNET50]["input"] == [3, 224, 224]
    assert nets[RESNET50]["reference"] == "torchvision.resnet50"


def test_compile_writes_importable_source(tmp_path: Path) -> None:
    out = tmp_path / "model.py"
    r = run_archc("compile", RESNET50, "-o", str(out), "--set", "num_classes=3")
    assert r.returncode == 0, r.stderr
    code = (
        "import importlib.util, torch\n"
        f"spec = importlib.util.spec_from_file_location('m', {str(out)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "print(tuple(m.Resnet50()(torch.randn(1, 3, 64, 64)).shape))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.stdout.strip() == "(1, 3)", p.stderr


def test_compile_of_a_bad_spec_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.arch"
    bad.write_text("network n():\n    input [3, 8, 8]\n    conv2d(4, 9)\n")
    out = tmp_path / "model.py"
    r = run_archc("compile", str(bad), "-o", str(out))
    assert r.returncode == 1
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]
    assert f"{bad}:3:15: error: conv2d: kernel 9x9" in r.stderr  # the caret is on the kernel argument


def test_check_list_summary_compile_never_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from archdsl.cli import main\n"
        "for argv in (['check', 'specs/'], ['list', 'specs', '--json'], ['summary', %r],"
        " ['compile', %r, '-o', %r]):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('no torch')\n"
    ) % (RESNET50, RESNET50, str(tmp_path / "m.py"))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.stdout.strip().endswith("no torch"), p.stderr[-2000:]


def test_written_files_get_normal_permissions(tmp_path: Path) -> None:
    import os
    out = tmp_path / "model.py"
    assert run_archc("compile", RESNET50, "-o", str(out)).returncode == 0
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_summary_backends_for_cuda_uses_the_shipped_calibration():
    """No GPU needed to plan for one: the H100 calibration moves RepLKNet-31B's 31x31 layers off PyTorch's
    NCHW kernel, and the table says so."""
    r = run_archc("summary", "specs/replknet.arch:replknet_31b", "--backends", "--device", "cuda", "--batch", "64",
                  "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)["backends"]
    first = next(c for c in plan["layers"] if c["name"] == "stages.0.blocks.0.large_kernel.lkb_origin.conv")
    assert first["backend"] in ("fft", "triton_dw_gemm") and first["options"]["torch_nchw@nchw"] > first["ms"]
    assert plan["speedup"] > 1.0


def test_a_closed_pipe_ends_the_listing_quietly() -> None:
    """`archc list | head -1`: the reader goes away; archc stops with status 0 and no internal error."""
    import subprocess
    import sys
    p = subprocess.Popen([sys.executable, "-m", "archdsl", "list", "specs"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()            # gone before archc writes its first row: every write hits a broken pipe
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 0, err
    assert "internal error" not in err and "Traceback" not in err
