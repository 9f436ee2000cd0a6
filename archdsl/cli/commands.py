"""The ``archc`` commands that check, list, summarize, compile, deploy and draw one spec."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .._version import LANGUAGE_VERSION, __version__
from ..codegen.fxnames import fx_node_names
from ..codegen.names import GenerationError
from ..errors import ArchError, Diagnostic
from ..source import printable
from ..library import LIBRARY_PREFIX, library_dir
from ..ops.user import verifying_shapes
from ..pipeline import (check_paths, compile_graph, generate_source, list_networks, parse_set)
from ..passes.summary import format_count, format_table, format_totals, op_text, summary_dict

from .common import (
    app,
    out,
    err,
    SetOpt,
    LimitOpt,
    OutsideOpt,
    ScaleOpt,
    PluginOpt,
    _load_plugins,
    _print_diags,
    _guard,
    MAX_BATCH,
    MAX_DEPTH,
    _check_number,
    _parse_shape,
    _write_output,
    _check_destination,
    _spec_file,
    _params,
    _limits,
    _as_errors,
)

__all__: list[str] = []   # the commands register themselves on ``app``


@app.command()
def check(specs: List[str] = typer.Argument(..., help="files, directories or file.arch:network"),
          set_: List[str] = SetOpt,
          scale: Optional[str] = ScaleOpt,
          quiet: bool = typer.Option(False, "-q", "--quiet", help="print nothing when all is well"),
          strict: bool = typer.Option(False, "--strict", help="treat warnings as errors (same as -W error)"),
          warn_as: Optional[str] = typer.Option(None, "-W", help="'-W error': treat warnings as errors"),
          limit: List[str] = LimitOpt,
          allow_outside: bool = OutsideOpt,
          plugin: List[str] = PluginOpt,
          as_json: bool = typer.Option(False, "--json", help="machine-readable result (diagnostics included) "
                                       "on stdout, with the archdsl and language versions")) -> None:
    """Check specs: parse, expand and shape-check every network. Exit 1 on any error.

    Warnings (unused values, dead layers, windows that skip input pixels) are printed but do not
    fail the check unless --strict or -W error is given.
    """
    def run() -> int:
        t = time.perf_counter()
        _load_plugins(plugin)
        if warn_as is not None and warn_as != "error":
            raise ArchError(f"-W expects 'error', got '{warn_as}'", None, hint="write -W error (or --strict)")
        diags, count = check_paths(specs, limits=_limits(limit), params=_params(set_, scale),
                                   allow_outside=allow_outside)
        if strict or warn_as == "error":
            diags = _as_errors(diags)
        failed = any(d.severity == "error" for d in diags)
        if as_json:
            out.print(json.dumps(_check_json(specs, diags, count, failed, set_, limit, allow_outside), indent=2),
                      markup=False)
            return 1 if failed else 0
        if diags:
            _print_diags(diags)
        if failed:
            return 1
        if not quiet:
            out.print(f"ok: {count} network{'s' if count != 1 else ''} checked in {time.perf_counter() - t:.2f}s")
            from ..lang.loader import split_address
            from ..passes.sizes import input_contract
            if len(specs) == 1 and split_address(specs[0])[1]:
                # one network: the input sizes it accepts (archc summary prints them too)
                g = compile_graph(specs[0], _params(set_, scale), limits=_limits(limit), allow_outside=allow_outside)
                out.print(f"input sizes: {input_contract(g).describe()}", markup=False)
        return 0
    _guard(run)


def _check_json(specs: list[str], diags: list[Diagnostic], count: int, failed: bool, set_: list[str],
                limit: list[str], allow_outside: bool) -> dict[str, object]:
    """``archc check --json``: the versions a tool needs to know which language it checked against, the
    result, every diagnostic, and for one ``file.arch:network`` the input sizes it accepts."""
    data: dict[str, object] = {
        "archdsl_version": __version__, "language_version": LANGUAGE_VERSION, "ok": not failed,
        "networks": count, "errors": sum(d.severity == "error" for d in diags),
        "warnings": sum(d.severity == "warning" for d in diags), "diagnostics": [d.to_json() for d in diags]}
    from ..lang.loader import split_address
    if not failed and len(specs) == 1 and split_address(specs[0])[1]:
        from ..passes.sizes import input_contract
        g = compile_graph(specs[0], parse_set(set_), limits=_limits(limit), allow_outside=allow_outside)
        data["input_sizes"] = input_contract(g).describe()
    return data


@app.command("list")
def list_(directory: Optional[str] = typer.Argument(
              None, help="directory (or file) to search for .arch files; none: the library shipped with archdsl"),
          as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """List every network: its spec address, default input shape and the reference it mirrors.

    Without a path, the spec library shipped with archdsl; its networks build by name
    (``archdsl.build("resnet50")``, ``archc compile zoo:resnet50``)."""
    def run() -> int:
        if directory is None:
            nets = list_networks(str(library_dir()))
            for n in nets:   # shown by the name they build by, whatever the install location
                if n["name"] is not None:   # a family's variant: zoo:network:scale
                    n["spec"] = LIBRARY_PREFIX + (f"{n['network']}:{n['scale']}" if n.get("scale") else n["name"])
        else:
            if not Path(directory).exists():
                raise ArchError(f"no such file or directory: '{directory}'", None)
            nets = list_networks(directory)
        broken = [n for n in nets if n["name"] is None]  # files that did not load: listed, and reported
        if as_json:
            out.print(json.dumps(nets, indent=2), markup=False)
        else:
            rows = [(printable(n["spec"]),
                     str(n["input"]) if n["input"] else "error", printable(n["reference"] or "-")) for n in nets]
            if not out.is_terminal:  # piped: plain tab-separated rows, never cut to a terminal width
                for row in rows:
                    typer.echo("\t".join(row))  # not rich: it would expand the tabs
            else:
                table = Table(show_edge=False, header_style="bold")
                table.add_column("spec", overflow="fold")
                table.add_column("input")
                table.add_column("reference", overflow="fold")
                for spec_, shape, ref in rows:  # Text: a '[' in a file name is not rich markup
                    table.add_row(Text(spec_), Text(shape, style="red" if shape == "error" else ""), Text(ref))
                out.print(table)
        for n in broken:
            err.print(n["error"], markup=False)
        return 1 if broken else 0
    _guard(run)


def _print_summary(data: dict) -> None:
    """The human form of ``summary_dict``: one table (flat, or the block tree with --depth) and totals."""
    tree = data.get("tree")
    batch = data.get("batch", 1)
    table = Table(title=f"{data['spec']}  input {data['input']}", show_edge=False, header_style="bold")
    for col, just in (("layer", "left"), ("op", "left"), ("input", "right"), ("output", "right"),
                      ("kernel", "right"), ("params", "right"), ("MACs", "right"), ("RF", "right"),
                      ("connected to", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]

    def dims(s: list) -> str:
        return "x".join(str(v) for v in s) if s and len(set(s)) > 1 else (str(s[0]) if s else "")

    for r in (tree if tree is not None else data["layers"]):
        name = ("  " * (r["depth"] - 1) + r["name"]) if tree is not None else r["name"]
        ins = list(dict.fromkeys(str(s) for s in r["inputs"]))
        name = escape(name)  # spec names are text, not rich markup
        table.add_row(f"[bold]{name}[/bold]" if r.get("kind") == "block" else name, escape(op_text(r)), ", ".join(ins),
                      str(r["output_size"] if batch > 1 else r["shape"]), dims(r["kernel"]) if r["kernel"] else "",
                      f"{r['params']:,}" if r["params"] else "", format_count(r["macs"]) if r["macs"] else "",
                      dims(r["rf"]), escape(", ".join(r["connected_to"])))
    # piped output keeps whole rows (scripts grep it); a terminal squeezes the table to its width
    (out if out.is_terminal else Console(highlight=False, soft_wrap=True, width=1000)).print(table)
    for line in format_totals(data):
        out.print(line, markup=False)


def _fx_names(g: Any) -> dict[int, str] | None:
    """The built module's fx node names of the steps (torch-free: replayed on the generated code), so every
    row name is one ``create_feature_extractor`` takes; None where the graph cannot be written as code."""
    try:
        return fx_node_names(g)
    except GenerationError:
        return None


@app.command()
def summary(spec: str = typer.Argument(..., help="file.arch[:network]"),
            input_: Optional[str] = typer.Option(None, "--input", help="input shape C,H,W (overrides the spec's)"),
            set_: List[str] = SetOpt,
            scale: Optional[str] = ScaleOpt,
            limit: List[str] = LimitOpt,
            allow_outside: bool = OutsideOpt,
            as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
            backends: bool = typer.Option(False, "--backends", help="also show the conv backend plan "
                                          "(cost model + cached autotuning; see docs/backends.md)"),
            batch: int = typer.Option(1, "--batch", help="batch size for the activation-memory estimate "
                                      f"and the backend plan (1 to {MAX_BATCH:,})"),
            dtype: str = typer.Option("float32", "--dtype", help="dtype for the activation-memory estimate and "
                                      "the backend plan"),
            device: str = typer.Option("cpu", "--device", help="device type for the backend plan: cpu or cuda"),
            depth: Optional[int] = typer.Option(None, "--depth", help="show the block hierarchy down to "
                                                "this many levels, each block with its totals (1: stem/stages/head)"),
            columns: Optional[int] = typer.Option(None, "--columns", min=40, help="plain-text table at most this "
                                                  "wide (80: the narrow layout: layer, op, output, params, MACs)"),
            plugin: List[str] = PluginOpt) -> None:
    """Per-layer table (name, op, input and output shapes, kernel, params, MACs, receptive field,
    connected-to) and totals: trainable/non-trainable/buffers, parameter size, memory at --batch/--dtype.
    Rows are named by module path or fx step name (what create_feature_extractor takes); with --batch N
    the shapes have the batch axis and the MACs are the batch's."""
    def run() -> int:
        _check_number("--batch", batch, 1, MAX_BATCH)
        if depth is not None:
            _check_number("--depth", depth, 0, MAX_DEPTH, hint="0 shows the network as one row; 1 its stages")
        _load_plugins(plugin)
        with verifying_shapes():   # a plugin's declared shape/params are compared with its module (meta device)
            g = compile_graph(spec, _params(set_, scale), input_shape=_parse_shape(input_), limits=_limits(limit),
                              allow_outside=allow_outside)
        data = summary_dict(g, depth=depth, batch=batch, dtype=dtype, names=_fx_names(g))
        plan = None
        if backends:  # torch-free: the registry, cost model and cache only (archdsl.backends.plan_graph)
            from ..backends import plan_graph
            from ..backends.spec import DTYPES, dtype_name
            if dtype_name(dtype) not in DTYPES or device not in ("cpu", "cuda"):
                raise ArchError(f"--dtype {dtype} / --device {device} is not a backend target", None,
                                hint=f"dtypes: {', '.join(DTYPES)}; devices: cpu, cuda")
            plan = plan_graph(g, batch=batch, dtype=dtype_name(dtype), device=device)
            data["backends"] = plan.to_dict()
        if as_json:
            out.print(json.dumps(data, indent=2), markup=False)
            return 0
        if columns is not None:
            typer.echo(format_table(data, columns))
        else:
            _print_summary(data)
        if plan is not None:
            from ..backends.report import plan_footer, plan_table
            out.print(plan_table(plan))
            out.print(plan_footer(plan))
        return 0
    _guard(run)


