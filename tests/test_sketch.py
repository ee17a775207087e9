"""LayerSketch / Summary against independent numpy computations.

Exact parts (zero mass, non-finite counts, min/max, bin counts, totals) are compared bit for bit;
approximate queries (quantile, cdf, histogram) against the error bound documented in
``ndstream/sketch/grid.py``: at most the mass of the sketch bin a value falls in.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import (
    Case,
    assert_summaries_identical,
    cases,
    group_values,
    merge_tree,
    one_pass,
    sharded_sketches,
)

from ndstream.errors import SpecMismatchError
from ndstream.sketch import GridSpec, LayerSketch, SketchSpec, Summary

HYP = settings(max_examples=25, deadline=None)


def spec_of(n_neurons: int, n_groups: int, grid: GridSpec | None = None) -> SketchSpec:
    return SketchSpec(n_neurons, tuple(f"g{i}" for i in range(n_groups)), grid or GridSpec())


def zero_bin(s: Summary) -> int:
    (idx,) = np.flatnonzero((s.lower == 0) & (s.upper == 0))
    return int(idx)


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
    """Counts [neuron, group, bin] binned by numpy on the summary's edges.

    Positive values fall in ``[lower, upper)``, negative values in ``(lower, upper]`` (the
    mirrored ``[|lower|, |upper|)`` magnitude bins), exact zeros in the zero bin ``[0, 0]``.
    """
    z = zero_bin(s)
    out = np.zeros(s.counts.shape, dtype=np.int64)
    for g, vals in enumerate(group_values(x, gids, n_groups)):
        for n in range(x.shape[1]):
            v = vals[:, n].astype(np.float64)
            v = v[np.isfinite(v)]
            pos, neg = v[v > 0], v[v < 0]
            ipos = np.searchsorted(s.lower, pos, side="right") - 1
            ineg = np.searchsorted(s.upper, neg, side="left")
            assert np.all(ipos > z) and np.all(ineg < z)
            # the overflow bin [2**max_exponent, float32 max] is closed on both sides
            top = float(np.finfo(np.float32).max)
            assert np.all((s.lower[ipos] <= pos) & ((pos < s.upper[ipos]) | (pos == top)))
            assert np.all(((s.lower[ineg] < neg) | (neg == -top)) & (neg <= s.upper[ineg]))
            np.add.at(out[n, g], ipos, 1)
            np.add.at(out[n, g], ineg, 1)
            out[n, g, z] += int((v == 0).sum())
    return out


def check_exact(s: Summary, x: np.ndarray, gids: np.ndarray, n_groups: int) -> None:
    """Every exact part of the summary against numpy."""
    gids2 = gids[:, None] if gids.ndim == 1 else gids
    rows_per_group = np.bincount(gids2.ravel(), minlength=n_groups)
    np.testing.assert_array_equal(s.totals, rows_per_group)
    assert s.totals.dtype == np.int64
    assert s.counts.dtype in (np.uint32, np.uint64)
    assert s.counts.shape[:2] == (x.shape[1], n_groups)
    assert s.lower.dtype == s.upper.dtype == np.float64
    assert s.mins.dtype == s.maxs.dtype == np.float32
    for a in (s.nan, s.posinf, s.neginf):
        assert a.dtype == np.int64 and a.shape == (x.shape[1], n_groups)
    # edges: ascending, contiguous, one zero bin
    z = zero_bin(s)
    assert np.all(s.lower <= s.upper)
    assert np.all(s.lower[1:] >= s.upper[:-1])
    assert np.all(s.upper[:z] <= 0) and np.all(s.lower[z + 1 :] >= 0)

    np.testing.assert_array_equal(s.counts, expected_dense_counts(s, x, gids2, n_groups))
    for g, vals in enumerate(group_values(x, gids2, n_groups)):
        np.testing.assert_array_equal(s.counts[:, g, z], (vals == 0).sum(axis=0))
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


# -- exact parts --------------------------------------------------------------------------------


def test_zero_mass_exact_and_signed_zero():
    rng = np.random.default_rng(1)
    x = mixed_data(rng, 500, 7)
    x[:, 3] = np.where(rng.random(500) < 0.5, -0.0, 0.0)  # a neuron of signed zeros only
    gids = rng.integers(0, 3, size=(500, 2))
    s = one_pass(spec_of(7, 3), x, gids)
    z = zero_bin(s)
    for g, vals in enumerate(group_values(x, gids, 3)):
        np.testing.assert_array_equal(s.counts[:, g, z], (vals == 0).sum(axis=0))
        assert s.counts[3, g, z] == len(vals)
    assert np.all(s.mins[3] == 0) and np.all(s.maxs[3] == 0)
    assert not np.signbit(s.mins[3]).any() and not np.signbit(s.maxs[3]).any()
    assert s.counts[3].sum() == s.counts[3, :, z].sum()  # nothing outside the zero bin


def test_only_negative_zero():
    s = one_pass(spec_of(2, 1), np.full((5, 2), -0.0, np.float32), np.zeros(5, int))
    assert s.counts[:, 0, zero_bin(s)].tolist() == [5, 5]
    assert not np.signbit(s.mins).any() and not np.signbit(s.maxs).any()
    assert np.all(s.mins == 0) and np.all(s.maxs == 0)


@given(cases())
@HYP
def test_exact_parts_hypothesis(case: Case):
    s = one_pass(case.spec, case.x, case.gids)
    check_exact(s, case.x, case.gids, case.n_groups)


def test_exact_parts_mixed_data():
    rng = np.random.default_rng(2)
    x = mixed_data(rng, 2000, 12)
    x[rng.random(x.shape) < 0.01] = np.nan
    x[rng.random(x.shape) < 0.01] = np.inf
    x[rng.random(x.shape) < 0.01] = -np.inf
    gids = rng.integers(0, 5, size=(2000, 2))
    check_exact(one_pass(spec_of(12, 5), x, gids), x, gids, 5)


def test_nonfinite_only():
    rng = np.random.default_rng(3)
    sk = LayerSketch(spec_of(3, 2))
    nan_batch = np.full((10, 3), np.nan, np.float32)
    g1 = rng.integers(0, 2, 10)
    sk.update(nan_batch, g1)
    s = sk.finalize()
    check_exact(s, nan_batch, g1, 2)
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
    check_exact(s, x, g, 2)
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
    p, q = sub.pooled(), alone.pooled()
    # the selection keeps the whole layer's bin axis; the lone sketch's axis is a sub-range
    where = {(lo, hi): i for i, (lo, hi) in enumerate(zip(s.lower, s.upper, strict=True))}
    at = np.array([where[lo, hi] for lo, hi in zip(alone.lower, alone.upper, strict=True)])
    np.testing.assert_array_equal(s.lower[at], alone.lower)
    np.testing.assert_array_equal(s.upper[at], alone.upper)
    np.testing.assert_array_equal(p.counts[:, at], q.counts)
    assert p.counts.sum() == q.counts.sum()
    np.testing.assert_array_equal(p.mins, q.mins)
    np.testing.assert_array_equal(p.maxs, q.maxs)
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
    check_exact(s, x, g, 300)
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
    check_exact(want, case.x, case.gids, case.n_groups)


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
    check_exact(want, x, gids, 10)


def _random_sketch(seed: int, spec: SketchSpec, rows: int = 200) -> LayerSketch:
    rng = np.random.default_rng(seed)
    sk = LayerSketch(spec)
    sk.update(mixed_data(rng, rows, spec.n_neurons), rng.integers(0, len(spec.groups), rows))
    return sk


def _state(sk: LayerSketch) -> dict:
    """A deep snapshot of every attribute of a sketch (arrays copied)."""
    return {name: (v.copy() if isinstance(v, np.ndarray) else v) for name, v in vars(sk).items()}


def _assert_state_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name, u in a.items():
        v = b[name]
        if isinstance(u, np.ndarray):
            assert u.dtype == v.dtype and u.shape == v.shape, name
            assert u.tobytes() == v.tobytes(), name
        else:
            assert u == v, name


def test_merge_identity_commutative_associative_pure():
    spec = spec_of(6, 3)
    a, b, c = (_random_sketch(s, spec) for s in (10, 11, 12))
    c.update(np.full((3, 6), 1e6, np.float32), [0, 1, 2])  # windows far from a's and b's
    empty = LayerSketch(spec)
    before = [_state(s) for s in (a, b, c, empty)]
    fa = a.finalize()

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
        (SketchSpec(4, ("a", "b"), GridSpec(min_exponent=-20)), "grid"),
    ],
)
def test_merge_refuses_mismatched_specs(other, word):
    mine = LayerSketch(SketchSpec(4, ("a", "b")))
    theirs = LayerSketch(other)
    with pytest.raises(SpecMismatchError, match=word):
        mine.merge(theirs)
    with pytest.raises(SpecMismatchError, match=word):
        theirs.merge(mine)


def test_merge_refuses_non_sketch():
    with pytest.raises(TypeError):
        LayerSketch(spec_of(2, 1)).merge(LayerSketch(spec_of(2, 1)).finalize())


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
    spread = pooled.lower < pooled.upper  # every bin but the exact zero bin (a point mass)
    for n in range(neurons):
        err = rank_errors(x[:, n], est[n], QS)
        # the bound as documented: the mass of the largest single bin (plus 1/N)
        bound = pooled.counts[n].max() / rows + 1.0 / rows
        assert err.max() <= bound, (n, err.max(), bound)
        # tighter: the mass of the bins the estimate falls in (the exact zero bin has no
        # error), plus 2/N for the q * (N - 1) vs q * N rank convention
        for e, q, err_q in zip(est[n], QS, err, strict=True):
            touch = spread & (pooled.lower <= e) & (e <= pooled.upper)
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
    touch = (s_pooled.lower <= v) & (v <= s_pooled.upper)
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
    check_exact(want, x, g, 3)
    # the reverse order too
    sk = LayerSketch(spec)
    for xb, gb in zip(batches[::-1], gids[::-1], strict=True):
        sk.update(xb, gb)
    assert_summaries_identical(sk.finalize(), want)


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
        one_bin = np.flatnonzero((s.lower <= 1.0) & (s.upper > 1.0))
        assert s.counts[0, 0, one_bin].tolist() == [rows]
        assert s.counts[1, 0, zero_bin(s)] == rows - 3
        assert s.nan[1, 0] == 3
        np.testing.assert_array_equal(s.totals, [rows, 0])
        assert s.counts[:, 1].sum() == 0
        check_exact(s, x, gids, 2)
    assert_summaries_identical(streamed.finalize(), one)
    assert_summaries_identical(merged.finalize(), one)


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
        {"mantissa_bits": 11},
        {"min_exponent": 5, "max_exponent": 5},
    ):
        with pytest.raises(ValueError):
            GridSpec(**bad)


def test_update_accepts_other_dtypes_and_layouts():
    rng = np.random.default_rng(12)
    x64 = rng.normal(0, 1, (50, 8))
    gids = rng.integers(0, 2, 50)
    want = one_pass(spec_of(4, 2), x64[:, ::2].astype(np.float32), gids)
    got = one_pass(spec_of(4, 2), x64[:, ::2], gids.astype(np.int32))  # strided float64
    assert_summaries_identical(got, want)
