"""The finalized, canonical form of a layer's sketch, and every query derived from it.

A :class:`Summary` is what :meth:`LayerSketch.finalize` returns and what a store holds: dense
counts on each neuron's bin axis, in ascending value order
``[negative bins, zero, positive bins, padding]``, with the bin edges, the exact per-(neuron, group) min and max of the finite values, and the
counts of NaN, +Inf and -Inf. It is a pure function of the data: the same data gives the same
arrays, bit for bit, whatever the batching, order or sharding.

Queries (:meth:`Summary.quantile`, :meth:`Summary.cdf`, :meth:`Summary.histogram`) pool all the
groups they are given; select groups first with :meth:`Summary.select`.

Rank bounds: an estimate stands for a value whose rank the sketch knows only up to the mass of
the bins that may hold it. ``quantile(q, bounds=True)`` and ``cdf(v, bounds=True)`` return
that interval beside each estimate (:class:`RankBounds`): whatever the data, the exact rank
lies inside it. Where every value is kept exactly the interval is that of the value's ties.

The queries run on the Numba kernels, imported by the methods that call them: reading a
store's counts, totals and stored rank bounds needs neither Numba nor its compiled kernels.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Literal, overload

import numpy as np

from .grid import FINE_BITS, GridSpec, fine_keys

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = [
    "POOLED_GROUP",
    "Pooled",
    "RankBounds",
    "Summary",
    "cdf_values",
    "display_edges",
    "quantile_levels",
]

POOLED_GROUP = "all"  # the one group of a pooled summary: every row once


# Up to this many (neuron, group, bin) cells, group_rank_bounds runs in NumPy unless an
# ingest has loaded the kernels already: several times the kernel's time (the MiniLM
# example's 12 layers: 84 ms against 10 ms a checkpoint), but far less than importing Numba
# and loading the kernel (0.5 s or more; seconds when it must be compiled), which a reader
# would pay for one pooled summary.
_SMALL_CELLS = 1 << 22
_KERNELS = __name__.rpartition(".")[0] + "._kernels"


def _kernels() -> ModuleType:
    """The Numba kernels, imported by the first query that runs one (not by reading a store)."""
    from . import _kernels

    return _kernels


def quantile_levels(q: ArrayLike) -> np.ndarray:
    """``q`` as float64 quantile levels, checked: a scalar or a 1-D list, each in [0, 1]."""
    qs = _numbers(q, f"quantiles must be numbers in [0, 1], got {q!r}")
    if qs.ndim > 1:
        raise ValueError(
            f"q must be one level or a 1-D list of levels, got shape {list(qs.shape)}; "
            "flatten it (np.ravel) and reshape the answer"
        )
    if np.any((qs < 0) | (qs > 1)) or np.any(np.isnan(qs)):
        raise ValueError(f"quantiles must lie in [0, 1], got {np.atleast_1d(qs).tolist()}")
    return qs


def cdf_values(values: ArrayLike) -> np.ndarray:
    """``values`` as float64 activation values to rank, checked to be numbers (NaN and ±Inf
    included: they rank as the sketch counts them). The shape is checked by the caller."""
    return _numbers(values, f"values to rank must be numbers, got {values!r}")


def _numbers(given: ArrayLike, message: str) -> np.ndarray:
    """``given`` as float64, or ``ValueError(message)`` for what is no number: strings
    ("0.5"), booleans (True would read as 1), None (it would read as NaN) and ragged lists."""
    try:
        raw = np.asarray(given)
    except ValueError:  # ragged
        raise ValueError(message[:300]) from None
    if raw.dtype.kind not in "iuf":
        raise ValueError(message[:300])
    return raw.astype(np.float64)


def display_edges(edges: ArrayLike) -> np.ndarray:
    """``edges`` as float64 display bin edges, checked: 1-D, at least 2, finite, ascending."""
    try:
        out = np.asarray(edges, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"edges must be numbers, got {edges!r}") from None
    if out.ndim != 1 or out.size < 2:
        raise ValueError(
            f"edges must be a 1-D array of at least 2 values, got shape {list(out.shape)}"
        )
    if not np.isfinite(out).all():
        raise ValueError(
            f"edges must be finite numbers, got {out.tolist()[:8]}: NaN and ±Inf are no bin "
            "edge (a histogram leaves ±Inf out; count them with the store's nan/posinf/neginf)"
        )
    if not np.all(np.diff(out) > 0):
        raise ValueError(
            f"edges must be strictly increasing, got {out.tolist()[:8]}; sort them "
            "(np.unique) or pass a number of bins"
        )
    return out


@dataclass(frozen=True)
class RankBounds:
    """Estimates, each with the guaranteed interval of the ranks it may stand for.

    For an estimate ``v`` of a neuron with ``N`` values, both the fraction of the values below
    ``v`` and the fraction at or below it lie in ``[lower, upper]``, whatever the data behind
    the sketch. For a quantile ``q``, the rank error of ``v`` is thus at most
    ``max(q - lower, upper - q)``. All three arrays have the shape of the plain answer.
    """

    estimate: np.ndarray
    lower: np.ndarray
    upper: np.ndarray

    @property
    def width(self) -> np.ndarray:
        """``upper - lower``: how far apart, in rank, the values the estimate stands for may be."""
        return self.upper - self.lower


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
    # (counts, lower, upper) with each atom inside a neuron's range still in its bin, where
    # the bins above split it out: the guarantees are read from these, as the split of the
    # rest of that bin around the atom is an estimate (None: the bins above).
    spread: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def spread_bins(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(counts, lower, upper)`` with each atom inside a neuron's range in its bin: the
        bins that guarantees (rank bounds, a contrast's interval) are read from."""
        return self.spread if self.spread is not None else (self.counts, self.lower, self.upper)

    @overload
    def quantile(
        self, q: float | np.ndarray | list[float], bounds: Literal[False] = False
    ) -> np.ndarray: ...

    @overload
    def quantile(
        self, q: float | np.ndarray | list[float], bounds: Literal[True]
    ) -> RankBounds: ...

    def quantile(
        self, q: float | np.ndarray | list[float], bounds: bool = False
    ) -> np.ndarray | RankBounds:
        """Quantiles of each neuron's non-NaN values; ``[neuron]`` or ``[neuron, len(q)]``.

        With ``bounds=True``, a :class:`RankBounds` of the estimates and the guaranteed
        interval of ranks each stands for.
        """
        qs = np.atleast_1d(quantile_levels(q))
        out = np.empty((self.counts.shape[0], qs.size), dtype=np.float64)
        _kernels().quantiles(
            self.counts, self.lower, self.upper, self.mins, self.maxs,
            self.neginf, self.posinf, qs, out,
        )  # fmt: skip
        if not bounds:
            return out[:, 0] if np.ndim(q) == 0 else out
        result = self._bounded(out)
        if np.ndim(q) == 0:
            return RankBounds(result.estimate[:, 0], result.lower[:, 0], result.upper[:, 0])
        return result

    @overload
    def cdf(self, values: np.ndarray | float, bounds: Literal[False] = False) -> np.ndarray: ...

    @overload
    def cdf(self, values: np.ndarray | float, bounds: Literal[True]) -> RankBounds: ...

    def cdf(self, values: np.ndarray | float, bounds: bool = False) -> np.ndarray | RankBounds:
        """Quantile rank in [0, 1] of values within each neuron's distribution.

        ``values`` is a scalar (the same value for every neuron), ``[neuron]`` (one value per
        neuron; the answer is ``[neuron]``) or ``[neuron, k]`` (``k`` values per neuron; the
        answer is ``[neuron, k]``). The rank counts values below plus half the values equal;
        NaN gives NaN. With ``bounds=True``, a :class:`RankBounds` of the ranks and the
        guaranteed interval in which the exact rank of each value lies.
        """
        n = self.counts.shape[0]
        vals = cdf_values(values)
        if vals.ndim > 2 or (vals.ndim >= 1 and vals.shape[0] != n):
            raise ValueError(
                f"values must be a scalar, [{n}] or [{n}, k] (one row per neuron), got "
                f"shape {list(vals.shape)}"
            )
        if vals.ndim == 2:
            grid = np.ascontiguousarray(vals)
        else:
            grid = np.broadcast_to(vals, (n,)).reshape(n, 1).copy()
        out = np.empty_like(grid)
        _kernels().ranks(
            self.counts, self.lower, self.upper, self.mins, self.maxs,
            self.neginf, self.posinf, grid, out,
        )  # fmt: skip
        shape = vals.shape if vals.ndim else (n,)
        if not bounds:
            return out.reshape(shape)
        interval = self._bounded(grid)
        return RankBounds(
            out.reshape(shape), interval.lower.reshape(shape), interval.upper.reshape(shape)
        )

    @classmethod
    def from_values(cls, values: np.ndarray) -> Pooled:
        """Every value kept exactly: ``values[k, neuron]`` (a few inputs' activations, say) as
        one distribution per neuron, each distinct finite value a bin of its own.

        Values are rounded to float32 first, the precision a store keeps and its bin edges
        are made of: float64 values that differ only past float32's 24 bits (``1e8`` and
        ``1e8 + 1``) become one value, and their scores are those of the rounded values.
        """
        x = np.asarray(values, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2:
            raise ValueError(f"values must be [k, neuron], got shape {list(x.shape)}")
        finite = np.isfinite(x)
        width = max(1, int(finite.sum(axis=0).max(initial=0)))
        n = x.shape[1]
        counts = np.zeros((n, width), dtype=np.float64)
        edges = np.full((n, width), np.nan, dtype=np.float32)
        for j in range(n):
            distinct, times = np.unique(x[finite[:, j], j] + np.float32(0), return_counts=True)
            counts[j, : distinct.size] = times
            edges[j, : distinct.size] = distinct
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a neuron without finite values
            mins = np.nanmin(np.where(finite, x, np.nan), axis=0).astype(np.float64)
            maxs = np.nanmax(np.where(finite, x, np.nan), axis=0).astype(np.float64)
        return cls(
            counts=counts,
            lower=edges,
            upper=edges.copy(),
            mins=mins,
            maxs=maxs,
            nan=np.isnan(x).sum(axis=0).astype(np.float64),
            posinf=(x == np.inf).sum(axis=0).astype(np.float64),
            neginf=(x == -np.inf).sum(axis=0).astype(np.float64),
        )

    def _bounded(self, values: np.ndarray) -> RankBounds:
        """``values[neuron, i]`` with the guaranteed interval of their ranks."""
        lo, hi = np.empty_like(values), np.empty_like(values)
        _kernels().rank_bounds(
            *self.spread_bins(), self.mins, self.maxs, self.neginf, self.posinf, values, lo, hi
        )
        return RankBounds(values, lo, hi)

    def rank_bound(self) -> np.ndarray:
        """``[neuron]`` the widest rank interval any estimate of a neuron can have.

        It is the largest share of a neuron's values in one bin that may hold several
        distinct values: no quantile or rank of that neuron is off by more (0 where every
        value is kept exactly; NaN for a neuron without values).
        """
        counts, lower, upper = self.spread_bins()
        total = counts.sum(axis=1) + self.neginf + self.posinf
        widest = _kernels().widest_bins(
            counts[:, None, :], lower, upper, self.mins[:, None], self.maxs[:, None]
        )[:, 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, widest / total, np.nan)

    def histogram(self, edges: np.ndarray) -> np.ndarray:
        """Counts ``[neuron, bin]`` re-binned onto ascending display ``edges``.

        Each sketch bin's count is spread over the display bins in proportion to overlap, so
        no mass is invented; mass outside the edges (and ±Inf, NaN) is left out.
        """
        edges = display_edges(edges)
        out = np.zeros((self.counts.shape[0], edges.size - 1), dtype=np.float64)
        _kernels().rebin(self.counts, self.lower, self.upper, self.mins, self.maxs, edges, out)
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
    min_count, max_count
        ``[neuron, group]`` int64 number of values equal to the min and to the max (0 when
        none): an atom at an extreme (a clipped activation, a bias reached whenever a unit's
        input is dead) is read as one value, not spread over its bin.
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
    fine
        ``[neuron, extreme, fine_bin]`` counts of every row at ``2**FINE_BITS`` bins per
        octave next to each neuron's min over all groups (``extreme`` 0: fine bin ``i`` is the
        ``i``-th from the min's, upwards) and its max (1: downwards from the max's), or None
        where the layer keeps none (many groups, or values kept exactly) or the summary's
        groups do not hold every row. The pooled queries read them in place of the coarser
        bins they cover (see ``grid.py``, ``FINE_BITS``).
    atom, atom_count
        ``[neuron]`` float32 each neuron's atom inside its range, NaN where it has none, and
        ``[neuron, group]`` int64 the number of values equal to it (see ``atoms.py``): the
        queries read them as one value, not spread over their bin. None in a summary made
        without atoms.
    """

    counts: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    mins: np.ndarray
    maxs: np.ndarray
    min_count: np.ndarray
    max_count: np.ndarray
    nan: np.ndarray
    posinf: np.ndarray
    neginf: np.ndarray
    totals: np.ndarray
    groups: tuple[str, ...]
    grid: GridSpec
    resolution: np.ndarray
    fine: np.ndarray | None = None
    atom: np.ndarray | None = None
    atom_count: np.ndarray | None = None

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
            min_count=self.min_count[:, idx],
            max_count=self.max_count[:, idx],
            nan=self.nan[:, idx],
            posinf=self.posinf[:, idx],
            neginf=self.neginf[:, idx],
            totals=self.totals[idx],
            groups=tuple(self.groups[i] for i in idx),
            grid=self.grid,
            resolution=self.resolution,
            # The fine counts are of every row: they stay only with every group.
            fine=self.fine if np.array_equal(idx, np.arange(len(self.groups))) else None,
            atom=self.atom,
            atom_count=self.atom_count[:, idx] if self.atom_count is not None else None,
        )

    def collapsed(self, name: str) -> Summary:
        """All groups of this summary added into one group called ``name``.

        Pool groups of one grouping only: a row counts once in each grouping.
        """
        total = int(self.totals.sum())
        dtype = next(d for d in (np.uint16, np.uint32, np.uint64) if total <= np.iinfo(d).max)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # groups without data: NaN
            mins = np.nanmin(self.mins, axis=1, keepdims=True)
            maxs = np.nanmax(self.maxs, axis=1, keepdims=True)
        return Summary(
            counts=self.counts.sum(axis=1, keepdims=True, dtype=np.uint64).astype(dtype),
            lower=self.lower,
            upper=self.upper,
            mins=mins.astype(np.float32),
            maxs=maxs.astype(np.float32),
            min_count=_count_at_pooled(self.mins, self.min_count, mins),
            max_count=_count_at_pooled(self.maxs, self.max_count, maxs),
            nan=self.nan.sum(axis=1, keepdims=True),
            posinf=self.posinf.sum(axis=1, keepdims=True),
            neginf=self.neginf.sum(axis=1, keepdims=True),
            totals=np.array([total], dtype=np.int64),
            groups=(name,),
            grid=self.grid,
            resolution=self.resolution,
            fine=self.fine,
            atom=self.atom,
            atom_count=self._pooled_atom_count()[:, None] if self.atom is not None else None,
        )

    def _pooled_atom_count(self) -> np.ndarray:
        """``[neuron]`` values equal to each neuron's atom, over every group (0 without one)."""
        if self.atom_count is None:
            return np.zeros(self.counts.shape[0], dtype=np.int64)
        return self.atom_count.sum(axis=1, dtype=np.int64)

    def pooled(self) -> Pooled:
        """All groups of this summary added together, one distribution per neuron."""
        with warnings.catch_warnings():
            # An empty group legitimately has no min: numpy's "All-NaN slice" is no news.
            warnings.simplefilter("ignore", RuntimeWarning)
            mins = np.nanmin(self.mins, axis=1, keepdims=True)
            maxs = np.nanmax(self.maxs, axis=1, keepdims=True)
        counts, lower, upper = self.counts.sum(axis=1, dtype=np.float64), self.lower, self.upper
        if self.fine is not None:
            counts, lower, upper = _refined(
                counts,
                lower,
                upper,
                self.resolution,
                mins[:, 0],
                maxs[:, 0],
                self.fine,
                self.grid,
            )
        counts, lower, upper = _atoms_at_extremes(
            counts, lower, upper,
            mins[:, 0], maxs[:, 0],
            _count_at_pooled(self.mins, self.min_count, mins)[:, 0],
            _count_at_pooled(self.maxs, self.max_count, maxs)[:, 0],
        )  # fmt: skip
        spread = None
        if self.atom is not None:
            split = _atoms_inside(
                counts, lower, upper, mins[:, 0], maxs[:, 0], self.atom, self._pooled_atom_count()
            )
            if split is not None:
                spread, (counts, lower, upper) = (counts, lower, upper), split
        return Pooled(
            counts=counts,
            lower=lower,
            upper=upper,
            mins=mins[:, 0].astype(np.float64),
            maxs=maxs[:, 0].astype(np.float64),
            nan=self.nan.sum(axis=1, dtype=np.float64),
            posinf=self.posinf.sum(axis=1, dtype=np.float64),
            neginf=self.neginf.sum(axis=1, dtype=np.float64),
            spread=spread,
        )

    @overload
    def quantile(
        self, q: float | np.ndarray | list[float], bounds: Literal[False] = False
    ) -> np.ndarray: ...

    @overload
    def quantile(
        self, q: float | np.ndarray | list[float], bounds: Literal[True]
    ) -> RankBounds: ...

    def quantile(
        self, q: float | np.ndarray | list[float], bounds: bool = False
    ) -> np.ndarray | RankBounds:
        """Quantiles with all groups pooled; see :meth:`Pooled.quantile`."""
        return self.pooled().quantile(q, bounds)  # type: ignore[call-overload]

    @overload
    def cdf(self, values: np.ndarray | float, bounds: Literal[False] = False) -> np.ndarray: ...

    @overload
    def cdf(self, values: np.ndarray | float, bounds: Literal[True]) -> RankBounds: ...

    def cdf(self, values: np.ndarray | float, bounds: bool = False) -> np.ndarray | RankBounds:
        """Quantile ranks with all groups pooled; see :meth:`Pooled.cdf`."""
        return self.pooled().cdf(values, bounds)  # type: ignore[call-overload]

    def rank_bound(self) -> np.ndarray:
        """Widest rank interval per neuron with all groups pooled; see :meth:`Pooled.rank_bound`."""
        return self.pooled().rank_bound()

    def group_rank_bounds(self) -> np.ndarray:
        """``[neuron, group]`` float32: :meth:`Pooled.rank_bound` of each group on its own.

        NaN for a group without values. A store holds this array for every layer.
        """
        # The same rule as widest_bins, in a pass a store write can afford over every count:
        # where every bin is one float32 wide (resolution 23) no bin spans several values.
        zero_bin = np.argmax((self.lower == 0) & (self.upper == 0), axis=1)
        fine = np.asarray(self.resolution) >= 23
        args = (
            self.counts, self.lower, self.upper, zero_bin, fine, self.mins, self.maxs,
            self.min_count, self.max_count,
        )  # fmt: skip
        # see _SMALL_CELLS
        numpy = self.counts.size <= _SMALL_CELLS and _KERNELS not in sys.modules
        widest = _widest_ranges(*args) if numpy else _kernels().widest_ranges(*args)
        total = self.totals[None, :] - self.nan  # the non-NaN values
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, widest / total, np.nan).astype(np.float32)

    def histogram(self, edges: np.ndarray) -> np.ndarray:
        """Re-binned counts with all groups pooled; see :meth:`Pooled.histogram`."""
        return self.pooled().histogram(edges)


