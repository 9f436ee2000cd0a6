"""The spec library ships with the package: networks build by name from any directory, ``archc list`` without a
path lists them, ``register_timm()`` registers them; a wheel built from the repository carries them."""
from __future__ import annotations

import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import archdsl
from archdsl import ArchError
from archdsl.library import library_address, library_dir, library_index

from helpers import ROOT


def _env() -> dict[str, str]:
    """The environment of a subprocess that must import this checkout's archdsl from another directory."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def test_library_index_covers_every_network_of_specs() -> None:
    assert library_dir().resolve() == (ROOT / "specs").resolve()   # a checkout: the repository's specs/
    index = library_index()
    for name in ("resnet50", "resnet18", "vit_tiny_patch16_224", "swin_t", "lenet5" if "lenet5" in index else "lenet"):
        assert name in index
    assert library_address("zoo:resnet50") == index["resnet50"] and index["resnet50"].endswith("resnet.arch:resnet50")
    # every file of specs/ that defines networks is in the index (the CLI test below checks the names)
    files = {Path(a.split(".arch:")[0] + ".arch").resolve() for a in index.values()}
    # a family's variants are indexed as network:scale, addressed file.arch:network:scale
    assert index["efficientnet:b1"].endswith("efficientnet.arch:efficientnet:b1")
    assert archdsl.graph("zoo:efficientnet:b1").scale == "b1"
    assert files == {f.resolve() for f in (ROOT / "specs").rglob("*.arch") if "\nnetwork " in "\n" + f.read_text()}


def test_build_by_name_from_another_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    monkeypatch.chdir(tmp_path)
    a = archdsl.build("resnet18", num_classes=7)
    b = archdsl.build("zoo:resnet18", num_classes=7)
    assert type(a).__name__ == type(b).__name__ == "Resnet18"
    assert list(a.state_dict()) == list(b.state_dict())
    assert a(torch.zeros(1, 3, 64, 64)).shape == (1, 7)
    assert archdsl.graph("zoo:lenet" if "lenet" in library_index() else "zoo:alexnet").name
    with pytest.raises(ArchError) as e:
        archdsl.build("resnt50")
    d = e.value.diagnostics[0]
    assert "nor a network 'resnt50' in the archdsl library" in d.message and "'resnet50'" in (d.hint or "")
    with pytest.raises(ArchError, match="no network 'nope' in the archdsl library"):
        archdsl.graph("zoo:nope")


def test_a_file_in_the_working_directory_wins_over_the_library(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "resnet50").write_text("network mine():\n    input [3, 8, 8]\n    flatten\n    linear(3)\n")
    assert archdsl.graph("resnet50").name == "mine"          # a path, as before
    assert archdsl.graph("zoo:resnet50").name == "resnet50"   # the library, explicitly


def test_archc_list_without_a_path_lists_the_library(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "archdsl", "list"], cwd=tmp_path, env=_env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [ln.split("\t") for ln in r.stdout.splitlines()]
    assert ["zoo:resnet50", "[3, 224, 224]", "torchvision.resnet50"] in rows
    assert {row[0] for row in rows} == {"zoo:" + n for n in library_index()}
    c = subprocess.run([sys.executable, "-m", "archdsl", "check", "resnet18", "zoo:vgg11"], cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert c.returncode == 0 and "2 networks" in c.stdout + c.stderr, c.stdout + c.stderr


def test_register_timm_from_another_directory_and_a_user_folder(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import timm
    import torch

    from archdsl import hub
    mine = tmp_path / "my_specs"
    mine.mkdir()
    (mine / "tiny.arch").write_text("network tiny_user_net(num_classes=4):\n    input [3, 16, 16]\n"
                                    "    conv2d(8, 3, padding=1)\n    relu\n    adaptive_avgpool(1)\n"
                                    "    flatten\n    fc: linear(num_classes)\n")
    monkeypatch.chdir(tmp_path)    # no specs/ here: the library is found through the package
    names = hub.register_timm(["my_specs"])
    assert "archdsl_resnet18" in names and "archdsl_tiny_user_net" in names
    assert set(names) >= {"archdsl_" + n for n in ("resnet50", "swin_t", "vit_tiny_patch16_224")}
    m = timm.create_model("archdsl_tiny_user_net", num_classes=3).eval()
    assert m(torch.zeros(2, 3, 16, 16)).shape == (2, 3)
    only = hub.register_timm(["my_specs"], library=False)
    assert only == ["archdsl_tiny_user_net"]


WHEEL_CHECK = textwrap.dedent("""
    import os, sys
    import archdsl, timm, torch
    from archdsl import hub
    venv = sys.argv[1]
    assert os.path.realpath(archdsl.__file__).startswith(os.path.realpath(venv)), archdsl.__file__
    assert os.listdir(".") == [], os.listdir(".")          # an empty directory: no specs/ to lean on
    m = archdsl.build("resnet50").eval()
    with torch.no_grad():
        assert m(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)
    assert len(m.state_dict()) == 320
    names = hub.register_timm()
    assert "archdsl_resnet18" in names, names
    t = timm.create_model("archdsl_resnet18", num_classes=5).eval()
    with torch.no_grad():
        assert t(torch.zeros(1, 3, 64, 64)).shape == (1, 5)
    print("ok", len(names), str(archdsl.library.library_dir()).startswith(os.path.realpath(venv)))
""")


@pytest.mark.slow
def test_wheel_installs_and_builds_by_name_from_an_empty_directory(tmp_path: Path) -> None:
    """``pip wheel`` of the repository -> a fresh virtual environment -> build and register from an empty dir.

    The fresh environment reuses this interpreter's installed packages (torch, timm) through a ``.pth`` file
    (``--system-site-packages`` of a venv would reach the base interpreter's, which lacks them), never this
    checkout: ``archdsl`` comes from the installed wheel."""
    pytest.importorskip("hatchling", reason="hatchling (the build backend) is in the test extras")
    dist, venv, empty = tmp_path / "dist", tmp_path / "venv", tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "--no-index", "-w", str(dist), str(ROOT)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    (wheel,) = dist.glob("archdsl-*.whl")
    import zipfile
    with zipfile.ZipFile(wheel) as z:
        shipped = {n for n in z.namelist() if n.startswith("archdsl/_specs/")}
    assert "archdsl/_specs/resnet.arch" in shipped and "archdsl/_specs/blocks/classic.arch" in shipped
    assert len(shipped) == len(list((ROOT / "specs").rglob("*.arch")))
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True, env=env, timeout=120)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True, env=env).stdout.strip()
    here = [p for p in site.getsitepackages() if Path(p).is_dir()]
    Path(purelib, "_archdsl_test_deps.pth").write_text("\n".join(here) + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
                        "--no-index", str(wheel)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(py), "-c", WHEEL_CHECK, str(venv)], cwd=empty, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split()[0] == "ok" and r.stdout.split()[2] == "True", r.stdout
    # every network, and every family variant under its timm name (network_scale) unless a network has it
    assert int(r.stdout.split()[1]) == len({k.replace(":", "_") for k in library_index()})
    # the console script of the wheel checks a library network by name
    r = subprocess.run([str(venv / "bin" / "archc"), "check", "zoo:resnet50"], cwd=empty, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "1 network" in r.stdout + r.stderr, r.stdout + r.stderr
