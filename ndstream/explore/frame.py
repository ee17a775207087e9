"""What the dashboard and notebooks show of one layer, computed once from a store.

A :class:`LayerFrame` reads a layer of a :class:`~ndstream.store.Store` on demand and keeps
what the views need: for each group asked for, its count, the quantiles of the tooltips
(p5, p25, p50, p75, p95) and its density on the layer's display axis; and the recorded
instances' values. The display axis is shared by every group of the layer, so density bars of
different groups line up, and spans the finite values of all groups and instances.

Densities are each neuron's counts on the display bins divided by that neuron's densest bin
(so every bar uses the full opacity range, whatever its count), computed with
:meth:`Summary.histogram`, which spreads sketch bins over display bins without inventing mass.
A frame reads one pinned checkpoint: open a new one for a newer checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..sketch import Summary
from ..store import Store
from ..store.instances import InstanceTable

__all__ = ["TOOLTIP_QUANTILES", "GroupStats", "LayerFrame", "instance_ids"]

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
    density
        ``[neuron, bin]`` float32 in [0, 1]: counts on the display bins over the neuron's
        largest one (0 where the group has no values).
    rank_bound
        ``[neuron]`` the widest rank interval of any of the neuron's answers (see
        :meth:`ndstream.sketch.Pooled.rank_bound`): the quantiles are off by no more.
    """

    count: int
    quantiles: np.ndarray
    density: np.ndarray
    rank_bound: np.ndarray

    @property
    def median(self) -> np.ndarray:
        """``[neuron]`` medians."""
        return self.quantiles[:, 2]

    @property
    def iqr(self) -> np.ndarray:
        """``[neuron]`` interquartile ranges (p75 - p25)."""
        return self.quantiles[:, 3] - self.quantiles[:, 1]


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
    def edges(self) -> np.ndarray:
        """The display axis: ``bins + 1`` equal-width edges over every finite value."""
        lo, hi = self.store.extent(self.layer)
        finite = self.instance_values[np.isfinite(self.instance_values)]
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
        if not hi > lo:
            lo, hi = lo - 0.5, lo + 0.5
        return np.linspace(lo, hi, self.bins + 1)

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
            counts = summary.histogram(self.edges)
            peak = counts.max(axis=1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                density = np.where(peak > 0, counts / peak, 0.0).astype(np.float32)
            self._groups[name] = GroupStats(
                count=int(summary.totals.sum()),
                quantiles=summary.quantile(np.asarray(TOOLTIP_QUANTILES)),
                density=density,
                rank_bound=summary.rank_bound(),
            )
        return self._groups[name]

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
