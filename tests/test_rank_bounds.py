"""The rank bound of every answer: on any data, grouping and split, the exact rank lies inside.

The exact ranks come from numpy on the raw values; the sketch under test is built from a
random split of the rows, merged, as an ingest over several ranks and resumes would build it.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import Case, cases, float32_values, group_values

from ndstream.sketch import GridSpec, LayerSketch, SketchSpec, Summary

QS = np.array([0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0])
EPS = 1e-12  # ranks are ratios of integers computed in float64


def merged_sketch(case: Case, cuts: list[int]) -> LayerSketch:
    """The case's rows split at ``cuts``, each piece sketched on its own, then merged."""
    edges = [0, *sorted(set(cuts)), case.x.shape[0]]
    parts = []
    for lo, hi in itertools.pairwise(edges):
        sk = LayerSketch(case.spec)
        sk.update(case.x[lo:hi], case.gids[lo:hi])
        parts.append(sk)
    out = parts[0]
    for part in parts[1:]:
        out = out.merge(part)
    return out


def check_bounds(summary: Summary, values: np.ndarray, probes: np.ndarray) -> None:
    """Quantile and cdf intervals of ``summary`` (all groups pooled) hold the exact ranks of
    ``values[rows, neuron]``; the rank error of each quantile is within the layer's bound."""
    quantiles = summary.quantile(QS, bounds=True)
    ranks = summary.cdf(probes, bounds=True)
    widest = summary.rank_bound()
    for n in range(values.shape[1]):
        v = values[:, n].astype(np.float64)
        v = np.sort(v[~np.isnan(v)])
        if v.size == 0:
            assert np.isnan(quantiles.lower[n]).all() and np.isnan(ranks.lower[n])
            continue
        checks = [(quantiles.estimate[n], quantiles.lower[n], quantiles.upper[n])]
        if np.isnan(probes[n]):  # NaN has no rank
            assert np.isnan(ranks.lower[n]) and np.isnan(ranks.upper[n])
        else:
            checks.append((probes[n : n + 1], ranks.lower[n : n + 1], ranks.upper[n : n + 1]))
        for est, lo, hi in checks:
            below = np.searchsorted(v, est, side="left") / v.size
            at_or_below = np.searchsorted(v, est, side="right") / v.size
            assert np.all(lo - EPS <= below) and np.all(at_or_below <= hi + EPS), (n, est, lo, hi)
            assert np.all(lo <= hi)
        # the estimate's rank error: within its interval, and within the neuron's bound plus
        # the 1/N that interpolating between two order statistics may add
        below = np.searchsorted(v, quantiles.estimate[n], side="left") / v.size
        at_or_below = np.searchsorted(v, quantiles.estimate[n], side="right") / v.size
        error = np.maximum(0.0, np.maximum(below - QS, QS - at_or_below))
        assert np.all(error <= widest[n] + 1.0 / v.size + EPS), (n, error, widest[n])
        # the bound is the mass of one bin: never more than everything
        assert 0.0 <= widest[n] <= 1.0


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
@given(case=cases(max_rows=120), data=st.data())
def test_the_exact_rank_lies_inside_the_interval_hypothesis(case: Case, data) -> None:
    rows = case.x.shape[0]
    cuts = data.draw(st.lists(st.integers(0, rows), max_size=3))
    summary = merged_sketch(case, cuts).finalize()
    probe_values = data.draw(
        st.lists(float32_values, min_size=case.x.shape[1], max_size=case.x.shape[1])
    )
    probes = np.array(probe_values, dtype=np.float32).astype(np.float64)
    if rows:  # also probe at a data value, where ties matter
        row = data.draw(st.integers(0, rows - 1))
        probes = np.where(data.draw(st.booleans()), case.x[row].astype(np.float64), probes)
    # the per-group bounds a store keeps (one pass) are the bounds of each group on its own
    np.testing.assert_allclose(
        summary.group_rank_bounds(),
        np.stack([summary.select([g]).rank_bound() for g in range(case.n_groups)], axis=1),
        rtol=1e-6,
    )
    per_group = group_values(case.x, case.gids, case.n_groups)
    # one group, then a random set of groups pooled
    g = data.draw(st.integers(0, case.n_groups - 1))
    check_bounds(summary.select([g]), per_group[g], probes)
    chosen = data.draw(st.sets(st.integers(0, case.n_groups - 1), min_size=1))
    check_bounds(
        summary.select(sorted(chosen)),
        np.concatenate([per_group[i] for i in sorted(chosen)]),
        probes,
    )


@settings(max_examples=40, deadline=None, derandomize=True)
@given(data=st.data())
def test_pooled_bounds_hold_with_many_groups_hypothesis(data) -> None:
    # enough groups that the layer keeps a pooled sketch of its own
    rows = data.draw(st.integers(1, 300))
    x = data.draw(
        st.lists(float32_values, min_size=rows * 3, max_size=rows * 3).map(
            lambda v: np.array(v, dtype=np.float32).reshape(rows, 3)
        )
    )
    grid = data.draw(st.sampled_from([GridSpec(), GridSpec(exact_values=0)]))
    spec = SketchSpec(3, tuple(f"g{i}" for i in range(6000)), grid)
    assert spec.keeps_pooled
    gids = np.array(data.draw(st.lists(st.integers(0, 5999), min_size=rows, max_size=rows)))
    case = Case(x=x, gids=gids[:, None], n_groups=6000, grid=grid)
    sk = merged_sketch(case, data.draw(st.lists(st.integers(0, rows), max_size=2)))
    probes = x[data.draw(st.integers(0, rows - 1))].astype(np.float64)
    check_bounds(sk.pooled_summary(), x, probes)


def test_bounds_by_hand():
    # 100 values: 1..100 kept exactly, then the same on a grid of 2 bins per octave
    x = np.arange(1, 101, dtype=np.float32)[:, None]
    exact = LayerSketch(SketchSpec(1, ("a",)))
    exact.update(x, np.zeros(100, int))
    b = exact.finalize().quantile(0.5, bounds=True)
    # every value kept: the estimate 50.5 lies between 50 and 51, whose ranks are known
    assert b.estimate[0] == 50.5 and (b.lower[0], b.upper[0]) == (0.5, 0.5)
    assert exact.finalize().rank_bound()[0] == 0.0
    coarse = LayerSketch(SketchSpec(1, ("a",), GridSpec(mantissa_bits=1, exact_values=0)))
    coarse.update(x, np.zeros(100, int))
    s = coarse.finalize()
    # bins of [48, 64): values 48..63, 16 of 100: the median's interval is that bin
    b = s.quantile(0.5, bounds=True)
    assert 48 <= b.estimate[0] < 64
    assert (b.lower[0], b.upper[0]) == pytest.approx((0.47, 0.63))
    # the widest bin: [64, 96) holds 64..95, 32 values
    assert s.rank_bound()[0] == pytest.approx(0.32)
    # 64 opens the bin [64, 96): 63 values lie surely below it, and up to 32 more may equal it
    r = s.cdf(np.array([64.0]), bounds=True)
    assert (r.lower[0], r.upper[0]) == pytest.approx((0.63, 0.95))
    r = s.cdf(np.array([0.5]), bounds=True)  # below everything: exact
    assert (r.estimate[0], r.lower[0], r.upper[0]) == (0.0, 0.0, 0.0)
    r = s.cdf(np.array([np.inf]), bounds=True)
    assert (r.lower[0], r.upper[0]) == (1.0, 1.0)
