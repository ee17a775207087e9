"""Hypothesis strategies and plain-numpy references shared by the sketch tests."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ndstream.sketch import GridSpec, LayerSketch, SketchSpec, Summary

F32_MAX = float(np.finfo(np.float32).max)

# Values that stress the binning: signed zeros, non-finite values, magnitudes far from 1 (once
# the edges of an exponent window that lumped them together), bin edges, subnormals and the
# float32 extremes.
SPECIAL = [
    0.0,
    -0.0,
    np.nan,
    np.inf,
    -np.inf,
    1.0,
    -1.0,
    1.125,
    -1.125,
    0.5,
    2.0**-24,
    -(2.0**-24),
    1e-30,
    -1e-30,
    1e-45,  # the smallest float32 subnormal
    -1e-45,
    1e-40,  # a subnormal
    2.0**-126,  # the smallest normal
    1.1754942e-38,  # the largest subnormal
    2.0**48,
    -(2.0**48),
    3e38,
    -F32_MAX,
    F32_MAX,
]

GRIDS = [
    # Defaults: a case of at most 80 values per neuron is always kept exactly.
    GridSpec(),
    # The same rule on the grid from the first value.
    GridSpec(exact_values=0),
    # Kept exactly, but at 2 bins per octave: distinct values share bins.
    GridSpec(mantissa_bits=1),
    GridSpec(mantissa_bits=1, exact_values=0),
    GridSpec(mantissa_bits=5, exact_values=0),
    # A tiny budget: most draws with a few distinct magnitudes force the layer to coarsen,
    # once past 16 values per neuron (four times the budget) are kept exactly.
    GridSpec(mantissa_bits=6, min_mantissa_bits=2, max_bins=4),
    # Exact float32 with a tiny budget: neurons coarsen from 23 bits to differing resolutions.
    GridSpec(max_bins=8, exact_values=0),
    # Exact until 20 values: merges and batches cross over from exact to the grid.
    GridSpec(max_bins=8, exact_values=20),
]

float32_values = st.one_of(
    st.sampled_from(SPECIAL),
    st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True),
    st.floats(-8.0, 8.0, width=32),
)


@dataclass
class Case:
    """A batch of activations with its groupings."""

    x: np.ndarray  # [rows, neurons] float32
    gids: np.ndarray  # [rows, groupings] intp
    n_groups: int
    grid: GridSpec

    @property
    def spec(self) -> SketchSpec:
        return SketchSpec(self.x.shape[1], tuple(f"g{i}" for i in range(self.n_groups)), self.grid)


@st.composite
def cases(draw, max_rows: int = 40, max_neurons: int = 5, max_groups: int = 4) -> Case:
    rows = draw(st.integers(0, max_rows))
    neurons = draw(st.integers(1, max_neurons))
    n_groups = draw(st.integers(1, max_groups))
    n_part = draw(st.integers(1, 2))
    x = draw(hnp.arrays(np.float32, (rows, neurons), elements=float32_values))
    gids = draw(hnp.arrays(np.intp, (rows, n_part), elements=st.integers(0, n_groups - 1)))
    grid = draw(st.sampled_from(GRIDS))
    return Case(x=x, gids=gids, n_groups=n_groups, grid=grid)


# -- references -------------------------------------------------------------------------------


def one_pass(spec: SketchSpec, x: np.ndarray, gids: np.ndarray) -> Summary:
    sk = LayerSketch(spec)
    sk.update(x, gids)
    return sk.finalize()


def group_values(x: np.ndarray, gids: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """``out[g]``: the rows of ``x`` that count in group ``g`` (once per grouping)."""
    gids = gids[:, None] if gids.ndim == 1 else gids
    return [
        np.concatenate([x[gids[:, p] == g] for p in range(gids.shape[1])], axis=0)
        for g in range(n_groups)
    ]


def assert_summaries_identical(a: Summary, b: Summary) -> None:
    """Every array equal in dtype, shape and bytes (NaN padding and the per-neuron resolution
    included); groups and grid equal."""
    for f in dataclasses.fields(Summary):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if isinstance(va, np.ndarray):
            assert isinstance(vb, np.ndarray), f.name
            assert va.dtype == vb.dtype, (f.name, va.dtype, vb.dtype)
            assert va.shape == vb.shape, (f.name, va.shape, vb.shape)
            assert va.tobytes() == vb.tobytes(), f.name
        else:
            assert va == vb, f.name


def merge_tree(sketches: list[LayerSketch], pick) -> LayerSketch:
    """Merge all sketches in a random tree shape and order; ``pick(n)`` returns an index < n."""
    pool = list(sketches)
    while len(pool) > 1:
        a = pool.pop(pick(len(pool)))
        b = pool.pop(pick(len(pool)))
        pool.append(a.merge(b))
    return pool[0]


def sharded_sketches(
    spec: SketchSpec, x: np.ndarray, gids: np.ndarray, shard: np.ndarray, k: int, cuts
) -> list[LayerSketch]:
    """One sketch per shard, each fed its rows in batches split by ``cuts(n_rows)``."""
    out = []
    for s in range(k):
        rows = np.flatnonzero(shard == s)
        sk = LayerSketch(spec)
        bounds = [0, *sorted(cuts(rows.size)), rows.size]
        for lo, hi in itertools.pairwise(bounds):
            sk.update(x[rows[lo:hi]], gids[rows[lo:hi]])
        out.append(sk)
    return out


# -- the grid from first principles ------------------------------------------------------------


def ref_raw_keys(x: np.ndarray, grid: GridSpec, m) -> np.ndarray:
    """Raw magnitude keys at resolution ``m``, straight from the float32 bits, with numpy.

    The key keeps the 8 exponent bits and the top ``m`` mantissa bits of ``|x|``, for every
    finite float32: no window, no shared bin. ``m`` is an int or an integer array that
    broadcasts against ``x`` (per neuron: ``m[neuron]`` against ``x[rows, neuron]``). Zeros and
    non-finite values get meaningless keys: mask them with :func:`binned`. ``grid`` is kept
    for the signature; every grid bins the same way.
    """
    mag = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.int64) & 0x7FFFFFFF
    m = np.asarray(m, dtype=np.int64)
    return mag >> (23 - m)


def binned(x: np.ndarray) -> np.ndarray:
    """Mask of the values that fall in a magnitude bin: finite and not an exact zero."""
    return np.isfinite(x) & (x != 0)


def ref_spans(x: np.ndarray, grid: GridSpec, m) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron: bins spanned by the positive and by the negative keys of ``x[rows, neuron]``
    at resolution ``m`` (an int, or one per neuron)."""
    x = np.asarray(x, dtype=np.float32)
    keys = ref_raw_keys(x, grid, m)
    out = []
    for sign in (x > 0, x < 0):
        use = binned(x) & sign
        hi = np.where(use, keys, -1).max(axis=0, initial=-1)
        lo = np.where(use, keys, np.iinfo(np.int64).max).min(axis=0, initial=np.iinfo(np.int64).max)
        out.append(np.where(use.any(axis=0), hi - lo + 1, 0))
    return out[0], out[1]


