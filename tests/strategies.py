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

# Values that stress the binning: signed zeros, non-finite values, the underflow and overflow
# bins of the default grid, bin edges, subnormals and the float32 extremes.
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
    2.0**48,
    -(2.0**48),
    3e38,
    -F32_MAX,
    F32_MAX,
]

GRIDS = [GridSpec(), GridSpec(1, -4, 4), GridSpec(5, -126, 128)]

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
    """Every array equal in dtype, shape and bytes; groups and grid equal."""
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
