"""Neural divergence as a score: how far an input's activations lie from a group's.

Per neuron, an activation ``x`` is scored against a group's distribution by a *normal score*
that never saturates:

- inside the group's range, ``z = Φ⁻¹(F(x))``, with ``F`` the sketch's quantile rank
  (values below plus half the ties) clipped to ``[1/2N, 1 - 1/2N]`` for ``N`` values: 0 at
  the median, about ±2.8 at the edges of a group of 180;
- past the group's exact minimum or maximum it goes on linearly, by the distance past that
  edge in units of the group's robust spread ``s = IQR / 1.349``. For Gaussian data both
  parts equal the standard score ``(x - mean) / sd``, so one unit means the same inside the
  range and past it, and "just past the edge" and "far past it" no longer tie.

Where a neuron's IQR is 0 (most values equal, as after a ReLU) the spread falls back to its
range over ``2 z_edge``, and where that is 0 too (a constant neuron) to the median spread of
the layer's other neurons in that group.

With the ``none`` reduction an input has a value per position; a neuron's score is then the
root mean square of its positions' ``|z|``. A layer's score is its largest ``|z|``: the
neuron that diverges most. The overall score is the mean of the layer scores, so that each
layer weighs the same. ``docs/divergence.md`` gives the evidence: on the digits demo the
largest ``|z|`` detected every attack better than the root mean square, the mean ``|z|``,
all neurons pooled, or the saturating ``|2F - 1|``.

Bounds: the sketch knows a rank only up to its rank bound. :attr:`Divergence.lower` and
:attr:`Divergence.upper` carry each neuron's ``z`` for the ends of that interval, and past
the edges for the ends of the spread's interval (quartiles moved by the rank bound), so the
``z`` computed from the exact values lies between them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import ndtri

from ..errors import LayerNotFoundError
from ..store.instances import InstanceTable

if TYPE_CHECKING:
    from ..sketch import Summary
    from ..sketch.summary import Pooled
    from ..store import Store

__all__ = ["Divergence", "class_groups", "divergence", "neuron_scores"]

_IQR_TO_SIGMA = 1.3489795003921634  # IQR of a standard normal


@dataclass(frozen=True)
class Divergence:
    """Divergence of ``n`` inputs from the groups they were scored against.

    Attributes
    ----------
    layers
        The layers scored, in order.
    groups
        ``[n]`` the group each input was scored against.
    neurons
        Per layer, ``[n, neuron]`` signed normal scores ``z`` (negative below the group's
        median); a neuron's contribution is ``|z|``.
    lower, upper
        Per layer, ``[n, neuron]`` the range of ``z`` the sketch's rank bound allows.
    per_layer
        ``[n, layer]`` each layer's largest ``|z|`` (NaN neurons left out).
    overall
        ``[n]`` mean of the layer scores.
    nan_neurons
        ``[n, layer]`` neurons left out of a layer score for a NaN activation or a group
        without values: counted, so a NaN is never silently a low score.
    """

    layers: tuple[str, ...]
    groups: np.ndarray
    neurons: dict[str, np.ndarray]
    lower: dict[str, np.ndarray]
    upper: dict[str, np.ndarray]
    per_layer: np.ndarray
    overall: np.ndarray
    nan_neurons: np.ndarray

    def __len__(self) -> int:
        return int(self.overall.shape[0])

    def contribution(self, layer: str) -> np.ndarray:
        """``[n, neuron]`` each neuron's share of the layer score: ``|z|``."""
        if layer not in self.neurons:
            raise LayerNotFoundError(
                f"layer {layer!r} was not scored; these were: {list(self.layers)}"
            )
        return np.abs(self.neurons[layer])


