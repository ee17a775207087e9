"""What the dashboard and notebooks show of one layer, computed once from a store.

A :class:`LayerFrame` reads a layer of a :class:`~ndstream.store.Store` on demand and keeps
what the views need: for each group asked for, its count, the quantiles of the tooltips
(p5, p25, p50, p75, p95) and its density on a display axis
(:class:`~ndstream.explore.display_axis.DisplayAxis`); and the recorded instances' values.
Every group of a view is drawn on one axis, so density bars of different groups (and of two
stores) line up.

Densities are each neuron's counts on the display bins divided by that neuron's densest bin
(so every bar uses the full opacity range, whatever its count), computed with
:meth:`Summary.histogram`, which spreads sketch bins over display bins without inventing mass.
A frame reads one pinned checkpoint: open a new one for a newer checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..sketch import Summary
from ..store import Store
from ..store.instances import InstanceTable
from .display_axis import DisplayAxis

__all__ = ["TOOLTIP_QUANTILES", "Density", "GroupStats", "LayerFrame", "instance_ids"]

TOOLTIP_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass(frozen=True)
class GroupStats:
    """One group of one layer, as drawn.

    Attributes
    ----------
    count
        Values each neuron received in this group.
    quantiles
        ``[neuron, 5]`` at :data:`TOOLTIP_QUANTILES` (NaN for a neuron without values).
    rank_bound
        ``[neuron]`` the widest rank interval of any of the neuron's answers (see
        :meth:`ndstream.sketch.Pooled.rank_bound`): the quantiles are off by no more.
    """

    count: int
    quantiles: np.ndarray
    rank_bound: np.ndarray

    @property
    def median(self) -> np.ndarray:
        """``[neuron]`` medians."""
        return self.quantiles[:, 2]

    @property
    def iqr(self) -> np.ndarray:
        """``[neuron]`` interquartile ranges (p75 - p25)."""
        return self.quantiles[:, 3] - self.quantiles[:, 1]


@dataclass(frozen=True)
class Density:
    """One group of one layer on a display axis.

    Attributes
    ----------
    bars
        ``[neuron, bin]`` float32 in [0, 1]: counts on the axis's display bins over the
        neuron's largest one (0 where the group has no values).
    below, above
        ``[neuron]`` values beyond the axis's ends (the views mark them at the edges).
    """

    bars: np.ndarray
    below: np.ndarray
    above: np.ndarray


def instance_ids(table: InstanceTable | None) -> list[str]:
    """A stable id per instance: its dataset index, with its condition when it has one.

    An attacked image and its benign original share a dataset index, so the condition tells
    them apart (``"12-attacked"``, ``"12-benign"``).
    """
    if table is None:
        return []
    return [
        f"{i}-{c}" if c else str(i)
        for i, c in zip(table.index.tolist(), table.condition.tolist(), strict=True)
    ]


class LayerFrame:
    """The drawable statistics of one layer of a store, read lazily and cached.

    Parameters
    ----------
    store
        An open store; the frame reads the checkpoint it pins.
    layer
        Layer name.
    bins
        Number of display bins along the activation axis.
    instances
        The store's instances, if already read (saves reading them once per layer).
    """

    def __init__(
        self, store: Store, layer: str, bins: int = 64, instances: InstanceTable | None = None
    ) -> None:
        if bins < 1:
            raise ValueError(f"bins must be at least 1, got {bins}")
        self.store = store
        self.layer = layer
        self.bins = bins
        self.n_neurons = store.n_neurons(layer)
        self._instances = instances
        self._summaries: dict[str, Summary] = {}
        self._groups: dict[str, GroupStats] = {}
        self._densities: dict[tuple[str, str, str], Density] = {}
        self._ranks: dict[tuple[str, str], np.ndarray] = {}
        #: Per-neuron arrays that views derive from this frame (e.g. tooltip texts), kept
        #: with it: a frame reads one checkpoint, so they never go stale.
        self.memo: dict[tuple[str, ...], np.ndarray] = {}

    @cached_property
    def instances(self) -> InstanceTable | None:
        """The store's instances (``None`` if the run recorded none)."""
        return self._instances if self._instances is not None else self.store.instances()

    @cached_property
    def instance_ids(self) -> list[str]:
        """Ids of the instances, aligned with the rows of :attr:`instance_values`."""
        return instance_ids(self.instances)

    @cached_property
    def instance_values(self) -> np.ndarray:
        """``[instance, neuron]`` float64 activations of the instances in this layer.

        With the ``none`` reduction an instance has a value per position; its largest is
        used, as the channel max would.
        """
        if self.instances is None or not len(self.instances):
            return np.zeros((0, self.n_neurons))
        values = self.instances.values[self.layer].astype(np.float64)
        with np.errstate(invalid="ignore"):
            return np.max(values, axis=1)

    @cached_property
    def extent(self) -> tuple[float, float]:
        """The smallest and largest finite value of the layer, all groups."""
        return self.store.extent(self.layer)

    @cached_property
    def robust_range(self) -> tuple[float, float]:
        """The smallest 1st and the largest 99th percentile of any neuron, groups pooled."""
        q = np.asarray(self.store.summary(self.layer).quantile(np.array([0.01, 0.99])))
        lo, hi = q[:, 0][np.isfinite(q[:, 0])], q[:, 1][np.isfinite(q[:, 1])]
        if not (lo.size and hi.size):
            return self.extent
        return float(lo.min()), float(hi.max())

    def axis(self, kind: str = "full", instances: Sequence[str] = ()) -> DisplayAxis:
        """The display axis ``kind`` (see :data:`~ndstream.explore.display_axis.AXES`) of
        this layer, taking in the values of ``instances``."""
        rows = [self.instance_row(i) for i in instances]
        return DisplayAxis.choose(
            kind, self.extent, self.robust_range, self.instance_values[rows].ravel(), self.bins
        )

    @cached_property
    def edges(self) -> np.ndarray:
        """The ``full`` axis's edges over every finite value, the instances' included."""
        return self.axis("full", self.instance_ids).edges

    def instance_row(self, instance: str) -> int:
        """Row of an instance id in :attr:`instance_values`.

        Raises
        ------
        KeyError
            If the store has no such instance.
        """
        try:
            return self.instance_ids.index(instance)
        except ValueError:
            raise KeyError(
                f"no instance {instance!r} in this store; it has {self.instance_ids[:10]}"
            ) from None

    def summary(self, name: str) -> Summary:
        """The sketch summary of one group (read from the store on first use)."""
        if name not in self._summaries:
            self._summaries[name] = self.store.summary(self.layer, name)
        return self._summaries[name]

    def group(self, name: str) -> GroupStats:
        """Statistics of one group (computed on first use)."""
        if name not in self._groups:
            summary = self.summary(name)
            self._groups[name] = GroupStats(
                count=int(summary.totals.sum()),
                quantiles=summary.quantile(np.asarray(TOOLTIP_QUANTILES)),
                rank_bound=summary.rank_bound(),
            )
        return self._groups[name]

    def density(self, name: str, axis: DisplayAxis | None = None) -> Density:
        """Group ``name`` on ``axis`` (the ``full`` one by default), computed on first use."""
        axis = axis if axis is not None else self.axis("full", self.instance_ids)
        key = ("density", name, repr(axis))
        if key not in self._densities:
            # Two outer bins catch what lies beyond the axis, to be marked at its edges.
            lo, hi = self.extent
            outer = [*([lo] if lo < axis.lo else []), *axis.edges, *([hi] if hi > axis.hi else [])]
            counts = self.summary(name).histogram(np.asarray(outer))
            first = 1 if lo < axis.lo else 0
            inner = counts[:, first : first + axis.bins]
            peak = inner.max(axis=1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                bars = np.where(peak > 0, inner / peak, 0.0).astype(np.float32)
            zero = np.zeros(counts.shape[0])
            self._densities[key] = Density(
                bars=bars,
                below=counts[:, 0] if first else zero,
                above=counts[:, -1] if hi > axis.hi else zero,
            )
        return self._densities[key]

    def divergence(self, instance: str, group: str) -> np.ndarray:
        """``[neuron]`` each neuron's contribution ``|z|`` to an instance's divergence from a
        group (:func:`ndstream.divergence.neuron_scores`) at the value the frame shows (with
        the ``none`` reduction, its largest); NaN for a group without values."""
        key = ("divergence", instance, group)
        if key not in self.memo:
            from ..divergence import neuron_scores

            values = self.instance_values[self.instance_row(instance)]
            z, _, _ = neuron_scores(self.summary(group), values[None, :])
            self.memo[key] = np.abs(z[0])
        return self.memo[key]

    def ranks(self, instance: str, group: str) -> np.ndarray:
        """``[neuron]`` quantile rank of an instance's values within a group (0 to 1)."""
        if (instance, group) not in self._ranks:
            values = self.instance_values[self.instance_row(instance)]
            self._ranks[instance, group] = self.summary(group).cdf(values)
        return self._ranks[instance, group]
