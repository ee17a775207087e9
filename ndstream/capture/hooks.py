"""Select layers of a PyTorch model and turn their outputs into per-neuron activations.

Rules
-----
Channel dim (which output axis holds the neurons; :func:`channel_dim_for`, overridable per
layer). Axis 0 is the batch axis and never holds neurons.

* ``[B]``: viewed as ``[B, 1]``, one neuron on axis 1. Every ``channel_dim`` (returned,
  overridden or in :class:`LayerInfo`) indexes the output as viewed.
* ``[B, C]`` and ``[B, C, H, W, ...]``: axis 1.
* ndim 3: axis 1 for 1-d conv / pool / norm modules (``[B, C, L]``); else the last axis, as
  transformer outputs are ``[batch, tokens, dim]`` and tokens play the role of positions.

Tuple outputs: a Tensor output is used as is; a tuple or list whose *first* element is a
Tensor uses that element (``nn.LSTM`` returns ``(output, (h, c))``, ``nn.MultiheadAttention``
``(output, weights)``); anything else (dict, None, ...) raises :class:`CaptureError`.

Reductions run in torch on the output's device; only the result goes to host. ``pop()``
gives, per layer, a float32 array ``[batch, values_per_sample, neurons]``: ``"max"`` and
``"mean"`` reduce every axis but batch and channel (``values_per_sample == 1``); ``"none"``
keeps every position as one more value of its neuron (channel axis moved last, positions in
row-major order). ``"mean"`` accumulates in float64, so the mean of finite values is finite
even where their float32 sum would overflow. NaN and Inf propagate; integer and bool outputs
become float32; complex outputs raise :class:`CaptureError`.

Repeated calls: a module that runs k > 1 times in one forward pass (torchvision's
``BasicBlock`` calls its ``relu`` after ``bn1`` and again after the residual sum) gives k
layers by default, ``<name>@1`` ... ``<name>@k`` in call order, each one call's outputs; a
module that runs once keeps its plain name. ``calls="pool"`` keeps one layer per module
instead, each call adding more values per sample (concatenated along axis 1 in call order).
Either way a module must run as many times in every forward pass as in the first one it ran
in, or :class:`CaptureError` is raised. A forward pass is one call of the model given to
:class:`ActivationCapture` (hooked modules running outside it raise :class:`CaptureError`);
passes run since the last ``pop()`` are concatenated along the batch axis, and a pass whose
forward raised contributes nothing.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ndstream.errors import CaptureError, LayerNotFoundError

Reduction = Literal["max", "mean", "none"]
REDUCTIONS: tuple[str, ...] = ("max", "mean", "none")
Calls = Literal["separate", "pool"]
CALLS: tuple[str, ...] = ("separate", "pool")

LayerSelector = str | type[nn.Module]

# Modules whose 3-d outputs are [B, C, L]; any other 3-d output is taken as [batch, tokens,
# dim]. Lazy variants are listed because they only become their eager class after a forward.
# fmt: off
_CHANNEL_FIRST_1D = frozenset({
    "Conv1d", "ConvTranspose1d", "LazyConv1d", "LazyConvTranspose1d", "MaxPool1d", "AvgPool1d",
    "LPPool1d", "AdaptiveAvgPool1d", "AdaptiveMaxPool1d", "BatchNorm1d", "LazyBatchNorm1d",
    "InstanceNorm1d", "LazyInstanceNorm1d",
})
# fmt: on
_HINT = (
    "List all names with [n for n, _ in model.named_modules()]; globs such as 'features.*' "
    "and type selectors such as 'type:Conv2d' (or 'type:Conv2d,Linear') are also accepted."
)

_Named = list[tuple[str, nn.Module]]

# The float64 copy a mean is taken of, at most this many bytes at a time: a copy of a whole
# large output would double its memory, and on CPU a fresh large buffer costs more in page
# faults than the reduction itself. The CUDA caching allocator reuses blocks, so there larger
# slices only save kernel launches.
_MEAN_SLICE_BYTES = {"cpu": 16 << 20}
_MEAN_SLICE_BYTES_DEFAULT = 256 << 20


def _mro_names(module: nn.Module) -> set[str]:
    return {cls.__name__ for cls in type(module).__mro__}


def _closest(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=5)
    if close:
        return "Closest names: " + ", ".join(map(repr, close)) + "."
    return "Some valid names: " + ", ".join(map(repr, names[:5])) + "."


def _typed(label: str, hits: set[str], named: _Named, where: str) -> set[str]:
    if not hits:
        types = ", ".join(sorted({type(m).__name__ for _, m in named}))
        raise LayerNotFoundError(f"No module of type {label} in {where}. Types present: {types}.")
    return hits


def _match(model: nn.Module, selector: object, named: _Named) -> set[str]:
    names = [n for n, _ in named]
    where = type(model).__name__
    if isinstance(selector, type) and issubclass(selector, nn.Module):
        hits = {n for n, m in named if isinstance(m, selector)}
        return _typed(selector.__name__, hits, named, where)
    if not isinstance(selector, str):
        raise TypeError(f"a layer selector is a str or nn.Module subclass, got {selector!r}")
    if selector.startswith("type:"):
        wanted = [t.strip() for t in selector[5:].split(",") if t.strip()]
        if not wanted:
            raise ValueError(f"{selector!r} names no type; write e.g. 'type:Conv2d,Linear'")
        found: set[str] = set()
        for t in wanted:  # each listed type must match, so a typo in one is not dropped
            found |= _typed(repr(t), {n for n, m in named if t in _mro_names(m)}, named, where)
        return found
    is_glob = bool(set("*?[") & set(selector))
    found = {n for n in names if fnmatch.fnmatchcase(n, selector)} if is_glob else {selector}
    if not found & set(names):
        what = "Glob {!r} matches no module" if is_glob else "No layer named {!r}"
        raise LayerNotFoundError(
            f"{what.format(selector)} in {where}. {_closest(selector, names)} {_HINT}"
        )
    return found


def resolve_layers(model: nn.Module, layers: LayerSelector | Sequence[LayerSelector]) -> list[str]:
    """Turn layer selectors into module names.

    Parameters
    ----------
    model : nn.Module
        The model whose submodules are selected; the root (name ``""``) never is.
    layers : str, nn.Module subclass, or a sequence of them
        Each selector is an exact name from ``model.named_modules()``, a glob (contains one
        of ``*?[``, matched with :func:`fnmatch.fnmatchcase`), ``"type:Name[,Name...]"``
        or an ``nn.Module`` subclass. A type name matches a module when any class in the
        module's MRO has that ``__name__``, so subclasses match too.

    Returns
    -------
    list of str
        Unique names, in ``model.named_modules()`` order.

    Raises
    ------
    LayerNotFoundError
        A name does not exist (the message lists the closest), or a glob or type matches nothing.
    ValueError
        The selection is empty.
    """
    selectors = [layers] if isinstance(layers, str | type) else list(layers)
    if not selectors:
        raise ValueError(f"no layers selected; {_HINT}")
    named = [(n, m) for n, m in model.named_modules() if n]
    chosen: set[str] = set()
    for selector in selectors:
        chosen |= _match(model, selector, named)
    return [n for n, _ in named if n in chosen]


def channel_dim_for(module: nn.Module, ndim: int) -> int:
    """Return the output axis that holds ``module``'s neurons (rules in the module docstring).

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
    if ndim == 3 and not (_mro_names(module) & _CHANNEL_FIRST_1D):
        return -1
    return 1


def call_layer_name(module: str, call: int) -> str:
    """The layer name of call ``call`` (1-based) of a module that runs several times per
    forward pass: ``"layer1.0.relu@2"``."""
    return f"{module}@{call}"


@dataclass(frozen=True)
class LayerInfo:
    """What a captured layer produced in the first forward pass it ran in.

    A layer is a module, or one call of a module that runs several times per forward pass
    (see the module docstring).

    Attributes
    ----------
    name : str
        Layer name: the module's name in ``model.named_modules()``, or
        ``<module>@<call>`` for one call of a module that runs several times.
    module_type : str
        The module's class name.
    channel_dim, n_neurons : int
        Non-negative neuron axis of the output (as viewed, see module docstring), its size.
    output_shape : tuple of int
        Per-sample shape of the output tensor (of the first call the layer holds), batch axis
        dropped.
    calls_per_forward : int
        How many calls of the module per forward pass the layer holds: 1 for a module that
        runs once or for one call of it, k for the k pooled calls of a module.
    call : int
        Which call of its module the layer is (1-based), or 0 when it holds every call.
    values_per_sample : int
        Values per sample and neuron: 1 for ``max`` and ``mean`` (times the calls pooled);
        for ``none`` the positions of every call the layer holds.
    """

    name: str
    module_type: str
    channel_dim: int
    n_neurons: int
    output_shape: tuple[int, ...]
    calls_per_forward: int
    call: int = 0
    values_per_sample: int = 1

    @property
    def module(self) -> str:
        """Name of the module the layer comes from, in ``model.named_modules()``."""
        return self.name[: -len(f"@{self.call}")] if self.call else self.name


class ActivationCapture:
    """Context manager that hooks layers and reduces their outputs to per-neuron values.

    Parameters
    ----------
    model : nn.Module
        The model; one call of it is one forward pass.
    layers : sequence of str
        Layer names (anything :func:`resolve_layers` accepts).
    reduction : {"max", "mean", "none"}
        How the positions of each neuron are summarised (see module docstring).
    channel_dim : mapping of str to int, optional
        Per-layer override of the neuron axis; keys are layer names or globs, values axes
        (negative allowed). An exact name wins over globs; globs that disagree, keys that
        match no selected layer and unknown reductions raise ValueError.
    optional : collection of str, optional
        Layers that may never run (picked by a glob or a type rather than by name): those
        missing from the first forward pass are dropped and listed in :attr:`skipped`
        instead of raising.
    calls : {"separate", "pool"}
        A module that runs k > 1 times per forward pass gives the layers ``<name>@1`` ...
        ``<name>@k``, one per call (``"separate"``), or one layer ``<name>`` with k times the
        values per sample (``"pool"``). Other values raise ValueError.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str],
        *,
        reduction: Reduction = "max",
        channel_dim: Mapping[str, int] | None = None,
        optional: Collection[str] = (),
        calls: Calls = "separate",
    ) -> None:
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if calls not in CALLS:
            raise ValueError(f"calls must be one of {CALLS}, got {calls!r}")
        self._model = model
        self._reduction = reduction
        self._pool = calls == "pool"
        self._names = resolve_layers(model, layers)
        self._overrides = self._resolve_overrides(channel_dim or {})
        self._handles: list[RemovableHandle] = []
        # One dict per forward pass: module name -> (reduced array, its info) of each call.
        self._passes: list[dict[str, list[tuple[np.ndarray, LayerInfo]]]] = []
        self._current: dict[str, list[tuple[np.ndarray, LayerInfo]]] | None = None
        # Module name -> its layers (one, or one per call), from the first pass it ran in.
        self._info: dict[str, tuple[LayerInfo, ...]] = {}
        self._optional = set(optional)
        self.skipped: list[str] = []

    def _resolve_overrides(self, mapping: Mapping[str, int]) -> dict[str, int]:
        for key, axis in mapping.items():
            if not isinstance(axis, int) or isinstance(axis, bool):
                raise ValueError(f"channel_dim[{key!r}] must be an int axis, got {axis!r}")
            if not any(fnmatch.fnmatchcase(n, key) for n in self._names):
                raise ValueError(f"channel_dim key {key!r} matches no selected layer {self._names}")
        resolved: dict[str, int] = {}
        for name in self._names:
            axes = {axis for key, axis in mapping.items() if fnmatch.fnmatchcase(name, key)}
            if name not in mapping and len(axes) > 1:
                raise ValueError(f"channel_dim globs give layer {name!r} different axes {axes}")
            if axes:  # an exact name is also a glob matching itself, so it is in `axes`
                resolved[name] = mapping.get(name, axes.pop())
        return resolved

    @property
    def layers(self) -> dict[str, LayerInfo]:
        """Info on each layer by layer name, filled when the first forward pass its module ran
        in ends; in module order, the calls of a module in call order."""
        return {info.name: info for n in self._names for info in self._info.get(n, ())}

    def __enter__(self) -> ActivationCapture:
        if self._handles:
            raise RuntimeError("this ActivationCapture is already active")
        modules = dict(self._model.named_modules())
        try:
            self._handles.append(self._model.register_forward_pre_hook(self._on_model_start))
            self._handles.append(self._model.register_forward_hook(self._on_model_end))
            for name in self._names:
                self._handles.append(
                    modules[name].register_forward_hook(partial(self._record, name))
                )
        except BaseException:
            self._remove_hooks()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._current = None  # an unfinished pass is a forward that raised: drop it
        finally:
            self._remove_hooks()

    def _remove_hooks(self) -> None:
        # Swap the list out first so a second __exit__ (or a failed __enter__) is a no-op.
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()

    def _on_model_start(self, module: nn.Module, args: Any) -> None:
        # Replacing an unfinished pass drops the partial data of a forward that raised.
        self._current = {}

    def _on_model_end(self, module: nn.Module, args: Any, output: Any) -> None:
        current, self._current = self._current, None
        if current is None:
            return
        for name, calls in current.items():
            if name not in self._info:
                self._info[name] = self._layer_infos(name, calls)
                continue
            before = sum(info.calls_per_forward for info in self._info[name])
            if len(calls) != before:
                # The layers (and their values per sample) were fixed by the first pass.
                layers = ", ".join(info.name for info in self._info[name])
                hint = (
                    "pooled calls (calls='pool', `calls: pool` in the config) give one layer "
                    "with a fixed number of values per sample, so they too need"
                    if self._pool
                    else f"its calls are the layers {layers}; pooling them "
                    "(calls='pool', `calls: pool` in the config) gives one layer instead, "
                    "but it also needs"
                )
                raise CaptureError(
                    f"layer {name!r} ran {len(calls)} time(s) in a forward pass but {before} "
                    f"time(s) in the first one; {hint} the same number of calls in every "
                    "forward pass. Select modules that run a fixed number of times."
                )
        self._passes.append(current)

    def _layer_infos(
        self, name: str, calls: list[tuple[np.ndarray, LayerInfo]]
    ) -> tuple[LayerInfo, ...]:
        """The layers of a module, from its calls in the first pass it ran in."""
        first = calls[0][1]
        if self._pool or len(calls) == 1:
            per_sample = sum(info.values_per_sample for _, info in calls)
            return (replace(first, calls_per_forward=len(calls), values_per_sample=per_sample),)
        infos = tuple(
            replace(info, name=call_layer_name(name, k), call=k)
            for k, (_, info) in enumerate(calls, start=1)
        )
        taken = [info.name for info in infos if info.name in self._names]
        if taken:
            raise CaptureError(
                f"module {name!r} ran {len(calls)} times in a forward pass, and the layer "
                f"names of its calls clash with selected modules {taken}; pool its calls "
                "(calls='pool') or rename the modules"
            )
        return infos

    def _record(self, name: str, module: nn.Module, args: Any, output: Any) -> None:
        if self._current is None:
            raise CaptureError(
                f"layer {name!r} ran outside a call of the captured "
                f"{type(self._model).__name__}; call the model itself (not .forward or a submodule)"
            )
        tensor = output[0] if isinstance(output, tuple | list) and output else output
        if not isinstance(tensor, torch.Tensor):
            raise CaptureError(
                f"layer {name!r} returned {type(output).__name__}, not a Tensor or a tuple/list "
                "whose first element is a Tensor; select a submodule that returns a tensor."
            )
        shape = tuple(tensor.shape[1:])
        reduced, axis = self._reduce(name, module, tensor)
        calls = self._current.setdefault(name, [])
        if calls:
            first = calls[0][0]
            if first.shape[0] != reduced.shape[0]:
                raise CaptureError(
                    f"layer {name!r} ran several times in one forward pass with different "
                    f"batch sizes, {first.shape[0]} then {reduced.shape[0]}; every call must "
                    "give one row per sample of the batch"
                )
            if self._pool and first.shape[2] != reduced.shape[2]:
                raise CaptureError(
                    f"layer {name!r} ran several times in one forward pass with different "
                    f"[batch, neurons], {first.shape[0::2]} then {reduced.shape[0::2]}, so "
                    "its calls cannot be pooled into one layer; keep them apart with "
                    "calls='separate' (`calls: separate` in the config)"
                )
        n_neurons, per_sample = reduced.shape[2], reduced.shape[1]
        info = LayerInfo(name, type(module).__name__, axis, n_neurons, shape, 1, 0, per_sample)
        calls.append((reduced, info))

    def _reduce(self, name: str, module: nn.Module, tensor: torch.Tensor) -> tuple[np.ndarray, int]:
        if tensor.is_complex() or tensor.ndim == 0:
            raise CaptureError(
                f"layer {name!r} returned a {tensor.dtype} tensor of shape {tuple(tensor.shape)}; "
                "complex and 0-d (no batch axis) outputs have no neuron activations"
            )
        with torch.no_grad():
            x = tensor.detach()
            x = x.unsqueeze(1) if x.ndim == 1 else x
            axis = self._overrides.get(name, channel_dim_for(module, x.ndim))
            if not -x.ndim <= axis < x.ndim or axis % x.ndim == 0:
                raise CaptureError(
                    f"channel_dim {axis} of layer {name!r} is not a non-batch axis of its "
                    f"output of shape {tuple(x.shape)}"
                )
            axis %= x.ndim
            # Not every backend reduces bool/integer tensors, and their means are fractional.
            x = x if x.is_floating_point() else x.to(torch.float32)
            batch, n_neurons = x.shape[0], x.shape[axis]
            spatial = tuple(i for i in range(1, x.ndim) if i != axis)
            if self._reduction == "none" or not spatial:
                # [batch, positions, neurons], positions in row-major order of the other axes.
                positions = math.prod(x.shape[i] for i in spatial)
                x = x.movedim(axis, -1).reshape(batch, positions, n_neurons)
            elif self._reduction == "max":
                # Reduced over the other axes where they lie: moving the neuron axis last
                # would copy the whole output. amax propagates NaN (nanmax-like ops would not).
                x = x.amax(dim=spatial).unsqueeze(1)
            else:
                x = _mean(x, spatial).unsqueeze(1)
            x = x.to(torch.float32).cpu()
            if x.untyped_storage().data_ptr() == tensor.untyped_storage().data_ptr():
                # Still a view of the output (CPU, "none"): a later in-place op such as
                # ReLU(inplace=True) would rewrite it, and it would keep the whole output alive.
                x = x.clone()
        return np.ascontiguousarray(x.numpy()), axis

    def pop(self) -> dict[str, np.ndarray]:
        """Return the reduced activations of the forward passes since the last ``pop()``.

        Returns
        -------
        dict of str to np.ndarray
            Per layer (keys as in :attr:`layers`: module names, and ``<module>@<call>`` for
            the calls of a module that runs several times, unless pooled) a float32
            C-contiguous ``[batch, values_per_sample, neurons]`` array (passes concatenated
            along batch); ``{}`` when no forward pass ran since the last pop. The stored
            activations are cleared, also when this raises.

        Raises
        ------
        CaptureError
            A selected layer did not run in a pass, or passes cannot be stacked.
        """
        passes, self._passes = self._passes, []
        if not passes:
            return {}
        missing = sorted({n for p in passes for n in self._names if n not in p})
        never_ran = [n for n in missing if n in self._optional and n not in self._info]
        if never_ran:
            # A module that did not run in the first pass is one whose weights are used
            # without calling it (or a branch never taken): drop it rather than fail the run.
            self.skipped += never_ran
            self._names = [n for n in self._names if n not in never_ran]
            missing = [n for n in missing if n not in never_ran]
        if missing:
            raise CaptureError(
                f"selected layers did not run in a forward pass: {missing}; a branch not "
                "taken, or a module whose weights are used without calling it "
                "(such as nn.MultiheadAttention.out_proj)"
            )
        result: dict[str, np.ndarray] = {}
        for name in self._names:
            infos = self._info[name]
            if len(infos) == 1:  # one layer holds every call of the module
                per_pass = [_along_values([a for a, _ in p[name]]) for p in passes]
                result[infos[0].name] = _stack(infos[0].name, per_pass)
            else:
                for k, info in enumerate(infos):
                    result[info.name] = _stack(info.name, [p[name][k][0] for p in passes])
        return result


def _along_values(calls: list[np.ndarray]) -> np.ndarray:
    """The calls of one pass as one ``[batch, values, neurons]`` array, in call order."""
    return calls[0] if len(calls) == 1 else np.concatenate(calls, axis=1)


def _stack(name: str, per_pass: list[np.ndarray]) -> np.ndarray:
    """The passes of one layer stacked along the batch axis."""
    if len({a.shape[1:] for a in per_pass}) > 1:
        raise CaptureError(
            f"layer {name!r} gave [values_per_sample, neurons] of "
            f"{sorted({a.shape[1:] for a in per_pass})} in different forward passes; "
            "call pop() after every forward"
        )
    if len(per_pass) == 1:
        return per_pass[0]  # already float32 and C-contiguous, from _reduce
    return np.ascontiguousarray(np.concatenate(per_pass, axis=0), np.float32)


def _mean(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """The mean over ``dims``, accumulated in float64, of a floating-point tensor.

    A float32 sum overflows where the mean does not (a map of values near 3e38 would give
    +Inf); no sum of float32 values leaves the float64 range, and the mean of finite float32
    values is a finite float32 again. The float64 copy is made a slice of rows at a time.
    """
    if x.device.type == "mps":
        # MPS has no float64: scaling each value first keeps the float32 sum in range.
        return (x.to(torch.float32) / math.prod(x.shape[d] for d in dims)).sum(dim=dims)
    row_bytes = max(1, math.prod(x.shape[1:])) * 8
    limit = _MEAN_SLICE_BYTES.get(x.device.type, _MEAN_SLICE_BYTES_DEFAULT)
    rows = max(1, limit // row_bytes)
    if rows >= x.shape[0]:
        return x.mean(dim=dims, dtype=torch.float64)
    return torch.cat(
        [x[i : i + rows].mean(dim=dims, dtype=torch.float64) for i in range(0, x.shape[0], rows)]
    )