def neuron_scores(
    summary: Summary, values: np.ndarray, *, fallback_spread: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normal scores of ``values[i, neuron]`` against one group's summary.

    Parameters
    ----------
    summary
        A one-group (or pooled) summary of a layer.
    values
        ``[n, neuron]`` activations.
    fallback_spread
        Spread of constant neurons; ``None``: the median spread of the others.

    Returns
    -------
    tuple of numpy.ndarray
        ``(z, lower, upper)``, each ``[n, neuron]`` float64 (see :class:`Divergence`).
    """
    pooled = summary.pooled()
    values = np.asarray(values, dtype=np.float64)
    n_vals = pooled.counts.sum(axis=1) + pooled.neginf + pooled.posinf
    lo_edge = pooled.mins.astype(np.float64)
    hi_edge = pooled.maxs.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        floor = 0.5 / n_vals
        z_edge = np.where(n_vals > 0, ndtri(np.clip(1.0 - floor, 0.5, 1 - 1e-16)), np.nan)
        spreads = _spreads(pooled, (hi_edge - lo_edge) / (2 * z_edge), fallback_spread)

    z = np.empty_like(values)
    lower = np.empty_like(values)
    upper = np.empty_like(values)
    for i, row in enumerate(values):
        ranks = pooled.cdf(row, bounds=True)
        past = np.where(row > hi_edge, row - hi_edge, np.where(row < lo_edge, row - lo_edge, 0.0))
        with np.errstate(invalid="ignore", divide="ignore"):
            z[i] = _normal(ranks.estimate, floor) + past / spreads[0]
            # Past an edge a larger spread gives a smaller |z|: pair the ends accordingly.
            inside = past == 0  # 0 / 0 where the smallest spread may be 0: no term at all
            near = np.where(inside, 0.0, past / spreads[2])
            far = np.where(inside, 0.0, past / spreads[1])
            lower[i] = _normal(ranks.lower, floor) + np.where(past > 0, near, far)
            upper[i] = _normal(ranks.upper, floor) + np.where(past > 0, far, near)
    return z, lower, upper


def _spreads(pooled: Pooled, range_spread: np.ndarray, fallback_spread: float | None) -> np.ndarray:
    """``[3, neuron]``: the spread's estimate, and the smallest and largest it may be.

    The bounds take the quartiles at levels moved by each neuron's rank bound ``w``, rounded
    up to a power of two so that a layer needs few levels (``Q(0.75 - w) - Q(0.25 + w)`` and
    ``Q(0.75 + w) - Q(0.25 - w)``). Where the smallest may be 0, the exact IQR may be 0 (then
    the range fallback applies) or tiny: the smallest spread is then 0, and the bound of
    ``z`` past an edge infinite, as it should be.
    """
    w = np.nan_to_num(pooled.rank_bound(), nan=0.0)
    with np.errstate(divide="ignore"):
        w = np.where(w > 0, 2.0 ** np.ceil(np.log2(np.where(w > 0, w, 1.0))), 0.0)
    menu = np.unique(w)
    moved = np.stack([0.25 - menu, 0.25 + menu, 0.75 - menu, 0.75 + menu], axis=1).ravel()
    q = pooled.quantile(np.clip(np.r_[0.25, 0.75, moved], 0.0, 1.0))  # [neuron, level]
    rows = np.arange(q.shape[0])
    first = 2 + 4 * np.searchsorted(menu, w)  # each neuron's four moved levels
    low25, high25, low75, high75 = (q[rows, first + k] for k in range(4))
    estimate = (q[:, 1] - q[:, 0]) / _IQR_TO_SIGMA
    smallest = (low75 - high25) / _IQR_TO_SIGMA
    largest = (high75 - low25) / _IQR_TO_SIGMA
    with np.errstate(invalid="ignore"):
        estimate = np.where(estimate > 0, estimate, range_spread)
        positive = estimate[estimate > 0]
        fallback = fallback_spread or (float(np.median(positive)) if positive.size else 1.0)
        estimate = np.where(estimate > 0, estimate, fallback)
        maybe_zero = ~(smallest > 0)
        largest = np.where(maybe_zero, np.fmax(largest, estimate), largest)
        smallest = np.where(maybe_zero, 0.0, smallest)
    return np.stack([estimate, smallest, np.fmax(largest, estimate)])


def _normal(rank: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """``Φ⁻¹`` of ranks clipped to ``[floor, 1 - floor]``; NaN stays NaN."""
    clipped = np.clip(rank, floor, 1.0 - floor)
    out = np.full(rank.shape, np.nan)
    ok = np.isfinite(clipped) & (clipped > 0) & (clipped < 1)
    out[ok] = ndtri(clipped[ok])
    return out


def divergence(
    store: Store,
    inputs: InstanceTable | Mapping[str, np.ndarray],
    group: str | Sequence[str] | None = None,
    layers: str | Sequence[str] | None = None,
    *,
    predicted: np.ndarray | None = None,
) -> Divergence:
    """Score inputs against groups of a store; see :meth:`ndstream.Store.divergence`."""
    layers = _layers(store, inputs, layers)
    if isinstance(inputs, InstanceTable):
        acts = {layer: inputs.values[layer] for layer in layers}
        predicted = inputs.predicted if predicted is None else predicted
    else:
        acts = {layer: np.asarray(inputs[layer]) for layer in layers}
    n = next(iter(acts.values())).shape[0] if acts else 0
    if n == 0 and not isinstance(inputs, InstanceTable):
        raise ValueError("no inputs to score: the activations hold 0 rows")
    groups = _groups(store, group, n, predicted)

    neurons, lower, upper = {}, {}, {}
    per_layer = np.full((n, len(layers)), np.nan)
    nan_neurons = np.zeros((n, len(layers)), dtype=np.int64)
    for j, layer in enumerate(layers):
        values = _per_neuron(acts[layer], n, store.n_neurons(layer), layer)
        z, lo, hi = (np.full(values.shape[:2] + values.shape[2:], np.nan) for _ in range(3))
        names = list(dict.fromkeys(groups.tolist()))
        together = store.summary(layer, names) if names else None  # one read per layer
        for k, name in enumerate(names):
            rows = np.flatnonzero(groups == name)
            summary = together.select([k])  # type: ignore[union-attr]
            flat = values[rows].reshape(-1, values.shape[-1])
            zr, lr, hr = neuron_scores(summary, flat)
            shape = (len(rows), *values.shape[1:])
            z[rows], lo[rows], hi[rows] = zr.reshape(shape), lr.reshape(shape), hr.reshape(shape)
        neurons[layer], lower[layer], upper[layer] = _over_positions(z, lo, hi)
        missing = np.isnan(neurons[layer])
        nan_neurons[:, j] = missing.sum(axis=1)
        largest = np.where(missing, -np.inf, np.abs(neurons[layer])).max(axis=1, initial=-np.inf)
        per_layer[:, j] = np.where(np.isneginf(largest), np.nan, largest)
    with warnings.catch_warnings():
        # An input whose group has no values in any layer scores NaN (counted in nan_neurons).
        warnings.simplefilter("ignore", RuntimeWarning)
        overall = np.nanmean(per_layer, axis=1) if layers else np.zeros(n)
    return Divergence(tuple(layers), groups, neurons, lower, upper, per_layer, overall, nan_neurons)


def _over_positions(
    z: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[n, neuron]`` scores from ``[n, positions, neuron]``: the values themselves for one
    position; for several (the ``none`` reduction) the RMS of ``|z|`` and of its bounds."""
    if z.shape[1] == 1:
        return z[:, 0], lo[:, 0], hi[:, 0]
    straddles = (lo <= 0) & (hi >= 0)
    least = np.where(straddles, 0.0, np.minimum(np.abs(lo), np.abs(hi)))
    most = np.maximum(np.abs(lo), np.abs(hi))
    with np.errstate(invalid="ignore"):
        return tuple(np.sqrt(np.mean(a**2, axis=1)) for a in (z, least, most))


def _per_neuron(values: np.ndarray, n: int, neurons: int, layer: str) -> np.ndarray:
    """``[n, positions, neuron]`` from ``[n, neuron]`` or ``[n, positions, neuron]``."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 2:
        values = values[:, None, :]
    if values.ndim != 3 or values.shape[0] != n or values.shape[2] != neurons:
        raise ValueError(
            f"activations of layer {layer!r} must be [inputs, {neurons}] or "
            f"[inputs, positions, {neurons}] for {n} inputs; got {list(values.shape)}"
        )
    return values


def _layers(
    store: Store,
    inputs: InstanceTable | Mapping[str, np.ndarray],
    layers: str | Sequence[str] | None,
) -> list[str]:
    """The layers to score, each a layer of the store with activations in ``inputs``."""
    if layers is None:
        # New activations name their layers; a store's instances hold every layer.
        chosen = list(store.layers) if isinstance(inputs, InstanceTable) else list(inputs)
    else:
        chosen = [layers] if isinstance(layers, str) else list(layers)
    for layer in chosen:
        store.layer_meta(layer)  # a LayerNotFoundError names the store's layers
    if not isinstance(inputs, InstanceTable):
        missing = [layer for layer in chosen if layer not in inputs]
        if missing:
            raise ValueError(
                f"no activations for layers {missing}: give them in inputs, or name the "
                f"layers to score with layers=[...] (inputs hold {list(inputs)})"
            )
    return chosen


def _groups(
    store: Store, group: str | Sequence[str] | None, n: int, predicted: np.ndarray | None
) -> np.ndarray:
    """The group each input is scored against: given, or its predicted class's."""
    if group is None:
        if predicted is None:
            raise ValueError(
                "group=None scores each input against its predicted class, but no "
                "predictions were given: pass predicted=..., or name a group"
            )
        classes = class_groups(store)
        if not classes:
            raise ValueError(
                "group=None needs a store grouped by label or predicted class; this one has "
                f"{sorted(set(store.groupings))}: name a group instead"
            )
        given = np.asarray(predicted)
        if given.ndim != 1 or given.shape[0] != n:
            raise ValueError(
                f"give one predicted class per input: predicted has shape {list(given.shape)} "
                f"for {n} inputs"
            )
        if given.dtype.kind not in "iu" and not (
            given.dtype.kind == "f" and np.array_equal(given, np.round(given))
        ):
            raise ValueError(
                f"predicted classes must be whole numbers, got {given.dtype} values such as "
                f"{given[:3].tolist()}"
            )
        pred = given.astype(np.int64)
        bad = (pred < 0) | (pred >= len(classes))
        if bad.any():
            raise ValueError(
                f"predicted classes {sorted(set(pred[bad].tolist()))[:5]} have no group in "
                f"this store ({len(classes)} classes); name a group instead"
            )
        return np.asarray(classes, dtype=object)[pred]
    if isinstance(group, str):
        names = [group] * n
    elif isinstance(group, Iterable) and all(isinstance(g, str) for g in group):
        names = list(group)
    else:
        raise TypeError(f"group names a group of the store (a str) or one per input, got {group!r}")
    if len(names) != n:
        raise ValueError(f"give one group per input: {len(names)} groups for {n} inputs")
    for name in dict.fromkeys(names):
        store.group_index(name)  # a GroupNotFoundError names the valid groups
    return np.asarray(names, dtype=object)


def class_groups(store: Store) -> list[str]:
    """The groups of the classes, in class order: the true labels' groups, else the predicted
    classes' groups, else none (``group=None`` then needs a group named).

    Parameters
    ----------
    store
        An open store.

    Returns
    -------
    list of str
        Group ``k`` is class ``k``'s.
    """
    for grouping in ("label", "predicted"):
        names = [g for g, k in zip(store.groups, store.groupings, strict=True) if k == grouping]
        if names:
            return names
    return []