def kept_exactly(gids: np.ndarray, spec: SketchSpec) -> bool:
    """Whether a sketch of these rows keeps its values exactly: at most the exact budget of
    the groups that hold data (``spec.budget``) values per neuron, counting a row once in each
    of its groupings."""
    gids = np.asarray(gids)
    totals = np.bincount(gids.ravel(), minlength=len(spec.groups))
    return int(gids.size) <= spec.budget(totals)[1]


def expected_resolution(x: np.ndarray, grid: GridSpec, max_bins: int) -> np.ndarray:
    """Per neuron, the finest resolution at which its keys of each sign span <= ``max_bins``.

    For each neuron of ``x[rows, neuron]``: the first ``m`` from ``grid.mantissa_bits`` down
    at which both its positive and its negative keys span at most ``max_bins`` bins, else
    ``grid.min_mantissa_bits``. Returns int64 ``[neuron]``.
    """
    x = np.asarray(x, dtype=np.float32)
    out = np.full(x.shape[1], grid.min_mantissa_bits, dtype=np.int64)
    done = np.zeros(x.shape[1], dtype=bool)
    for m in range(grid.mantissa_bits, grid.min_mantissa_bits - 1, -1):
        pos, neg = ref_spans(x, grid, m)
        fits = (pos <= max_bins) & (neg <= max_bins) & ~done
        out[fits] = m
        done |= fits
    return out


def ref_edges(raw: np.ndarray, grid: GridSpec, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude edges of raw keys at resolution ``m``, computed from the definition.

    A normal octave ``e`` is ``[2**e, 2**(e+1))`` in ``2**m`` equal bins; the subnormals
    (biased exponent 0) are ``[0, 2**-126)`` in ``2**m`` equal bins; the last edge is float32
    max, since no float32 reaches ``2**128``.
    """
    raw = np.asarray(raw, dtype=np.int64)
    biased = raw >> m
    frac = (raw & ((1 << m) - 1)).astype(np.float64) / 2.0**m
    e = np.maximum(biased, 1) - 127
    scale = np.array([2.0 ** int(v) for v in e.ravel()]).reshape(e.shape)
    lead = np.where(biased == 0, 0.0, 1.0)
    lower, upper = scale * (lead + frac), scale * (lead + frac + 2.0**-m)
    return lower, np.minimum(upper, F32_MAX)
