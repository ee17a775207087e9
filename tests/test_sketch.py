"""LayerSketch / Summary against independent numpy computations.

Exact parts (zero mass, non-finite counts, min/max, bin counts, totals) are compared bit for bit;
approximate queries (quantile, cdf, histogram) against the error bound documented in
``ndstream/sketch/grid.py``: at most the mass of the sketch bin a value falls in.
"""

from __future__ import annotations

import dataclasses
import threading
import warnings

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import (
    Case,
    assert_summaries_identical,
    binned,
    cases,
    expected_resolution,
    group_values,
    kept_exactly,
    merge_tree,
    one_pass,
    ref_edges,
    ref_raw_keys,
    ref_spans,
    sharded_sketches,
)

from ndstream.errors import ConfigError, SpecMismatchError
from ndstream.sketch import GridSpec, LayerSketch, SketchSpec, Summary, update_threads
from ndstream.sketch import grid as grid_module
from ndstream.sketch.grid import FINE_BINS, FINE_BITS, fine_keys

HYP = settings(max_examples=25, deadline=None)


def spec_of(n_neurons: int, n_groups: int, grid: GridSpec | None = None) -> SketchSpec:
    return SketchSpec(n_neurons, tuple(f"g{i}" for i in range(n_groups)), grid or GridSpec())


def zero_bin(s: Summary) -> np.ndarray:
    """Index of each neuron's zero bin ``[0, 0]`` (its number of negative bins)."""
    is_zero = (s.lower == 0) & (s.upper == 0)
    assert np.all(is_zero.sum(axis=1) == 1), "every neuron has exactly one zero bin"
    return is_zero.argmax(axis=1)


def n_real_bins(s: Summary) -> np.ndarray:
    """Per neuron: bins before the NaN padding (which must be a suffix)."""
    real = ~np.isnan(s.lower)
    n = real.sum(axis=1)
    assert np.array_equal(real, np.arange(s.lower.shape[1])[None, :] < n[:, None]), "padding"
    return n


def relu_like(rng, rows, neurons, zero_frac=0.5, sigma=1.0):
    x = rng.lognormal(0.0, sigma, size=(rows, neurons))
    x[rng.random((rows, neurons)) < zero_frac] = 0.0
    return x.astype(np.float32)


def mixed_data(rng, rows, neurons):
    """Lognormal magnitudes over many octaves, 50 % zeros (some -0.0), both signs."""
    x = rng.lognormal(0.0, 3.0, size=(rows, neurons)) * rng.choice([-1.0, 1.0], (rows, neurons))
    x[rng.random((rows, neurons)) < 0.5] = 0.0
    x[rng.random((rows, neurons)) < 0.05] = -0.0
    return x.astype(np.float32)


def expected_dense_counts(s: Summary, x: np.ndarray, gids: np.ndarray, n_groups: int):
    """Counts [neuron, group, bin] binned by numpy on each neuron's own edges.

    Positive values fall in ``[lower, upper)``, negative values in ``(lower, upper]`` (the
    mirrored ``[|lower|, |upper|)`` magnitude bins), exact zeros in the zero bin ``[0, 0]``.
    Every finite value must land in one of its neuron's real (not padding) bins.
    """
    zs, nb = zero_bin(s), n_real_bins(s)
    top = float(np.finfo(np.float32).max)
    out = np.zeros(s.counts.shape, dtype=np.int64)
    for g, vals in enumerate(group_values(x, gids, n_groups)):
        for n in range(x.shape[1]):
            z, lower, upper = zs[n], s.lower[n, : nb[n]], s.upper[n, : nb[n]]
            v = vals[:, n].astype(np.float64)
            v = v[np.isfinite(v)]
            pos, neg = v[v > 0], v[v < 0]
            ipos = np.searchsorted(lower, pos, side="right") - 1
            ineg = np.searchsorted(upper, neg, side="left")
            assert np.all(ipos > z) and np.all(ineg < z)
            assert np.all(ipos < nb[n]) and np.all(ineg >= 0)
            # the last bin [.., float32 max] is closed on both sides
            assert np.all((lower[ipos] <= pos) & ((pos < upper[ipos]) | (pos == top)))
            assert np.all(((lower[ineg] < neg) | (neg == -top)) & (neg <= upper[ineg]))
            np.add.at(out[n, g], ipos, 1)
            np.add.at(out[n, g], ineg, 1)
            out[n, g, z] += int((v == 0).sum())
    return out


def narrowest_count_dtype(top: int) -> np.dtype:
    """uint16 up to 65,535, uint32 up to 2**32 - 1, else uint64."""
    if top <= 2**16 - 1:
        return np.dtype(np.uint16)
    if top <= 2**32 - 1:
        return np.dtype(np.uint32)
    return np.dtype(np.uint64)


def check_edges(s: Summary, x: np.ndarray, exact: bool = False) -> None:
    """Each neuron's axis, rebuilt from the data with numpy at its resolution ``s.resolution[n]``.

    Negative bins from the neuron's largest to its smallest magnitude key, the zero bin, the
    positive bins from its smallest to its largest key, every key in between included (only
    the keys of the data when the values are kept ``exact``), then NaN padding up to the
    widest neuron; edges from the definition of the grid (float64), which the float32 edges
    must hold exactly.
    """
    res, grid = s.resolution, s.grid
    assert res.shape == (s.n_neurons,) and res.dtype.kind == "i"
    assert np.all((grid.min_mantissa_bits <= res) & (res <= grid.mantissa_bits))
    x = np.asarray(x, dtype=np.float32)
    keys = ref_raw_keys(x, grid, res)  # column n at resolution res[n]
    widths = []
    for n in range(s.n_neurons):
        m = int(res[n])
        col, kc = x[:, n], keys[:, n]
        pos, neg = kc[binned(col) & (col > 0)], kc[binned(col) & (col < 0)]
        if exact:
            pos_keys, neg_keys = np.unique(pos), np.unique(neg)[::-1]
        else:
            pos_keys = np.arange(pos.min(), pos.max() + 1) if pos.size else np.zeros(0, np.int64)
            neg_keys = (
                np.arange(neg.max(), neg.min() - 1, -1) if neg.size else np.zeros(0, np.int64)
            )
        p_lo, p_hi = ref_edges(pos_keys, grid, m)
        n_lo, n_hi = ref_edges(neg_keys, grid, m)
        lower = np.concatenate([-n_hi, [0.0], p_lo])
        upper = np.concatenate([-n_lo, [0.0], p_hi])
        widths.append(lower.size)
        np.testing.assert_array_equal(s.lower[n, : lower.size], lower, err_msg=f"neuron {n}")
        np.testing.assert_array_equal(s.upper[n, : upper.size], upper, err_msg=f"neuron {n}")
        assert np.isnan(s.lower[n, lower.size :]).all() and np.isnan(s.upper[n, lower.size :]).all()
        assert not s.counts[n, :, lower.size :].any(), "padding holds no counts"
    assert s.lower.shape == s.upper.shape == (s.n_neurons, max(widths))
    assert s.counts.shape[2] == s.lower.shape[1]


