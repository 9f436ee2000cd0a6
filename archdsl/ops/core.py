"""The op registry's machinery: :class:`OpDef`, :class:`ArgSpec`, traits, emission pieces, ``register``.

Everything the compiler knows about one op lives in its :class:`OpDef`: the signature, the shape rule,
parameter and MAC counts, how code generation emits it (``emit``/``ctor``/``module_form``, as data made of
:class:`Lit`/:class:`In`/:class:`Kw`/:data:`MOD` pieces, never as text pasted from a spec) and its
**traits** (see :data:`TRAITS`), which the passes query instead of keeping lists of op names.
The built-in ops are registered by :mod:`archdsl.ops.nn` and :mod:`archdsl.ops.tensor`.
Shapes are per sample: ``(C, H, W)`` for feature maps, ``(C, T, H, W)`` for videos and volumes, ``(F,)`` for
vectors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import AbstractSet, Any, Callable, Sequence, Union

__all__ = ["TensorArg", "BatchSize", "TorchCall", "TorchForm", "REQUIRED", "ArgType", "ArgSpec", "OpDef", "OPS", "ShapeError", "OP_FAMILIES", "TRAITS", "register",
           "has_trait", "size_only_input", "ops_with", "conv_out", "pool_out", "broadcast", "layer_scale_shape", "Lit", "In", "Kw",
           "MOD", "Piece", "Expr", "EmitArgs", "Shape"]


class _Required:
    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Required()


class ShapeError(Exception):
    """Raised by a shape rule; ``arg`` names the argument to point the caret at."""

    def __init__(self, message: str, arg: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.arg = arg
        self.hint = hint


class ArgType(str, Enum):
    """The type of an op argument. A ``str`` enum: ``ArgType.INT == "int"`` holds, so code that compares
    with the former string tags keeps working."""

    INT = "int"
    INT_OPT = "int?"          # an integer or none
    INT2 = "int2"             # an integer or a pair [h, w]
    INT2_OPT = "int2?"        # an integer, a pair or none
    INT3 = "int3"             # an integer or a triple [t, h, w] (3-D ops on [C, T, H, W])
    INT3_OPT = "int3?"        # an integer, a triple or none
    FLOAT = "float"
    FLOAT_OPT = "float?"      # a number or none
    BOOL = "bool"
    BOOL_OPT = "bool?"        # true, false or none
    STR = "str"
    PADDING = "padding"       # an integer, a pair, "same" or "valid"
    PADDING3 = "padding3"     # an integer, a triple, "same" or "valid"
    LIST = "list"
    DIMS = "dims"             # one dim or a non-empty list of dims
    ANY = "any"               # any value a spec can write (a plugin op's untyped argument)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class ArgSpec:
    """One argument of an op: name, type and default."""

    name: str
    type: ArgType | str
    default: Any = REQUIRED
    choices: tuple[Any, ...] | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", ArgType(self.type))


Shape = tuple[int, ...]

#: Every trait an op can carry, with its meaning. Passes ask ``has_trait(op, name)`` / ``ops_with(name)``
#: instead of keeping their own lists of op names.
TRAITS: dict[str, str] = {
    "stateful-module": "owns an nn.Module with parameters or buffers (its OpDef has a ``ctor``); the node gets a "
                       "module path and codegen calls the module",
    "parameter": "owns a bare nn.Parameter (not a module), registered under its label (layer_scale)",
    "nested-state": "its module has submodules of its own, so its state_dict keys go deeper than its path "
                    "(nn.MultiheadAttention's out_proj.weight): weight copies take every key under the path",
    "buffer": "owns a bare persistent buffer (a state_dict key, not a parameter), registered under its label "
              "(Swin's relative_position_index)",
    "eval-identity": "the identity in eval mode (identity, dropout, drop_path): deploy removes it",
    "fusable-linear": "a linear map whose weights the reparam/deploy algebra can fold (conv2d, linear, batchnorm, "
                      "avgpool)",
    "channel-wise": "on a [C, H, W] map, output channel c depends only on input channel c (activations, pools, "
                    "batchnorm, layer_scale over channels, dropout): a per-channel BatchNorm can be moved across "
                    "it only if it is also linear; linear/layernorm/conv/softmax over C are NOT channel-wise",
    "layout-sensitive": "depends on the order of dims or the memory layout (permute, reshape, flatten, linear on "
                        "the last dim, concat/softmax/reductions over a dim): layout rewrites must stop here",
    "inplace-safe-producer": "its backward does not need its output, so the next op may overwrite that output "
                             "in place (conv2d, batchnorm, linear, add)",
    "inplace": "has an in-place form codegen uses when the producer allows it (relu, relu6, add)",
    "finite-values": "its output is finite wherever its parameters are (a bias table gathered, a finite mask "
                     "added): an attention mask from it masks no row fully, so a deploy form may run a plain "
                     "softmax over the scores (Swin's swin_attention_bias)",
    "merge": "combines several tensors (add, mul, concat, stack): a combinator",
    "multi-output": "produces several tensors (chunk, split, unbind): lowered to narrow (select) nodes",
    "reads-sizes": "its integer arguments may be sizes read from tensors (``in.h // 16``, ``max(in.h // 2, 4)``): "
                   "lowering keeps their formulas (``args['dyn']``), the tensors they read become extra inputs "
                   "after the data input, and the generated code computes the sizes at run time (reshape); "
                   "any other op's arguments are numbers, and the sizes they came from keep their values in "
                   "the input contract",
}

OP_FAMILIES = ("input", "conv", "linear", "norm", "pool", "act", "dropout", "merge", "shape", "identity")


# ---- emission pieces -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lit:
    """A literal value in generated code (int, float, bool, str, None, or a tuple of them).

    Codegen renders it with a checked ``repr`` (never as text), and may turn it into a constructor argument
    when instances of one block differ only in such values; ``name`` suggests that argument's name."""

    value: Any
    name: str = ""


