"""Which axis of a module's output holds its neurons, decided from the module itself.

Position 1 is right for ``[B, C, H, W]`` convolutions but wrong wherever a network works
channels-last: torchvision's ConvNeXt permutes each block to ``[B, H, W, C]`` around a
LayerNorm and two Linear layers, and Swin keeps that layout throughout. So the axis comes
from what the module is and does. A ``[batch, n]`` output has one axis to choose (rule
``only``); any other, by the first of these rules that decides:

1. ``type``: a module that runs torch's own ``forward`` says it by its type. Linear,
   Bilinear, LayerNorm, RMSNorm, Embedding and MultiheadAttention give the last axis;
   convolutions, batch, instance and group norms, pooling, padding and upsampling axis 1.
   A subclass that overrides ``forward`` (torchvision's ``LayerNorm2d`` permutes to
   channels-last and back) is not taken at its type's word.
2. ``output``: the output is a tensor that another module of the same forward pass returned
   with the same shape (a block returning its last LayerNorm's output, an ``eval()``
   dropout, an in-place ReLU): that module's axis.
3. ``input``: the output has the shape of the first input, whose axis is known: a
   shape-preserving module (activation, attention, residual block) keeps the layout. It
   comes before the parameters, whose sizes (a window attention's head count) may equal a
   spatial size.
4. ``parameters``: exactly one axis has a size that occurs in the shapes of the module's
   own parameters and buffers (sizes 1 left out).
5. ``input`` again, for a module that reshapes its input (a ``Permute``): exactly one axis
   of the output has the length of the input's neuron axis.
6. ``convention``: a module without parameters of its own follows torch's layout
   convention: axis 1, except for ndim-3 outputs of modules other than 1-d conv, pool and
   norm (``[batch, tokens, dim]``), whose neurons are on the last axis.

``tokens``: with a token mask, an axis as long as the padded texts holds tokens. Where the
parameters' sizes match it and one other axis, or the convention would pick it on a 3-d
output (SqueezeBERT's ``[batch, hidden, tokens]``), the other axis holds the neurons; where
both axes of a 3-d output have that length (GPT-2's Conv1D on texts padded to its width), it
is ``[batch, tokens, features]``.

A module with parameters that no rule decides, or one that reshapes its input so that
several axes have its neuron count, raises :class:`~ndstream.errors.CaptureError` asking for
``channel_dim``, rather than guessing. Rules 2 and 4 need to see the other
modules' outputs: :class:`LayoutTracker` hooks every module for the first forward pass.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..errors import CaptureError
from .structure import default_tensor

__all__ = ["AxisChoice", "LayoutTracker", "choose_axis", "convention_axis"]

# fmt: off
_LAST = frozenset({
    "Linear", "LazyLinear", "Bilinear", "LayerNorm", "RMSNorm", "Embedding",
    "EmbeddingBag", "MultiheadAttention",
})
_FIRST_PREFIXES = (
    "Conv", "LazyConv", "BatchNorm", "LazyBatchNorm", "SyncBatchNorm", "InstanceNorm",
    "LazyInstanceNorm", "GroupNorm", "LocalResponseNorm", "MaxPool", "AvgPool",
    "AdaptiveAvgPool", "AdaptiveMaxPool", "LPPool", "FractionalMaxPool", "MaxUnpool",
    "Upsample", "PixelShuffle", "PixelUnshuffle", "ReflectionPad", "ReplicationPad",
    "ZeroPad", "ConstantPad", "CircularPad", "Dropout1d", "Dropout2d", "Dropout3d",
)
# Modules whose 3-d outputs are [B, C, L]; any other 3-d output is taken as [batch, tokens,
# dim]. Lazy variants are listed because they only become their eager class after a forward.
_CHANNEL_FIRST_1D = frozenset({
    "Conv1d", "ConvTranspose1d", "LazyConv1d", "LazyConvTranspose1d", "MaxPool1d", "AvgPool1d",
    "LPPool1d", "AdaptiveAvgPool1d", "AdaptiveMaxPool1d", "BatchNorm1d", "LazyBatchNorm1d",
    "InstanceNorm1d", "LazyInstanceNorm1d",
})
# fmt: on


@dataclass(frozen=True)
class AxisChoice:
    """The neuron axis of one output, and the rule that chose it.

    Attributes
    ----------
    axis : int
        Non-negative axis of the output as viewed (a ``[B]`` output as ``[B, 1]``).
    rule : str
        ``"override"``, ``"only"``, ``"type"``, ``"output"``, ``"input"``, ``"parameters"``,
        ``"convention"`` or ``"tokens"`` (see the module docstring).
    """

    axis: int
    rule: str


def _torch_type(module: nn.Module) -> str | None:
    """The name of the torch.nn class a module is, if it runs torch's own ``forward``.

    ``BatchNorm2d`` runs ``_BatchNorm.forward``: the class that names the layout is the most
    derived torch.nn class, the one that runs must be torch's too.
    """
    mro = type(module).__mro__
    runs = next((cls for cls in mro if "forward" in vars(cls)), None)
    if runs is None or not runs.__module__.startswith("torch.nn"):
        return None
    return next(cls.__name__ for cls in mro if cls.__module__.startswith("torch.nn"))


def _type_axis(module: nn.Module, ndim: int) -> int | None:
    name = _torch_type(module)
    if name is None:
        return None
    if name in _LAST:
        return ndim - 1
    if name.startswith(_FIRST_PREFIXES):
        return 1
    return None


def convention_axis(module: nn.Module, ndim: int) -> int:
    """The axis torch's layout convention gives an output of ``ndim`` dimensions.

    Parameters
    ----------
    module : nn.Module
        The module that produced the output; its type matters only for ``ndim == 3``.
    ndim : int
        Number of dimensions of the output, batch axis included; at least 1 (else ValueError).

    Returns
    -------
    int
        ``1``, or ``-1`` (the last axis) for ndim-3 outputs of modules other than 1-d
        conv/pool/norm; a ``[B]`` output is viewed as ``[B, 1]`` and gets ``1``.
    """
    if ndim < 1:
        raise ValueError(f"an output needs a batch axis; got ndim={ndim}")
    names = {cls.__name__ for cls in type(module).__mro__}
    if ndim == 3 and not (names & _CHANNEL_FIRST_1D):
        return -1
    return 1


def _own_sizes(module: nn.Module) -> tuple[set[int], set[int]]:
    """Sizes of the module's own floating-point parameters and buffers (integer buffers are
    index tables, such as position ids), and those of the 1-d ones alone: a bias or a norm's
    weight has one entry per neuron."""
    tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
    tensors = [t for t in tensors if t.is_floating_point()]
    every = {int(s) for t in tensors for s in t.shape if s > 1}
    return every, {int(t.shape[0]) for t in tensors if t.ndim == 1 and t.shape[0] > 1}


class LayoutTracker:
    """The neuron axis of every module's output during one forward pass (rules 2 and 4).

    Hooks every module of ``model`` until :meth:`close`; outputs are held by weak
    reference, so tracking keeps no activation alive.
    """

    def __init__(self, model: nn.Module) -> None:
        self.tokens: int | None = None  # the token mask's length in this pass, if any
        # id -> (the tensor, weakly; its shape; its axis, or None where no rule could tell)
        self._known: dict[int, tuple[weakref.ref[torch.Tensor], tuple[int, ...], int | None]] = {}
        self._handles: list[RemovableHandle] = [
            m.register_forward_hook(self._track) for _, m in model.named_modules()
        ]

    def close(self) -> None:
        """Remove the hooks and forget what was seen."""
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()
        self._known.clear()

    def axis_of(self, tensor: Any) -> tuple[tuple[int, ...], int | None] | None:
        """``(shape, axis)`` of a tensor a tracked module returned in this pass, if any; the
        axis is ``None`` where no rule could tell it."""
        if not isinstance(tensor, torch.Tensor):
            return None
        entry = self._known.get(id(tensor))
        if entry is None or entry[0]() is not tensor:  # ids are reused once a tensor dies
            return None
        return entry[1], entry[2]

    def remember(self, tensor: torch.Tensor, axis: int | None) -> None:
        """Record the neuron axis of an output (as viewed); ``None``: no rule could tell."""
        self._known[id(tensor)] = (weakref.ref(tensor), _viewed_shape(tensor), axis)

    def _track(self, module: nn.Module, args: Any, output: Any) -> None:
        tensor = default_tensor(output)  # what a layer of this module would capture
        if tensor is None or tensor.ndim == 0 or tensor.is_complex():
            return
        if self.axis_of(tensor) is not None:
            return  # the module passed on another module's output, whose axis is known
        choice = choose_axis(module, tensor, args, self, strict=False, tokens=self.tokens)
        # An undecided axis is remembered too: what follows from it is undecided as well.
        self.remember(tensor, choice.axis if choice is not None else None)


def _viewed_shape(tensor: torch.Tensor) -> tuple[int, ...]:
    return (int(tensor.shape[0]), 1) if tensor.ndim == 1 else tuple(tensor.shape)


def choose_axis(
    module: nn.Module,
    output: torch.Tensor,
    args: Any,
    tracker: LayoutTracker | None,
    *,
    strict: bool = True,
    name: str = "",
    tokens: int | None = None,
) -> AxisChoice | None:
    """Choose the neuron axis of ``output`` by the rules of the module docstring.

    Parameters
    ----------
    module : nn.Module
        The module that returned ``output``.
    output : torch.Tensor
        Its output tensor (a ``[B]`` output is taken as ``[B, 1]``).
    args : tuple
        The module's positional inputs (rule 4 looks at the first).
    tracker : LayoutTracker or None
        The other modules' axes in this forward pass (rules 2 and 4); ``None`` skips them.
    strict : bool
        Raise :class:`~ndstream.errors.CaptureError` when no rule decides (else ``None``).
    name : str
        The layer's name, for the error message.
    tokens : int, optional
        The length of the pass's token mask: an axis of that length holds tokens, so where
        the rules leave a choice between it and another axis, the other one holds neurons.

    Returns
    -------
    AxisChoice or None
    """
    shape = _viewed_shape(output)
    ndim = len(shape)
    if ndim == 2:
        return AxisChoice(1, "only")  # [batch, neurons]: nothing to choose
    axis = _type_axis(module, ndim)
    if axis is not None:
        return AxisChoice(axis, "type")
    seen = tracker.axis_of(output) if tracker is not None else None
    first = args[0] if isinstance(args, tuple) and args else None
    given = tracker.axis_of(first) if tracker is not None else None
    for rule, found in (("output", seen), ("input", given)):  # the input: shape kept, layout kept
        if found is not None and found[0] == shape:
            if found[1] is None:  # it came from a module whose layout no rule could tell
                return _undecided(
                    strict,
                    name,
                    output,
                    f"its {rule} is laid out as that of "
                    "an earlier module whose axis could not be told either",
                )
            return AxisChoice(found[1], rule)
    if given is not None and given[1] is None and not _own_sizes(module)[0]:
        # Rearranged from a tensor whose layout no rule could tell: nor can any rule here.
        return _undecided(
            strict,
            name,
            output,
            "its input is laid out as that of an earlier "
            "module whose axis could not be told either",
        )
    sizes, per_neuron = _own_sizes(module)
    matches: list[int] = []
    for known in (per_neuron, sizes):  # a bias or a norm's weight says it best
        matches = [i for i in range(1, ndim) if shape[i] in known]
        not_tokens = [i for i in matches if shape[i] != tokens]
        if len(matches) == 1 or len(not_tokens) == 1:
            return AxisChoice((matches if len(matches) == 1 else not_tokens)[0], "parameters")
        if matches == [1, 2] and tokens == shape[1] == shape[2]:
            # As long as the padded texts: with a token mask, a 3-d output whose two axes
            # cannot be told apart is [batch, tokens, features] (GPT-2's Conv1D).
            return AxisChoice(2, "tokens")
    followed: list[int] = []
    if given is not None and given[1] is not None and math.prod(given[0]) == math.prod(shape):
        # Rearranged (a Permute): the one axis as long as the input's neuron axis.
        width = given[0][given[1]]
        followed = [i for i in range(1, ndim) if shape[i] == width]
        if len(followed) == 1:
            return AxisChoice(followed[0], "input")
    if not sizes and len(followed) < 2:
        axis = convention_axis(module, ndim) % ndim
        if ndim == 3 and tokens is not None and shape[axis] == tokens != shape[3 - axis]:
            return AxisChoice(3 - axis, "tokens")  # [batch, channels, tokens] (SqueezeBERT)
        return AxisChoice(axis, "convention")
    if sizes:
        own = {n: tuple(p.shape) for n, p in module.named_parameters(recurse=False)}
        why = (
            f"({type(module).__name__}, own parameters {own}): "
            f"{'several axes match' if matches else 'no axis matches'} the parameters' sizes, "
            "and its input does not show the layout"
        )
    else:
        assert given is not None and given[1] is not None  # else a rule above decided
        why = (
            f"({type(module).__name__}, which rearranges its input of shape {given[0]}): the "
            f"neurons of the input's axis {given[1]} could be on any of the axes {followed}"
        )
    return _undecided(strict, name, output, why)


def _undecided(strict: bool, name: str, output: torch.Tensor, why: str) -> AxisChoice | None:
    """``None``, or (``strict``) the error that asks for ``channel_dim``."""
    if not strict:
        return None
    shape = _viewed_shape(output)
    axes = ", ".join(f"{i}: {n}" for i, n in enumerate(shape) if i)
    raise CaptureError(
        f"cannot tell which axis of the output {tuple(output.shape)} of layer {name!r} holds its "
        f"neurons {why}. Say which with channel_dim, counting the batch axis as 0 (axes "
        f"{axes}): `channel_dim: {{{name!r}: <axis>}}` in the config, "
        f"channel_dim={{{name!r}: <axis>}} in the API."
    )
