"""The Numba kernels of ``ndstream.sketch._kernels`` alone, on tiny hand-computed arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ndstream.sketch import GridSpec
from ndstream.sketch import _kernels as k

F32_BIAS = 127  # IEEE 754 single precision exponent bias


def hand_key(v: float, grid: GridSpec) -> int:
    """Rebased grid key of ``|v|`` from first principles, without any bit tricks.

    ``|v| = 2**e * (1 + f)`` with ``0 <= f < 1``; the raw key is ``(e + 127) * 2**m`` plus the
    top ``m`` bits of ``f``, i.e. ``floor(f * 2**m)``; it is clamped to the underflow key
    (``key_base``) and the overflow key (``key_top``) and rebased so the underflow key is 0.
    """
    a = abs(float(np.float32(v)))
    m = grid.mantissa_bits
    if a < 2.0**grid.min_exponent:
        return 0
    if a >= 2.0**grid.max_exponent:
        return grid.key_top - grid.key_base
    _, exp2 = math.frexp(a)  # a = frac * 2**exp2 with 0.5 <= frac < 1
    e = exp2 - 1
    f = a / 2.0**e - 1.0
    raw = (e + F32_BIAS) * 2**m + math.floor(f * 2**m)
    return raw - grid.key_base


def kernel_keys(values: np.ndarray, grid: GridSpec) -> np.ndarray:
    """Key ranges reported by ``batch_key_ranges`` for one value per neuron."""
    x = np.asarray(values, dtype=np.float32)[None, :]
    neurons = np.arange(x.shape[1], dtype=np.intp)
    out = np.empty((x.shape[1], 4), dtype=np.int32)
    k.batch_key_ranges(x, neurons, grid.shift, grid.key_base, grid.key_top, out)
    return out


# -- keys -------------------------------------------------------------------------------------


def test_grid_constants_by_hand():
    g = GridSpec()  # m = 3, min_exponent = -24, max_exponent = 48
    assert g.shift == 23 - 3
    # key of 2**-24 is (-24 + 127) * 8 = 824; the underflow key is one below it
    assert g.key_base == 103 * 8 - 1 == 823
    # key of 2**48 is (48 + 127) * 8 = 1400
    assert g.key_top == 175 * 8 == 1400
    assert g.n_keys == 1400 - 823 + 1


@pytest.mark.parametrize("grid", [GridSpec(), GridSpec(5, -10, 10), GridSpec(1, -3, 4)])
def test_float32_keys_match_hand_computation(grid):
    below = 2.0**grid.min_exponent / 3.0  # underflow
    above = 2.0**grid.max_exponent * 1.5  # overflow (still a finite float32)
    values = [1.0, 1.125, 1.24, 2.0, 0.75, -1.0, below, above, -below, -above, 3.0e-3]
    out = kernel_keys(np.array(values), grid)
    for v, (pmin, pmax, nmin, nmax) in zip(values, out, strict=True):
        want = hand_key(v, grid)
        if v > 0:
            assert pmin == pmax == want, v
            assert (nmin, nmax) == (k.EMPTY_LO, -1), v
        else:
            assert nmin == nmax == want, v
            assert (pmin, pmax) == (k.EMPTY_LO, -1), v
        lower, upper = grid.magnitude_edges(np.array([want]))
        a = abs(float(np.float32(v)))
        assert lower[0] <= a < upper[0] or (want == grid.n_keys - 1 and a <= upper[0]), v


def test_default_grid_keys_by_hand():
    g = GridSpec()
    # 1.0 = 2**0 * (1 + 0): raw key (0 + 127) * 8 + 0 = 1016
    # 1.125 = 2**0 * (1 + 1/8): mantissa bits 001 -> raw 1017
    # 1.24 = 2**0 * (1 + 0.24): floor(0.24 * 8) = 1 -> raw 1017 (same bin as 1.125)
    # 2.0 = 2**1: raw (1 + 127) * 8 = 1024
    # 0.75 = 2**-1 * (1 + 0.5): raw (126) * 8 + 4 = 1012
    want = np.array([1016, 1017, 1017, 1024, 1012, 1016]) - g.key_base
    out = kernel_keys(np.array([1.0, 1.125, 1.24, 2.0, 0.75, -1.0]), g)
    np.testing.assert_array_equal(out[:5, 0], want[:5])
    np.testing.assert_array_equal(out[5, 2], want[5])
    lower, upper = g.magnitude_edges(want)
    np.testing.assert_array_equal(lower, [1.0, 1.125, 1.125, 2.0, 0.75, 1.0])
    np.testing.assert_array_equal(upper, [1.125, 1.25, 1.25, 2.25, 0.8125, 1.125])


def test_magnitude_edges_underflow_overflow():
    g = GridSpec()
    lower, upper = g.magnitude_edges(np.array([0, 1, g.n_keys - 1]))
    assert lower[0] == 0.0 and upper[0] == 2.0**-24
    # key 1 is the first bin of the octave [2**-24, 2**-23)
    assert lower[1] == 2.0**-24 and upper[1] == 2.0**-24 * (1 + 1 / 8)
    assert lower[2] == 2.0**48
    assert upper[2] == float(np.finfo(np.float32).max)


def test_zero_and_nonfinite_have_no_key():
    g = GridSpec()
    out = kernel_keys(np.array([0.0, -0.0, np.nan, np.inf, -np.inf]), g)
    for row in out:
        assert tuple(row) == (k.EMPTY_LO, -1, k.EMPTY_LO, -1)


# -- plan_groups ------------------------------------------------------------------------------


def test_plan_groups_by_hand():
    gids = np.array([[2, 0], [0, 0], [2, 1], [1, 3], [0, 0]], dtype=np.intp)
    order, seg_group, seg_start = k.plan_groups(gids, 4)
    # grouping 0: group 0 <- rows 1, 4; group 1 <- row 3; group 2 <- rows 0, 2; group 3 empty
    np.testing.assert_array_equal(order[0], [1, 4, 3, 0, 2])
    np.testing.assert_array_equal(seg_group[0], [0, 1, 2, -1, -1])
    np.testing.assert_array_equal(seg_start[0, :4], [0, 2, 3, 5])
    # grouping 1: group 0 <- rows 0, 1, 4; group 1 <- row 2; group 3 <- row 3
    np.testing.assert_array_equal(order[1], [0, 1, 4, 2, 3])
    np.testing.assert_array_equal(seg_group[1], [0, 1, 3, -1, -1])
    np.testing.assert_array_equal(seg_start[1, :4], [0, 3, 4, 5])


def test_plan_groups_is_stable_sort():
    rng = np.random.default_rng(0)
    gids = rng.integers(0, 7, size=(50, 3)).astype(np.intp)
    order, seg_group, seg_start = k.plan_groups(gids, 9)
    for p in range(3):
        np.testing.assert_array_equal(order[p], np.argsort(gids[:, p], kind="stable"))
        present = np.unique(gids[:, p])
        n_seg = present.size
        np.testing.assert_array_equal(seg_group[p, :n_seg], present)
        assert np.all(seg_group[p, n_seg:] == -1)
        for i, g in enumerate(present):
            rows = order[p, seg_start[p, i] : seg_start[p, i + 1]]
            np.testing.assert_array_equal(rows, np.flatnonzero(gids[:, p] == g))


# -- update_counts ----------------------------------------------------------------------------


def _scratch(n_rows):
    return (
        np.empty((k.BLOCK, n_rows), dtype=np.int32),
        np.empty((k.BLOCK, n_rows), dtype=np.int32),
        np.empty((k.BLOCK, n_rows), dtype=np.float32),
    )


def _run_update(x, gids, n_groups, pos_off, neg_off, wp, wn, grid):
    """Call ``update_counts`` on a fresh paged state; returns the dense view of the pages."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[1]
    order, seg_group, seg_start = k.plan_groups(gids, n_groups)
    pool = np.zeros((n * n_groups, k.N_SPECIAL + wp + wn), dtype=np.uint16)
    page = np.full((n, n_groups), -1, dtype=np.int32)
    page_neuron = np.full(n * n_groups, -7, dtype=np.int32)
    n_pages = np.zeros(1, dtype=np.int64)
    mins = np.full((n, n_groups), np.inf, dtype=np.float32)
    maxs = np.full((n, n_groups), -np.inf, dtype=np.float32)
    missed = np.zeros(n, dtype=np.bool_)
    n_missed = k.update_counts(
        x, order, seg_group, seg_start, np.arange(n, dtype=np.intp), pool, page, page_neuron,
        n_pages, mins, maxs, np.asarray(pos_off, dtype=np.int32),
        np.asarray(neg_off, dtype=np.int32), wp, grid.shift, grid.key_base, grid.key_top,
        *_scratch(x.shape[0]), missed,
    )  # fmt: skip
    # every allocated page belongs to exactly one (neuron, group), numbered 0, 1, ...
    used = page[page >= 0]
    assert sorted(used.tolist()) == list(range(int(n_pages[0])))
    for nn, gg in zip(*np.nonzero(page >= 0), strict=True):
        assert page_neuron[page[nn, gg]] == nn
    assert not pool[int(n_pages[0]) :].any()  # unallocated pages stay untouched
    counts = np.zeros((n, n_groups, pool.shape[1]), dtype=pool.dtype)
    for nn, gg in zip(*np.nonzero(page >= 0), strict=True):
        counts[nn, gg] = pool[page[nn, gg]]
    return n_missed, counts, mins, maxs, missed, page