@dataclass(frozen=True)
class In:
    """The ``k``-th tensor input of the op (a local variable in the generated forward)."""

    k: int


@dataclass(frozen=True)
class Kw:
    """A keyword argument ``, name=value`` that is left out when ``value == default``."""

    name: str
    value: Any
    default: Any
    sep: str = ", "


class _Mod:
    """The op's own module (or parameter), e.g. ``self.conv1``."""

    def __repr__(self) -> str:
        return "MOD"


MOD: Any = _Mod()
Piece = Union[str, Lit, In, Kw, _Mod]
Expr = tuple  # a tuple of Pieces; ``str`` pieces are trusted code from this registry, never spec text


@dataclass(frozen=True)
class EmitArgs:
    """What an emit function gets: the node's bound args, input shapes, output shape, number of inputs,
    whether codegen proved the op may work in place, and whether the module is an inference artefact (a deploy
    form: an emit may then pick a faster spelling of the same function that hooks and autograd need not see)."""

    args: dict[str, Any]
    in_shapes: list[Shape]
    shape: Shape
    n_inputs: int = 1
    inplace: bool = False
    # per input, whether it has the batch axis (empty: every input has it); an op's ``unbatched_emit`` reads it
    batched: tuple[bool, ...] = ()
    out_batched: bool = True      # whether the op's value has the batch axis

    def has_batch(self, k: int) -> bool:
        """Whether input ``k`` has the batch axis (a buffer or a ``batch_dim=false`` parameter has not)."""
        return self.batched[k] if k < len(self.batched) else True
    inference: bool = False
    # per input: whether its producer op has the trait "finite-values" (filled for inference only)
    finite_inputs: tuple[bool, ...] = ()


# ---- the PyTorch spellings of an op (read by the importer, archdsl/importer) -----------------------------
@dataclass(frozen=True)
class TensorArg:
    """In a :class:`TorchCall`'s arguments, the place of the call's ``k``-th tensor input."""

    k: int


@dataclass(frozen=True)
class BatchSize:
    """In a :class:`TorchCall`'s arguments, an integer read from a tensor that is the batch size times
    ``factor`` (``x.shape[0]``, ``B * nW``): never a constant of the spec."""

    factor: int = 1