@app.command("compile")
def compile_(spec: str = typer.Argument(..., help="file.arch[:network]"),
             output: Path = typer.Option(..., "-o", "--output", help="where to write the generated .py"),
             set_: List[str] = SetOpt,
             scale: Optional[str] = ScaleOpt,
             limit: List[str] = LimitOpt,
             allow_outside: bool = OutsideOpt,
             deploy: bool = typer.Option(False, "--deploy", help="write the deploy (inference) form: reparam "
                                         "groups fused into one conv, BatchNorms folded; its weights come from "
                                         "'archc deploy'"),
             fold_bn: bool = typer.Option(True, "--fold-bn/--keep-bn", help="with --deploy: fold BatchNorms "
                                          "(--keep-bn fuses only reparam groups, e.g. RepLKNet's official form)"),
             channels_last: bool = typer.Option(False, "--channels-last", help="with --deploy: convert the input "
                                                "to channels-last in forward"),
             plugin: List[str] = PluginOpt) -> None:
    """Write the generated PyTorch source (depends only on torch). On any error nothing is written."""
    def run() -> int:
        with verifying_shapes():   # a plugin's declared shape/params are compared with its module (meta device)
            return write()

    def write() -> int:
        _load_plugins(plugin)
        if "\n" not in spec:
            _check_destination(output, "output", protect=(_spec_file(spec),))
        g = compile_graph(spec, _params(set_, scale), limits=_limits(limit), allow_outside=allow_outside)
        if g.warnings:
            _print_diags(g.warnings)
        n_params = g.total_params
        if deploy:
            from ..codegen.emit import generate
            from ..passes.deploy import deploy_graph, deploy_note  # graph-level passes: no torch needed
            dg = deploy_graph(g, fold_bn=fold_bn, limits=_limits(limit))
            src = generate(dg, source_note=deploy_note(g),
                           memory_format="channels_last" if channels_last else "contiguous", inference=True)
            n_params = dg.total_params
        else:
            src = generate_source(g, spec=spec, params=_params(set_, scale), limits=_limits(limit),
                                  allow_outside=allow_outside)
        _write_output(output, src)
        out.print(f"wrote {output} ({len(src.splitlines())} lines, {n_params:,} params)")
        return 0
    _guard(run)


