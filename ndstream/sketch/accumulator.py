"""The streaming accumulator: create / update / merge / finalize.

A :class:`LayerSketch` holds, for every (neuron, group) of one layer, counts on the log-linear
grid of :mod:`ndstream.sketch.grid`, the exact min and max of the finite values with the number
of values equal to each, the number equal to the neuron's atom inside its range where the run
chose one (:meth:`LayerSketch.track_atoms`, see :mod:`ndstream.sketch.atoms`), and counts of
exact zeros, NaN, +Inf and -Inf. The group is an axis of the arrays, not a separate object.

Fine counts: where the groups have the budget of one group (:attr:`SketchSpec.keeps_fine`),
each neuron also counts its values, every row once, in 512 bins at 4,096 bins per octave next
to its min and next to its max over all groups (``grid.FINE_BITS``), anchored at the fine key
of each extreme. When the min falls, its row slides down and drops what is now too far above
it; a value inside the final row was inside it when it came, so the row holds the exact counts
of the values in its bins, whatever the order and split of the data, and two rows merge once
aligned on the lower min (the higher max). They serve the pooled answers, whose extremes they
share; a group's own answers read its bins.

Memory: each neuron keeps a window of consecutive grid keys per sign, just wide enough for the
keys it has seen, at its own resolution; the window width is shared by the layer and bounded
by the bin budget (:meth:`GridSpec.bins_budget`, 64 to 1,024 per sign), because a neuron that
would span more coarsens. The budget is sized from the groups that hold data
(:meth:`SketchSpec.budget`): it shrinks as groups arrive, and the neurons that no longer fit
coarsen then, so a neuron's resolution is the finest at which all its data fits the budget of
all the groups that saw data, whatever the order.

Pooled answers: many groups leave each (neuron, group) few bins. A layer whose groups would
cost it resolution (:attr:`SketchSpec.keeps_pooled`) also keeps a sketch of every row once, at
the budget of one group, so that :meth:`LayerSketch.pooled_summary` is as accurate with 1,000
groups as with one; it costs a second update of the same rows. A (neuron, group) gets its row of counters (a *page*) only when it
first sees a value, so groups a neuron never sees cost the 4-byte page index and 8 bytes of
min and max. Counters start as uint16 and widen to uint32 and uint64 only when a group's value
count could overflow them. A ReLU layer with a 64-bin budget costs about
``(4 + 64..128) * 2 + 12`` bytes per (neuron, group).

Few values: until each neuron has seen more values than its exact budget
(:meth:`SketchSpec.budget`), the sketch keeps them all (each batch as it came, with its group
ids) and its summary lists every distinct value as its own bin at the finest resolution; the
first update past that folds them onto the windows. Which form the state takes depends only on
the data: how many values there are, in how many groups.

Determinism: merging is integer addition plus min/max, and a neuron's resolution is the finest
at which all its data fits the budget, so the finalized
:class:`~ndstream.sketch.summary.Summary` is bit-identical for any split, order or batching of
the same data, given the same atom candidates (an ingest takes them from its first samples,
the same for any batch size or number of ranks). Window placement and counter width may differ
between such runs; they are not part of the finalized form, and :meth:`LayerSketch.from_summary` rebuilds a sketch from that
form alone, so a run can stop, keep only its store, and go on.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import SpecMismatchError
from . import _kernels as k
from .atoms import NO_ATOM
from .fine import add_realigned
from .grid import FINE_BINS, FINE_BITS, GridSpec, fine_keys
from .summary import POOLED_GROUP, Summary, holds_every_row

__all__ = ["POOLED_GROUP", "LayerSketch", "SketchSpec", "update_threads"]


_COUNTER_DTYPES: tuple[np.dtype[Any], ...] = (
    np.dtype(np.uint16),
    np.dtype(np.uint32),
    np.dtype(np.uint64),
)
_COUNTER_MAX = tuple(int(np.iinfo(d).max) for d in _COUNTER_DTYPES)


def _counter_dtype(most: int) -> np.dtype[Any]:
    """The narrowest counter dtype that holds a count of ``most``."""
    for dtype, top in zip(_COUNTER_DTYPES, _COUNTER_MAX, strict=True):
        if most <= top:
            return dtype
    raise OverflowError("more than 2**64 values in one group")  # pragma: no cover


def update_threads(n: int) -> None:
    """Let :meth:`LayerSketch.update` calls from the calling thread use at most ``n`` threads.

    Updates spread a layer's neurons over Numba's threads (``NUMBA_NUM_THREADS``, all cores
    by default). The setting belongs to the calling thread, as Numba's does.

    Parameters
    ----------
    n
        At least 1; more than ``NUMBA_NUM_THREADS`` counts as that many.
    """
    k.set_threads(n)


@dataclass(frozen=True)
class SketchSpec:
    """What must agree for two sketches to merge.

    Parameters
    ----------
    n_neurons
        Width of the layer.
    groups
        Names along the group axis.
    grid
        The binning rule.
    """

    n_neurons: int
    groups: tuple[str, ...]
    grid: GridSpec = field(default_factory=GridSpec)
    groupings: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.n_neurons < 1:
            raise ValueError(f"a layer needs at least one neuron, got n_neurons={self.n_neurons}")
        if not self.groups:
            raise ValueError("a sketch needs at least one group")
        if len(set(self.groups)) != len(self.groups):
            raise ValueError(f"group names must be unique, got {list(self.groups)}")
        if self.groupings is not None and len(self.groupings) != len(self.groups):
            raise ValueError(
                f"groupings names the grouping of each group: {len(self.groupings)} names "
                f"for {len(self.groups)} groups"
            )

    def budget(self, totals: np.ndarray) -> tuple[int, int]:
        """Bin budget and exact-value budget of a sketch whose groups hold ``totals`` values.

        Only groups that hold data count (see :meth:`GridSpec.bins_budget`): the budgets
        shrink as groups arrive, and are a function of the data, not of the group axis.
        """
        return _budgets(self.grid, self.n_neurons, max(1, int(np.count_nonzero(totals))))

    @functools.cached_property
    def first_grouping(self) -> np.ndarray:
        """Indices of the groups of the first grouping: every row counts in one of them once."""
        if self.groupings is None:
            return np.arange(len(self.groups))
        first = self.groupings[0]
        return np.array([i for i, g in enumerate(self.groupings) if g == first], dtype=np.intp)

    @functools.cached_property
    def n_groupings(self) -> int:
        """Number of groupings: columns of group ids an update gives (one without names)."""
        return len(set(self.groupings)) if self.groupings is not None else 1

    def holds_every_row(self, groups: np.ndarray) -> bool:
        """Whether groups ``groups`` (indices) hold every row: all of one grouping's groups."""
        return holds_every_row(self.groupings, len(self.groups), groups)

    @functools.cached_property
    def keeps_pooled(self) -> bool:
        """Whether a sketch keeps a pooled sketch of its own beside the groups.

        Only when its groups could cost the layer resolution: the budget that every group
        holding data would leave is below the budget of one group. Otherwise the groups of
        the first grouping, added up, already are the pooled sketch at full resolution.
        """
        grid = self.grid
        return grid.bins_budget(self.n_neurons, len(self.groups)) < grid.bins_budget(
            self.n_neurons, 1
        )

    @functools.cached_property
    def keeps_fine(self) -> bool:
        """Whether each neuron keeps fine counts next to its min and max over every row.

        Where the groups have the budget of one group (:attr:`keeps_pooled` is false): the
        pooled answers then come from the groups, and the pooled sketch keeps them otherwise.
        With a small bin budget (``max_bins`` set, or a very wide layer), not: the fine
        counts would outnumber a group's bins. And only on a grid whose finest bins nest in
        the fine ones, so that the values an exact summary stands for fall in the fine bins
        of the values seen.
        """
        return (
            not self.keeps_pooled
            and self.grid.mantissa_bits >= FINE_BITS
            and self.grid.bins_budget(self.n_neurons, len(self.groups)) >= 2 * FINE_BINS
        )

    @functools.cached_property
    def pooled(self) -> SketchSpec:
        """The spec of the pooled sketch: one group, :data:`POOLED_GROUP`, every row once."""
        return SketchSpec(self.n_neurons, (POOLED_GROUP,), self.grid)

    def diff(self, other: SketchSpec) -> list[str]:
        """Human-readable differences between two specs (empty when equal)."""
        out = _diff(self, other.n_neurons, other.groups, other.grid)
        if self.groupings != other.groupings:
            out.append(f"groupings {_brief(self.groupings)} != {_brief(other.groupings)}")
        return out