@dataclass(frozen=True)
class TorchCall:
    """One call found in a traced PyTorch model, as an op's :class:`TorchForm` sees it.

    ``module`` is the ``nn.Module`` instance (kind "module"), else None. ``args``/``kwargs`` are the call's
    own arguments with each tensor replaced by a :class:`TensorArg` (``torch.cat([a, b], dim=1)`` has args
    ``([TensorArg(0), TensorArg(1)],)``); ``in_shapes`` the per-sample shapes of the tensor inputs (batch
    axis removed) and ``batch_axes`` where each input's batch axis is (0 for ordinary tensors; the importer
    tracks permutes that move it; -1 for a value without the batch axis). ``out_shapes``/``out_batch_axes`` are the traced per-sample shapes of the
    call's tensor outputs and where their batch axis is (empty when unknown): a reshape reads its target
    there; ``in_dtypes``/``out_dtypes`` their traced dtypes. An integer argument equal to the batch size is a :class:`BatchSize`. Dims a form returns follow
    the spec's convention, batch first: a torch dim ``d`` is ``call.sample_dim(d) + 1``. The importer passes
    plain objects; nothing here imports torch.
    """

    module: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    in_shapes: list[Shape]
    batch_axes: list[int]
    out_shapes: list[Shape] = field(default_factory=list)
    out_batch_axes: list[int] = field(default_factory=list)
    #: the traced dtypes ("float32", "int64", ...) of the tensor inputs and outputs (empty when unknown): a cast
    #: (``x.float()``) is the identity only where the value already has the dtype it casts to
    in_dtypes: list[str] = field(default_factory=list)
    out_dtypes: list[str] = field(default_factory=list)

    def arg(self, i: int, name: str, default: Any = REQUIRED) -> Any:
        """Argument ``name`` (position ``i`` or keyword ``name``; ``i < 0``: keyword only) or ``default``.
        Raises ShapeError when a required one is missing."""
        if 0 <= i < len(self.args):
            return self.args[i]
        if name in self.kwargs:
            return self.kwargs[name]
        if default is REQUIRED:
            raise ShapeError(f"argument {name} is missing")
        return default

    def spec_dim(self, d: int, k: int = 0) -> int:
        """Dimension ``d`` of the batched input ``k`` in the spec's convention (batch is dim 0)."""
        return self.sample_dim(d, k) + 1

    def sample_dim(self, d: int, k: int = 0) -> int:
        """Dimension ``d`` of the batched input ``k`` as a per-sample dimension (non-negative). Raises
        ShapeError when ``d`` is the batch axis itself (the op then does not apply per sample). A batch axis of
        -1 is a value without one (a buffer, a parameter): torch's dim ``d`` is then the sample dim ``d``."""
        if self.batch_axes[k] == -1:
            rank = len(self.in_shapes[k])
            if not -rank <= d < rank:
                raise ShapeError(f"dimension {d} is out of range for a rank-{rank} tensor")
            return d % rank
        rank = len(self.in_shapes[k]) + 1
        if not -rank <= d < rank:
            raise ShapeError(f"dimension {d} is out of range for a rank-{rank} tensor")
        d %= rank
        b = self.batch_axes[k]
        if d == b:
            raise ShapeError(f"dimension {d} is the batch axis")
        return d if d < b else d - 1


@dataclass(frozen=True)
class TorchForm:
    """One PyTorch spelling of the op, for the importer: ``kind`` "module" (``target`` an ``nn.Module``
    class's qualified name, "torch.nn.Conv2d"), "function" (a function's qualified name, "torch.cat",
    "torch.nn.functional.gelu") or "method" (a Tensor method's name, "permute"). ``args`` maps the
    :class:`TorchCall` to the op's keyword args (dims already per sample), or returns None when this call is
    not this op (e.g. a ``Conv2d`` with ``padding_mode="reflect"``); a ShapeError says why it cannot be."""

    kind: str
    target: str
    args: Callable[[TorchCall], dict[str, Any] | None]


def _call_mod(e: EmitArgs) -> Expr:
    return (MOD, "(", In(0), ")")