@app.command("deploy")
def deploy_(spec: str = typer.Argument(..., help="file.arch[:network] the weights were trained with"),
            weights: Path = typer.Option(..., "--weights", "-w", help="train-form state_dict (torch.save'd .pt)"),
            output: Path = typer.Option(..., "-o", "--output", help="where to write the deploy-form state_dict"),
            set_: List[str] = SetOpt,
            scale: Optional[str] = ScaleOpt,
            fold_bn: bool = typer.Option(True, "--fold-bn/--keep-bn", help="fold BatchNorms (--keep-bn fuses "
                                         "only reparam groups, e.g. RepLKNet's official deploy keys)"),
            source: Optional[Path] = typer.Option(None, "--source", help="also write the deploy module's .py"),
            dtype: str = typer.Option("float32", "--dtype", help="float32, bfloat16 or float16: the deploy "
                                      "weights are fused in float32 and converted last (the --source module "
                                      "converts its input to that dtype)"),
            limit: List[str] = LimitOpt,
            plugin: List[str] = PluginOpt) -> None:
    """Convert trained train-form weights into the deploy form (matching 'archc compile --deploy').

    The weights are read and checked (size, keys, shapes, dtypes, finite values) before anything is
    built, and both outputs are checked before either is written: on any error nothing is written.
    """
    def run() -> int:
        _load_plugins(plugin)
        if dtype not in ("float32", "bfloat16", "float16"):
            raise ArchError(f"--dtype must be float32, bfloat16 or float16, got '{printable(dtype)}'", None,
                            hint="bfloat16 pays on a GPU or a CPU with avx512_bf16/AMX")
        protect = (weights,) if "\n" in spec else (_spec_file(spec), weights)
        _check_destination(output, "output", protect=protect)
        if source is not None:
            _check_destination(source, "--source", protect=protect)
            if source.resolve() == output.resolve():
                raise ArchError(f"--source '{source}' and -o '{output}' are the same file", None,
                                hint="the weights (-o) and the module source (--source) need two files")
        lim = _limits(limit)
        with verifying_shapes():
            g = compile_graph(spec, _params(set_, scale), limits=lim)
        from ..passes.deploy import deploy_note, deploy_plan, state_shapes
        plan = deploy_plan(g, fold_bn=fold_bn, limits=lim)    # size and exactness checks: no torch yet
        import io

        import torch

        from ..codegen.emit import generate
        from ..codegen.weights import check_finite, computed_keys, deploy_state_dict, read_checkpoint
        expected = state_shapes(g)
        if expected is None:   # an op the IR cannot size: its shapes from a model on the meta device (no memory)
            from ..codegen.build import instantiate
            with torch.device("meta"):
                expected = {k: tuple(v.shape) for k, v in instantiate(g).state_dict().items()}
        bn_vars = frozenset(f"{n.module}.running_var" for n in g.records()
                            if n.op == "batchnorm" and n.module and n.args["track_running_stats"])
        sd = read_checkpoint(weights, expected, bn_vars=bn_vars)
        dsd = deploy_state_dict(plan, sd)
        check_finite(dsd, "the deploy weights", computed_keys(plan))   # the copies were checked on reading
        if dtype != "float32":   # fused in float32 above; floating tensors rounded once (an index stays int)
            dsd = {k: v.to(getattr(torch, dtype)) if v.is_floating_point() else v for k, v in dsd.items()}
            check_finite(dsd, f"the deploy weights in {dtype}")   # float16 overflows past 65504
        buf = io.BytesIO()
        torch.save(dsd, buf)
        src = generate(plan.graph, source_note=deploy_note(g), dtype=dtype,
                       inference=True) if source is not None else None
        for note in plan.notes:
            err.print(f"archc: note: {note}", markup=False)
        if src is not None and source is not None:
            _write_output(source, src)
        try:
            _write_output(output, buf.getvalue())
        except ArchError:
            if source is not None:   # no partial output
                source.unlink(missing_ok=True)
            raise
        out.print(f"wrote {output} ({len(dsd)} tensors, {plan.graph.total_params:,} params"
                  + (f" in {dtype}" if dtype != "float32" else "") + "; "
                  f"{len(plan.fused_groups)} reparam groups fused, {plan.folded_bn} BatchNorms folded"
                  + (f", {plan.folded_scales} layer scales folded" if plan.folded_scales else "") + ")")
        return 0
    _guard(run)


