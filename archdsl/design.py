"""The design-space tools' front end: ``archc diff`` and ``archc migrate`` operands and their work.

An operand is a spec address (``file.arch[:network]``) optionally at a git revision, ``file.arch[:network]@REV``:
the revision's ``.arch`` files of the spec's folder are read with ``git show`` (data only, nothing of the
revision runs) into a private temporary folder and the spec is compiled from there, so the imports of the
spec resolve at the same revision. The analysis itself is :mod:`archdsl.passes.diff` (torch-free); migrating
weights is :mod:`archdsl.codegen.migrate` (torch, imported only by :func:`migrate`).
"""
from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from .errors import ArchError
from .ir import Graph
from .lang.loader import split_address
from .limits import Limits
from .passes.diff import SpecDiff, diff_graphs
from .pipeline import compile_graph

__all__ = ["load_operand", "spec_diff", "migrate", "split_revision"]

# a git revision as a user types it (HEAD~2, main, v0.3, a1b2c3d, origin/main, HEAD^): no option, no path tricks
_REV = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/~^]{0,127}")
_GIT_TIMEOUT_S = 20
_MAX_FILES = 2000


def split_revision(operand: str) -> tuple[str, str | None]:
    """``'specs/resnet.arch:resnet50@HEAD~1'`` -> (``'specs/resnet.arch:resnet50'``, ``'HEAD~1'``)."""
    head, sep, rev = operand.rpartition("@")
    if not sep or not head or "\n" in operand or not (head.endswith(".arch") or ".arch:" in head):
        return operand, None
    if not _REV.fullmatch(rev) or ".." in rev:
        raise ArchError(f"'{rev}' is not a git revision this command accepts", None,
                        hint="write FILE.arch[:NETWORK]@REV with REV such as HEAD~1, main, v0.3 or a commit id")
    return head, rev


def _git(args: list[str], cwd: Path) -> bytes:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=_GIT_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise ArchError("reading a spec at a git revision needs git, which is not installed", None) from None
    except subprocess.TimeoutExpired:
        raise ArchError(f"git {args[0]} took longer than {_GIT_TIMEOUT_S} s", None) from None
    if done.returncode != 0:
        msg = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ArchError(f"git {args[0]}: {msg[-1] if msg else 'failed'}", None,
                        hint="is the spec file tracked by git, and the revision spelled right?")
    return done.stdout


def _checkout_folder(path: Path, rev: str, into: Path) -> Path:
    """Write the ``.arch`` files under ``path``'s folder at ``rev`` into ``into``; the spec's copy there."""
    folder = path.resolve().parent
    top = Path(_git(["rev-parse", "--show-toplevel"], folder).decode().strip())
    rel_folder = folder.relative_to(top)
    try:
        commit = _git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], folder).decode().strip()
    except ArchError:
        raise ArchError(f"unknown git revision '{rev}' in {top}", None,
                        hint="git log --oneline lists the revisions; a branch, tag or commit id works") from None
    names = _git(["ls-tree", "-r", "--full-name", "--name-only", "-z", commit, "--", "."], folder).split(b"\0")
    arch = [n.decode("utf-8", "surrogateescape") for n in names if n.endswith(b".arch")][:_MAX_FILES]
    for name in arch:
        rel = Path(name).relative_to(rel_folder) if Path(name).is_relative_to(rel_folder) else Path(name)
        if ".." in rel.parts or rel.is_absolute():
            continue
        dest = into / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(_git(["show", f"{commit}:{name}"], top))
    target = into / path.name
    if not target.is_file():
        raise ArchError(f"'{path}' does not exist at revision {rev}", None,
                        hint="git log --follow shows the revisions that have it")
    return target


def load_operand(operand: str, *, params: dict[str, Any] | None = None, limits: Limits | None = None,
                 allow_outside: bool = False) -> Graph:
    """Compile a diff/migrate operand (an address, optionally ``@REV``) to its checked graph."""
    spec, rev = split_revision(operand)
    if rev is None:
        return compile_graph(spec, params, limits=limits, allow_outside=allow_outside)
    path, name = split_address(spec)
    with tempfile.TemporaryDirectory(prefix="archc-rev-") as tmp:
        copy = _checkout_folder(Path(path), rev, Path(tmp))
        g = compile_graph(f"{copy}:{name}" if name else str(copy), params, limits=limits,
                          allow_outside=allow_outside)
    g.address = f"{path}:{g.name}@{rev}"
    return g


def spec_diff(a: str, b: str, *, params: dict[str, Any] | None = None, limits: Limits | None = None,
              allow_outside: bool = False, depth: int = 2) -> tuple[SpecDiff, Graph, Graph]:
    """The :class:`SpecDiff` from operand ``a`` to operand ``b`` (and their graphs)."""
    ga = load_operand(a, params=params, limits=limits, allow_outside=allow_outside)
    gb = load_operand(b, params=params, limits=limits, allow_outside=allow_outside)
    return diff_graphs(ga, gb, depth=depth), ga, gb


def migrate(a: str, b: str, weights: Path, *, params: dict[str, Any] | None = None, limits: Limits | None = None,
            allow_outside: bool = False, seed: int = 0) -> Any:
    """Read ``weights`` (a state_dict of ``a``, with every check of the checkpoint reader) and carry it to
    ``b``; the tensors nothing transfers to are ``b``'s own initialization under ``torch.manual_seed(seed)``.
    Returns a :class:`archdsl.codegen.migrate.Migration`."""
    import torch

    from .codegen.build import instantiate
    from .codegen.migrate import migrate_state_dict
    from .codegen.weights import read_checkpoint
    from .passes.deploy import state_shapes
    ga = load_operand(a, params=params, limits=limits, allow_outside=allow_outside)
    gb = load_operand(b, params=params, limits=limits, allow_outside=allow_outside)
    expected = state_shapes(ga)
    if expected is None:   # an op the IR cannot size: the shapes of a model on the meta device
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in instantiate(ga).state_dict().items()}
    bn_vars = frozenset(f"{n.module}.running_var" for n in ga.records()
                        if n.op == "batchnorm" and n.module and n.args.get("track_running_stats"))
    source = read_checkpoint(weights, expected, bn_vars=bn_vars)
    torch.manual_seed(seed)
    init = instantiate(gb).state_dict()
    return migrate_state_dict(ga, gb, source, init)