def holds_every_row(
    groupings: Sequence[str] | None, n_groups: int, groups: np.ndarray | Sequence[int]
) -> bool:
    """Whether the groups of indices ``groups`` hold every row once or more: all the groups
    of one grouping (``groupings[i]``, group ``i``'s; None: one grouping of ``n_groups``)."""
    chosen = set(np.asarray(groups).tolist())
    kinds = tuple(groupings) if groupings is not None else ("",) * n_groups
    return any(all(i in chosen for i, g in enumerate(kinds) if g == kind) for kind in set(kinds))


def _refined(
    counts: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    resolution: np.ndarray,
    mins: np.ndarray,
    maxs: np.ndarray,
    fine: np.ndarray,
    grid: GridSpec,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bins ``[neuron, bin]`` with those the fine counts cover split into fine bins (see
    ``_kernels.fine.refine``), for the neurons whose grid is coarser than the fine bins."""
    n, width = counts.shape
    use = (np.asarray(resolution) < FINE_BITS) & ~np.isnan(mins)
    if not use.any():
        return counts, lower, upper
    out_counts = np.empty((n, width + fine.shape[-1] * 2), dtype=np.float64)
    out_lower = np.empty(out_counts.shape, dtype=np.float32)
    out_upper = np.empty(out_counts.shape, dtype=np.float32)
    _kernels().refine(
        counts, lower, upper, use, fine_keys(np.nan_to_num(mins)), fine_keys(np.nan_to_num(maxs)),
        np.ascontiguousarray(fine).reshape(n, -1).astype(np.float64), grid.exp_lo, grid.exp_hi,
        out_counts, out_lower, out_upper,
    )  # fmt: skip
    used = ~np.isnan(out_lower).all(axis=0)
    keep = int(np.flatnonzero(used).max(initial=-1)) + 1
    return out_counts[:, :keep], out_lower[:, :keep], out_upper[:, :keep]


def _count_at_pooled(extremes: np.ndarray, counts: np.ndarray, pooled: np.ndarray) -> np.ndarray:
    """``[neuron, 1]`` values equal to the pooled extreme ``pooled[neuron, 1]``: the counts of
    the groups whose extreme it is, added."""
    return np.where(extremes == pooled, counts, 0).sum(axis=1, keepdims=True, dtype=np.int64)


def _atoms_at_extremes(
    counts: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    mins: np.ndarray,
    maxs: np.ndarray,
    min_count: np.ndarray,
    max_count: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bins ``[neuron, bin]`` with the values equal to each neuron's min and max as bins of
    one value: ``(counts, lower, upper)``, two bins wider.

    A bin that holds an extreme and other values too gives up the ``min_count`` (or
    ``max_count``) values at the extreme to a point bin ``[min, min]`` just before it (or
    ``[max, max]`` just after it), and keeps its edges and the rest of its count, which the
    queries spread as before. Where a bin already holds one value (the zero bin, an exact
    summary) or there is nothing to split off, the two bins are padding at the end, so no
    bin loses a neighbour. Quantiles inside an atom at an extreme are then the atom itself,
    and the guaranteed rank intervals around it shrink to its own.

    Parameters
    ----------
    counts
        ``[neuron, bin]`` float64 counts; ``lower`` and ``upper`` its edges (float32).
    mins, maxs
        ``[neuron]`` exact min and max of the finite values, NaN where none.
    min_count, max_count
        ``[neuron]`` number of values equal to the min and to the max.
    """
    n, width = counts.shape
    rows = np.arange(n)
    filled = counts > 0
    has = filled.any(axis=1)
    first = np.where(has, np.argmax(filled, axis=1), 0)
    last = np.where(has, width - 1 - np.argmax(filled[:, ::-1], axis=1), 0)
    with np.errstate(invalid="ignore"):
        spread = (lower < upper) & ~_one_float32(lower, upper)  # bins that may hold several
        split_min = has & spread[rows, first] & (min_count > 0)
        split_max = has & spread[rows, last] & (max_count > 0) & (maxs != mins)
    # Where the two point bins go; where one is not needed it is padding at the end.
    at_min = first
    at_max = last + 1 + split_min
    inserted = np.zeros((n, width + 2), dtype=bool)
    inserted[rows[split_min], at_min[split_min]] = True
    inserted[rows[split_max], at_max[split_max]] = True
    padding = 2 - split_min.astype(np.int64) - split_max
    inserted[:, width + 1] |= padding >= 1
    inserted[:, width] |= padding == 2
    out_counts, out_lower, out_upper = _with_slots(counts, lower, upper, inserted)
    for split, slot, holder, value, count in (
        (split_min, at_min, at_min + 1, mins, min_count),
        (split_max, at_max, at_max - 1, maxs, max_count),
    ):
        r = rows[split]
        out_counts[r, slot[split]] = count[split]
        out_lower[r, slot[split]] = value[split]
        out_upper[r, slot[split]] = value[split]
        out_counts[r, holder[split]] -= count[split]
    return out_counts, out_lower, out_upper


def _atoms_inside(
    counts: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    mins: np.ndarray,
    maxs: np.ndarray,
    atom: np.ndarray,
    atom_count: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Bins ``[neuron, bin]`` with each atom inside a neuron's range as a bin of one value,
    two bins wider; None where no neuron has one to split out.

    The bin that holds the atom (one that may hold several values) becomes three: below the
    atom, the atom ``[atom, atom]`` with its exact count, and above it. The rest of the bin's
    count goes below and above in proportion to the widths, an estimate: the guarantees are
    read from the bins before the split (:attr:`Pooled.spread`). Neurons without an atom get
    two padding bins at the end. An atom at the min or the max is left to
    :func:`_atoms_at_extremes`, which has split it out already.

    Parameters
    ----------
    counts
        ``[neuron, bin]`` float64 counts; ``lower`` and ``upper`` its edges (float32).
    mins, maxs
        ``[neuron]`` exact min and max of the finite values, NaN where none.
    atom, atom_count
        ``[neuron]`` each neuron's atom (NaN: none) and the number of values equal to it.
    """
    n, width = counts.shape
    a = np.asarray(atom, dtype=np.float64)[:, None]
    c = np.asarray(atom_count, dtype=np.float64)
    lo, hi = lower.astype(np.float64), upper.astype(np.float64)
    with np.errstate(invalid="ignore"):  # NaN atoms, extremes and padding compare false
        inside = (c > 0) & (a[:, 0] > mins) & (a[:, 0] < maxs)
        # A positive bin [lower, upper) and a negative one (lower, upper] (see grid.py).
        holds = ((lo <= a) & (a < hi) & (hi > 0)) | ((lo < a) & (a <= hi) & (lo < 0))
        holds &= (counts > 0) & (lower < upper) & ~_one_float32(lower, upper)
    j = np.argmax(holds, axis=1)
    rows = np.arange(n)
    split = inside & holds.any(axis=1) & (counts[rows, j] >= c)
    if not split.any():
        return None
    inserted = np.zeros((n, width + 2), dtype=bool)
    inserted[rows[split], j[split] + 1] = True
    inserted[rows[split], j[split] + 2] = True
    inserted[~split, width:] = True
    out_counts, out_lower, out_upper = _with_slots(counts, lower, upper, inserted)
    r, at = rows[split], j[split]
    value, atoms = a[split, 0], c[split]
    left = np.maximum(lo[r, at], mins[split])
    right = np.minimum(hi[r, at], maxs[split])
    with np.errstate(invalid="ignore", divide="ignore"):
        below = np.where(right > left, (value - left) / (right - left), 0.5)
    rest = counts[r, at] - atoms
    out_counts[r, at] = rest * np.clip(below, 0.0, 1.0)
    out_upper[r, at] = value
    out_counts[r, at + 1] = atoms
    out_lower[r, at + 1] = value
    out_upper[r, at + 1] = value
    out_counts[r, at + 2] = rest - out_counts[r, at]
    out_lower[r, at + 2] = value
    out_upper[r, at + 2] = upper[r, at]
    return out_counts, out_lower, out_upper


def _with_slots(
    counts: np.ndarray, lower: np.ndarray, upper: np.ndarray, inserted: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bins ``[neuron, bin]`` widened to ``inserted``'s shape: empty slots (no count, NaN
    edges) where it is true, each row's bins in order in the others."""
    width = counts.shape[1]
    if not width:
        return (
            np.zeros(inserted.shape),
            np.full(inserted.shape, np.nan, np.float32),
            np.full(inserted.shape, np.nan, np.float32),
        )
    src = np.clip(np.cumsum(~inserted, axis=1) - 1, 0, width - 1)
    out_counts = np.take_along_axis(counts, src, axis=1)
    out_lower = np.take_along_axis(lower, src, axis=1)
    out_upper = np.take_along_axis(upper, src, axis=1)
    out_counts[inserted] = 0.0
    out_lower[inserted] = np.nan
    out_upper[inserted] = np.nan
    return out_counts, out_lower, out_upper


def _one_float32(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Bins one float32 step wide (see ``_kernels.queries._single_value``): one value."""
    lo32, hi32 = lower.astype(np.float32), upper.astype(np.float32)
    with np.errstate(over="ignore"):  # the step past float32 max is +Inf, as it should be
        pos = (upper > 0) & (np.nextafter(lo32, np.float32(np.inf)) == hi32)
        neg = (lower < 0) & (np.nextafter(hi32, np.float32(-np.inf)) == lo32)
    return pos | neg


def _widest_ranges(
    counts: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    zero_bin: np.ndarray,
    fine: np.ndarray,
    mins: np.ndarray,
    maxs: np.ndarray,
    min_count: np.ndarray,
    max_count: np.ndarray,
) -> np.ndarray:
    """NumPy twin of ``_kernels.widest_ranges`` (the same rule; a test checks they agree)."""
    counts = _less_extreme_atoms(counts, min_count, max_count)
    n_neurons, n_groups, n_bins = counts.shape
    lo, hi = mins[:, :, None], maxs[:, :, None]
    # A bin with values spans several unless clipping it to the group's range leaves a point.
    spans = (lower[:, None, :] < hi) & (upper[:, None, :] > lo)
    spans &= np.arange(n_bins)[None, None, :] != zero_bin[:, None, None]
    spans &= ~np.asarray(fine, dtype=bool)[:, None, None]
    with np.errstate(invalid="ignore"):
        spans &= lo < hi  # one distinct finite value, or none (NaN)
    if n_bins == 0:
        return np.zeros((n_neurons, n_groups), dtype=np.float64)
    return np.where(spans, counts, 0).max(axis=2).astype(np.float64)


def _less_extreme_atoms(
    counts: np.ndarray, min_count: np.ndarray, max_count: np.ndarray
) -> np.ndarray:
    """``counts [neuron, group, bin]`` less the values at each (neuron, group)'s min and max,
    taken from its first and last bins with values (where the group has one distinct value,
    the rule of :func:`_widest_ranges` reads no bin at all)."""
    filled = counts > 0
    has = filled.any(axis=2)
    nn, gg = np.nonzero(has)
    first = np.argmax(filled, axis=2)[nn, gg]
    last = counts.shape[2] - 1 - np.argmax(filled[:, :, ::-1], axis=2)[nn, gg]
    out = counts.astype(np.float64)
    out[nn, gg, first] = np.maximum(out[nn, gg, first] - min_count[nn, gg], 0.0)
    out[nn, gg, last] = np.maximum(out[nn, gg, last] - max_count[nn, gg], 0.0)
    return out