@functools.lru_cache(maxsize=1024)  # read on every update: a dict lookup, not the rule
def _budgets(grid: GridSpec, n_neurons: int, n_groups: int) -> tuple[int, int]:
    return grid.bins_budget(n_neurons, n_groups), grid.exact_budget(n_neurons, n_groups)


def _diff(spec: SketchSpec, n_neurons: int, groups: tuple[str, ...], grid: GridSpec) -> list[str]:
    pairs = (
        ("n_neurons", spec.n_neurons, n_neurons),
        ("groups", spec.groups, groups),
        ("grid", spec.grid, grid),
    )
    return [f"{what} {_brief(a)} != {_brief(b)}" for what, a, b in pairs if a != b]


def _brief(value: object) -> str:
    """A value for an error message; long group lists show their length and first names."""
    if isinstance(value, tuple) and len(value) > 8:
        return f"{list(value[:7])} and {len(value) - 7} more"
    return str(list(value) if isinstance(value, tuple) else value)


def _union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.empty_like(a)
    out[:, 0::2] = np.minimum(a[:, 0::2], b[:, 0::2])
    out[:, 1::2] = np.maximum(a[:, 1::2], b[:, 1::2])
    return out


def _widths(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bins spanned per neuron by key ranges ``r`` (pos lo, pos hi, neg lo, neg hi)."""
    return (
        np.where(r[:, 1] >= 0, r[:, 1] - r[:, 0] + 1, 0),
        np.where(r[:, 3] >= 0, r[:, 3] - r[:, 2] + 1, 0),
    )


def _coarsen_ranges(grid: GridSpec, r: np.ndarray, m: np.ndarray, to: np.ndarray) -> np.ndarray:
    """Key ranges at per-neuron resolutions ``m`` expressed at ``to``; empty ranges stay empty."""
    out = r.copy()
    for lo, hi in ((0, 1), (2, 3)):
        full = r[:, hi] >= 0
        out[full, lo] = grid.coarsen(r[full, lo], m[full], to[full])
        out[full, hi] = grid.coarsen(r[full, hi], m[full], to[full])
    return out


def _fit_resolution(
    grid: GridSpec, r: np.ndarray, m: np.ndarray, max_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron, the finest resolution ``<= m`` at which its key ranges fit ``max_bins``."""
    r, m = r.copy(), m.copy()
    while True:
        width_p, width_n = _widths(r)
        over = (np.maximum(width_p, width_n) > max_bins) & (m > grid.min_mantissa_bits)
        if not over.any():
            return r, m
        r[over] = _coarsen_ranges(grid, r[over], m[over], m[over] - 1)
        m[over] -= 1


class LayerSketch:
    """Mergeable distribution sketch of one layer, indexed by (neuron, group).

    Parameters
    ----------
    spec
        Neurons, groups and grid. The new sketch is empty (the identity of :meth:`merge`).
    """

    def __init__(self, spec: SketchSpec) -> None:
        n, g = spec.n_neurons, len(spec.groups)
        self.spec = spec
        self.page = np.full((n, g), -1, dtype=np.int32)
        self.pool = np.zeros((0, k.N_SPECIAL), dtype=_COUNTER_DTYPES[0])
        self.n_pages = 0
        self.mins = np.full((n, g), np.inf, dtype=np.float32)
        self.maxs = np.full((n, g), -np.inf, dtype=np.float32)
        # Values equal to the min and to the max, so that an atom at an extreme (a clipped
        # activation, a bias reached whenever a unit's input is dead) stays exact. As narrow
        # as the counters: they never exceed a group's total.
        self.min_count = np.zeros((n, g), dtype=_COUNTER_DTYPES[0])
        self.max_count = np.zeros((n, g), dtype=_COUNTER_DTYPES[0])
        # Each neuron's atom inside its range, if the run chose one (track_atoms), and the
        # values equal to it per group: counted on the grid only, as the exact form keeps
        # every value anyway (finalize counts them there).
        self.atom = np.full(n, NO_ATOM, dtype=np.float32)
        self.atom_count = np.zeros((n, g), dtype=_COUNTER_DTYPES[0])
        # Fine counts next to each neuron's min and max over every row (grid.FINE_BITS), a
        # row per neuron: a pile-up against an extreme is read from exact counts at the
        # resolution it needs. As narrow as the rows seen allow.
        self.fine = np.zeros((n, 2 * FINE_BINS if spec.keeps_fine else 0), _COUNTER_DTYPES[0])
        self.neuron_min = np.full(n, np.inf, dtype=np.float32)
        self.neuron_max = np.full(n, -np.inf, dtype=np.float32)
        # They count a row once; the groups count it once per column of group ids. With more
        # columns than the spec has groupings no set of groups holds each row once, and the
        # fine counts could never be read beside them: they are dropped.
        self.fine_whole = True
        self.totals = np.zeros(g, dtype=np.int64)
        self.pos_off = np.zeros(n, dtype=np.int32)
        self.neg_off = np.zeros(n, dtype=np.int32)
        self.wp = 0
        # Each neuron's resolution: the finest its data allows, see grid.py.
        self.res = np.full(n, spec.grid.mantissa_bits, dtype=np.int32)
        # Bins per sign a neuron may span: sized from the groups holding data, so it only
        # shrinks (see SketchSpec.budget); every neuron's data fits it at all times.
        self.max_bins = spec.budget(self.totals)[0]
        # Beside the groups, a sketch of every row once at the budget of one group, when the
        # groups would cost resolution: pooled answers then do not depend on the group count.
        self.pooled = LayerSketch(spec.pooled) if spec.keeps_pooled else None
        self._axes: tuple[Any, ...] | None = None  # finalize's bin axes, until the next update
        # Exact mode: (values [rows, neuron], group ids [rows, groupings]) as they came.
        self.exact = True
        self._kept: list[tuple[np.ndarray, np.ndarray]] = []

    @classmethod
    def from_summary(
        cls, summary: Summary, spec: SketchSpec, pooled: Summary | None = None
    ) -> LayerSketch:
        """The sketch whose :meth:`finalize` is ``summary``, ready to take more data.

        Updating it, or merging it, gives the same result, bit for bit, as if the data
        behind ``summary`` had been streamed into it: this is how a stopped ingest resumes
        from its store, and how stores of separate runs over disjoint data can be merged.

        Parameters
        ----------
        summary
            A finalized summary with every group of ``spec`` (as a store holds it).
        spec
            The spec the summary was made with.
        pooled
            The sketch's :meth:`pooled_summary`; needed when the spec keeps a pooled sketch
            (:attr:`SketchSpec.keeps_pooled`), ignored otherwise.

        Raises
        ------
        SpecMismatchError
            If the summary's neurons, groups or grid are not those of ``spec``.
        ValueError
            If the spec keeps a pooled sketch and ``pooled`` is not given.
        """
        n = int(summary.counts.shape[0])
        diff = _diff(spec, n, tuple(summary.groups), summary.grid)
        if diff:
            raise SpecMismatchError(
                "the summary does not match the spec (spec first): " + "; ".join(diff)
                + ". Pass a summary of every group (a store's summary(layer, group=range(n))) "
                "and the spec of the layer, groups and grid it was made with."
            )  # fmt: skip
        if spec.keeps_pooled and pooled is None:
            raise ValueError(
                "this layer keeps a pooled sketch beside its groups: pass its pooled summary "
                "too (LayerSketch.pooled_summary(), or a store's summary(layer))"
            )
        grid = spec.grid
        sketch = cls(spec)
        if sketch.pooled is not None:
            sketch.pooled = cls.from_summary(pooled, spec.pooled)  # type: ignore[arg-type]
        sketch.totals = np.asarray(summary.totals, dtype=np.int64).copy()
        sketch.max_bins, exact_values = spec.budget(sketch.totals)
        finite = ~np.isnan(summary.mins)
        sketch.mins = np.where(finite, summary.mins, np.inf).astype(np.float32)
        sketch.maxs = np.where(finite, summary.maxs, -np.inf).astype(np.float32)
        dtype = _counter_dtype(int(sketch.totals.max(initial=0)))
        sketch.min_count = np.asarray(summary.min_count).astype(dtype)
        sketch.max_count = np.asarray(summary.max_count).astype(dtype)
        if summary.atom is not None:
            sketch.atom = np.asarray(summary.atom, dtype=np.float32).copy()
        if int(sketch.totals.sum()) <= exact_values:
            sketch._kept = _values_of(summary)
            return sketch
        sketch.exact = False
        res = np.asarray(summary.resolution, dtype=np.int32)
        lower, upper = summary.lower, summary.upper
        n_neg = np.argmax((lower == 0) & (upper == 0), axis=1)  # the zero bin's index
        n_pos = (~np.isnan(lower)).sum(axis=1) - n_neg - 1
        rows = np.arange(n)
        first_pos = np.minimum(n_neg + 1, lower.shape[1] - 1)
        pos_lo = grid.keys(np.where(n_pos > 0, lower[rows, first_pos], 0.0), res)
        # The first bin of a neuron with negatives is its largest magnitude; its upper edge
        # is minus that bin's lower magnitude edge.
        neg_top = grid.keys(np.where(n_neg > 0, -upper[:, 0], 0.0), res)
        sketch.res = res.copy()
        sketch.pos_off = np.where(n_pos > 0, pos_lo, 0).astype(np.int32)
        sketch.neg_off = np.where(n_neg > 0, neg_top - n_neg + 1, 0).astype(np.int32)
        sketch.wp = int(n_pos.max(initial=0))
        wn = int(n_neg.max(initial=0))
        seen = np.broadcast_to(sketch.totals > 0, sketch.page.shape)
        sketch.n_pages = int(seen.sum())
        sketch.page[seen] = np.arange(sketch.n_pages, dtype=np.int32)
        sketch._ensure_width(int(sketch.totals.max(initial=0)))
        sketch.pool = np.zeros(
            (sketch.n_pages, k.N_SPECIAL + sketch.wp + wn), dtype=sketch.pool.dtype
        )
        k.undensify(
            summary.counts, summary.nan, summary.posinf, summary.neginf, sketch.page,
            n_neg.astype(np.int64), n_pos.astype(np.int64), sketch.wp, sketch.pool,
        )  # fmt: skip
        sketch._set_neuron_extremes()
        if summary.atom_count is not None:
            sketch.atom_count = np.asarray(summary.atom_count).astype(dtype)
        # A summary without them (of a sketch that lost them, see fine_whole) gives none.
        sketch.fine_whole = summary.fine is not None
        if sketch.fine.shape[1] and summary.fine is not None:
            sketch.fine = summary.fine.reshape(n, -1).astype(sketch._fine_dtype())
        return sketch

    def _set_neuron_extremes(self) -> None:
        """Each neuron's min and max over every row, the anchors of its fine counts, from
        those of its groups (each row is in a group of every grouping)."""
        self.neuron_min = self.mins.min(axis=1, initial=np.inf)
        self.neuron_max = self.maxs.max(axis=1, initial=-np.inf)

    def _fine_dtype(self, rows: int | None = None) -> np.dtype[Any]:
        """The fine counts' dtype: one that holds every row seen (``rows``, by default the
        rows so far)."""
        if rows is None:
            rows = int(self.totals[self.spec.first_grouping].sum())
        return _counter_dtype(rows)

    def track_atoms(self, candidates: np.ndarray) -> None:
        """Count, in every group, the values equal to each neuron's atom ``candidates[n]``.

        A value that many samples share inside a neuron's range is then read as that one
        value, not spread over its bin (see :mod:`ndstream.sketch.atoms`). Call it before
        the first update, with the same candidates on every sketch of a run
        (:func:`~ndstream.sketch.atoms.atom_candidates` of the run's first samples): a count
        that starts late is not a count, and sketches that count different values merge
        without them.

        Parameters
        ----------
        candidates
            ``[neuron]`` finite nonzero values, NaN for a neuron without one.

        Raises
        ------
        ValueError
            If the sketch has seen data, or a candidate is zero or infinite.
        """
        c = np.asarray(candidates, dtype=np.float32)
        if c.shape != (self.spec.n_neurons,):
            raise ValueError(
                f"expected one candidate per neuron, shape [{self.spec.n_neurons}], got "
                f"{list(c.shape)}"
            )
        if np.any(np.isinf(c) | (c == 0)):
            raise ValueError(
                "atom candidates must be finite and nonzero (exact zeros and the infinities "
                "are counted apart already); give NaN for a neuron without one"
            )
        if self.totals.any():
            raise ValueError(
                "a sketch counts its atoms from its first value: call track_atoms before "
                "the first update"
            )
        self.atom = c.copy()
        if self.pooled is not None:
            self.pooled.track_atoms(c)

    def _atom_bits(self) -> np.ndarray:
        """Each neuron's atom as float32 bits (``int32``), 0 where it has none: the update
        kernel compares bits, and counts no zero there."""
        return np.where(np.isnan(self.atom), np.float32(0), self.atom).view(np.int32)

    def _atom_counts(self) -> np.ndarray:
        """``[neuron, group]`` int64 values equal to each neuron's atom: counted on the grid,
        and from the values themselves while they are kept exactly."""
        if not self.exact:
            return self.atom_count.astype(np.int64)
        n, n_groups = self.spec.n_neurons, len(self.spec.groups)
        flat = np.zeros(n * n_groups, dtype=np.int64)
        for x, gids in self._kept:
            rows, neurons = np.nonzero(x == self.atom)  # NaN: no atom, equal to nothing
            for p in range(gids.shape[1]):
                flat += np.bincount(neurons * n_groups + gids[rows, p], minlength=flat.size)
        return flat.reshape(n, n_groups)

    # -- state -------------------------------------------------------------------------------

    @property
    def wn(self) -> int:
        """Width of the negative windows."""
        return self.pool.shape[1] - k.N_SPECIAL - self.wp

    @property
    def nbytes(self) -> int:
        """Bytes held by the state arrays (allocated, not only used)."""
        arrays = (
            self.page, self.pool, self.mins, self.maxs, self.min_count, self.max_count,
            self.atom, self.atom_count, self.fine, self.neuron_min, self.neuron_max,
            self.totals, self.pos_off, self.neg_off, self.res,
        )  # fmt: skip
        kept = sum(x.nbytes + gids.nbytes for x, gids in self._kept)
        pooled = self.pooled.nbytes if self.pooled is not None else 0
        return sum(a.nbytes for a in arrays) + kept + pooled

    def _occupied(self, neurons: np.ndarray | None = None) -> np.ndarray:
        """Key ranges ``[neuron, 4]`` (pos lo, pos hi, neg lo, neg hi) with nonzero counts."""
        idx = np.arange(self.spec.n_neurons) if neurons is None else neurons
        out = np.empty((idx.size, 4), dtype=np.int32)
        k.occupied_key_ranges(
            self.pool, self.page, idx.astype(np.intp), self.pos_off, self.neg_off, self.wp, out
        )
        return out

    # -- update ------------------------------------------------------------------------------

    def update(self, x: np.ndarray, group_ids: np.ndarray) -> None:
        """Fold a batch into the sketch.

        Parameters
        ----------
        x
            ``[rows, neuron]`` activations; converted to C-contiguous float32.
        group_ids
            ``[rows]`` or ``[rows, groupings]`` integer indices into the group axis. A row
            counts once in each of its groups.
        """
        self._axes = None
        x = np.ascontiguousarray(x, dtype=np.float32)
        gids = np.asarray(group_ids)
        if gids.ndim == 0:
            raise ValueError("group_ids must hold one group id per row, not a scalar")
        if gids.ndim == 1:
            gids = gids[:, None]
        gids = np.ascontiguousarray(gids, dtype=np.intp)
        n, n_groups = self.spec.n_neurons, len(self.spec.groups)
        if x.ndim != 2 or x.shape[1] != n:
            raise ValueError(f"expected activations of shape [rows, {n}], got {list(x.shape)}")
        if gids.ndim != 2 or gids.shape[0] != x.shape[0]:
            raise ValueError(f"{gids.shape[0]} group ids for {x.shape[0]} rows")
        if x.shape[0] == 0:
            return
        if gids.min() < 0 or gids.max() >= n_groups:
            raise ValueError(
                f"group ids must lie in [0, {n_groups}), got [{gids.min()}, {gids.max()}]"
            )
        totals = self.totals + np.bincount(gids.ravel(), minlength=n_groups).astype(np.int64)
        if gids.shape[1] > self.spec.n_groupings:
            self.fine_whole = False
        max_bins, exact_values = self.spec.budget(totals)
        self._fit_extreme_counts(int(totals.max()))
        fine_dtype = self._fine_dtype(int(totals[self.spec.first_grouping].sum()))
        if fine_dtype.itemsize > self.fine.dtype.itemsize:
            self.fine = self.fine.astype(fine_dtype)
        if self.exact and int(totals.sum()) <= exact_values:
            self._keep(x, gids)
        else:
            self._ensure_width(int(totals.max()))
            if self.exact:
                self.max_bins = max_bins
                self._fold_kept(upcoming=x)
            elif max_bins < self.max_bins:
                self._shrink_budget(max_bins)
            self._fold(x, gids)
        self.totals = totals
        if self.pooled is not None:
            self.pooled.update(x, np.zeros(x.shape[0], dtype=np.intp))

    def _shrink_budget(self, max_bins: int) -> None:
        """Coarsen the neurons that span more than a new, smaller budget (new groups came).

        Bins nest, so this is exact; a neuron's resolution stays the finest at which all its
        data fits the budget of the groups seen so far.
        """
        self.max_bins = max_bins
        occupied = self._occupied()
        width_p, width_n = _widths(occupied)
        over = (np.maximum(width_p, width_n) > max_bins) & (
            self.res > self.spec.grid.min_mantissa_bits
        )
        moved = np.flatnonzero(over).astype(np.intp)
        if moved.size:
            self._refit(moved, occupied[moved])

    def _keep(self, x: np.ndarray, gids: np.ndarray) -> None:
        """Exact mode: keep a copy of the batch (the caller may reuse its buffers)."""
        x, gids = x.copy(), gids.copy()
        k.fold_min_max(x, gids, self.mins, self.maxs, self.min_count, self.max_count)
        self._kept.append((x, gids))

    def _fold_kept(self, upcoming: np.ndarray | None = None) -> None:
        """Leave exact mode: fold every kept value onto the grid (totals are already counted).

        The windows are placed once, around the kept values and ``upcoming`` (the batch to be
        folded next): placed batch by batch, they would move again for nearly every batch.
        """
        kept, self._kept, self.exact = self._kept, [], False
        batches = [x for x, _ in kept] + ([upcoming] if upcoming is not None else [])
        if batches:
            every = np.arange(self.spec.n_neurons, dtype=np.intp)
            ranges = [self._batch_ranges(x, every) for x in batches]
            self._refit(every, functools.reduce(_union, ranges))
        # Values rebuilt from a summary stand for their bins, not for the exact min and max.
        extremes = (self.mins.copy(), self.maxs.copy(), self.min_count.copy(),
                    self.max_count.copy())  # fmt: skip
        for x, gids in kept:
            self._fold(x, gids)
        # The fine counts stay anchored: a value rebuilt from a summary lies in the fine bin of
        # the value it stands for, as the summary's bins are finer (SketchSpec.keeps_fine).
        self.mins, self.maxs, self.min_count, self.max_count = extremes
        self._set_neuron_extremes()

    def _folded(self) -> LayerSketch:
        """This sketch out of exact mode: itself, or a folded copy."""
        if not self.exact:
            return self
        out = LayerSketch(self.spec)
        out.pooled = None  # only the groups are folded here
        out._kept = list(self._kept)
        out.fine_whole = self.fine_whole
        out.mins, out.maxs, out.totals = self.mins.copy(), self.maxs.copy(), self.totals.copy()
        out.min_count, out.max_count = self.min_count.copy(), self.max_count.copy()
        out.atom = self.atom
        out._fit_extreme_counts(int(out.totals.max(initial=0)))
        out.max_bins = self.spec.budget(out.totals)[0]
        out._ensure_width(int(out.totals.max(initial=0)))
        out._fold_kept()
        return out

    def _fold(self, x: np.ndarray, gids: np.ndarray) -> None:
        """Add a batch to the windows (counts, min and max; not the totals)."""
        n, n_groups = self.spec.n_neurons, len(self.spec.groups)
        row_group, seg_group = k.plan_groups(gids, n_groups)
        self._ensure_pages(k.new_pages_needed(self.page, seg_group))
        self.n_pages = k.assign_pages(self.page, seg_group, self.n_pages)

        grid = self.spec.grid
        missed = np.zeros(n, dtype=np.bool_)
        neurons = np.arange(n, dtype=np.intp)
        for _ in range(2):  # the second pass only re-runs neurons whose windows had to grow
            n_missed = k.update_counts(
                x, row_group, seg_group, neurons, self.pool, self.page,
                self.mins, self.maxs, self.min_count, self.max_count, self._atom_bits(),
                self.atom_count, self.fine,
                self.neuron_min, self.neuron_max, self.pos_off, self.neg_off,
                self.wp, self.res, grid.exp_lo, grid.exp_hi, self.max_bins,
                grid.min_mantissa_bits, missed,
            )  # fmt: skip
            if n_missed == 0:
                break
            neurons = np.flatnonzero(missed).astype(np.intp)
            self._refit(neurons, _union(self._occupied(neurons), self._batch_ranges(x, neurons)))
            missed[:] = False
        else:  # pragma: no cover - the grown windows hold every key by construction
            raise AssertionError("sketch windows failed to grow")

    def _batch_ranges(self, x: np.ndarray, neurons: np.ndarray) -> np.ndarray:
        """Key ranges ``[neuron, 4]`` of the batch ``x`` for ``neurons``, at their resolutions."""
        out = np.empty((neurons.size, 4), dtype=np.int32)
        grid = self.spec.grid
        k.batch_key_ranges(x, neurons, self.res, grid.exp_lo, grid.exp_hi, out)
        return out

    @property
    def count_dtype(self) -> np.dtype[Any]:
        """Dtype of finalized counts: the narrowest unsigned type that holds every count.

        It is chosen from the data (the largest group), not from this run's counter
        history, so it is the same however the data was split.
        """
        return _counter_dtype(int(self.totals.max(initial=0)))

    def _fit_extreme_counts(self, max_total: int) -> None:
        """Widen the counts at the min, the max and the atom before they could pass their
        maximum."""
        dtype = _counter_dtype(max_total)
        if dtype.itemsize > self.min_count.dtype.itemsize:
            self.min_count = self.min_count.astype(dtype)
            self.max_count = self.max_count.astype(dtype)
            self.atom_count = self.atom_count.astype(dtype)

    def _ensure_width(self, max_total: int) -> None:
        """Widen the counters before any (neuron, group) could pass their maximum."""
        dtype = _counter_dtype(max_total)
        if dtype.itemsize > self.pool.dtype.itemsize:
            self.pool = self.pool.astype(dtype)

    def _ensure_pages(self, new: int) -> None:
        """Make room in the pool for ``new`` more pages."""
        need = self.n_pages + new
        if need <= self.pool.shape[0]:
            return
        # Grow by a quarter at least, so appends are amortised without doubling the peak.
        limit = self.page.size
        capacity = min(limit, max(need, self.pool.shape[0] + self.pool.shape[0] // 4))
        pool = np.zeros((capacity, self.pool.shape[1]), dtype=self.pool.dtype)
        pool[: self.n_pages] = self.pool[: self.n_pages]
        self.pool = pool

    def _refit(self, moved: np.ndarray, need_moved: np.ndarray) -> None:
        """Re-place the windows of neurons ``moved`` so they hold key ranges ``need_moved``.

        A moved neuron whose range would span more than the budget coarsens first. Only the
        layer-wide window widths need every neuron's ranges, and those are known from the
        current widths, which already hold every other neuron.
        """
        grid, budget = self.spec.grid, self.max_bins
        res = self.res.copy()
        need, res[moved] = _fit_resolution(grid, need_moved, res[moved], budget)
        width_p, width_n = _widths(need)

        def grown(width: int, current: int) -> int:
            if width <= current:
                return current
            # Double, so a layer's windows are rebuilt a handful of times at most; but never
            # past the budget, which coarsening keeps every neuron within.
            return min(max(2 * width, width + 8), max(budget, width))

        wp, wn = grown(int(width_p.max()), self.wp), grown(int(width_n.max()), self.wn)
        pos_off, neg_off = self.pos_off.copy(), self.neg_off.copy()
        # Centre each window on its keys: activations drift both ways as data arrives. A
        # neuron that can still coarsen is centred in the first `budget` slots, all it may
        # use (see k.update_counts).
        for off, lo, width, w in ((pos_off, 0, width_p, wp), (neg_off, 2, width_n, wn)):
            has = width > 0
            room = np.where(res[moved[has]] > grid.min_mantissa_bits, min(w, budget), w)
            off[moved[has]] = need[has, lo] - (room - width[has]) // 2
        if (wp, wn) == (self.wp, self.wn):
            # Same widths: move only the neurons that changed, in place.
            k.move_windows(
                self.pool, self.page, moved.astype(np.intp), self.pos_off, self.neg_off,
                self.res, pos_off, neg_off, res, wp, grid.exp_lo,
            )  # fmt: skip
            self.pos_off, self.neg_off, self.res = pos_off, neg_off, res
            return
        pool = np.zeros((self.pool.shape[0], k.N_SPECIAL + wp + wn), dtype=self.pool.dtype)
        k.add_pages(
            self.pool, self.page, self.pos_off, self.neg_off, self.wp, self.res,
            pool, self.page, pos_off, neg_off, wp, res, grid.exp_lo,
        )  # fmt: skip
        self.pool, self.pos_off, self.neg_off, self.wp, self.res = pool, pos_off, neg_off, wp, res

    # -- merge -------------------------------------------------------------------------------

    def merge(self, other: LayerSketch) -> LayerSketch:
        """A new sketch of the union of both sketches' data; neither input changes.

        Raises
        ------
        SpecMismatchError
            If the two specs differ (neurons, groups or grid).
        """
        if not isinstance(other, LayerSketch):
            raise TypeError(f"can only merge a LayerSketch, got {type(other).__name__}")
        diff = self.spec.diff(other.spec)
        if diff:
            raise SpecMismatchError(
                "cannot merge sketches with different specs: " + "; ".join(diff)
                + ". Sketches merge only when they were made with the same layer, groups and grid."
            )  # fmt: skip
        out = LayerSketch(self.spec)
        out.fine_whole = self.fine_whole and other.fine_whole
        if self.pooled is not None and other.pooled is not None:
            out.pooled = self.pooled.merge(other.pooled)
        out.totals = self.totals + other.totals
        out.max_bins, exact_values = self.spec.budget(out.totals)
        out.mins = np.minimum(self.mins, other.mins)
        out.maxs = np.maximum(self.maxs, other.maxs)
        dtype = _counter_dtype(int(out.totals.max(initial=0)))
        out.min_count = _count_at(
            out.mins, (self.mins, self.min_count), (other.mins, other.min_count)
        ).astype(dtype)
        out.max_count = _count_at(
            out.maxs, (self.maxs, self.max_count), (other.maxs, other.max_count)
        ).astype(dtype)
        # Atoms counted on both sides stay; a neuron whose sides counted different values (or
        # one side none) has none: the bins hold those values anyway.
        same = self.atom == other.atom
        out.atom = np.where(same, self.atom, NO_ATOM).astype(np.float32)
        if self.exact and other.exact and int(out.totals.sum()) <= exact_values:
            out._kept = self._kept + other._kept
            return out
        out.exact = False
        a, b = self._folded(), other._folded()
        out.atom_count = np.where(
            same[:, None], a.atom_count.astype(np.uint64) + b.atom_count, 0
        ).astype(dtype)
        return a._merge_folded(b, out)

    def _merge_folded(self, other: LayerSketch, out: LayerSketch) -> LayerSketch:
        """Add the windows of two folded sketches into ``out`` (totals, min and max already set)."""
        grid = self.spec.grid
        res = np.minimum(self.res, other.res)
        ranges = _union(
            _coarsen_ranges(grid, self._occupied(), self.res, res),
            _coarsen_ranges(grid, other._occupied(), other.res, res),
        )
        ranges, out.res = _fit_resolution(grid, ranges, res, out.max_bins)
        has_p, has_n = ranges[:, 1] >= 0, ranges[:, 3] >= 0
        width_p, width_n = _widths(ranges)
        out.wp, wn = int(width_p.max()), int(width_n.max())
        out.pos_off = np.where(has_p, ranges[:, 0], 0).astype(np.int32)
        out.neg_off = np.where(has_n, ranges[:, 2], 0).astype(np.int32)
        used = (self.page >= 0) | (other.page >= 0)
        out.n_pages = int(used.sum())
        out.page[used] = np.arange(out.n_pages, dtype=np.int32)
        dtype = max(self.pool.dtype, other.pool.dtype, key=lambda d: d.itemsize)
        out.pool = np.zeros((out.n_pages, k.N_SPECIAL + out.wp + wn), dtype=dtype)
        out._ensure_width(int(out.totals.max()))
        for src in (self, other):
            k.add_pages(
                src.pool, src.page, src.pos_off, src.neg_off, src.wp, src.res,
                out.pool, out.page, out.pos_off, out.neg_off, out.wp, out.res, grid.exp_lo,
            )  # fmt: skip
        out._set_neuron_extremes()
        if out.fine.shape[1]:
            out.fine = np.zeros(out.fine.shape, dtype=out._fine_dtype())
            lo, hi = fine_keys(out.neuron_min), fine_keys(out.neuron_max)
            for src in (self, other):
                has = src.neuron_min <= src.neuron_max  # neurons with a finite value
                rows = out.fine[has]
                add_realigned(
                    rows, src.fine[has], fine_keys(src.neuron_min[has]),
                    fine_keys(src.neuron_max[has]), lo[has], hi[has],
                )  # fmt: skip
                out.fine[has] = rows
        return out

    # -- finalize ----------------------------------------------------------------------------

    def bin_edges(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper edges ``[neuron, bin]`` of each neuron's bins (see :meth:`finalize`)."""
        axes = self._bin_axes()
        return axes[-2], axes[-1]

    def _bin_axes(self) -> tuple[Any, ...]:
        """Each neuron's bin axis, computed once until the next update; edges come last."""
        if self._axes is None:
            self._axes = self._exact_axes() if self.exact else self._grid_axes(self._occupied())
        return self._axes

    def _exact_axes(self) -> tuple[Any, ...]:
        """Exact mode: every distinct value's finest bin, in the order of :meth:`finalize`."""
        grid, n = self.spec.grid, self.spec.n_neurons
        if self._kept:  # one entry per value: a row counts once in each of its groupings
            x = np.concatenate([x for x, g in self._kept for _ in range(g.shape[1])])
            gids = np.concatenate([g[:, p] for _, g in self._kept for p in range(g.shape[1])])
        else:
            x, gids = np.zeros((0, n), dtype=np.float32), np.zeros(0, dtype=np.intp)
        codes: np.ndarray = np.empty((n, x.shape[0]), dtype=np.int64)  # a neuron per row
        k.exact_codes(x, grid.mantissa_bits, grid.exp_lo, grid.exp_hi, codes)
        del x
        codes.sort(axis=1)  # numpy's vectorised sort: several times Numba's
        uniq = np.empty((n, codes.shape[1] + 1), dtype=np.int64)
        n_neg, n_pos = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
        # Each value's bin, once: finalize then counts a block of groups in one pass.
        bins = np.empty(codes.shape, dtype=np.int32)
        k.exact_axes(codes, uniq, n_neg, n_pos, bins)
        del codes
        n_bins = n_neg + 1 + n_pos
        # float32 is exact: every edge is 2**e times a number of at most 24 significant bits.
        lower = np.full((n, int(n_bins.max())), np.nan, dtype=np.float32)
        upper = np.full_like(lower, np.nan)
        k.exact_edges(uniq, n_bins, grid.mantissa_bits, grid.exp_lo, grid.exp_hi, lower, upper)
        return bins, gids, lower, upper

    def _grid_axes(self, r: np.ndarray) -> tuple[Any, ...]:
        """Each neuron's dense bin axis: negative bins, zero, positive bins, then padding."""
        grid = self.spec.grid
        width_p, width_n = _widths(r)
        pos_lo = np.where(width_p > 0, r[:, 0], 0).astype(np.int64)
        neg_hi = np.where(width_n > 0, r[:, 3], -1).astype(np.int64)
        n_bins = int((width_n + 1 + width_p).max())
        # float32 is exact: every edge is 2**e times a number of at most 24 significant bits.
        lower = np.full((self.spec.n_neurons, n_bins), np.nan, dtype=np.float32)
        upper = np.full((self.spec.n_neurons, n_bins), np.nan, dtype=np.float32)
        n_neg = width_n.astype(np.int64)
        n_pos = width_p.astype(np.int64)
        k.bin_edges(self.res, pos_lo, neg_hi, n_neg, n_pos, grid.exp_lo, grid.exp_hi, lower, upper)
        return pos_lo, neg_hi, n_neg, n_pos, lower, upper

    def finalize(self, groups: slice | np.ndarray | list[int] | None = None) -> Summary:
        """The canonical :class:`~ndstream.sketch.summary.Summary` of everything seen so far.

        Each neuron has its own bin axis, in ascending value order: its negative bins, the
        zero bin, its positive bins, then padding (NaN edges, zero counts) up to the widest
        neuron's length. In exact mode the bins are those of the distinct values at the finest
        resolution, with gaps between them; on the grid they are contiguous.

        Parameters
        ----------
        groups
            Only these groups (the bin axes still cover all groups), so a layer with many
            groups can be written a block at a time.
        """
        idx = np.arange(len(self.spec.groups))[groups if groups is not None else slice(None)]
        axes = self._bin_axes()  # the same for every block of groups: computed once
        lower, upper = axes[-2], axes[-1]
        n = self.spec.n_neurons
        dense = np.zeros((n, idx.size, lower.shape[1]), dtype=self.count_dtype)
        special = np.zeros((n, idx.size, 3), dtype=np.int64)
        if self.exact:
            bins, gids = axes[:2]
            slot = np.full(len(self.spec.groups), -1, dtype=np.intp)
            slot[idx] = np.arange(idx.size)
            k.exact_counts(bins, gids, slot, dense, special)
        else:
            pos_lo, neg_hi, n_neg, n_pos = axes[:4]
            page = np.ascontiguousarray(self.page[:, idx])
            k.densify(
                self.pool, page, self.pos_off, self.neg_off, self.wp, pos_lo, neg_hi, n_neg,
                n_pos, dense, special,
            )  # fmt: skip
        mins, maxs = self.mins[:, idx], self.maxs[:, idx]
        finite = mins <= maxs
        fine = self.fine_counts() if self.spec.holds_every_row(idx) else None
        return Summary(
            counts=dense,
            lower=lower,
            upper=upper,
            mins=np.where(finite, mins, np.float32(np.nan)),
            maxs=np.where(finite, maxs, np.float32(np.nan)),
            min_count=np.where(finite, self.min_count[:, idx], 0).astype(np.int64),
            max_count=np.where(finite, self.max_count[:, idx], 0).astype(np.int64),
            atom=self.atom.copy(),
            atom_count=self._atom_counts()[:, idx],
            nan=special[:, :, 0],
            posinf=special[:, :, 1],
            neginf=special[:, :, 2],
            totals=self.totals[idx].copy(),
            groups=tuple(self.spec.groups[i] for i in idx),
            grid=self.spec.grid,
            resolution=self.res.copy(),
            fine=fine,
        )

    def fine_counts(self) -> np.ndarray | None:
        """``[neuron, extreme, fine_bin]`` the fine counts next to each neuron's min and max
        over every row (see :attr:`Summary.fine`), or None where the layer keeps none or its
        values are still kept exactly."""
        if not self.fine.shape[1] or self.exact or not self.fine_whole:
            return None
        return self.fine.reshape(self.spec.n_neurons, 2, FINE_BINS).copy()

    def pooled_summary(self) -> Summary:
        """Every row once, as a one-group :class:`Summary` (group :data:`POOLED_GROUP`).

        From the pooled sketch when the layer keeps one (:attr:`SketchSpec.keeps_pooled`),
        at the budget of one group whatever the number of groups; otherwise the groups of
        the first grouping added up, which then have that budget already.
        """
        if self.pooled is not None:
            return self.pooled.finalize()
        return self.finalize(self.spec.first_grouping).collapsed(POOLED_GROUP)


def _count_at(extreme: np.ndarray, *sides: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Values equal to ``extreme`` over ``sides`` of (extreme, count): the counts of the sides
    whose extreme it is, added."""
    return sum((np.where(e == extreme, c, 0) for e, c in sides), np.zeros(extreme.shape, np.int64))


def _values_of(summary: Summary) -> list[tuple[np.ndarray, np.ndarray]]:
    """Values, one group at a time, that an exact summary counts: its finest bins' own values.

    Each bin stands for the values it holds by one of them (its edge nearest zero, or half
    the upper edge of a coarse subnormal bin that starts at zero); NaN and the infinities stand
    for themselves.
    """
    lower = summary.lower.astype(np.float64)
    upper = summary.upper.astype(np.float64)
    with np.errstate(invalid="ignore"):  # padding bins have NaN edges and no counts
        rep = np.where(
            lower > 0, lower, np.where(upper < 0, upper, np.where(upper > 0, upper, lower) / 2)
        )
    n = summary.counts.shape[0]
    special = np.broadcast_to(np.array([np.nan, np.inf, -np.inf]), (n, 3))
    values = np.concatenate([np.nan_to_num(rep, nan=0.0), special], axis=1).astype(np.float32)
    out = []
    for g in np.flatnonzero(summary.totals > 0):
        counts = np.concatenate(
            [
                summary.counts[:, g, :].astype(np.int64),
                np.stack([summary.nan[:, g], summary.posinf[:, g], summary.neginf[:, g]], axis=1),
            ],
            axis=1,
        )
        total = int(summary.totals[g])
        if np.any(counts.sum(axis=1) != total):
            raise ValueError(
                f"group {summary.groups[g]!r}: the counts of some neurons do not add up to the "
                f"group's total of {total} values; the summary is damaged"
            )
        flat = np.repeat(values.ravel(), counts.ravel())  # neuron by neuron
        out.append(
            (np.ascontiguousarray(flat.reshape(n, total).T), np.full((total, 1), g, np.intp))
        )
    return out
