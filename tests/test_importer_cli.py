"""``archc import``: a user's model file in, a spec (and a plugin for kept classes) out; its errors."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import run_archc

MODEL = '''
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, c, k=3):
        super().__init__()
        self.conv = nn.Conv2d(c, c, k, padding=k // 2)
        self.act = nn.ReLU()

    def forward(self, x):
        return x + self.act(self.conv(x))


class Odd(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.scale = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return self.scale(x).tanh()


class Net(nn.Module):
    def __init__(self, width=8, depth=2, num_classes=5, head_bias=True):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.blocks = nn.Sequential(*[Block(width, k=3 if i % 2 == 0 else 5) for i in range(depth)])
        self.odd = Odd(width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes, bias=head_bias)

    def forward(self, x):
        x = self.odd(self.blocks(self.stem(x)))
        return self.fc(self.pool(x).flatten(1))
'''


@pytest.fixture()
def model_file(tmp_path: Path) -> Path:
    p = tmp_path / "mynet.py"
    p.write_text(MODEL)
    return p


def test_import_file_with_keep_and_args(model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "net.arch"
    r = run_archc("import", f"{model_file}:Net", "-o", str(out), "--input", "3,16,16", "--arg", "depth=3",
                  "--keep", "Odd", "--name", "mynet", timeout=600)
    assert r.returncode == 0, r.stderr
    assert "round trip" in r.stdout and "kept whole" in r.stdout
    text = out.read_text()
    assert "block Block(k=3):" in text and "padding=k // 2" in text and "# mynet.Block" in text
    assert "network mynet:" in text and "input [3, 16, 16]" in text
    assert "odd: mynet_odd\n" in text and "blocks: [Block, Block(k=5), Block]" in text
    plugin = tmp_path / "mynet_plugins.py"
    assert "_Odd = _load('mynet', 'Odd')" in plugin.read_text() and "return _Odd(c=c)" in plugin.read_text()
    # the written pair checks on its own (the plugin imports the user's file by its folder)
    chk = run_archc("check", str(out), "--plugin", str(plugin), timeout=300)
    assert chk.returncode == 0, chk.stderr


def test_args_take_python_booleans(model_file: Path, tmp_path: Path) -> None:
    """--arg head_bias=False is the boolean (as head_bias=false), not the string 'False'."""
    out = tmp_path / "nb.arch"
    r = run_archc("import", f"{model_file}:Net", "-o", str(out), "--input", "3,8,8", "--arg", "head_bias=False",
                  "--name", "nb", timeout=600)
    assert r.returncode == 0, r.stderr
    assert "fc: linear(5, bias=false)" in out.read_text()


@pytest.mark.parametrize("args,message", [
    (["resnet50"], "SOURCE 'resnet50' is not timm:NAME, torchvision:NAME or FILE.py:NAME"),
    (["torchvision:"], "SOURCE 'torchvision:' names no model"),
    (["torchvision:resnet5O"], "torchvision has no classification model 'resnet5O'"),
    (["nothere.py:Net"], "model file 'nothere.py' does not exist"),
])
def test_source_errors(args: list[str], message: str, tmp_path: Path) -> None:
    r = run_archc("import", *args, "-o", str(tmp_path / "x.arch"), timeout=300)
    assert r.returncode == 1
    assert message in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "x.arch").exists()


def test_unknown_model_suggests(tmp_path: Path) -> None:
    r = run_archc("import", "torchvision:resnet5O", "-o", str(tmp_path / "x.arch"), timeout=300)
    assert "did you mean resnet50" in r.stderr


def test_file_errors(model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.arch"
    r = run_archc("import", f"{model_file}:Nett", "-o", str(out), timeout=300)
    assert r.returncode == 1 and "has no class or function 'Nett'" in r.stderr and "did you mean Net" in r.stderr
    r = run_archc("import", f"{model_file}:Net", "-o", str(out), "--input", "3,a,16", timeout=300)
    assert r.returncode == 1 and "--input expects sizes like 3,224,224, got '3,a,16'" in r.stderr
    r = run_archc("import", f"{model_file}:Net", "-o", str(out), "--arg", "widht=4", timeout=300)
    assert r.returncode == 1 and "check the --arg names" in r.stderr
    r = run_archc("import", f"{model_file}:Net", "-o", str(tmp_path / "x.txt"), timeout=300)
    assert r.returncode == 1 and "should end in .arch" in r.stderr
    assert not out.exists()
