"""The finalized, canonical form of a layer's sketch, and every query derived from it.

A :class:`Summary` is what :meth:`LayerSketch.finalize` returns and what a store holds: dense
counts on each neuron's bin axis, in ascending value order
``[negative bins, zero, positive bins, padding]``, with the bin edges, the exact per-(neuron, group) min and max of the finite values, and the
counts of NaN, +Inf and -Inf. It is a pure function of the data: the same data gives the same
arrays, bit for bit, whatever the batching, order or sharding.

Queries (:meth:`Summary.quantile`, :meth:`Summary.cdf`, :meth:`Summary.histogram`) pool all the
groups they are given; select groups first with :meth:`Summary.select`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from . import _kernels as k
from .grid import GridSpec

__all__ = ["Pooled", "Summary"]


@dataclass(frozen=True)
class Pooled:
    """One distribution per neuron: a :class:`Summary`'s groups added together.

    All arrays are indexed by neuron first; ``counts`` is float64 ``[neuron, bin]`` and the
    edges ``lower``, ``upper`` have the same shape.
    """

    counts: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    mins: np.ndarray
    maxs: np.ndarray
    nan: np.ndarray
    posinf: np.ndarray
    neginf: np.ndarray

    def quantile(self, q: float | np.ndarray | list[float]) -> np.ndarray:
        """Quantiles of each neuron's non-NaN values; ``[neuron]`` or ``[neuron, len(q)]``."""
        qs = np.atleast_1d(np.asarray(q, dtype=np.float64))
        if np.any((qs < 0) | (qs > 1)) or np.any(np.isnan(qs)):
            raise ValueError(f"quantiles must lie in [0, 1], got {qs.tolist()}")
        out = np.empty((self.counts.shape[0], qs.size), dtype=np.float64)
        k.quantiles(
            self.counts, self.lower, self.upper, self.mins, self.maxs,
            self.neginf, self.posinf, qs, out,
        )  # fmt: skip
        return out[:, 0] if np.ndim(q) == 0 else out

    def cdf(self, values: np.ndarray | float) -> np.ndarray:
        """Quantile rank in [0, 1] of ``values[neuron]`` within each neuron's distribution.

        The rank counts values below plus half the values equal; NaN gives NaN.
        """
        n = self.counts.shape[0]
        vals = np.broadcast_to(np.asarray(values, dtype=np.float64), (n,)).copy()
        out = np.empty(n, dtype=np.float64)
        k.ranks(
            self.counts, self.lower, self.upper, self.mins, self.maxs,
            self.neginf, self.posinf, vals, out,
        )  # fmt: skip
        return out

    def histogram(self, edges: np.ndarray) -> np.ndarray:
        """Counts ``[neuron, bin]`` re-binned onto ascending display ``edges``.

        Each sketch bin's count is spread over the display bins in proportion to overlap, so
        no mass is invented; mass outside the edges (and ±Inf, NaN) is left out.
        """
        edges = np.asarray(edges, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError("edges must be a 1-d, strictly increasing array of at least 2 values")
        out = np.zeros((self.counts.shape[0], edges.size - 1), dtype=np.float64)
        k.rebin(self.counts, self.lower, self.upper, self.mins, self.maxs, edges, out)
        return out


@dataclass(frozen=True)
class Summary:
    """A layer's finalized sketch over ``(neuron, group, bin)``; see the module docstring.

    Attributes
    ----------
    counts
        ``[neuron, group, bin]`` unsigned counts of finite values (exact zeros in the zero bin).
    lower, upper
        ``[neuron, bin]`` float32 edges (exact: every edge is a float32); the zero bin is
        ``[0, 0]``, padding is NaN.
    mins, maxs
        ``[neuron, group]`` float32 exact min and max of the finite values, NaN when none.
    nan, posinf, neginf
        ``[neuron, group]`` int64 counts of non-finite values.
    totals
        ``[group]`` int64 number of values each neuron received in each group, non-finite
        included (it is the same for every neuron of a layer).
    groups
        Group names along the group axis.
    grid
        The grid the counts were binned on.
    resolution
        ``[neuron]`` mantissa bits of each neuron's bins: ``2**resolution`` bins per octave.
    """

    counts: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    mins: np.ndarray
    maxs: np.ndarray
    nan: np.ndarray
    posinf: np.ndarray
    neginf: np.ndarray
    totals: np.ndarray
    groups: tuple[str, ...]
    grid: GridSpec
    resolution: np.ndarray

    @property
    def n_neurons(self) -> int:
        """Number of neurons."""
        return int(self.counts.shape[0])

    def select(self, groups: np.ndarray | list[int]) -> Summary:
        """The same summary restricted to the given group indices."""
        idx = np.asarray(groups, dtype=np.intp)
        return Summary(
            counts=self.counts[:, idx],
            lower=self.lower,
            upper=self.upper,
            mins=self.mins[:, idx],
            maxs=self.maxs[:, idx],
            nan=self.nan[:, idx],
            posinf=self.posinf[:, idx],
            neginf=self.neginf[:, idx],
            totals=self.totals[idx],
            groups=tuple(self.groups[i] for i in idx),
            grid=self.grid,
            resolution=self.resolution,
        )

    def pooled(self) -> Pooled:
        """All groups of this summary added together, one distribution per neuron."""
        with warnings.catch_warnings():
            # An empty group legitimately has no min: numpy's "All-NaN slice" is no news.
            warnings.simplefilter("ignore", RuntimeWarning)
            mins = np.nanmin(self.mins, axis=1).astype(np.float64)
            maxs = np.nanmax(self.maxs, axis=1).astype(np.float64)
        return Pooled(
            counts=self.counts.sum(axis=1, dtype=np.float64),
            lower=self.lower,
            upper=self.upper,
            mins=mins,
            maxs=maxs,
            nan=self.nan.sum(axis=1, dtype=np.float64),
            posinf=self.posinf.sum(axis=1, dtype=np.float64),
            neginf=self.neginf.sum(axis=1, dtype=np.float64),
        )

    def quantile(self, q: float | np.ndarray | list[float]) -> np.ndarray:
        """Quantiles with all groups pooled; see :meth:`Pooled.quantile`."""
        return self.pooled().quantile(q)

    def cdf(self, values: np.ndarray | float) -> np.ndarray:
        """Quantile ranks with all groups pooled; see :meth:`Pooled.cdf`."""
        return self.pooled().cdf(values)

    def histogram(self, edges: np.ndarray) -> np.ndarray:
        """Re-binned counts with all groups pooled; see :meth:`Pooled.histogram`."""
        return self.pooled().histogram(edges)