# A 4x2 batch, rows in groups [0, 1, 0, 1]:
#   neuron 0: 1.0 (g0), 1.125 (g1), -1.0 (g0), 0.0 (g1)
#   neuron 1: -0.0 (g0), NaN (g1), +Inf (g0), -Inf (g1)
X42 = np.array([[1.0, -0.0], [1.125, np.nan], [-1.0, np.inf], [0.0, -np.inf]], dtype=np.float32)
G42 = np.array([[0], [1], [0], [1]], dtype=np.intp)


def test_update_counts_by_hand():
    g = GridSpec()
    key_1 = (0 + F32_BIAS) * 8 + 0 - g.key_base  # 1.0 and -1.0
    key_1125 = (0 + F32_BIAS) * 8 + 1 - g.key_base  # 1.125
    wp, wn = 2, 1
    # neuron 0: positive window holds keys [key_1, key_1 + 1], negative window key_1
    n_missed, counts, mins, maxs, missed, page = _run_update(
        X42, G42, 2, [key_1, 0], [key_1, 0], wp, wn, g
    )
    assert n_missed == 0 and not missed.any()
    # pages are handed out neuron by neuron, group by group
    np.testing.assert_array_equal(page, [[0, 1], [2, 3]])
    pos0 = k.N_SPECIAL  # first positive slot
    neg0 = k.N_SPECIAL + wp  # first negative slot
    want = np.zeros((2, 2, k.N_SPECIAL + wp + wn), dtype=np.uint16)
    want[0, 0, pos0 + 0] = 1  # 1.0 in group 0
    want[0, 0, neg0 + 0] = 1  # -1.0 in group 0
    want[0, 1, pos0 + (key_1125 - key_1)] = 1  # 1.125 in group 1
    want[0, 1, k.ZERO] = 1  # 0.0 in group 1
    want[1, 0, k.ZERO] = 1  # -0.0 in group 0 is an exact zero
    want[1, 0, k.POSINF] = 1
    want[1, 1, k.NAN] = 1
    want[1, 1, k.NEGINF] = 1
    np.testing.assert_array_equal(counts, want)

    np.testing.assert_array_equal(mins[0], [-1.0, 0.0])
    np.testing.assert_array_equal(maxs[0], [1.0, 1.125])
    # neuron 1, group 0 saw only -0.0 and +Inf: min = max = +0.0 (sign dropped)
    assert mins[1, 0] == 0.0 and maxs[1, 0] == 0.0
    assert not np.signbit(mins[1, 0]) and not np.signbit(maxs[1, 0])
    # neuron 1, group 1 saw no finite value: min/max stay at their identities
    assert mins[1, 1] == np.inf and maxs[1, 1] == -np.inf


