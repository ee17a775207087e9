"""Select layers of a PyTorch model and turn their outputs into per-neuron activations.

Rules
-----
Neuron axis: chosen from the module itself (:mod:`.neuron_axis`: its type, the layout of the
tensors around it, its parameters), overridable per layer with ``channel_dim``. Axis 0 is
the batch axis and never holds neurons; a ``[B]`` output is viewed as ``[B, 1]``, one neuron
on axis 1, and every ``channel_dim`` (chosen, overridden or in :class:`LayerInfo`) indexes
the output as viewed.

Outputs: a Tensor is used as is. A tuple or list gives its first element (``nn.LSTM``
returns ``(output, (h, c))``), a mapping or a Hugging Face ``ModelOutput`` its
``last_hidden_state``, else its first tensor; ``output`` picks another field or element per
layer. Anything else raises :class:`CaptureError`.

Token masks: :meth:`ActivationCapture.mask_next` gives the next forward pass a ``[batch,
tokens]`` mask (a tokenizer's ``attention_mask``). Every non-batch, non-neuron axis of an
output whose length is the mask's is a token axis, and a position that is not a real token
on every token axis never enters a value: ``max`` and ``mean`` reduce over the real
positions only, and ``none`` keeps one row per real position (:class:`TokenRows`), so the
result does not depend on padding or on how samples are batched.

Reductions (:mod:`.reduce`) run in torch on the output's device; only the result goes to
host. ``pop()`` gives, per layer, a float32 array ``[batch, values_per_sample, neurons]``:
``"max"`` and ``"mean"`` (accumulated in float64) reduce every axis but batch and neurons;
``"none"`` keeps every position as one more value of its neuron, or one row per real token
under a mask. NaN and Inf propagate; integer and bool outputs become float32; complex
outputs raise :class:`CaptureError`.

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

import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ndstream.errors import CaptureError, CaptureWarning

from .neuron_axis import AxisChoice, LayoutTracker, choose_axis
from .reduce import Reduced, TokenMask, TokenRows, reduce_output, samples_of, token_axes
from .selection import per_layer, resolve_layers
from .structure import OutputField, pick_output

_F32_MAX = float(np.finfo(np.float32).max)
# Half the smallest float32 subnormal: a float64 below it rounds to zero as float32.
_F32_TINY = float(np.finfo(np.float32).smallest_subnormal) / 2


def _check_batch_first(name: str, module: nn.Module) -> None:
    """Refuse, before any forward pass, a module whose output is [sequence, batch, ...]."""
    if getattr(module, "batch_first", None) is False:
        # Read with the batch first, each sample's values would be a time step's across the
        # batch, without an error where the two lengths agree.
        raise CaptureError(
            f"layer {name!r} is a {type(module).__name__} with batch_first=False: its output "
            "is [sequence, batch, ...], and ndstream reads the first axis as the batch. "
            "Build it with batch_first=True, or select a module whose output has the "
            "batch first"
        )


Reduction = Literal["max", "mean", "none"]
REDUCTIONS: tuple[str, ...] = ("max", "mean", "none")
Calls = Literal["separate", "pool"]
CALLS: tuple[str, ...] = ("separate", "pool")


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
        for ``none`` the positions of every call the layer holds, or 0 where a token mask
        applies (one value per real token, however many a sample has).
    axis_rule : str
        The rule that chose ``channel_dim`` (see :mod:`.neuron_axis`).
    token_axes : tuple of int
        Axes of the output (as viewed) that a token mask covered; their lengths vary.
    """

    name: str
    module_type: str
    channel_dim: int
    n_neurons: int
    output_shape: tuple[int, ...]
    calls_per_forward: int
    call: int = 0
    values_per_sample: int = 1
    axis_rule: str = ""
    token_axes: tuple[int, ...] = ()

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
    output_field : mapping of str to str or int, optional
        Per-layer (name or glob) field or element of a module output that is not a tensor:
        a key or attribute of a mapping or ``ModelOutput``, or a tuple index (see the
        module docstring for the default).
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
        output_field: Mapping[str, OutputField] | None = None,
    ) -> None:
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if calls not in CALLS:
            raise ValueError(f"calls must be one of {CALLS}, got {calls!r}")
        self._model = model
        self._reduction = reduction
        self._pool = calls == "pool"
        self._names = resolve_layers(model, layers)
        self._overrides = per_layer(self._names, channel_dim or {}, "channel_dim", int)
        self._fields = per_layer(self._names, output_field or {}, "output_field", (str, int))
        self._narrowed: set[str] = set()  # layers already warned of float64 values lost
        # The axis of each (module, call) is chosen in the first pass it ran in, then kept.
        self._axes: dict[tuple[str, int], AxisChoice] = {}
        self._tracker: LayoutTracker | None = None
        self._mask: TokenMask | None = None
        self._mask_next: TokenMask | None = None
        self._handles: list[RemovableHandle] = []
        # One dict per forward pass: module name -> (reduced array, its info) of each call.
        self._passes: list[dict[str, list[tuple[Reduced, LayerInfo]]]] = []
        self._current: dict[str, list[tuple[Reduced, LayerInfo]]] | None = None
        # Module name -> its layers (one, or one per call), from the first pass it ran in.
        self._info: dict[str, tuple[LayerInfo, ...]] = {}
        self._optional = set(optional)
        self.skipped: list[str] = []
        self.unbatched: list[str] = []
        self._layer_hooks: dict[str, RemovableHandle] = {}

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
                _check_batch_first(name, modules[name])
                handle = modules[name].register_forward_hook(partial(self._record, name))
                self._handles.append(handle)
                self._layer_hooks[name] = handle
            if not self._axes:
                # After the layers' own hooks, so that a layer's choice is made first.
                self._tracker = LayoutTracker(self._model)
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
        self._close_tracker()

    def _close_tracker(self) -> None:
        if self._tracker is not None:
            self._tracker.close()
            self._tracker = None

    def mask_next(self, mask: torch.Tensor | None) -> None:
        """Give the next forward pass a token mask (``None``: no mask).

        Parameters
        ----------
        mask : torch.Tensor or None
            ``[batch, tokens]``, nonzero on real tokens (a tokenizer's ``attention_mask``),
            on the device the model runs on.
        """
        if mask is not None and mask.ndim != 2:
            raise CaptureError(
                f"a token mask is [batch, tokens], got shape {tuple(mask.shape)}; pass the "
                "tokenizer's attention_mask, or a function that returns one"
            )
        self._mask_next = None if mask is None else TokenMask.of(mask)

    def _on_model_start(self, module: nn.Module, args: Any) -> None:
        # Replacing an unfinished pass drops the partial data of a forward that raised.
        self._current = {}
        self._mask, self._mask_next = self._mask_next, None
        if self._tracker is not None:
            self._tracker.tokens = self._mask.length if self._mask is not None else None

    def _on_model_end(self, module: nn.Module, args: Any, output: Any) -> None:
        current, self._current = self._current, None
        self._mask = None
        if current is None:
            return
        self._close_tracker()  # every layer of a finished pass has chosen its axis
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
            infos = self._layer_infos(name, calls)
            widths = [info.n_neurons for info in infos]
            if widths != [info.n_neurons for info in self._info[name]]:
                first_info = self._info[name][0]
                raise CaptureError(
                    f"layer {name!r} gave {widths} neuron(s) in a forward pass but "
                    f"{[info.n_neurons for info in self._info[name]]} in the first one: its "
                    f"neuron axis {first_info.channel_dim} (rule {first_info.axis_rule!r}) "
                    "changes length with the inputs, so it holds positions, not neurons. "
                    f"Set the axis with channel_dim: {{{name!r}: <axis>}}."
                )
            now = [info.values_per_sample for info in infos]
            first = [info.values_per_sample for info in self._info[name]]
            if now != first and 0 not in now + first:
                raise CaptureError(
                    f"layer {name!r} gave {now} value(s) per sample in a forward pass but "
                    f"{first} in the first one: with reduction 'none' its positions changed "
                    "(inputs of another length). Give the batches a token mask (the "
                    "tokenizer's attention_mask, token_mask=...) so that each sample counts "
                    "its own tokens, or make every input the same size."
                )
        self._passes.append(current)

    def _layer_infos(
        self, name: str, calls: list[tuple[Reduced, LayerInfo]]
    ) -> tuple[LayerInfo, ...]:
        """The layers of a module, from its calls in the first pass it ran in."""
        first = calls[0][1]
        if self._pool or len(calls) == 1:
            ragged = any(info.values_per_sample == 0 for _, info in calls)
            per_sample = 0 if ragged else sum(info.values_per_sample for _, info in calls)
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

    def _warn_narrowing(self, name: str, tensor: torch.Tensor) -> None:
        """Warn once per layer where float64 values leave float32's range: the store keeps
        float32, where they would read as ±Inf and 0 without a word."""
        with torch.no_grad():
            size = tensor.detach().abs()
            finite = torch.isfinite(size)
            huge = int((finite & (size > _F32_MAX)).sum())
            tiny = int(((size > 0) & (size < _F32_TINY)).sum())
        if huge or tiny:
            self._narrowed.add(name)
            warnings.warn(
                f"layer {name!r} gives float64 values outside float32's range ({huge} beyond "
                f"±{_F32_MAX:.3g}, {tiny} nonzero below {_F32_TINY:.3g} in this batch); the "
                "store keeps float32, where they count as ±Inf and as exact zeros. Run the "
                "model in float32, or scale the layer, to keep them",
                CaptureWarning,
                stacklevel=2,
            )

    def _record(self, name: str, module: nn.Module, args: Any, output: Any) -> None:
        if self._current is None:
            raise CaptureError(
                f"layer {name!r} ran outside a call of the captured "
                f"{type(self._model).__name__}; call the model itself (not .forward or a submodule)"
            )
        tensor = pick_output(output, self._fields.get(name), name)
        if tensor.is_complex() or tensor.ndim == 0:
            raise CaptureError(
                f"layer {name!r} returned a {tensor.dtype} tensor of shape {tuple(tensor.shape)}; "
                "complex and 0-d (no batch axis) outputs have no neuron activations"
            )
        if tensor.dtype == torch.float64 and name not in self._narrowed:
            self._warn_narrowing(name, tensor)
        calls = self._current.setdefault(name, [])
        choice = self._axis(name, len(calls), module, tensor, args)
        with torch.no_grad():
            x = tensor.detach()
            x = x.unsqueeze(1) if x.ndim == 1 else x
            mask = self._mask
            if mask is not None and mask.rows != x.shape[0]:
                raise CaptureError(
                    f"layer {name!r} gave {x.shape[0]} row(s) for a batch of {mask.rows} (the "
                    "token mask's rows): its output is not one row per sample (a position "
                    "table shared by the batch, or rows flattened with the tokens). Leave "
                    "it out of the selection, or select the module that consumes it"
                )
            tokens = token_axes(tuple(x.shape), choice.axis, mask)
            reduced = reduce_output(x, choice.axis, self._reduction, mask)
        shape = tuple(-1 if i + 1 in tokens else s for i, s in enumerate(tensor.shape[1:]))
        n_neurons = int(x.shape[choice.axis])
        if n_neurons == 0:
            raise CaptureError(
                f"layer {name!r} returned shape {tuple(tensor.shape)}: no neurons along its "
                f"neuron axis ({choice.axis}); leave it out of the selection"
            )
        if isinstance(reduced, TokenRows):
            per_sample, rows = 0, reduced.n_samples
        else:
            per_sample, rows = reduced.shape[1], reduced.shape[0]
        if calls:
            first, info0 = calls[0]
            rows0 = samples_of(first)
            if rows0 != rows:
                raise CaptureError(
                    f"layer {name!r} ran several times in one forward pass with different "
                    f"batch sizes, {rows0} then {rows}; every call must "
                    "give one row per sample of the batch"
                )
            if self._pool and info0.n_neurons != n_neurons:
                raise CaptureError(
                    f"layer {name!r} ran several times in one forward pass with different "
                    f"numbers of neurons, {info0.n_neurons} then {n_neurons}, so "
                    "its calls cannot be pooled into one layer; keep them apart with "
                    "calls='separate' (`calls: separate` in the config)"
                )
        info = LayerInfo(
            name, type(module).__name__, choice.axis, n_neurons, shape, 1, 0, per_sample,
            choice.rule, tokens,
        )  # fmt: skip
        calls.append((reduced, info))

    def _axis(
        self, name: str, call: int, module: nn.Module, tensor: torch.Tensor, args: Any
    ) -> AxisChoice:
        """The neuron axis of one call's output: chosen in the first pass, then kept."""
        key = (name, call)
        choice = self._axes.get(key)
        ndim = max(2, tensor.ndim)
        if choice is None:
            if name in self._overrides:
                axis = self._overrides[name]
                if not -ndim <= axis < ndim or axis % ndim == 0:
                    raise CaptureError(
                        f"channel_dim {axis} of layer {name!r} is not a non-batch axis of its "
                        f"output of shape {tuple(tensor.shape)}"
                    )
                choice = AxisChoice(axis % ndim, "override")
            else:
                tokens = self._mask.length if self._mask is not None else None
                choice = choose_axis(module, tensor, args, self._tracker, name=name, tokens=tokens)
                assert choice is not None  # strict: an undecided axis raised
            self._axes[key] = choice
        elif choice.axis >= ndim:
            raise CaptureError(
                f"layer {name!r} gave an output of shape {tuple(tensor.shape)}, with fewer "
                f"axes than its neuron axis {choice.axis} chosen on the first batch"
            )
        if self._tracker is not None:
            self._tracker.remember(tensor, choice.axis)
        return choice

    def drop_unbatched(self, acts: Mapping[str, Reduced], n_samples: int) -> list[str]:
        """Drop the modules picked by a glob or a type whose output in ``acts`` (a
        :meth:`pop`) is not one row per sample of the batch of ``n_samples``: a table the
        batch shares, such as the position-bias MLP in Swin V2's attention, holds no
        sample's activations. Their hooks are removed and they are listed in
        :attr:`unbatched`; returns the names of their layers in ``acts``. Modules named
        outright are kept, for the caller to refuse.
        """
        module_of = {info.name: m for m, infos in self._info.items() for info in infos}
        odd = {
            module_of.get(name, name)
            for name, values in acts.items()
            if samples_of(values) != n_samples
        }
        dropped = sorted(m for m in odd if m in self._optional)
        for module in dropped:
            handle = self._layer_hooks.pop(module, None)
            if handle is not None:
                handle.remove()
        self._names = [n for n in self._names if n not in dropped]
        self.unbatched += dropped
        return [name for name in acts if module_of.get(name, name) in dropped]

    def pop(self) -> dict[str, Reduced]:
        """Return the reduced activations of the forward passes since the last ``pop()``.

        Returns
        -------
        dict of str to np.ndarray or TokenRows
            Per layer (keys as in :attr:`layers`: module names, and ``<module>@<call>`` for
            the calls of a module that runs several times, unless pooled) a float32
            C-contiguous ``[batch, values_per_sample, neurons]`` array, or
            :class:`~ndstream.capture.reduce.TokenRows` for ``none`` under a token mask
            (passes concatenated along batch); ``{}`` when no forward pass ran since the
            last pop. The stored activations are cleared, also when this raises.

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
        result: dict[str, Reduced] = {}
        for name in self._names:
            infos = self._info[name]
            if len(infos) == 1:  # one layer holds every call of the module
                per_pass = [_along_values([a for a, _ in p[name]]) for p in passes]
                result[infos[0].name] = _stack(infos[0].name, per_pass)
            else:
                for k, info in enumerate(infos):
                    result[info.name] = _stack(info.name, [p[name][k][0] for p in passes])
        return result


def _along_values(calls: list[Reduced]) -> Reduced:
    """The calls of one pass as one layer's values, in call order."""
    if len(calls) == 1:
        return calls[0]
    if any(isinstance(c, TokenRows) for c in calls):
        return TokenRows.pool([_as_rows(c) for c in calls])
    return np.concatenate(calls, axis=1)  # type: ignore[arg-type]


def _as_rows(values: Reduced) -> TokenRows:
    """Values as :class:`TokenRows` (one row per position), to pool with masked calls."""
    if isinstance(values, TokenRows):
        return values
    b, v, n = values.shape
    sample = np.repeat(np.arange(b, dtype=np.int64), v)
    return TokenRows(np.ascontiguousarray(values.reshape(b * v, n)), sample, b)


def _stack(name: str, per_pass: list[Reduced]) -> Reduced:
    """The passes of one layer stacked along the batch axis."""
    if len(per_pass) == 1:
        return per_pass[0]  # already float32 and C-contiguous, from reduce_output
    if any(isinstance(a, TokenRows) for a in per_pass):
        return TokenRows.stack([_as_rows(a) for a in per_pass])
    arrays = [a for a in per_pass if isinstance(a, np.ndarray)]
    if len({a.shape[1:] for a in arrays}) > 1:
        raise CaptureError(
            f"layer {name!r} gave [values_per_sample, neurons] of "
            f"{sorted({a.shape[1:] for a in arrays})} in different forward passes; "
            "call pop() after every forward"
        )
    return np.ascontiguousarray(np.concatenate(arrays, axis=0), np.float32)