def check_exact(
    s: Summary, x: np.ndarray, gids: np.ndarray, n_groups: int, spec: SketchSpec
) -> None:
    """Every exact part of the summary against numpy, the resolution and edges included."""
    gids2 = gids[:, None] if gids.ndim == 1 else gids
    rows_per_group = np.bincount(gids2.ravel(), minlength=n_groups)
    np.testing.assert_array_equal(s.totals, rows_per_group)
    assert s.totals.dtype == np.int64
    # the narrowest unsigned type that holds the largest group's count
    assert s.counts.dtype == narrowest_count_dtype(int(rows_per_group.max(initial=0)))
    assert s.counts.shape[:2] == (x.shape[1], n_groups)
    assert s.lower.dtype == s.upper.dtype == np.float32
    assert s.lower.ndim == 2 and s.lower.shape[0] == x.shape[1]
    assert s.mins.dtype == s.maxs.dtype == np.float32
    for a in (s.nan, s.posinf, s.neginf):
        assert a.dtype == np.int64 and a.shape == (x.shape[1], n_groups)
    assert s.grid == spec.grid
    exact = kept_exactly(gids2, spec)
    if exact:  # every value in its own finest bin
        want_res = np.full(x.shape[1], spec.grid.mantissa_bits)
    else:
        # the budget of the groups that hold data (see SketchSpec.budget)
        want_res = expected_resolution(x, spec.grid, spec.budget(rows_per_group)[0])
    np.testing.assert_array_equal(s.resolution, want_res)
    # edges: per neuron ascending, contiguous, one zero bin, then NaN padding
    zs, nb = zero_bin(s), n_real_bins(s)
    for n in range(x.shape[1]):
        lower, upper, z = s.lower[n, : nb[n]], s.upper[n, : nb[n]], zs[n]
        assert np.all(lower <= upper)
        assert np.all(lower[1:] >= upper[:-1])
        assert np.all(upper[:z] <= 0) and np.all(lower[z + 1 :] >= 0)
    check_edges(s, x, exact)

    z_counts = s.counts[np.arange(x.shape[1]), :, zs]  # [neuron, group]
    np.testing.assert_array_equal(s.counts, expected_dense_counts(s, x, gids2, n_groups))
    for g, vals in enumerate(group_values(x, gids2, n_groups)):
        np.testing.assert_array_equal(z_counts[:, g], (vals == 0).sum(axis=0))
        np.testing.assert_array_equal(s.nan[:, g], np.isnan(vals).sum(axis=0))
        np.testing.assert_array_equal(s.posinf[:, g], (vals == np.inf).sum(axis=0))
        np.testing.assert_array_equal(s.neginf[:, g], (vals == -np.inf).sum(axis=0))
        finite = np.where(np.isfinite(vals), vals, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
            want_min = np.nanmin(finite, axis=0) if len(vals) else np.full(x.shape[1], np.nan)
            want_max = np.nanmax(finite, axis=0) if len(vals) else np.full(x.shape[1], np.nan)
        np.testing.assert_array_equal(s.mins[:, g], want_min.astype(np.float32))
        np.testing.assert_array_equal(s.maxs[:, g], want_max.astype(np.float32))
        # -0.0 is an exact zero: a min or max of zero is +0.0
        assert not np.any(np.signbit(s.mins[:, g]) & (s.mins[:, g] == 0))
        assert not np.any(np.signbit(s.maxs[:, g]) & (s.maxs[:, g] == 0))
        total = s.counts[:, g].sum(axis=-1, dtype=np.int64) + s.nan[:, g]
        total = total + s.posinf[:, g] + s.neginf[:, g]
        np.testing.assert_array_equal(total, np.full(x.shape[1], rows_per_group[g]))
    check_fine(s, x, gids2, n_groups, spec, exact)


def check_fine(
    s: Summary, x: np.ndarray, gids: np.ndarray, n_groups: int, spec: SketchSpec, exact: bool
) -> None:
    """The fine counts at each neuron's min and max over every row against numpy: of the
    finite nonzero values, how many have each fine key from the min's up (the max's down)."""
    if exact or not spec.keeps_fine or gids.shape[1] > spec.n_groupings:
        # (more columns of group ids than groupings: no set of groups holds each row once)
        assert s.fine is None
        return
    assert s.fine is not None and s.fine.dtype == narrowest_count_dtype(x.shape[0])
    assert s.fine.shape == (x.shape[1], 2, FINE_BINS)
    for n in range(x.shape[1]):
        column = x[:, n].astype(np.float32)
        v = column[np.isfinite(column) & (column != 0)]
        want = np.zeros((2, FINE_BINS), dtype=np.int64)
        if v.size:
            bits = v.view(np.int32).astype(np.int64)
            order = np.where(bits < 0, -1 - (bits & 0x7FFFFFFF), bits)  # orders like v
            key = order >> (23 - FINE_BITS)
            # anchored at the min and max of all finite values, zeros included
            finite = column[np.isfinite(column)]
            lo = int(fine_keys(finite.min(keepdims=True))[0])
            hi = int(fine_keys(finite.max(keepdims=True))[0])
            for side, d in ((0, key - lo), (1, hi - key)):
                inside = d < FINE_BINS
                want[side] = np.bincount(d[inside], minlength=FINE_BINS)
        np.testing.assert_array_equal(s.fine[n], want, err_msg=f"neuron {n}")
    # A selection of some groups does not hold every row: its fine counts would not be its own.
    if n_groups > 1:
        assert s.select([0]).fine is None
    assert s.select(np.arange(n_groups)).fine is s.fine


# -- exact parts --------------------------------------------------------------------------------


def test_zero_mass_exact_and_signed_zero():
    rng = np.random.default_rng(1)
    x = mixed_data(rng, 500, 7)
    x[:, 3] = np.where(rng.random(500) < 0.5, -0.0, 0.0)  # a neuron of signed zeros only
    gids = rng.integers(0, 3, size=(500, 2))
    s = one_pass(spec_of(7, 3), x, gids)
    z = zero_bin(s)
    for g, vals in enumerate(group_values(x, gids, 3)):
        np.testing.assert_array_equal(s.counts[np.arange(7), g, z], (vals == 0).sum(axis=0))
        assert s.counts[3, g, z[3]] == len(vals)
    assert np.all(s.mins[3] == 0) and np.all(s.maxs[3] == 0)
    assert not np.signbit(s.mins[3]).any() and not np.signbit(s.maxs[3]).any()
    assert s.counts[3].sum() == s.counts[3, :, z[3]].sum()  # nothing outside the zero bin
    # neuron 3's own axis is the zero bin alone, then padding
    assert z[3] == 0 and s.lower[3, 0] == s.upper[3, 0] == 0
    assert np.isnan(s.lower[3, 1:]).all() and np.isnan(s.upper[3, 1:]).all()


def test_only_negative_zero():
    s = one_pass(spec_of(2, 1), np.full((5, 2), -0.0, np.float32), np.zeros(5, int))
    assert s.counts.shape == (2, 1, 1)  # only the zero bin
    assert s.counts[:, 0, 0].tolist() == [5, 5]
    np.testing.assert_array_equal(zero_bin(s), [0, 0])
    assert not np.signbit(s.mins).any() and not np.signbit(s.maxs).any()
    assert np.all(s.mins == 0) and np.all(s.maxs == 0)


@given(cases())
@HYP
def test_exact_parts_hypothesis(case: Case):
    s = one_pass(case.spec, case.x, case.gids)
    check_exact(s, case.x, case.gids, case.n_groups, case.spec)


def test_exact_parts_mixed_data():
    rng = np.random.default_rng(2)
    x = mixed_data(rng, 2000, 12)
    x[rng.random(x.shape) < 0.01] = np.nan
    x[rng.random(x.shape) < 0.01] = np.inf
    x[rng.random(x.shape) < 0.01] = -np.inf
    gids = rng.integers(0, 5, size=(2000, 2))
    check_exact(one_pass(spec_of(12, 5), x, gids), x, gids, 5, spec_of(12, 5))


def test_nonfinite_only():
    rng = np.random.default_rng(3)
    sk = LayerSketch(spec_of(3, 2))
    nan_batch = np.full((10, 3), np.nan, np.float32)
    g1 = rng.integers(0, 2, 10)
    sk.update(nan_batch, g1)
    s = sk.finalize()
    check_exact(s, nan_batch, g1, 2, sk.spec)
    assert np.isnan(s.mins).all() and np.isnan(s.maxs).all()
    assert s.counts.sum() == 0
    np.testing.assert_array_equal(s.nan.sum(axis=1), [10, 10, 10])
    assert np.isnan(s.quantile(0.5)).all()
    assert np.isnan(s.cdf(0.0)).all()

    inf_batch = np.array([[np.inf, -np.inf, np.nan]] * 4, np.float32)
    g2 = np.array([0, 1, 1, 0])
    sk.update(inf_batch, g2)
    x, g = np.concatenate([nan_batch, inf_batch]), np.concatenate([g1, g2])
    s = sk.finalize()
    check_exact(s, x, g, 2, sk.spec)
    # quantiles of infinities only: -Inf / +Inf, never a finite number
    assert s.quantile(0.5)[0] == np.inf and s.quantile(0.5)[1] == -np.inf


def test_empty_sketch_finalizes():
    s = LayerSketch(spec_of(4, 2)).finalize()
    assert s.counts.shape[:2] == (4, 2) and s.counts.sum() == 0
    assert np.isnan(s.mins).all() and np.isnan(s.maxs).all()
    np.testing.assert_array_equal(s.totals, [0, 0])
    assert np.isnan(s.quantile([0.1, 0.9])).all()
    sk = LayerSketch(spec_of(4, 2))
    sk.update(np.empty((0, 4), np.float32), np.empty(0, int))
    assert_summaries_identical(sk.finalize(), s)


def test_select_and_pooled():
    rng = np.random.default_rng(4)
    x = mixed_data(rng, 300, 3)
    gids = rng.integers(0, 4, 300)
    s = one_pass(spec_of(3, 4), x, gids)
    sub = s.select([2, 0])
    assert sub.groups == ("g2", "g0")
    np.testing.assert_array_equal(sub.counts, s.counts[:, [2, 0]])
    np.testing.assert_array_equal(sub.totals, s.totals[[2, 0]])
    # the selection pools to the one-pass summary of those rows only
    keep = (gids == 2) | (gids == 0)
    alone = one_pass(spec_of(3, 1), x[keep], np.zeros(keep.sum(), int))
    # bin by bin on the summaries' own axes (a Pooled also holds its atoms at the extremes)
    p, q = sub.collapsed("all"), alone.collapsed("all")
    # the selection keeps the whole layer's bin axes and resolutions; here the rows of groups
    # 2 and 0 need the same resolutions, so each neuron's lone axis is a sub-range of its own
    np.testing.assert_array_equal(sub.resolution, s.resolution)
    np.testing.assert_array_equal(alone.resolution, s.resolution)
    np.testing.assert_array_equal(sub.lower, s.lower)
    np.testing.assert_array_equal(sub.upper, s.upper)
    for n in range(3):
        real = ~np.isnan(s.lower[n])
        where = {
            (lo, hi): i
            for i, (lo, hi) in enumerate(zip(s.lower[n, real], s.upper[n, real], strict=True))
        }
        real_q = ~np.isnan(alone.lower[n])
        at = np.array(
            [
                where[lo, hi]
                for lo, hi in zip(alone.lower[n, real_q], alone.upper[n, real_q], strict=True)
            ]
        )
        np.testing.assert_array_equal(s.lower[n, at], alone.lower[n, real_q])
        np.testing.assert_array_equal(s.upper[n, at], alone.upper[n, real_q])
        np.testing.assert_array_equal(p.counts[n, 0, at], q.counts[n, 0, real_q])
        assert p.counts[n].sum() == q.counts[n].sum()
        assert not q.counts[n, 0, ~real_q].any()
    for field in ("mins", "maxs", "min_count", "max_count"):
        np.testing.assert_array_equal(getattr(p, field), getattr(q, field), err_msg=field)
    np.testing.assert_array_equal(sub.cdf([0.5, -1.0, 2.0]), alone.cdf([0.5, -1.0, 2.0]))
    np.testing.assert_array_equal(sub.quantile([0.1, 0.5, 0.9]), alone.quantile([0.1, 0.5, 0.9]))


def test_finalize_group_subset_matches_select():
    rng = np.random.default_rng(6)
    x = mixed_data(rng, 400, 5)
    gids = np.stack([rng.integers(0, 6, 400), rng.integers(0, 6, 400)], axis=1)
    sk = LayerSketch(spec_of(5, 6))
    sk.update(x, gids)
    full = sk.finalize()
    for sel in ([4, 1], slice(2, 5), np.array([0]), [5, 4, 3, 2, 1, 0]):
        idx = np.arange(6)[sel]
        assert_summaries_identical(sk.finalize(sel), full.select(idx))


def test_many_sparse_groups():
    # 300 groups, each batch touching a few of them: pages are handed out lazily and the pool
    # grows many times; nothing may get lost or mixed up between (neuron, group) pairs
    rng = np.random.default_rng(13)
    spec = spec_of(17, 300)
    sk = LayerSketch(spec)
    xs, gs = [], []
    for _ in range(40):
        rows = int(rng.integers(1, 30))
        xb = mixed_data(rng, rows, 17) * np.float32(10.0 ** rng.integers(-5, 6))
        gb = rng.choice(rng.integers(0, 300, 4), size=(rows, 2))
        sk.update(xb, gb)
        xs.append(xb)
        gs.append(gb)
    x, g = np.concatenate(xs), np.concatenate(gs)
    s = sk.finalize()
    assert_summaries_identical(s, one_pass(spec, x, g))
    check_exact(s, x, g, 300, spec)
    # split in two and merge: the same
    half = len(xs) // 2
    a, b = LayerSketch(spec), LayerSketch(spec)
    for xb, gb in zip(xs[:half], gs[:half], strict=True):
        a.update(xb, gb)
    for xb, gb in zip(xs[half:], gs[half:], strict=True):
        b.update(xb, gb)
    assert_summaries_identical(b.merge(a).finalize(), s)


# -- merge ------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 4, 7])
@given(case=cases(), data=st.data())
@HYP
def test_merge_equals_one_pass_hypothesis(k: int, case: Case, data):
    rows = case.x.shape[0]
    shard = data.draw(st.lists(st.integers(0, k - 1), min_size=rows, max_size=rows))
    perm = np.array(data.draw(st.permutations(range(rows))), dtype=np.intp)
    x, gids, shard = case.x[perm], case.gids[perm], np.array(shard, dtype=np.intp)[perm]

    def cuts(n):
        return data.draw(st.lists(st.integers(0, n), max_size=3))

    sketches = sharded_sketches(case.spec, x, gids, shard, k, cuts)
    merged = merge_tree(sketches, lambda n: data.draw(st.integers(0, n - 1)))
    want = one_pass(case.spec, case.x, case.gids)
    assert_summaries_identical(merged.finalize(), want)
    check_exact(want, case.x, case.gids, case.n_groups, case.spec)


@pytest.mark.parametrize("k", [1, 2, 4, 7])
def test_merge_equals_one_pass_big(k: int):
    rng = np.random.default_rng(100 + k)
    x = mixed_data(rng, 3000, 40)
    x[rng.random(x.shape) < 0.002] = np.nan
    gids = np.stack([rng.integers(0, 3, 3000), rng.integers(0, 10, 3000)], axis=1)
    spec = spec_of(40, 10)
    shard = rng.integers(0, k, 3000)

    def cuts(n):
        return rng.integers(0, n + 1, size=rng.integers(0, 5)).tolist()

    sketches = sharded_sketches(spec, x, gids, shard, k, cuts)
    merged = merge_tree(sketches, lambda n: int(rng.integers(0, n)))
    want = one_pass(spec, x, gids)
    assert_summaries_identical(merged.finalize(), want)
    check_exact(want, x, gids, 10, spec)


def _random_sketch(seed: int, spec: SketchSpec, rows: int = 200) -> LayerSketch:
    rng = np.random.default_rng(seed)
    sk = LayerSketch(spec)
    sk.update(mixed_data(rng, rows, spec.n_neurons), rng.integers(0, len(spec.groups), rows))
    return sk


def _copy(v):
    if isinstance(v, np.ndarray):
        return v.copy()
    if isinstance(v, tuple):
        return tuple(_copy(u) for u in v)
    return v


def _state(sk: LayerSketch) -> dict:
    """A deep snapshot of every attribute of a sketch (arrays, also inside tuples, copied)."""
    return {name: _copy(v) for name, v in vars(sk).items()}


def _assert_value_equal(u, v, name: str) -> None:
    if isinstance(u, np.ndarray):
        assert isinstance(v, np.ndarray), name
        assert u.dtype == v.dtype and u.shape == v.shape, name
        assert u.tobytes() == v.tobytes(), name
    elif isinstance(u, tuple):
        assert isinstance(v, tuple) and len(u) == len(v), name
        for i, (a, b) in enumerate(zip(u, v, strict=True)):
            _assert_value_equal(a, b, f"{name}[{i}]")
    else:
        assert u == v, name


def _assert_state_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name, u in a.items():
        _assert_value_equal(u, b[name], name)


def test_merge_identity_commutative_associative_pure():
    spec = spec_of(6, 3)
    a, b, c = (_random_sketch(s, spec) for s in (10, 11, 12))
    c.update(np.full((3, 6), 1e6, np.float32), [0, 1, 2])  # windows far from a's and b's
    empty = LayerSketch(spec)
    fa = a.finalize()
    for s in (b, c, empty):
        s.finalize()  # finalize may cache its bin axes: take the snapshot after that
    before = [_state(s) for s in (a, b, c, empty)]

    assert_summaries_identical(a.merge(empty).finalize(), fa)
    assert_summaries_identical(empty.merge(a).finalize(), fa)
    assert_summaries_identical(empty.merge(empty).finalize(), empty.finalize())
    assert_summaries_identical(a.merge(b).finalize(), b.merge(a).finalize())
    assert_summaries_identical(a.merge(b).merge(c).finalize(), a.merge(b.merge(c)).finalize())
    assert_summaries_identical(a.merge(c).merge(b).finalize(), c.merge(b).merge(a).finalize())
    m = a.merge(a)
    assert m is not a
    np.testing.assert_array_equal(m.finalize().counts, 2 * fa.counts)
    np.testing.assert_array_equal(m.finalize().totals, 2 * fa.totals)
    for s, st_ in zip((a, b, c, empty), before, strict=True):
        _assert_state_equal(_state(s), st_)
    assert_summaries_identical(a.finalize(), fa)


def test_merged_sketch_keeps_updating():
    rng = np.random.default_rng(5)
    spec = spec_of(5, 2)
    x = mixed_data(rng, 600, 5)
    gids = rng.integers(0, 2, 600)
    a, b = LayerSketch(spec), LayerSketch(spec)
    a.update(x[:200], gids[:200])
    b.update(x[200:400], gids[200:400])
    m = a.merge(b)
    m.update(x[400:] * 1e4, gids[400:])  # forces the merged windows to grow
    want = one_pass(spec, np.concatenate([x[:400], x[400:] * 1e4]), gids)
    assert_summaries_identical(m.finalize(), want)


@pytest.mark.parametrize(
    ("other", "word"),
    [
        (SketchSpec(5, ("a", "b")), "n_neurons"),
        (SketchSpec(4, ("a", "c")), "groups"),
        (SketchSpec(4, ("a",)), "groups"),
        (SketchSpec(4, ("a", "b"), GridSpec(mantissa_bits=4)), "grid"),
        (SketchSpec(4, ("a", "b"), groupings=("label", "predicted")), "groupings"),
        (SketchSpec(4, ("a", "b"), GridSpec(min_mantissa_bits=2)), "grid"),
        (SketchSpec(4, ("a", "b"), GridSpec(mantissa_bits=22)), "grid"),
        (SketchSpec(4, ("a", "b"), GridSpec(max_bins=1024)), "grid"),  # == the derived budget
    ],
)
def test_merge_refuses_mismatched_specs(other, word):
    mine = LayerSketch(SketchSpec(4, ("a", "b")))
    theirs = LayerSketch(other)
    with pytest.raises(SpecMismatchError, match=word):
        mine.merge(theirs)
    with pytest.raises(SpecMismatchError, match=word):
        theirs.merge(mine)


# -- restore from a summary --------------------------------------------------------------------


@given(case=cases(), data=st.data())
@HYP
def test_restored_sketch_goes_on_as_one_pass_hypothesis(case: Case, data):
    # Stop anywhere, keep only the finalized summary (what a store holds), restore, go on:
    # the result is the one pass over all the data, bit for bit.
    rows = case.x.shape[0]
    cut = data.draw(st.integers(0, rows))
    first = LayerSketch(case.spec)
    first.update(case.x[:cut], case.gids[:cut])
    kept = first.finalize()
    restored = LayerSketch.from_summary(kept, case.spec)
    assert_summaries_identical(restored.finalize(), kept)
    restored.update(case.x[cut:], case.gids[cut:])
    assert_summaries_identical(restored.finalize(), one_pass(case.spec, case.x, case.gids))


def test_restored_sketches_merge_like_the_originals():
    rng = np.random.default_rng(21)
    spec = spec_of(40, 5)
    x = mixed_data(rng, 2000, 40)
    x[rng.random(x.shape) < 0.003] = np.inf
    gids = rng.integers(0, 5, 2000)
    a, b = LayerSketch(spec), LayerSketch(spec)
    a.update(x[:1200] * 1e3, gids[:1200])
    b.update(x[1200:], gids[1200:])
    restored = [LayerSketch.from_summary(s.finalize(), spec) for s in (a, b)]
    want = a.merge(b).finalize()
    assert_summaries_identical(restored[0].merge(restored[1]).finalize(), want)
    assert_summaries_identical(restored[1].merge(a).finalize(), want)
    empty = LayerSketch.from_summary(LayerSketch(spec).finalize(), spec)
    assert_summaries_identical(empty.merge(restored[0]).finalize(), a.finalize())


@pytest.mark.parametrize(
    ("other", "word"),
    [
        (SketchSpec(5, ("a", "b")), "n_neurons"),
        (SketchSpec(4, ("b", "a")), "groups"),
        (SketchSpec(4, ("a", "b"), GridSpec(mantissa_bits=7)), "grid"),
    ],
)
def test_restore_refuses_another_spec(other, word):
    kept = LayerSketch(SketchSpec(4, ("a", "b"))).finalize()
    with pytest.raises(SpecMismatchError, match=word):
        LayerSketch.from_summary(kept, other)


def test_merge_refuses_non_sketch():
    with pytest.raises(TypeError):
        LayerSketch(spec_of(2, 1)).merge(LayerSketch(spec_of(2, 1)).finalize())


# -- adaptive resolution ------------------------------------------------------------------------


def wide_data(rng, rows: int, neurons: int, octaves: float) -> tuple[np.ndarray, np.ndarray]:
    """Both signs, magnitudes spread log-uniformly over up to ``octaves`` octaves per neuron.

    Each neuron gets its own spread (the last neuron about the full ``octaves``) and its own
    centre, so their key ranges differ; 20 % exact zeros (some -0.0) and a few NaN and ±Inf.
    Rows share most of their log-offset from the centres, so sorting rows by the returned
    ``width`` (that offset's size) makes every neuron's span grow along the rows.
    """
    spread = np.linspace(octaves / 4, octaves, neurons)
    centre = rng.uniform(-8, 8, neurons)
    u = rng.uniform(-0.5, 0.5, (rows, 1))
    e = centre + (u + rng.uniform(-0.02, 0.02, (rows, neurons))) * spread
    x = np.exp2(e) * rng.choice([-1.0, 1.0], (rows, neurons))
    special = rng.random((rows, neurons))
    x[special < 0.2] = 0.0
    x[special < 0.03] = -0.0
    x[(special > 0.99) & (special <= 0.995)] = np.nan
    x[special > 0.995] = rng.choice([np.inf, -np.inf])
    return x.astype(np.float32), np.abs(u[:, 0])


def test_spec_budget_is_the_grids_budget_for_the_groups_with_data():
    slots = grid_module._SLOT_BUDGET  # counters per layer and sign (a tuning constant)
    assert SketchSpec(3, ("a",), GridSpec(max_bins=16)).budget(np.array([5]))[0] == 16
    assert SketchSpec(3, ("a", "b"), GridSpec()).budget(np.array([1, 1]))[0] == 1024  # capped
    many = SketchSpec(2000, tuple(map(str, range(500))), GridSpec())
    every = np.ones(500, dtype=np.int64)
    share = slots // (2000 * 500)  # 16: already a power of two
    assert many.budget(every) == (max(64, share), 4 * max(64, share)) == (64, 256)
    # only groups that hold data count: 500 groups of which 2 hold data cost what 2 cost
    two = np.zeros(500, dtype=np.int64)
    two[[3, 400]] = 7
    assert many.budget(two) == (1024, 4096)  # 2**24 // 4000 = 4194 -> 4096 -> capped at 1024
    # an empty sketch has the budget of one group
    assert many.budget(np.zeros(500, dtype=np.int64)) == many.budget(np.eye(500)[0])
    assert SketchSpec(10_000, tuple(map(str, range(500))), GridSpec()).budget(every)[0] == 64


# (grid, octaves): every neuron coarsens from the grid's finest resolution; each neuron's own
# resolution lies strictly between the finest and the coarsest, or (last case) for the widest
# neurons even the coarsest does not fit
COARSENING = [
    (GridSpec(max_bins=16), 3.0),
    (GridSpec(max_bins=40), 4.0),
    (GridSpec(mantissa_bits=8, min_mantissa_bits=3, max_bins=40), 20.0),
]


@pytest.mark.parametrize(("grid", "octaves"), COARSENING)
def test_resolution_is_the_finest_that_fits(grid, octaves):
    rng = np.random.default_rng(31)
    x, _ = wide_data(rng, 3000, 6, octaves)
    gids = rng.integers(0, 3, (3000, 2))
    spec = SketchSpec(6, ("a", "b", "c"), grid)
    s = one_pass(spec, x, gids)
    want = expected_resolution(x, grid, grid.max_bins)
    np.testing.assert_array_equal(s.resolution, want)
    assert np.all(want < grid.mantissa_bits)  # the data does force every neuron to coarsen
    assert np.all(np.diff(want) <= 0)  # wider neurons (later ones) never finer
    if octaves < 20.0:  # neurons of different spreads get different resolutions, each its own
        assert len(set(want.tolist())) > 1
    # the definition, spelled out neuron by neuron: it fits at want[n], and not one bit finer
    n_fit = 0
    for n in range(6):
        m = int(want[n])
        pos, neg = ref_spans(x[:, n : n + 1], grid, m)
        fits = max(pos[0], neg[0]) <= grid.max_bins
        assert fits or m == grid.min_mantissa_bits, n
        pos, neg = ref_spans(x[:, n : n + 1], grid, m + 1)
        assert max(pos[0], neg[0]) > grid.max_bins, n
        if fits:
            n_fit += 1
            assert grid.min_mantissa_bits < m, n  # strictly between finest and coarsest
    # all fit below 20 octaves; at 20 (spreads of 5 to 20 octaves, 8 bins per octave at the
    # coarsest) none does
    assert n_fit == (6 if octaves < 20.0 else 0)
    # each neuron has at most max_bins bins per sign when it fits, more when it does not
    n_neg = zero_bin(s)
    n_pos = n_real_bins(s) - n_neg - 1
    over = np.maximum(n_neg, n_pos) > grid.max_bins
    assert over.all() if octaves >= 20.0 else not over.any()
    check_exact(s, x, gids, 3, spec)


def test_resolution_of_a_narrow_neuron():
    # neurons 0..2: 1,000 values in [1, 2), one octave: 1024 keys at m = 10, within the
    # default budget (1024) where m = 11 gives about 2048; neuron 3: 100 consecutive float32
    # values from 1.0, 100 keys at m = 23: it keeps exact float32 bins
    rng = np.random.default_rng(32)
    x = rng.uniform(1.0, 2.0, (1000, 4)).astype(np.float32)
    x[:, 3] = (1.0 + np.arange(1000) % 100 * 2.0**-23).astype(np.float32)
    spec = spec_of(4, 1, GridSpec(exact_values=0))  # the grid, not 1,000 values kept exactly
    assert spec.budget(np.array([1000]))[0] == 1024
    s = one_pass(spec, x, np.zeros(1000, int))
    np.testing.assert_array_equal(s.resolution, [10, 10, 10, 23])
    check_exact(s, x, np.zeros(1000, int), 1, spec)
    # exact float32: each of the 100 values in its own bin, 10 each, edges the values
    z = zero_bin(s)[3]
    assert z == 0 and n_real_bins(s)[3] == 101
    np.testing.assert_array_equal(s.counts[3, 0, 1:101], np.full(100, 10))
    np.testing.assert_array_equal(s.lower[3, 1:101], np.unique(x[:, 3]))
    # with a budget of 512 bins, neurons 0..2 go one bit coarser; the edges halve their count
    spec = spec_of(4, 1, GridSpec(max_bins=512, exact_values=0))
    s9 = one_pass(spec, x, np.zeros(1000, int))
    np.testing.assert_array_equal(s9.resolution, [9, 9, 9, 23])
    check_exact(s9, x, np.zeros(1000, int), 1, spec)
    # bins nest: every bin at m = 9 is the union of two at m = 10
    for n in range(3):
        fine = s.counts[n, 0, 1 : n_real_bins(s)[n]]
        coarse = s9.counts[n, 0, 1 : n_real_bins(s9)[n]]
        keys10 = np.arange(fine.size) + ref_raw_keys(x[:, n], GridSpec(), 10).min()
        keys9 = keys10 >> 1
        np.testing.assert_array_equal(np.bincount(keys9 - keys9[0], weights=fine), coarse)
    # neuron 3 is identical in both: its bins do not depend on the other neurons
    np.testing.assert_array_equal(s9.counts[3, :, :101], s.counts[3, :, :101])
    np.testing.assert_array_equal(s9.lower[3, :101], s.lower[3, :101])
    np.testing.assert_array_equal(s9.upper[3, :101], s.upper[3, :101])


def test_streamed_resolution_only_drops_and_matches_the_data_so_far():
    rng = np.random.default_rng(33)
    grid = GridSpec(max_bins=40, exact_values=0)
    x, width = wide_data(rng, 2000, 5, 12.0)
    # feed the rows from the narrowest to the widest magnitudes: the spans keep growing
    x = x[np.argsort(width)]
    gids = rng.integers(0, 2, 2000)
    spec = SketchSpec(5, ("a", "b"), grid)
    sk = LayerSketch(spec)
    np.testing.assert_array_equal(sk.res, np.full(5, 23))  # every neuron starts exact
    seen = []
    for lo in range(0, 2000, 100):
        sk.update(x[lo : lo + 100], gids[lo : lo + 100])
        want = expected_resolution(x[: lo + 100], grid, grid.max_bins)
        np.testing.assert_array_equal(sk.res, want, err_msg=str(lo))
        seen.append(sk.res.copy())
    seen = np.array(seen)  # [step, neuron]
    assert np.all(np.diff(seen, axis=0) <= 0)  # each neuron's resolution only drops
    for n in range(5):
        assert len(set(seen[:, n].tolist())) >= 3, n  # it coarsened several times
    s = sk.finalize()
    np.testing.assert_array_equal(s.resolution, seen[-1])
    assert_summaries_identical(s, one_pass(spec, x, gids))
    check_exact(s, x, gids, 2, spec)


@pytest.mark.parametrize(("grid", "octaves"), COARSENING[:2])
@pytest.mark.parametrize("k", [1, 2, 4, 7])
def test_coarsening_is_exact_and_deterministic(k, grid, octaves):
    rng = np.random.default_rng(40 + k)
    rows, neurons = 2400, 8
    x, width = wide_data(rng, rows, neurons, octaves)
    gids = np.stack([rng.integers(0, 3, rows), rng.integers(3, 6, rows)], axis=1)
    spec = SketchSpec(neurons, tuple(f"g{i}" for i in range(6)), grid)
    want = one_pass(spec, x, gids)
    expected = expected_resolution(x, grid, grid.max_bins)
    np.testing.assert_array_equal(want.resolution, expected)
    assert np.all(expected < grid.mantissa_bits) and len(set(expected.tolist())) > 1
    check_exact(want, x, gids, 6, spec)

    def cuts(n):
        return rng.integers(0, n + 1, size=rng.integers(0, 6)).tolist()

    # random shards; and contiguous shards of the rows sorted by magnitude, so that the shards
    # sit at different resolutions and the merges must re-key the finer ones
    by_size = np.empty(rows, dtype=np.intp)
    by_size[np.argsort(width)] = np.arange(rows) * k // rows
    for shard in (rng.integers(0, k, rows), by_size):
        perm = rng.permutation(rows)  # a different row order within each shard
        sketches = sharded_sketches(spec, x[perm], gids[perm], shard[perm], k, cuts)
        if k > 1 and shard is by_size:
            res = {tuple(sk.res.tolist()) for sk in sketches}
            assert len(res) > 1, "the shards must differ in resolution"
        for _ in range(2):  # two random tree shapes
            merged = merge_tree(sketches, lambda n: int(rng.integers(0, n)))
            np.testing.assert_array_equal(merged.res, want.resolution)
            assert_summaries_identical(merged.finalize(), want)
    # the whole stream in other orders and batch sizes
    for batch in (1, 7, 333, rows):
        perm = rng.permutation(rows)
        sk = LayerSketch(spec)
        for lo in range(0, rows, batch):
            sk.update(x[perm[lo : lo + batch]], gids[perm[lo : lo + batch]])
        assert_summaries_identical(sk.finalize(), want)


def test_merge_of_fitting_sketches_can_coarsen():
    # Each sketch fits the budget (64 bins) at the finest resolution, m = 23; some unions do
    # not, neuron by neuron. One float32 step is 2**-23 in [1, 2), 2**-22 in [2, 4) and
    # 2**-14 in [512, 1024).
    grid = GridSpec(max_bins=64, exact_values=0)
    rng = np.random.default_rng(34)
    ulp1, ulp3, ulp1000 = 2.0**-23, 2.0**-22, 2.0**-14

    def steps(lo, hi):  # 300 random steps in [lo, hi), both ends included
        return np.concatenate([[lo, hi - 1], rng.integers(lo, hi, 298)])

    a_x = np.stack([1.0 + steps(0, 50) * ulp1, 3.0 + steps(0, 40) * ulp3], axis=1)
    c_x = np.stack([1.0 + steps(100, 150) * ulp1, 3.0 + steps(10, 60) * ulp3], axis=1)
    b_x = np.stack([-(1000.0 + steps(0, 60) * ulp1000)] * 2, axis=1)  # negative
    a_x, b_x, c_x = (v.astype(np.float32) for v in (a_x, b_x, c_x))
    spec = SketchSpec(2, ("g",), grid)
    g = np.zeros(300, int)
    a, b, c = (LayerSketch(spec) for _ in range(3))
    a.update(a_x, g)
    b.update(b_x, g)
    c.update(c_x, g)
    for sk in (a, b, c):
        np.testing.assert_array_equal(sk.res, [23, 23])
    ab = a.merge(b)
    np.testing.assert_array_equal(ab.res, [23, 23])  # different signs: each span still fits
    ac = a.merge(c)
    # neuron 0: steps 0..149 from 1.0 span 150 keys at m = 23, 75 at m = 22 and 38 at m = 21;
    # neuron 1: steps 0..59 from 3.0, 60 keys: still exact
    x = np.concatenate([a_x, c_x])
    np.testing.assert_array_equal(ac.res, [21, 23])
    np.testing.assert_array_equal(ac.res, expected_resolution(x, grid, 64))
    gg = np.zeros(600, int)
    assert_summaries_identical(ac.finalize(), one_pass(spec, x, gg))
    check_exact(ac.finalize(), x, gg, 1, spec)
    # ... and the coarser merged sketch keeps taking data exactly
    ac.update(b_x, g)
    x3 = np.concatenate([a_x, c_x, b_x])
    g3 = np.zeros(900, int)
    np.testing.assert_array_equal(ac.res, [21, 23])
    assert_summaries_identical(ac.finalize(), one_pass(spec, x3, g3))
    assert_summaries_identical(ac.finalize(), c.merge(ab).finalize())
    check_exact(ac.finalize(), x3, g3, 1, spec)
    # a merge refits the minimum of the two resolutions: a coarse side re-keys the fine one
    wide = LayerSketch(spec)
    wide.update(np.array([[1.0, 3.0], [1.9, 3.0]], np.float32), [0, 0])
    assert wide.res[0] < 21 and wide.res[1] == 23
    for m in (wide.merge(ac), ac.merge(wide)):
        x4 = np.concatenate([x3, [[1.0, 3.0], [1.9, 3.0]]]).astype(np.float32)
        np.testing.assert_array_equal(m.res, [wide.res[0], 23])
        np.testing.assert_array_equal(m.res, expected_resolution(x4, grid, 64))
        assert_summaries_identical(m.finalize(), one_pass(spec, x4, np.zeros(902, int)))


def test_each_neuron_has_its_own_bin_axis():
    # neuron 0 near 1e-6, neuron 1 near 1e6 (both signs), neuron 2 zeros only, neuron 3 only
    # NaN and -Inf, neuron 4 one positive value: very different axes in one layer
    rng = np.random.default_rng(35)
    rows = 500
    x = np.zeros((rows, 5), np.float32)
    x[:, 0] = rng.uniform(1e-6, 3e-6, rows)
    x[:, 1] = rng.uniform(-2e6, 3e6, rows)
    x[:, 3] = np.where(rng.random(rows) < 0.5, np.nan, -np.inf)
    x[7, 4] = 42.0
    gids = rng.integers(0, 2, rows)
    spec = spec_of(5, 2)
    s = one_pass(spec, x, gids)
    check_exact(s, x, gids, 2, spec)
    nb, z = n_real_bins(s), zero_bin(s)
    assert nb.max() == s.lower.shape[1] == nb[1]  # neuron 1 is the widest
    assert z[0] == 0 and z[2] == 0 and z[3] == 0 and z[4] == 0 and z[1] > 0
    assert nb[2] == nb[3] == 1 and nb[4] == 2
    assert s.lower[4, 1] <= 42.0 < s.upper[4, 1]
    assert s.counts[4, gids[7], 1] == 1 and s.counts[4, :, 1].sum() == 1
    # neuron 0's positive bins all lie in [1e-6, 3e-6]: it does not share neuron 1's axis
    assert s.lower[0, 1] > 0.9e-6 and s.upper[0, nb[0] - 1] < 3.1e-6
    # every count sits in a real bin; padding: NaN edges, zero counts
    for n in range(5):
        assert np.isnan(s.lower[n, nb[n] :]).all() and np.isnan(s.upper[n, nb[n] :]).all()
        assert not s.counts[n, :, nb[n] :].any()
    # queries never see the padding
    assert not np.isnan(s.quantile([0.1, 0.5, 0.9])[[0, 1, 2, 4]]).any()
    assert s.quantile(0.5)[3] == -np.inf
    h = s.histogram(np.array([-1.0, 1e-5, 50.0]))
    np.testing.assert_allclose(h[0], [rows, 0])
    np.testing.assert_allclose(h[2], [rows, 0])
    np.testing.assert_allclose(h[4], [rows - 1, 1])


# -- accuracy -------------------------------------------------------------------------------------

QS = np.linspace(0.01, 0.99, 99)


def _gelu(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def _accuracy_data(kind: str, rng, rows: int, neurons: int) -> np.ndarray:
    if kind == "relu_lognormal":
        return relu_like(rng, rows, neurons)
    if kind == "normal":
        return (rng.normal(0.0, 1.0, (rows, neurons)) * rng.uniform(0.1, 10, neurons)).astype(
            np.float32
        )
    if kind == "gelu":
        return _gelu(rng.normal(0.0, 1.5, (rows, neurons))).astype(np.float32)
    raise AssertionError(kind)


def rank_errors(data: np.ndarray, est: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """Distance of each q to the rank interval [#(< est), #(<= est)] / N of its estimate."""
    srt = np.sort(data)
    n = srt.size
    left = np.searchsorted(srt, est, side="left") / n
    right = np.searchsorted(srt, est, side="right") / n
    return np.maximum.reduce([np.zeros_like(qs), left - qs, qs - right])


@pytest.mark.parametrize("kind", ["relu_lognormal", "normal", "gelu"])
def test_quantile_rank_error_within_bin_mass(kind):
    rng = np.random.default_rng(7)
    rows, neurons = 20000, 6
    x = _accuracy_data(kind, rng, rows, neurons)
    s = one_pass(spec_of(neurons, 3), x, rng.integers(0, 3, rows))
    est = s.quantile(QS)
    assert est.shape == (neurons, QS.size)
    assert np.all(np.diff(est, axis=1) >= 0)  # monotone in q
    pooled = s.pooled()
    worst = []
    # every bin but the exact zero bin (a point mass) and the NaN padding
    spread = pooled.lower < pooled.upper
    for n in range(neurons):
        err = rank_errors(x[:, n], est[n], QS)
        # the bound as documented: the mass of the largest single bin (plus 1/N)
        bound = pooled.counts[n].max() / rows + 1.0 / rows
        assert err.max() <= bound, (n, err.max(), bound)
        # tighter: the mass of the bins the estimate falls in (the exact zero bin has no
        # error), plus 2/N for the q * (N - 1) vs q * N rank convention
        for e, q, err_q in zip(est[n], QS, err, strict=True):
            touch = spread[n] & (pooled.lower[n] <= e) & (e <= pooled.upper[n])
            local = pooled.counts[n, touch].max(initial=0.0) / rows + 2.0 / rows
            assert err_q <= local, (n, q, e, err_q, local)
        worst.append(err.max())
        # the estimates stay inside the data's range
        assert est[n].min() >= x[:, n].min() and est[n].max() <= x[:, n].max()
    if kind == "relu_lognormal":
        assert max(worst) < 0.005
    # the extremes are exact
    np.testing.assert_array_equal(s.quantile(0.0), x.min(axis=0))
    np.testing.assert_array_equal(s.quantile(1.0), x.max(axis=0))


def test_quantile_rejects_bad_q():
    s = _random_sketch(0, spec_of(2, 1)).finalize()
    for bad in (-0.1, 1.5, np.nan, [0.5, 2.0]):
        with pytest.raises(ValueError):
            s.quantile(bad)
    # Not numbers: a string, a bool (True would read as 1) and None (it would read as NaN).
    for bad in ("0.5", True, None, [0.5, None], [False]):
        with pytest.raises(ValueError, match="must be numbers"):
            s.quantile(bad)
    np.testing.assert_array_equal(s.quantile([0.5]), s.quantile(np.array([0.5], np.float32)))
    for bad in (None, "x", [None, 1.0]):
        with pytest.raises(ValueError, match="must be numbers"):
            s.cdf(bad)


def test_quantile_with_infinities_matches_numpy_order():
    # 2 -Inf, 6 finite, 2 +Inf: q=0 and q=0.1 are -Inf, q=0.9 and q=1 are +Inf (linear rule on
    # N - 1 = 9 gaps: q * 9 < 1 lands on the -Inf ranks 0..1, q * 9 > 8 on the +Inf ranks)
    col = np.array([-np.inf, -np.inf, 1, 2, 3, 4, 5, 6, np.inf, np.inf], np.float32)
    s = one_pass(spec_of(1, 1), col[:, None], np.zeros(10, int))
    est = s.quantile([0.0, 0.1, 0.9, 1.0])[0]
    assert est[0] == est[1] == -np.inf and est[2] == est[3] == np.inf
    # q = 2/9 is exactly rank 2: the smallest finite value, exact
    assert s.quantile(2 / 9)[0] == 1.0


def test_quantile_between_neginf_and_finite_is_neginf():
    # ranks 0..3 hold -Inf, 1, 2, +Inf; for 0 < q < 1/3 the linear rule interpolates between
    # rank 0 (-Inf) and rank 1 (1.0): (1 - t) * -Inf + t * 1 = -Inf for t < 1, mirroring the
    # +Inf side, where 2/3 < q < 1 gives +Inf. No NaN went in, so no NaN may come out.
    col = np.array([-np.inf, 1.0, 2.0, np.inf], np.float32)
    s = one_pass(spec_of(1, 1), col[:, None], np.zeros(4, int))
    upper = s.quantile([0.7, 0.8, 0.9])[0]
    assert np.all(upper == np.inf)  # the +Inf side already works
    lower = s.quantile([0.1, 0.2, 0.3])[0]
    assert np.all(lower == -np.inf), lower


# -- cdf ------------------------------------------------------------------------------------------


def _touching_mass(s_pooled, n: int, v: float) -> float:
    """Mass of the sketch bins whose closed extent touches ``v``."""
    touch = (s_pooled.lower[n] <= v) & (v <= s_pooled.upper[n])  # NaN padding never touches
    return float(s_pooled.counts[n, touch].sum())


@pytest.mark.parametrize("seed", [0, 1])
def test_cdf_within_bin_mass(seed):
    rng = np.random.default_rng(seed)
    rows, neurons = 5000, 5
    x = mixed_data(rng, rows, neurons)
    x[:, 1] = relu_like(rng, rows, 1)[:, 0]
    x[:, 2] = rng.normal(0, 1, rows).astype(np.float32)
    s = one_pass(spec_of(neurons, 2), x, rng.integers(0, 2, rows))
    p = s.pooled()
    # probes[i, n]: data points (ties, zeros), random values, and fixed values incl. bin edges
    probes = np.concatenate(
        [
            x[rng.integers(0, rows, 30)].astype(np.float64),
            rng.uniform(-3, 3, (30, neurons)),
            np.array([[0.0], [1.0], [-1.0], [1.125], [2.0**-24]]).repeat(neurons, axis=1),
        ]
    )
    for v in probes:
        got = s.cdf(v)
        assert got.shape == (neurons,)
        for n in range(neurons):
            col = x[:, n]
            want = ((col < v[n]).sum() + 0.5 * (col == v[n]).sum()) / rows
            bound = _touching_mass(p, n, v[n]) / rows + 1e-12
            assert abs(got[n] - want) <= bound, (n, v[n], got[n], want, bound)
    # a scalar broadcasts to every neuron
    np.testing.assert_array_equal(s.cdf(0.5), s.cdf(np.full(neurons, 0.5)))


def test_cdf_exact_at_zero_and_outside_range():
    rng = np.random.default_rng(8)
    rows = 4000
    x = relu_like(rng, rows, 4)  # lognormal(0, 1): no value near the underflow bin
    x[:, 3] = -x[:, 3]
    x[:10, 2] = -np.inf
    s = one_pass(spec_of(4, 1), x, np.zeros(rows, int))
    zeros = (x == 0).sum(axis=0)
    below0 = (x < 0).sum(axis=0)
    np.testing.assert_allclose(s.cdf(0.0), (below0 + 0.5 * zeros) / rows, rtol=1e-12)
    lo = np.nanmin(np.where(np.isfinite(x), x, np.nan), axis=0) - 1.0
    neginf = (x == -np.inf).sum(axis=0)
    np.testing.assert_allclose(s.cdf(lo), neginf / rows, rtol=0, atol=1e-15)
    assert s.cdf(lo)[2] > 0  # the -Inf share
    np.testing.assert_array_equal(s.cdf(x.max(axis=0) * 2 + 1), np.ones(4))
    assert np.isnan(s.cdf(np.nan)).all()
    assert np.isnan(s.cdf(np.array([np.nan, 0.0, 0.0, 0.0])))[0]
    assert not np.isnan(s.cdf(np.array([np.nan, 0.0, 0.0, 0.0]))[1:]).any()


# -- histogram --------------------------------------------------------------------------------


def _inside(col: np.ndarray, a: float, b: float) -> int:
    col = col[np.isfinite(col)]
    return int(((col >= a) & (col <= b)).sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_histogram_mass(seed):
    rng = np.random.default_rng(seed)
    rows, neurons = 3000, 4
    x = mixed_data(rng, rows, neurons)
    x[:, 0] = rng.normal(0, 2, rows)
    x[rng.random(x.shape) < 0.01] = np.nan
    s = one_pass(spec_of(neurons, 2), x, rng.integers(0, 2, rows))
    p = s.pooled()
    finite_total = np.isfinite(x).sum(axis=0)

    # arbitrary edges: never more than the mass; each display bin within the mass of the
    # sketch bins straddling its edges; the sum within the mass of bins touching the outer edges
    edges = np.sort(rng.uniform(-5, 5, 9))
    h = s.histogram(edges)
    assert h.shape == (neurons, 8) and np.all(h >= 0)
    assert np.all(h.sum(axis=1) <= finite_total + 1e-9)
    for n in range(neurons):
        col = x[:, n]
        err = _touching_mass(p, n, edges[0]) + _touching_mass(p, n, edges[-1])
        assert abs(h[n].sum() - _inside(col, edges[0], edges[-1])) <= err + 1e-9
        true, _ = np.histogram(col[np.isfinite(col)], edges)
        for i in range(8):
            err = _touching_mass(p, n, edges[i]) + _touching_mass(p, n, edges[i + 1])
            assert abs(h[n, i] - true[i]) <= err + 1e-9, (n, i)

    # edges covering [min, max]: all finite mass, exactly (up to float rounding)
    lo = np.nanmin(np.where(np.isfinite(x), x, np.nan))
    hi = np.nanmax(np.where(np.isfinite(x), x, np.nan))
    for cover in (np.linspace(lo, hi, 17), np.array([lo - 1.0, 0.0, hi + 1.0])):
        h = s.histogram(cover)
        np.testing.assert_allclose(h.sum(axis=1), finite_total, rtol=1e-9)


def test_histogram_zero_bin_lands_on_zero():
    rng = np.random.default_rng(9)
    rows = 1000
    x = rng.uniform(1.5, 2.5, (rows, 3)).astype(np.float32)
    zero = rng.random((rows, 3)) < 0.4
    x[zero] = 0.0
    x[:5, 1] = -0.0
    s = one_pass(spec_of(3, 1), x, np.zeros(rows, int))
    n_zero = (x == 0).sum(axis=0)
    # 0 inside a display bin
    h = s.histogram([-1.0, -0.5, 0.5, 3.0])
    np.testing.assert_array_equal(h[:, 0], 0)
    np.testing.assert_array_equal(h[:, 1], n_zero)
    np.testing.assert_allclose(h[:, 2], rows - n_zero, rtol=1e-12)
    # 0 on an inner edge: the bin to its right, like np.histogram
    h = s.histogram([-1.0, 0.0, 1.0, 3.0])
    np.testing.assert_array_equal(h[:, 0], 0)
    np.testing.assert_array_equal(h[:, 1], n_zero)
    # 0 on the last edge: the last bin (closed on the right)
    h = s.histogram([-1.0, 0.0])
    np.testing.assert_array_equal(h[:, 0], n_zero)
    # 0 outside the edges: left out
    h = s.histogram([1.0, 3.0])
    np.testing.assert_allclose(h[:, 0], rows - n_zero, rtol=1e-12)


def test_histogram_rejects_bad_edges():
    s = _random_sketch(1, spec_of(2, 1)).finalize()
    for bad in ([1.0], [1.0, 1.0], [2.0, 1.0], [[0.0, 1.0]]):
        with pytest.raises(ValueError):
            s.histogram(np.array(bad))


# -- windows, counters, validation ------------------------------------------------------------


def test_windows_grow_with_drifting_scale():
    rng = np.random.default_rng(11)
    spec = spec_of(20, 3)
    batches = [
        relu_like(rng, 300, 20) * 1e-3,
        relu_like(rng, 300, 20) * 1e3,
        -relu_like(rng, 300, 20),
        mixed_data(rng, 300, 20) * 1e-6,
        (rng.normal(0, 1, (300, 20)) * np.logspace(-20, 20, 20)).astype(np.float32),
    ]
    gids = [rng.integers(0, 3, 300) for _ in batches]
    sk = LayerSketch(spec)
    for xb, gb in zip(batches, gids, strict=True):
        sk.update(xb, gb)
    x, g = np.concatenate(batches), np.concatenate(gids)
    want = one_pass(spec, x, g)
    assert_summaries_identical(sk.finalize(), want)
    check_exact(want, x, g, 3, spec)
    # the reverse order too
    sk = LayerSketch(spec)
    for xb, gb in zip(batches[::-1], gids[::-1], strict=True):
        sk.update(xb, gb)
    assert_summaries_identical(sk.finalize(), want)


def test_updates_on_one_thread_or_all_give_the_same_summary():
    # Blocks of neurons run on Numba's threads; how many must not change a count. The limit
    # is per calling thread: ingest sets it on its worker only.
    rng = np.random.default_rng(11)
    spec = spec_of(100, 3, GridSpec(exact_values=0))
    batches = [mixed_data(rng, 300, 100) * s for s in (1.0, 1e3, 1e-3)]
    gids = [rng.integers(0, 3, (300, 2)) for _ in batches]
    before = numba.get_num_threads()

    def run(threads: int) -> Summary:
        out: list[Summary] = []

        def body() -> None:
            update_threads(threads)
            assert numba.get_num_threads() == min(threads, numba.config.NUMBA_NUM_THREADS)
            sk = LayerSketch(spec)
            for xb, gb in zip(batches, gids, strict=True):
                sk.update(xb, gb)
            out.append(sk.finalize())

        worker = threading.Thread(target=body)
        worker.start()
        worker.join()
        return out[0]

    assert_summaries_identical(run(1), run(64))
    assert numba.get_num_threads() == before


def test_counters_widen_past_uint16():
    rows = 70000
    x = np.zeros((rows, 2), np.float32)
    x[:, 0] = 1.0  # one bin receives every value
    x[:3, 1] = np.nan
    gids = np.zeros(rows, int)
    spec = spec_of(2, 2)

    one = one_pass(spec, x, gids)
    streamed = LayerSketch(spec)
    for lo in range(0, rows, 10000):
        streamed.update(x[lo : lo + 10000], gids[lo : lo + 10000])
    a, b = LayerSketch(spec), LayerSketch(spec)
    a.update(x[:40000], gids[:40000])  # each half fits uint16 ...
    b.update(x[40000:], gids[40000:])
    merged = a.merge(b)  # ... their sum does not
    for s in (one, streamed.finalize(), merged.finalize()):
        assert s.counts.dtype == np.uint32
        one_bin = np.flatnonzero((s.lower[0] <= 1.0) & (s.upper[0] > 1.0))
        assert s.counts[0, 0, one_bin].tolist() == [rows]
        assert s.counts[1, 0, zero_bin(s)[1]] == rows - 3
        assert s.nan[1, 0] == 3
        np.testing.assert_array_equal(s.totals, [rows, 0])
        assert s.counts[:, 1].sum() == 0
        check_exact(s, x, gids, 2, spec)
    assert_summaries_identical(streamed.finalize(), one)
    assert_summaries_identical(merged.finalize(), one)


def test_count_dtype_is_the_narrowest_that_holds_the_largest_group():
    # powers[i]: 2**i rows of [1.0, NaN] in group 0 (and one row in group 1), made by merging
    # a one-row sketch with itself i times, so billions of rows cost 32 tiny merges
    spec = spec_of(2, 2)
    one = LayerSketch(spec)
    one.update(np.array([[1.0, np.nan]], np.float32), [0])
    powers = [one]
    for _ in range(32):
        powers.append(powers[-1].merge(powers[-1]))
    in_g1 = LayerSketch(spec)
    in_g1.update(np.array([[1.0 + 2.0**-23, 0.0]], np.float32), [1])  # the next float32

    def made_of(*exponents: int) -> LayerSketch:
        out = in_g1
        for e in exponents:
            out = out.merge(powers[e])
        return out

    for sk, total, dtype in [
        (made_of(*range(16)), 2**16 - 1, np.uint16),
        (made_of(16), 2**16, np.uint32),
        (made_of(*range(32)), 2**32 - 1, np.uint32),
        (made_of(32), 2**32, np.uint64),
        (made_of(31, 30), 2**31 + 2**30, np.uint32),
    ]:
        assert sk.count_dtype == dtype, total
        s = sk.finalize()
        assert s.counts.dtype == dtype, total
        np.testing.assert_array_equal(s.totals, [total, 1])
        one_bin = np.flatnonzero((s.lower[0] <= 1.0) & (s.upper[0] > 1.0))
        assert s.counts[0, 0, one_bin].tolist() == [total]  # exact, no wrap-around
        assert s.counts[0, 0].sum(dtype=np.uint64) == total
        assert s.nan[1, 0] == total and s.counts[1, 0].sum() == 0
        assert s.counts[0, 1, one_bin[0] + 1] == 1 and s.counts[0, 1].sum() == 1
        assert s.counts[1, 1, zero_bin(s)[1]] == 1
        np.testing.assert_array_equal(s.resolution, [23, 23])  # two adjacent float32 values


def test_each_neuron_is_sketched_on_its_own():
    # a neuron's resolution, edges and counts do not depend on the other neurons of its layer
    rng = np.random.default_rng(36)
    x, _ = wide_data(rng, 1500, 6, 6.0)
    gids = rng.integers(0, 2, 1500)
    grid = GridSpec(max_bins=24)
    s = one_pass(SketchSpec(6, ("a", "b"), grid), x, gids)
    assert len(set(s.resolution.tolist())) > 2
    nb = n_real_bins(s)
    for n in range(6):
        alone = one_pass(SketchSpec(1, ("a", "b"), grid), x[:, n : n + 1], gids)
        assert alone.resolution.tolist() == [s.resolution[n]]
        assert alone.lower.shape[1] == nb[n]
        np.testing.assert_array_equal(alone.lower[0], s.lower[n, : nb[n]])
        np.testing.assert_array_equal(alone.upper[0], s.upper[n, : nb[n]])
        np.testing.assert_array_equal(alone.counts[0], s.counts[n, :, : nb[n]])
        np.testing.assert_array_equal(alone.mins[0], s.mins[n])
        np.testing.assert_array_equal(alone.maxs[0], s.maxs[n])


def test_edges_are_float32_at_the_top_of_the_range():
    grid = GridSpec(mantissa_bits=5)
    top = float(np.finfo(np.float32).max)
    x = np.array([[top], [-top], [3e38]], np.float32)
    s = one_pass(SketchSpec(1, ("a",), grid), x, np.zeros(3, int))
    real = ~np.isnan(s.lower[0])
    # every edge a finite float32 that bounds its values
    assert np.isfinite(s.lower[0, real]).all() and np.isfinite(s.upper[0, real]).all()


def test_rows_in_two_groupings_count_twice():
    x = np.array([[1.0], [2.0]], np.float32)
    gids = np.array([[0, 0], [0, 1]])
    s = one_pass(spec_of(1, 2), x, gids)
    np.testing.assert_array_equal(s.totals, [3, 1])
    np.testing.assert_array_equal(s.counts.sum(axis=2), [[3, 1]])


@pytest.mark.parametrize(
    ("x", "gids", "match"),
    [
        (np.zeros(3, np.float32), np.zeros(3, int), "shape"),  # 1-d activations
        (np.zeros((3, 2), np.float32), np.zeros(3, int), "shape"),  # wrong neuron count
        (np.zeros((3, 3, 1), np.float32), np.zeros(3, int), "shape"),  # 3-d activations
        (np.zeros((3, 3), np.float32), np.zeros(4, int), "rows"),  # row mismatch
        (np.zeros((3, 3), np.float32), np.array([0, 1, 2]), "group ids"),  # id == n_groups
        (np.zeros((3, 3), np.float32), np.array([0, -1, 1]), "group ids"),  # negative id
        (np.zeros((3, 3), np.float32), np.array([[0, 0], [1, 0], [0, 5]]), "group ids"),
    ],
)
def test_update_validation(x, gids, match):
    sk = LayerSketch(spec_of(3, 2))
    sk.update(np.ones((2, 3), np.float32), [0, 1])
    before = sk.finalize()
    with pytest.raises(ValueError, match=match):
        sk.update(x, gids)
    assert_summaries_identical(sk.finalize(), before)  # a refused batch leaves no trace


def test_spec_validation():
    with pytest.raises(ValueError):
        SketchSpec(0, ("a",))
    with pytest.raises(ValueError):
        SketchSpec(2, ())
    with pytest.raises(ValueError):
        SketchSpec(2, ("a", "a"))
    for bad in (
        {"mantissa_bits": 0},
        {"mantissa_bits": 24},  # more bits than a float32 mantissa has
        {"mantissa_bits": 24, "min_mantissa_bits": 24},
        {"min_mantissa_bits": 0},
        {"min_mantissa_bits": 24},
        {"mantissa_bits": 4, "min_mantissa_bits": 5},
        {"max_bins": 1},
        {"max_bins": 0},
    ):
        with pytest.raises(ConfigError):
            GridSpec(**bad)
    # the old positional form GridSpec(mantissa_bits, min_exponent, max_exponent) now reads
    # its second argument as min_mantissa_bits: refused, not silently misread
    with pytest.raises(ConfigError, match="min_mantissa_bits"):
        GridSpec(5, -10, 10)
    GridSpec(mantissa_bits=1, min_mantissa_bits=1, max_bins=2)  # the smallest valid values
    GridSpec(mantissa_bits=23, min_mantissa_bits=23)  # exact float32 only: the largest
    with pytest.raises(TypeError):  # no exponent window: every float32 has its bins
        GridSpec(min_exponent=-24)  # type: ignore[call-arg]


def test_grid_dict_round_trip():
    for grid in (
        GridSpec(),
        GridSpec(mantissa_bits=6, min_mantissa_bits=2, max_bins=40),
        GridSpec(mantissa_bits=5, exact_values=7),
    ):
        d = grid.to_dict()
        assert d == {
            "kind": "log-linear-float32",
            "mantissa_bits": grid.mantissa_bits,
            "min_mantissa_bits": grid.min_mantissa_bits,
            "max_bins": grid.max_bins,
            "exact_values": grid.exact_values,
        }
        assert GridSpec.from_dict(d) == grid
    with pytest.raises(ConfigError, match="t-digest"):
        GridSpec.from_dict({**GridSpec().to_dict(), "kind": "t-digest"})
    with pytest.raises(ConfigError, match="GridSpec"):
        GridSpec.from_dict({**GridSpec().to_dict(), "bins_per_octave": 8})


def test_update_accepts_other_dtypes_and_layouts():
    rng = np.random.default_rng(12)
    x64 = rng.normal(0, 1, (50, 8))
    gids = rng.integers(0, 2, 50)
    want = one_pass(spec_of(4, 2), x64[:, ::2].astype(np.float32), gids)
    got = one_pass(spec_of(4, 2), x64[:, ::2], gids.astype(np.int32))  # strided float64
    assert_summaries_identical(got, want)


# -- few values: kept exactly ---------------------------------------------------------------


def _same_but_grid(a: Summary, b: Summary) -> None:
    """Every array identical; the grids may differ (in ``exact_values`` only)."""
    assert_summaries_identical(a, dataclasses.replace(b, grid=a.grid))


def test_few_values_are_kept_exactly():
    # 300 rows in 2 groupings: 600 values per neuron, at the limit: each distinct value its
    # own finest bin, with gaps between bins, and quantiles and ranks those of the data
    rng = np.random.default_rng(40)
    x, gids = mixed_data(rng, 300, 5), rng.integers(0, 3, (300, 2))
    spec = spec_of(5, 3, GridSpec(exact_values=600))
    s = one_pass(spec, x, gids)
    assert kept_exactly(gids, spec)
    check_exact(s, x, gids, 3, spec)  # bins: exactly the data's distinct keys at m = 23
    values = np.concatenate(group_values(x, gids, 3))  # each row once per grouping
    est = s.quantile(QS)
    for n in range(5):
        v = values[:, n]
        # numpy's quantiles (its 'linear' rule on the exact order statistics): every
        # float32 is kept, however small
        want = np.quantile(v.astype(np.float64), QS)
        np.testing.assert_allclose(est[n], want, rtol=1e-6, atol=0)
        assert rank_errors(v, est[n], QS).max() <= 1.0 / v.size
    # the rank of a data value: the values below it plus half of those equal to it
    probe = values[7]
    want = ((values < probe).sum(axis=0) + 0.5 * (values == probe).sum(axis=0)) / values.shape[0]
    np.testing.assert_allclose(s.cdf(probe), want, rtol=0, atol=1e-12)


def test_the_first_value_past_the_limit_folds_everything_onto_the_grid():
    rng = np.random.default_rng(41)
    x, gids = relu_like(rng, 400, 6), rng.integers(0, 2, 400)
    kept = spec_of(6, 2, GridSpec(exact_values=300))
    grid_only = spec_of(6, 2, GridSpec(exact_values=0))
    sk = LayerSketch(kept)
    sk.update(x[:300], gids[:300])
    assert sk.exact and np.all(sk.finalize().resolution == 23)
    sk.update(x[300:301], gids[300:301])
    assert not sk.exact
    _same_but_grid(sk.finalize(), one_pass(grid_only, x[:301], gids[:301]))
    # the same when the limit is passed by a merge: two halves stay exact, their union not
    a, b = LayerSketch(kept), LayerSketch(kept)
    a.update(x[:150], gids[:150])
    b.update(x[150:300], gids[150:300])
    both = a.merge(b)
    assert both.exact
    assert_summaries_identical(both.finalize(), one_pass(kept, x[:300], gids[:300]))
    c = LayerSketch(kept)
    c.update(x[300:], gids[300:])
    for merged in (both.merge(c), c.merge(both), a.merge(c).merge(b)):
        assert not merged.exact
        _same_but_grid(merged.finalize(), one_pass(grid_only, x, gids))
    assert a.exact and b.exact and c.exact  # merging changes neither input


def test_an_exact_sketch_copies_its_input_and_counts_it_once():
    rng = np.random.default_rng(42)
    x, gids = relu_like(rng, 50, 8), rng.integers(0, 2, (50, 3))
    spec = spec_of(8, 2)
    sk = LayerSketch(spec)
    sk.update(x, gids)
    want = one_pass(spec, x.copy(), gids.copy())
    x[:] = 7.0  # the caller reuses its buffers
    gids[:] = 0
    assert_summaries_identical(sk.finalize(), want)
    one_d, x1, g1 = LayerSketch(spec), relu_like(rng, 20, 8), rng.integers(0, 2, 20)
    one_d.update(x1, g1)
    want1 = one_pass(spec, x1.copy(), g1.copy())
    g1[:] = 1 - g1  # 1-d ids: the sketch must not keep a view of them
    assert_summaries_identical(one_d.finalize(), want1)
    # three groupings refer to one copy of the batch
    assert x.nbytes <= sk.nbytes - LayerSketch(spec).nbytes < 2 * x.nbytes


def test_restoring_an_exact_summary_rebuilds_its_values():
    rng = np.random.default_rng(43)
    x = mixed_data(rng, 120, 4)
    x[3, 0], x[4, 1] = 1e-30, -1e-30  # tiny values: kept exactly like any other
    x[5, 2], x[6, 3] = 1e-40, -3e38  # a subnormal, and a huge magnitude
    gids = rng.integers(0, 3, 120)
    spec = spec_of(4, 3, GridSpec(exact_values=110))
    s = one_pass(spec, x[:100], gids[:100])
    restored = LayerSketch.from_summary(s, spec)
    assert restored.exact
    assert_summaries_identical(restored.finalize(), s)
    restored.update(x[100:], gids[100:])  # 120 values: past the limit, folded
    assert not restored.exact
    assert_summaries_identical(restored.finalize(), one_pass(spec, x, gids))
    # a summary whose counts do not add up to its totals is refused, not folded silently
    damaged = dataclasses.replace(s, counts=s.counts.copy())
    damaged.counts[0, 0, zero_bin(s)[0]] += 1
    with pytest.raises(ValueError, match="do not add up"):
        LayerSketch.from_summary(damaged, spec)