def test_update_counts_flags_narrow_windows():
    g = GridSpec()
    key_1 = F32_BIAS * 8 - g.key_base
    # positive window of width 1 holds 1.0 but not 1.125: neuron 0 must be skipped entirely
    n_missed, counts, mins, maxs, missed, page = _run_update(
        X42, G42, 2, [key_1, 0], [key_1, 0], 1, 1, g
    )
    assert n_missed == 1
    np.testing.assert_array_equal(missed, [True, False])
    assert not counts[0].any()
    np.testing.assert_array_equal(page[0], [-1, -1])  # no page for a skipped neuron
    assert np.all(mins[0] == np.inf) and np.all(maxs[0] == -np.inf)
    # neuron 1 holds only zeros and non-finite values, so it never misses and is counted
    assert counts[1, 0, k.ZERO] == 1 and counts[1, 0, k.POSINF] == 1
    assert counts[1, 1, k.NAN] == 1 and counts[1, 1, k.NEGINF] == 1

    # windows of width zero: every nonzero finite value misses
    n_missed, *_, missed, _ = _run_update(X42, G42, 2, [0, 0], [0, 0], 0, 0, g)
    assert n_missed == 1 and missed[0] and not missed[1]
    # a negative value outside an otherwise sufficient window also misses
    n_missed, *_, missed, _ = _run_update(X42, G42, 2, [key_1, 0], [key_1 + 1, 0], 2, 1, g)
    assert n_missed == 1 and missed[0]