@app.command()
def ops(as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
        markdown: bool = typer.Option(False, "--markdown", help="the docs/ops.md table"),
        plugin: List[str] = typer.Option([], "--plugin", help="also list the ops these plugins register "
                                         "(repeatable; see docs/extending.md)")) -> None:
    """List the built-in ops with their arguments (and, with --plugin, those the plugins register)."""
    from ..ops.docs import op_entries, ops_markdown

    def run() -> int:
        if plugin:   # only when asked: ARCHDSL_PLUGINS must not change the docs/ops.md table
            _load_plugins(plugin)
        if markdown:
            out.print(ops_markdown(), markup=False, end="")
        elif as_json:
            out.print(json.dumps(op_entries(), indent=2), markup=False)
        else:
            table = Table(show_edge=False, header_style="bold")
            for col in ("op", "arguments", "family", "what it does"):
                table.add_column(col)
            for e in op_entries():
                table.add_row(e["name"], e["signature"], e["family"], e["doc"])
            out.print(table)
        return 0
    _guard(run)


@app.command()
def render(spec: str = typer.Argument(..., help="file.arch[:network]"),
           output: Path = typer.Option(..., "-o", "--output",
                                       help="diagram file: .svg, .png, .pdf, .dot (DOT source) or .html"),
           depth: Optional[int] = typer.Option(None, "--depth", help="collapse blocks below this many levels "
                                               "(1: stem/stages/head); default every layer"),
           expand: bool = typer.Option(False, "--expand", help="draw every repeated block (no 'Block x5' folding)"),
           rankdir: Optional[str] = typer.Option(None, "--rankdir", help="TB (top to bottom), LR (left to right), "
                                                 "or the reverse: BT, RL; default TB, LR for --style paper"),
           style: str = typer.Option("default", "--style", help="default (every layer, shapes on every edge) or "
                                     "paper (a figure for a paper: stages, blocks x N, a legend)"),
           detail: Optional[str] = typer.Option(None, "--detail", help="draw the block at this module path in full, "
                                                "the rest as context (e.g. layer2.0)"),
           show_args: List[str] = typer.Option([], "--show-args", help="paper style: block arguments to show "
                                               "although they are schedule arguments (sd, first, ...); 'all'"),
           deploy: bool = typer.Option(False, "--deploy", help="draw the deploy form (reparam groups fused)"),
           as_html: bool = typer.Option(False, "--html", help="write one self-contained interactive HTML page "
                                        "(also chosen by a .html output)"),
           set_: List[str] = SetOpt,
           scale: Optional[str] = ScaleOpt,
           limit: List[str] = LimitOpt,
           allow_outside: bool = OutsideOpt,
           plugin: List[str] = PluginOpt) -> None:
    """Draw the architecture: blocks as nested clusters, edges labelled with tensor shapes."""
    def run() -> int:
        from ..render import write_diagram  # graphviz is needed only here; torch never is (but a plugin may)
        if depth is not None:
            _check_number("--depth", depth, 1, MAX_DEPTH,
                          hint="depth 1 shows the network's top-level stages; leave it out for every layer")
        if "\n" not in spec:
            _check_destination(output, "output", protect=(_spec_file(spec),))
        _load_plugins(plugin)

        limits = _limits(limit)
        g = compile_graph(spec, _params(set_, scale), limits=limits, allow_outside=allow_outside)
        kind = write_diagram(g, output, fmt="html" if as_html else None, depth=depth, expand=expand,
                             deploy=deploy, rankdir=rankdir.upper() if rankdir else None, limits=limits,
                             style=style, detail=detail,
                             show_args=[a.strip() for v in show_args for a in v.split(",") if a.strip()])
        out.print(f"wrote {output} ({kind}, {len(g)} layers)")
        return 0
    _guard(run)