@dataclass
class OpDef:
    """A built-in op. ``shape`` maps (input shapes, bound args) to the output shape.

    Code generation: ``emit(EmitArgs)`` gives the forward expression; ``ctor(EmitArgs)`` the module (or
    ``nn.Parameter``) constructor of a stateful op; ``module_form(EmitArgs)`` an ``nn.Module`` doing the same
    as ``emit`` for a stateless op (used inside ``nn.Sequential`` containers); ``helpers`` names module-level
    helper functions (:data:`archdsl.ops.tensor.HELPERS`) the emitted code calls.
    """

    name: str
    family: str
    args: list[ArgSpec]
    shape: Callable[[list[Shape], dict[str, Any]], Shape]
    doc: str
    params: Callable[[list[Shape], dict[str, Any]], int] = lambda s, a: 0
    macs: Callable[[list[Shape], Shape, dict[str, Any]], int] = lambda s, o, a: 0
    # elements of the buffers the built module holds (state, not parameters: BatchNorm's running statistics,
    # Swin's relative_position_index), what ``model.buffers()`` counts
    buffers: Callable[[list[Shape], dict[str, Any]], int] = lambda s, a: 0
    stateful: bool = False
    arity: int = 1                      # number of tensor inputs; -1: any (>= 1)
    aliases: tuple[str, ...] = ()
    normalize: Callable[[list[Shape], dict[str, Any]], dict[str, Any]] | None = None
    key_args: tuple[str, ...] = field(default_factory=tuple)  # shown in diagrams
    emit: Callable[[EmitArgs], Expr] = _call_mod
    ctor: Callable[[EmitArgs], Expr] | None = None
    module_form: Callable[[EmitArgs], Expr] | None = None
    # any set of names is accepted and frozen in __post_init__ (the registry entries write {...} literals)
    traits: AbstractSet[str] = frozenset()
    helpers: tuple[str, ...] = ()
    # The bound args at another input size, for the input-size contract (archdsl.passes.sizes): None when
    # the args do not depend on the input's size; reshape recomputes its run-time sizes here.
    resize: Callable[[list[Shape], dict[str, Any]], dict[str, Any]] | None = None
    # Inputs from this index on are read only for their size, never their values (resize_as's reference,
    # a free parameter's batch, reshape's run-time sizes): no data path for feature taps, a "size" edge in
    # diagrams. None: every input is data.
    size_inputs_from: int | None = None
    # the PyTorch modules/functions/methods this op stands for (the importer's table; see TorchForm)
    torch_forms: tuple[TorchForm, ...] = ()
    # Values without the batch axis (buffers, batch_dim=false parameters, what is computed from them alone; see
    # docs/language.md "Buffers and computation on parameters"). ``unbatched_emit``: the forward expression
    # when some data input has no batch axis (EmitArgs.batched says which); None: the generic form, the op's
    # ``emit`` over ``t[None]`` (a batch of one) with ``[0]`` taken of the result, which is right for any op
    # that works per sample. ``mixed_batch``: whether inputs with and without the batch axis may meet: ""
    # (they may not), "broadcast" (torch lines them up from the right: element-wise math, matmul, attention)
    # or "any" (each input has its role: gathers, F.linear/F.conv2d with computed weights).
    unbatched_emit: Callable[[EmitArgs], Expr] | None = None
    mixed_batch: str = ""
    # inputs that must lack the batch axis (F.linear's weight and bias): one weight serves the whole batch
    unbatched_inputs: tuple[int, ...] = ()
    # whether the op's value has the batch axis whatever its inputs, from its bound args (a parameter: its
    # batch_dim; a buffer: never; swin_attention_bias: its bias carries a batch of one); None: a source op's
    # value has it, any other op's when one of its data inputs has it
    output_batched: Callable[[dict[str, Any]], bool] | None = None
    # a "buffer" op: whether the buffer is persistent (a state_dict key) for these args
    persistent: Callable[[dict[str, Any]], bool] = lambda a: True

    def __post_init__(self) -> None:
        self.traits = frozenset(self.traits)
        unknown = self.traits - set(TRAITS)
        if unknown:
            raise ValueError(f"op {self.name}: unknown traits {sorted(unknown)} (known: {sorted(TRAITS)})")
        if self.stateful and self.ctor is None:
            raise ValueError(f"op {self.name} is stateful but has no ctor")
        if self.stateful and not self.traits & {"stateful-module", "parameter", "buffer"}:
            self.traits = self.traits | {"stateful-module"}


OPS: dict[str, OpDef] = {}
_EXTRA_TRAITS: dict[str, frozenset[str]] = {"chunk": frozenset({"multi-output", "layout-sensitive"}),
                                            "split": frozenset({"multi-output", "layout-sensitive"}),
                                            "unbind": frozenset({"multi-output", "layout-sensitive"})}


def register(*defs: OpDef) -> None:
    """Add ops (and their aliases) to the registry. One call is all a new op needs: lowering, checking,
    summaries, rendering and code generation read everything from the OpDef."""
    for d in defs:
        for name in (d.name, *d.aliases):
            if not name.isidentifier():
                raise ValueError(f"op name {name!r} is not an identifier")
        OPS[d.name] = d
        for al in d.aliases:
            OPS[al] = d


def size_only_input(op: str, k: int) -> bool:
    """Whether input ``k`` of ``op`` is read only for its size (see :attr:`OpDef.size_inputs_from`)."""
    d = OPS.get(op)
    return d is not None and d.size_inputs_from is not None and k >= d.size_inputs_from