def test_update_counts_counts_each_grouping():
    g = GridSpec()
    key_1 = F32_BIAS * 8 - g.key_base
    x = np.array([[1.0], [1.0], [0.0]], dtype=np.float32)
    gids = np.array([[0, 2], [1, 2], [0, 0]], dtype=np.intp)
    n_missed, counts, mins, maxs, _, _ = _run_update(x, gids, 3, [key_1], [0], 1, 0, g)
    assert n_missed == 0
    # group 0 <- rows 0, 2 (grouping 0) and row 2 (grouping 1); group 1 <- row 1;
    # group 2 <- rows 0, 1 (grouping 1)
    np.testing.assert_array_equal(counts[0, :, k.ZERO], [2, 0, 0])
    np.testing.assert_array_equal(counts[0, :, k.N_SPECIAL], [1, 1, 2])
    np.testing.assert_array_equal(mins[0], [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(maxs[0], [1.0, 1.0, 1.0])


def test_new_pages_needed():
    page = np.array([[0, -1, -1], [-1, 1, -1]], dtype=np.int32)
    # batch touches groups 1 and 2 (grouping 0) and group 0 (grouping 1)
    seg_group = np.array([[1, 2, -1], [0, -1, -1]], dtype=np.intp)
    # group 1: neuron 0 lacks one; group 2: both lack one; group 0: neuron 1 lacks one
    assert k.new_pages_needed(page, seg_group) == 1 + 2 + 1


def test_occupied_and_add_pages():
    # 2 neurons, 2 groups; only (neuron 0, group 1) has a page (page 0).
    # src windows of neuron 0: pos keys [10, 13), neg keys [5, 7)
    src = np.zeros((1, k.N_SPECIAL + 3 + 2), dtype=np.uint16)
    src[0, k.ZERO] = 4
    src[0, k.NAN] = 1
    src[0, k.N_SPECIAL + 1] = 2  # pos key 11
    src[0, k.N_SPECIAL + 3 + 1] = 3  # neg key 6
    src_page = np.array([[-1, 0], [-1, -1]], dtype=np.int32)
    src_pos, src_neg = np.array([10, 0], np.int32), np.array([5, 0], np.int32)
    out = np.empty((2, 4), dtype=np.int32)
    out[:, 0::2], out[:, 1::2] = k.EMPTY_LO, -1
    k.occupied_key_ranges(src, np.array([0], np.int32), 1, src_pos, src_neg, 3, out)
    np.testing.assert_array_equal(out, [[11, 11, 6, 6], [k.EMPTY_LO, -1, k.EMPTY_LO, -1]])

    # dst windows of neuron 0: pos keys [9, 13), neg keys [6, 9); dst page of (0, 1) is 1 and
    # already holds 5 at pos key 11; page 0 belongs to (1, 0) and must not change
    dst = np.zeros((2, k.N_SPECIAL + 4 + 3), dtype=np.uint32)
    dst[1, k.N_SPECIAL + 2] = 5
    dst[0, k.ZERO] = 9
    dst_page = np.array([[-1, 1], [0, -1]], dtype=np.int32)
    k.add_pages(
        src, src_page, src_pos, src_neg, 3,
        dst, dst_page, np.array([9, 0], np.int32), np.array([6, 0], np.int32), 4,
    )  # fmt: skip
    want = np.zeros_like(dst)
    want[0, k.ZERO] = 9
    want[1, k.ZERO] = 4
    want[1, k.NAN] = 1
    want[1, k.N_SPECIAL + 2] = 5 + 2  # pos key 11 = 9 + 2
    want[1, k.N_SPECIAL + 4 + 0] = 3  # neg key 6 = 6 + 0
    np.testing.assert_array_equal(dst, want)


def test_densify_orders_bins_ascending():
    # one page: pos keys [2, 4) with counts at keys 2, 3; neg keys [1, 3) with counts at keys
    # 1, 2; plus zero, NaN, +Inf and -Inf counts
    pool = np.zeros((1, k.N_SPECIAL + 2 + 2), dtype=np.uint16)
    pool[0, k.ZERO] = 7
    pool[0, k.NAN] = 8
    pool[0, k.POSINF] = 9
    pool[0, k.NEGINF] = 10
    pool[0, k.N_SPECIAL + 0] = 1  # +key 2
    pool[0, k.N_SPECIAL + 1] = 2  # +key 3
    pool[0, k.N_SPECIAL + 2 + 0] = 3  # -key 1
    pool[0, k.N_SPECIAL + 2 + 1] = 4  # -key 2
    page = np.array([[-1, 0]], dtype=np.int32)  # 1 neuron; group 0 has no page
    # dense axis: [-key 2, -key 1, zero, +key 2, +key 3]
    dst = np.zeros((1, 2, 5), dtype=np.uint64)
    specials = np.zeros((1, 2, 3), dtype=np.int64)
    k.densify(
        pool, page, np.array([2], np.int32), np.array([1], np.int32), 2, 2, 2, 2, dst, specials
    )
    np.testing.assert_array_equal(dst[0, 1], [4, 3, 7, 1, 2])
    np.testing.assert_array_equal(dst[0, 0], [0, 0, 0, 0, 0])
    np.testing.assert_array_equal(specials[0], [[0, 0, 0], [8, 9, 10]])


# -- queries: one neuron on three bins [0, 1), [1, 2), [2, 4) with counts [2, 0, 2] -------------

LOWER = np.array([0.0, 1.0, 2.0])
UPPER = np.array([1.0, 2.0, 4.0])
# neuron 0: min 0.5, max 3.5, no infinities; neuron 1: the same finite values plus one -Inf
# and one +Inf
COUNTS = np.array([[2.0, 0.0, 2.0], [2.0, 0.0, 2.0]])
MINS = np.array([0.5, 0.5])
MAXS = np.array([3.5, 3.5])
NEGINF = np.array([0.0, 1.0])
POSINF = np.array([0.0, 1.0])


def _quantiles(qs):
    out = np.empty((2, len(qs)))
    k.quantiles(COUNTS, LOWER, UPPER, MINS, MAXS, NEGINF, POSINF, np.asarray(qs, float), out)
    return out


def test_quantiles_by_hand():
    # neuron 0: N = 4, cum = [2, 2, 4]; quantile q is order statistic h = q * (N - 1)
    # k = 0 -> the exact min 0.5; k = 3 = N - 1 -> the exact max 3.5
    # k = 1 -> bin 0, clipped to [max(0, 0.5), min(1, 3.5)] = [0.5, 1]:
    #          0.5 + (1 - 0 + 0.5) / 2 * 0.5 = 0.875
    # k = 2 -> bin 2 (cum[1] = 2 <= 2 < cum[2] = 4), clipped to [2, 3.5]:
    #          2 + (2 - 2 + 0.5) / 2 * 1.5 = 2.375
    # q = 1/6 -> h = 0.5: 0.5 + 0.5 * (0.875 - 0.5) = 0.6875
    # q = 1/2 -> h = 1.5: 0.875 + 0.5 * (2.375 - 0.875) = 1.625
    out = _quantiles([0.0, 1 / 3, 2 / 3, 1.0, 1 / 6, 0.5])
    np.testing.assert_allclose(out[0], [0.5, 0.875, 2.375, 3.5, 0.6875, 1.625], rtol=1e-12)
    # neuron 1: N = 6 with one -Inf first and one +Inf last; h = q * 5
    # q = 0 -> -Inf; q = 1 -> +Inf; q = 0.2 -> k = 1 -> finite k = 0 -> min 0.5
    # q = 0.4 -> finite k = 1 -> 0.875; q = 0.8 -> finite k = 3 -> max 3.5
    # q = 0.5 -> h = 2.5 -> 0.875 + 0.5 * (2.375 - 0.875) = 1.625
    out = _quantiles([0.0, 1.0, 0.2, 0.4, 0.8, 0.5])
    np.testing.assert_allclose(out[1], [-np.inf, np.inf, 0.5, 0.875, 3.5, 1.625], rtol=1e-12)


def test_quantiles_empty_neuron_is_nan():
    out = np.empty((1, 2))
    z = np.zeros(1)
    k.quantiles(
        np.zeros((1, 3)), LOWER, UPPER, z + np.nan, z + np.nan, z, z, np.array([0, 1.0]), out
    )
    assert np.isnan(out).all()


@pytest.mark.parametrize(
    ("v0", "v1", "want0", "want1"),
    [
        # below the min: nothing below (neuron 1: the -Inf is below: 1 / 6)
        (0.25, 0.25, 0.0, 1 / 6),
        # inside bin 0 ([0.5, 1] after clipping): 2 * (0.75 - 0.5) / 0.5 = 1 value below
        (0.75, 0.75, 1 / 4, (1 + 1) / 6),
        # in the empty bin: bin 0 fully below
        (1.5, 1.5, 2 / 4, (1 + 2) / 6),
        # inside bin 2 ([2, 3.5]): 2 + 2 * (3 - 2) / 1.5 = 10 / 3 below
        (3.0, 3.0, (10 / 3) / 4, (1 + 10 / 3) / 6),
        # above the max: everything finite below (neuron 1: not the +Inf)
        (5.0, 5.0, 1.0, 5 / 6),
        # +Inf: all but half the +Inf; -Inf: half the -Inf
        (np.inf, -np.inf, 1.0, 0.5 / 6),
    ],
)
def test_ranks_by_hand(v0, v1, want0, want1):
    out = np.empty(2)
    k.ranks(COUNTS, LOWER, UPPER, MINS, MAXS, NEGINF, POSINF, np.array([v0, v1]), out)
    np.testing.assert_allclose(out, [want0, want1], rtol=1e-12, atol=0)


def test_ranks_nan_and_point_mass():
    out = np.empty(2)
    k.ranks(COUNTS, LOWER, UPPER, MINS, MAXS, NEGINF, POSINF, np.array([np.nan, 1.0]), out)
    assert np.isnan(out[0])
    # point mass: the zero bin [0, 0] with 4 values, one bin [1, 2) with 2 values
    lower, upper = np.array([0.0, 1.0]), np.array([0.0, 2.0])
    counts = np.array([[4.0, 2.0]])
    one = np.ones(1)
    for v, want in [(-1.0, 0.0), (0.0, 2 / 6), (0.5, 4 / 6), (1.25, (4 + 2 * 0.25 / 0.5) / 6)]:
        # values in [1, 2) are clipped to [1, max 1.5]: width 0.5
        k.ranks(counts, lower, upper, 0 * one, 1.5 * one, 0 * one, 0 * one, v * one, out[:1])
        assert out[0] == pytest.approx(want, rel=1e-12, abs=0), v


def _rebin(counts, mins, maxs, edges):
    counts = np.atleast_2d(np.asarray(counts, float))
    out = np.zeros((counts.shape[0], len(edges) - 1))
    k.rebin(
        counts,
        LOWER,
        UPPER,
        np.atleast_1d(mins),
        np.atleast_1d(maxs),
        np.asarray(edges, float),
        out,
    )
    return out


def test_rebin_by_hand():
    # bin 0 spans [0.5, 1] after clipping: all 2 in display [0, 1)
    # bin 2 spans [2, 3.5]: display [2, 3) gets 2 * 1 / 1.5 = 4/3, [3, 4] gets 2 * 0.5 / 1.5 = 2/3
    out = _rebin([2, 0, 2], 0.5, 3.5, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(out[0], [2, 0, 4 / 3, 2 / 3], rtol=1e-12)
    # one display bin [0.75, 3]: bin 0 overlaps 0.25 of 0.5 -> 1; bin 2 overlaps 1 of 1.5 -> 4/3
    out = _rebin([2, 0, 2], 0.5, 3.5, [0.75, 3])
    np.testing.assert_allclose(out[0], [1 + 4 / 3], rtol=1e-12)
    # display edges outside the data: nothing
    out = _rebin([2, 0, 2], 0.5, 3.5, [5, 6, 7])
    np.testing.assert_array_equal(out[0], [0, 0])


def test_rebin_point_mass():
    # bin 2 holds 3 copies of 2.5 (min = max = 2.5): a point mass
    out = _rebin([0, 0, 3], 2.5, 2.5, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(out[0], [0, 0, 3, 0])
    # a point mass on the last edge lands in the last bin (closed on the right)
    out = _rebin([0, 0, 3], 2.5, 2.5, [0, 1, 2, 2.5])
    np.testing.assert_array_equal(out[0], [0, 0, 3])
    # a point mass on an inner edge lands in the bin to its right
    out = _rebin([0, 0, 3], 2.5, 2.5, [0, 2.5, 3])
    np.testing.assert_array_equal(out[0], [0, 3])
    # a point mass outside the edges is left out
    out = _rebin([0, 0, 3], 2.5, 2.5, [0, 1, 2])
    np.testing.assert_array_equal(out[0], [0, 0])