def has_trait(op: str, trait: str) -> bool:
    """Whether op ``op`` (a name or alias; unknown names have no trait) carries ``trait`` (see TRAITS)."""
    if trait not in TRAITS:
        raise KeyError(f"unknown trait {trait!r} (known: {', '.join(sorted(TRAITS))})")
    d = OPS.get(op)
    return trait in (d.traits if d is not None else _EXTRA_TRAITS.get(op, frozenset()))


def ops_with(trait: str) -> frozenset[str]:
    """The canonical names of every registered op carrying ``trait``."""
    if trait not in TRAITS:
        raise KeyError(f"unknown trait {trait!r} (known: {', '.join(sorted(TRAITS))})")
    names = {d.name for d in OPS.values() if trait in d.traits}
    names |= {n for n, t in _EXTRA_TRAITS.items() if trait in t}
    return frozenset(names)


# ---- shape helpers shared by the families --------------------------------------------------------------
def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _triple(v: Any) -> tuple[int, int, int]:
    if isinstance(v, (list, tuple)):
        return int(v[0]), int(v[1]), int(v[2])
    return int(v), int(v), int(v)


def _need_rank(shapes: list[Shape], rank: int, what: str) -> Shape:
    s = shapes[0]
    if len(s) != rank:
        names = {4: "a video or volume [C, T, H, W]", 3: "a feature map [C, H, W]", 1: "a vector [F]"}
        hint = "add 'flatten' before it" if rank == 1 else None
        if rank == 3 and len(s) == 4:
            hint = ("a [C, T, H, W] tensor takes the 3-D op (conv3d, maxpool3d, ...); if it is the network input "
                    "and its first size is the batch, leave the batch out of the input shape")
        elif rank == 4 and len(s) == 3:
            hint = "3-D ops work on [C, T, H, W] (input [3, 16, 112, 112]); use the 2-D op for [C, H, W]"
        raise ShapeError(f"{what} expects {names.get(rank, f'rank {rank}')}, got {list(s)}", hint=hint)
    return s


def _check_positive(a: dict[str, Any], names: Sequence[str], allow_zero: Sequence[str] = ()) -> None:
    for n in names:
        v = a[n]
        vals = v if isinstance(v, tuple) else (v,)
        lo = 0 if n in allow_zero else 1
        for x in vals:
            if x < lo:
                what = "non-negative" if lo == 0 else "positive"
                raise ShapeError(f"{n} must be {what}, got {x}", arg=n)


def _same(shapes: list[Shape], a: dict[str, Any]) -> Shape:
    return shapes[0]


def conv_out(size: int, k: int, s: int, p: int, d: int, ceil: bool = False) -> int:
    """Output length of a conv/pool window (PyTorch's formula, ceil_mode included)."""
    eff = d * (k - 1) + 1
    num = size + 2 * p - eff
    if num < 0:
        return 0
    out = (-(-num // s) if ceil else num // s) + 1
    if ceil and (out - 1) * s >= size + p:  # the last window must start inside the input or left padding
        out -= 1
    return out


def pool_out(size: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    """Output length of a pooling window (the conv formula with ``ceil_mode``)."""
    return conv_out(size, k, s, p, d, ceil)


def broadcast(shapes: list[Shape], what: str) -> Shape:
    """Numpy-style broadcasting of per-sample shapes, with a precise message when it fails."""
    rank = max(len(s) for s in shapes)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in shapes]
    out = []
    for i in range(rank):
        dims = {p[i] for p in padded if p[i] != 1}
        if len(dims) > 1:
            names = ["C", "H", "W"] if rank == 3 else [f"dim{j}" for j in range(rank)]
            raise ShapeError(f"{what}: shapes " + ", ".join(str(list(s)) for s in shapes)
                             + f" do not match in {names[i]} ({' vs '.join(str(p[i]) for p in padded)})")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def layer_scale_shape(shape: Shape, dim: int) -> Shape:
    """Shape of the learnable scale: (C, 1, 1) for channels of [C, H, W] (torchvision), (F,) for the last dim."""
    if dim == len(shape):
        return (shape[-1],)
    return (shape[dim - 1],) + (1,) * (len(shape) - dim)


def int_or_pair(v: Any, name: str = "") -> Lit:
    """A kernel/stride/padding value as PyTorch code writes it: ``3`` for (3, 3), ``(1, 3)`` otherwise."""
    if isinstance(v, (tuple, list)):
        v = tuple(v)
        return Lit(v[0] if len(set(v)) == 1 else v, name)
    return Lit(v, name)
