"""Queries on finalized summaries: quantiles, ranks, rank bounds and rebinning, reading
each bin by the shape its neighbours suggest."""

from __future__ import annotations

import numpy as np

from ._base import _F32_MAX, jit
from .fine import is_fine


@jit
def _single_value(lower: float, upper: float) -> float:
    """The one float32 a bin holds, or NaN when it may hold more than one.

    A positive bin ``[lower, upper)`` one float32 step wide holds only ``lower``, a negative
    bin ``(lower, upper]`` one step wide only ``upper``: the finest bins, where values are
    kept exactly. Spreading such a bin's count over its width would move its values off
    their one possible value.
    """
    if upper > 0 and np.float64(np.nextafter(np.float32(lower), np.float32(np.inf))) == upper:
        return lower
    if lower < 0 and np.float64(np.nextafter(np.float32(upper), np.float32(-np.inf))) == lower:
        return upper
    return np.nan


@jit
def _order_statistic(
    k: float,
    cum: np.ndarray,
    counts: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    vmin: float,
    vmax: float,
    n_neginf: float,
    n_finite: float,
) -> float:
    """The k-th smallest value (0-based), spreading a bin's values over its extent by the
    monotone cubic of :func:`_edge_slopes` (evenly, where the neighbours say nothing)."""
    if k < n_neginf:
        return -np.inf
    k -= n_neginf
    if k >= n_finite:
        return np.inf
    if k == 0:
        return vmin
    if k == n_finite - 1:
        return vmax
    j = np.searchsorted(cum, k, side="right")
    single = _single_value(lower[j], upper[j])
    if not np.isnan(single):
        return single
    before = cum[j - 1] if j > 0 else 0.0
    lo = max(lower[j], vmin)
    hi = min(upper[j], vmax)
    if hi <= lo:
        return lo
    kind, a, b = _bin_shape(int(j), counts, lower, upper, vmin, vmax)
    # A bin's count can be a share (the rest of an atom's bin, see summary._atoms_inside):
    # the middle of the k-th value may then lie past it, and the estimate must stay inside.
    share = min((k - before + 0.5) / counts[j], 1.0)
    return lo + _shape_inverse(share, kind, a, b) * (hi - lo)


# -- inside a bin: the shape of the distribution from its neighbours ---------------------------
#
# A bin's values are spread over it by a monotone cubic (Fritsch-Carlson PCHIP) through the
# cumulative counts at the bin edges, not evenly: where the density changes across a bin (a
# steep tail, a peak), an even spread misplaces a good part of the bin's mass, and the
# neighbours say which way it leans. Near a neuron's exact min (or max) a distribution often
# piles up (GELU's minimum, a clipped activation) into a density that a cubic cannot follow:
# there the count below a value is a power law of its distance to the extreme, ``C d ** a``
# (a pile-up's own law: about 0.5 at GELU's minimum). The bin that ends at the extreme
# takes ``a`` from its count and its neighbour's; a bin nearer the extreme than its own
# width, from the counts on either side of it, but only where the density rises bin by bin
# towards the extreme and ``a < 1`` (elsewhere the bulk of a distribution may peak in the
# bin: at 2 bins per octave, taking its shape from the extreme cost channel maxima up to
# 6 % in rank). A pure power law is then read exactly, and GELU's pooled rank error at
# 1,024 bins falls from 0.4 % to 0.15 %. Every estimate stays
# inside its bin, so the guaranteed rank interval (rank_bounds) is unchanged.
#
# Fine bins (the fine counts next to an extreme, see fine.py) are read evenly: at 4,096 bins
# per octave the shape inside one hardly matters, and each holds too few values for its
# neighbours' densities to say more. For the same reason a coarse bin takes no slope from a
# fine neighbour; the coarse bin that follows the fine bins of an extreme takes the power law
# of the distance to it, from the exact count of everything between them.

_CUBIC, _FROM_MIN, _FROM_MAX, _NEAR_MIN, _NEAR_MAX = 0, 1, 2, 3, 4
_NEAR = 1.0  # bins nearer an exact extreme than this many widths follow its power law


@jit
def _bin_shape(
    j: int,
    counts: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    vmin: float,
    vmax: float,
) -> tuple[int, float, float]:
    """How bin ``j`` spreads its values: (kind, a, b) for :func:`_shape_cdf`."""
    if is_fine(lower[j], upper[j]):
        return _CUBIC, 1.0, 1.0
    s0, s1, left, right = _edge_slopes(j, counts, lower, upper, vmin, vmax)
    at_min = not left and lower[j] < vmin
    at_max = not right and upper[j] > vmax
    if at_min and not at_max:
        return _FROM_MIN, _power_fit(j, j + 1, counts, lower, upper, vmin, vmax, s1), 0.0
    if at_max and not at_min:
        return _FROM_MAX, _power_fit(j, j - 1, counts, lower, upper, vmin, vmax, s0), 0.0
    lo, hi, d = _density(j, counts, lower, upper, vmin, vmax)
    after_fine = j > 0 and upper[j - 1] == lower[j] and is_fine(lower[j - 1], upper[j - 1])
    before_fine = (
        j + 1 < counts.shape[0] and lower[j + 1] == upper[j] and is_fine(lower[j + 1], upper[j + 1])
    )
    if d > 0.0 and lo > vmin and (lo - vmin < _NEAR * (hi - lo) or after_fine):
        outside = _mass_to_extreme(j, -1, counts, lower, upper, vmin, vmax)
        rho = (hi - vmin) / (lo - vmin)
        a = np.log1p(counts[j] / outside) / np.log(rho) if outside > 0.0 else np.inf
        if a < 1.0 and rho < np.inf:  # a pile-up: the density falls away from the extreme
            return _NEAR_MIN, a, rho
    if d > 0.0 and hi < vmax and (vmax - hi < _NEAR * (hi - lo) or before_fine):
        outside = _mass_to_extreme(j, 1, counts, lower, upper, vmin, vmax)
        rho = (vmax - lo) / (vmax - hi)
        a = np.log1p(counts[j] / outside) / np.log(rho) if outside > 0.0 else np.inf
        if a < 1.0 and rho < np.inf:
            return _NEAR_MAX, a, rho
    return _CUBIC, min(s0, 3.0), min(s1, 3.0)  # the cubic is monotone for slopes up to 3


@jit
def _mass_to_extreme(
    j: int,
    step: int,
    counts: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    vmin: float,
    vmax: float,
) -> float:
    """Count of the bins from bin ``j`` (excluded) to the one holding the exact min
    (``step=-1``) or max (``step=1``) if they pile up against it: contiguous spread bins
    whose density rises towards the extreme. Otherwise 0."""
    lo, hi, density = _density(j, counts, lower, upper, vmin, vmax)
    edge = lo if step < 0 else hi
    total = 0.0
    i = j + step
    while 0 <= i < counts.shape[0]:
        ilo, ihi, idens = _density(i, counts, lower, upper, vmin, vmax)
        fine = is_fine(lower[i], upper[i])
        if (idens < density and not fine) or (ihi if step < 0 else ilo) != edge:
            return 0.0
        total += counts[i]
        if (step < 0 and ilo <= vmin) or (step > 0 and ihi >= vmax):
            return total
        edge = ilo if step < 0 else ihi
        if not fine:
            density = idens
        i += step
    return 0.0


@jit
def _power_fit(
    j: int,
    nb: int,
    counts: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    vmin: float,
    vmax: float,
    slope: float,
) -> float:
    """Exponent ``a`` of the share ``t ** a`` of the bin ``j`` that ends at an exact extreme.

    Fitted so that the power law, continued across the neighbour ``nb``, holds both bins'
    counts (a pile-up's own law: GELU's minimum gives about 0.5); from the density
    ``slope`` at the inner edge (between 0.5 and 3) when no such neighbour holds values.
    """
    lo, hi, _ = _density(j, counts, lower, upper, vmin, vmax)
    if 0 <= nb < counts.shape[0] and counts[j] > 0 and counts[nb] > 0:
        nlo, nhi, nd = _density(nb, counts, lower, upper, vmin, vmax)
        if nd > 0.0 and (nlo == hi or nhi == lo):
            a = np.log1p(counts[nb] / counts[j]) / np.log1p((nhi - nlo) / (hi - lo))
            return min(max(a, 0.25), 3.0)
    return min(max(slope, 0.5), 3.0)


@jit
def _shape_cdf(t: float, kind: int, a: float, b: float) -> float:
    """Share of a bin's values below ``t`` (0 to 1 across the bin)."""
    if kind == _FROM_MIN:
        return t**a
    if kind == _FROM_MAX:
        return 1.0 - (1.0 - t) ** a
    # b: the far edge's distance to the extreme over the near edge's. (1 + t (b - 1)) ** a - 1
    # over b ** a - 1, in forms that keep their digits when a is tiny.
    if kind == _NEAR_MIN:
        return np.expm1(a * np.log1p(t * (b - 1.0))) / np.expm1(a * np.log(b))
    if kind == _NEAR_MAX:
        return 1.0 - np.expm1(a * np.log1p((1.0 - t) * (b - 1.0))) / np.expm1(a * np.log(b))
    return _hermite(t, a, b)


@jit
def _shape_inverse(p: float, kind: int, a: float, b: float) -> float:
    """The ``t`` at which :func:`_shape_cdf` reaches ``p``."""
    if kind == _FROM_MIN:
        return p ** (1.0 / a)
    if kind == _FROM_MAX:
        return 1.0 - (1.0 - p) ** (1.0 / a)
    if kind == _NEAR_MIN:
        return np.expm1(np.log1p(p * np.expm1(a * np.log(b))) / a) / (b - 1.0)
    if kind == _NEAR_MAX:
        return 1.0 - np.expm1(np.log1p((1.0 - p) * np.expm1(a * np.log(b))) / a) / (b - 1.0)
    return _hermite_inverse(p, a, b)


@jit
def _density(j: int, counts: np.ndarray, lower: np.ndarray, upper: np.ndarray,
             vmin: float, vmax: float) -> tuple[float, float, float]:  # fmt: skip
    """Clipped edges and density (count per unit) of bin ``j``; density -1 for a point."""
    lo = max(lower[j], vmin)
    hi = min(upper[j], vmax)
    if not hi > lo or not np.isnan(_single_value(lower[j], upper[j])):
        return lo, hi, -1.0
    return lo, hi, counts[j] / (hi - lo)


@jit
def _edge_slopes(
    j: int,
    counts: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    vmin: float,
    vmax: float,
) -> tuple[float, float, bool, bool]:
    """Density at the two edges of bin ``j`` over its mean density (at least 0), and whether
    it has a left and a right neighbour.

    A neighbour counts only if it touches the bin (no gap, not a point, not padding). Between
    two bins: the weighted harmonic mean of their densities (zero if either is empty); at an
    edge without a neighbour: PCHIP's one-sided estimate from the bin and its other neighbour.
    """
    lo, hi, d = _density(j, counts, lower, upper, vmin, vmax)
    h = hi - lo
    n_bins = counts.shape[0]
    coarse = not is_fine(lower[j], upper[j])
    dl, hl = -1.0, 0.0
    if j > 0:
        llo, lhi, ld = _density(j - 1, counts, lower, upper, vmin, vmax)
        if ld >= 0 and lhi == lo and not (coarse and is_fine(lower[j - 1], upper[j - 1])):
            dl, hl = ld, lhi - llo
    dr, hr = -1.0, 0.0
    if j + 1 < n_bins:
        rlo, rhi, rd = _density(j + 1, counts, lower, upper, vmin, vmax)
        if rd >= 0 and rlo == hi and not (coarse and is_fine(lower[j + 1], upper[j + 1])):
            dr, hr = rd, rhi - rlo
    m0 = _node_slope(hl, dl, h, d) if dl >= 0 else _end_slope(h, d, hr, dr)
    m1 = _node_slope(h, d, hr, dr) if dr >= 0 else _end_slope(h, d, hl, dl)
    return max(m0 / d, 0.0), max(m1 / d, 0.0), dl >= 0, dr >= 0


@jit
def _node_slope(h1: float, d1: float, h2: float, d2: float) -> float:
    """Fritsch-Butland slope at the edge between bins of widths ``h1``, ``h2``."""
    if d1 <= 0.0 or d2 <= 0.0:
        return 0.0
    return 3.0 * (h1 + h2) / ((2.0 * h2 + h1) / d1 + (h2 + 2.0 * h1) / d2)


@jit
def _end_slope(h0: float, d0: float, h1: float, d1: float) -> float:
    """PCHIP's one-sided slope at an outer edge of a bin (``d1 < 0``: no other neighbour)."""
    if d1 < 0.0:
        return d0
    m = ((2.0 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
    if m < 0.0:
        return 0.0
    return min(m, 3.0 * d0)


@jit
def _hermite(t: float, s0: float, s1: float) -> float:
    """Share of a bin's values below ``t`` (0 to 1 across it), edge slopes ``s0``, ``s1``."""
    t2 = t * t
    t3 = t2 * t
    return (t3 - 2.0 * t2 + t) * s0 + (3.0 * t2 - 2.0 * t3) + (t3 - t2) * s1


@jit
def _hermite_inverse(p: float, s0: float, s1: float) -> float:
    """The ``t`` in [0, 1] at which :func:`_hermite` reaches ``p`` (it is monotone)."""
    if s0 == 1.0 and s1 == 1.0:
        return p  # an even spread
    a, b = 0.0, 1.0
    for _ in range(48):  # to float64 precision
        mid = 0.5 * (a + b)
        if _hermite(mid, s0, s1) < p:
            a = mid
        else:
            b = mid
    return 0.5 * (a + b)


@jit
def quantiles(
    counts: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    mins: np.ndarray,
    maxs: np.ndarray,
    neginf: np.ndarray,
    posinf: np.ndarray,
    qs: np.ndarray,
    out: np.ndarray,
) -> None:
    """``out[n, i]``: quantile ``qs[i]`` of neuron ``n`` (numpy's 'linear' rule on the ranks).

    ``counts[neuron, bin]`` and the edges ``lower``, ``upper`` (same shape) describe each
    neuron's finite values; bins with no count (padding included) are never used.
    """
    n_neurons, n_bins = counts.shape
    for n in range(n_neurons):
        cum = np.cumsum(counts[n])
        n_finite = cum[n_bins - 1] if n_bins else 0.0
        total = neginf[n] + n_finite + posinf[n]
        for i in range(qs.shape[0]):
            if total == 0:
                out[n, i] = np.nan
                continue
            h = qs[i] * (total - 1)
            k0 = np.floor(h)
            frac = h - k0
            v0 = _order_statistic(
                k0, cum, counts[n], lower[n], upper[n], mins[n], maxs[n], neginf[n], n_finite
            )
            if frac == 0.0:
                out[n, i] = v0
                continue
            v1 = _order_statistic(
                k0 + 1.0,
                cum,
                counts[n],
                lower[n],
                upper[n],
                mins[n],
                maxs[n],
                neginf[n],
                n_finite,
            )
            if v0 == v1 or np.isinf(v0):
                out[n, i] = v0  # also the limit of the interpolation next to -Inf
            elif np.isinf(v1):
                out[n, i] = v1
            else:
                out[n, i] = v0 + frac * (v1 - v0)


@jit
def ranks(
    counts: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    mins: np.ndarray,
    maxs: np.ndarray,
    neginf: np.ndarray,
    posinf: np.ndarray,
    values: np.ndarray,
    out: np.ndarray,
) -> None:
    """``out[n, i]``: the quantile rank of ``values[n, i]`` in neuron ``n``,
    (#below + #equal / 2) / N."""
    n_neurons, n_bins = counts.shape
    for n in range(n_neurons):
        total = neginf[n] + posinf[n]
        for j in range(n_bins):
            total += counts[n, j]
        for i in range(values.shape[1]):
            out[n, i] = _rank(
                values[n, i], total, counts[n], lower[n], upper[n], mins[n], maxs[n],
                neginf[n], posinf[n],
            )  # fmt: skip


@jit
def _rank(
    v: float,
    total: float,
    counts: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    vmin: float,
    vmax: float,
    neginf: float,
    posinf: float,
) -> float:
    if total == 0 or np.isnan(v):
        return np.nan
    if v == -np.inf:
        return 0.5 * neginf / total
    if v == np.inf:
        return (total - 0.5 * posinf) / total
    below = neginf
    for j in range(counts.shape[0]):
        c = counts[j]
        if c == 0:
            continue
        lo = max(lower[j], vmin)
        hi = min(upper[j], vmax)
        point = _single_value(lower[j], upper[j])
        if np.isnan(point) and hi <= lo:  # the zero bin, or all at the min or the max
            point = lo
        if not np.isnan(point):
            if v > point:
                below += c
            elif v == point:
                below += 0.5 * c
        elif v >= hi:
            below += c
        elif v > lo:
            kind, a, b = _bin_shape(j, counts, lower, upper, vmin, vmax)
            below += c * _shape_cdf((v - lo) / (hi - lo), kind, a, b)
    return below / total


@jit
def rank_bounds(
    counts: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    mins: np.ndarray,
    maxs: np.ndarray,
    neginf: np.ndarray,
    posinf: np.ndarray,
    values: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
) -> None:
    """``lo[n, i]``, ``hi[n, i]``: the guaranteed interval of the rank of ``values[n, i]``.

    Whatever the data behind the sketch, the fraction of neuron ``n``'s values below
    ``values[n, i]`` and the fraction at or below it both lie in ``[lo, hi]``. Values in a bin
    that lies wholly on one side count on that side; only the bins that may hold the value
    itself are uncertain. A positive bin ``[lower, upper)`` holds values below ``upper``, a
    negative bin ``(lower, upper]`` values above ``lower`` (the last bins, out to float32
    max, are closed), and every bin is clipped to the neuron's exact min and max; a bin of
    one possible value (see :func:`_single_value`) is a point. NaN gives NaN.
    """
    n_neurons, n_bins = counts.shape
    for n in range(n_neurons):
        total = neginf[n] + posinf[n]
        for j in range(n_bins):
            total += counts[n, j]
        for i in range(values.shape[1]):
            v = values[n, i]
            if total == 0 or np.isnan(v):
                lo[n, i] = np.nan
                hi[n, i] = np.nan
                continue
            below = neginf[n] if v > -np.inf else 0.0
            above = posinf[n] if v < np.inf else 0.0
            for j in range(n_bins):
                c = counts[n, j]
                if c == 0:
                    continue
                a = max(lower[n, j], mins[n])
                b = min(upper[n, j], maxs[n])
                point = _single_value(lower[n, j], upper[n, j])
                if not np.isnan(point) or b <= a:
                    p = point if not np.isnan(point) else a
                    if p < v:
                        below += c
                    elif p > v:
                        above += c
                    continue
                if b < v or (lower[n, j] >= 0 and upper[n, j] <= v and upper[n, j] < _F32_MAX):
                    below += c
                elif a > v or (upper[n, j] <= 0 and lower[n, j] >= v and lower[n, j] > -_F32_MAX):
                    above += c
            lo[n, i] = below / total
            hi[n, i] = (total - above) / total


@jit
def widest_bins(
    counts: np.ndarray, lower: np.ndarray, upper: np.ndarray, mins: np.ndarray, maxs: np.ndarray
) -> np.ndarray:
    """``[neuron, group]`` the largest count of a bin that may hold several distinct values.

    ``counts`` is ``[neuron, group, bin]``, ``mins`` and ``maxs`` ``[neuron, group]``. That
    count over the group's number of values is the widest rank interval :func:`rank_bounds`
    can give an estimate: a bound on the rank error of every answer.
    """
    n_neurons, n_groups, n_bins = counts.shape
    out = np.zeros((n_neurons, n_groups), dtype=np.float64)
    for n in range(n_neurons):
        for g in range(n_groups):
            for j in range(n_bins):
                c = counts[n, g, j]
                if c <= out[n, g]:
                    continue
                a = max(lower[n, j], mins[n, g])
                b = min(upper[n, j], maxs[n, g])
                if b > a and np.isnan(_single_value(lower[n, j], upper[n, j])):
                    out[n, g] = c
    return out


@jit
def widest_ranges(
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
    """:func:`widest_bins` of a summary ``[neuron, group, bin]`` at its resolutions, faster.

    Every bin of neuron ``n`` is one float32 wide where ``fine[n]`` (a point) and its zero
    bin ``zero_bin[n]`` is the point 0. Otherwise a bin with values spans several unless
    clipping to the group's min and max leaves a point: the group holds one distinct value,
    or the bin starts at the group's max (ends at its min). No float32 step is computed.
    The values at the min and the max (``min_count``, ``max_count``) are one value each, so
    the first and last bins with values count without them.
    """
    n_neurons, n_groups, n_bins = counts.shape
    out = np.zeros((n_neurons, n_groups), dtype=np.float64)
    for n in range(n_neurons):
        if fine[n]:
            continue
        z = zero_bin[n]
        for g in range(n_groups):
            lo, hi = mins[n, g], maxs[n, g]
            if not lo < hi:  # one distinct finite value, or none (NaN)
                continue
            row = counts[n, g]
            first, last = 0, n_bins - 1
            while first < last and row[first] == 0:
                first += 1
            while last > first and row[last] == 0:
                last -= 1
            best = 0.0
            for j in range(n_bins):
                c = np.float64(row[j])
                if j == first:
                    c = max(c - min_count[n, g], 0.0)
                if j == last:
                    c = max(c - max_count[n, g], 0.0)
                if c > best and j != z and lower[n, j] < hi and upper[n, j] > lo:
                    best = c
            out[n, g] = best
    return out


@jit
def rebin(
    counts: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    mins: np.ndarray,
    maxs: np.ndarray,
    edges: np.ndarray,
    out: np.ndarray,
) -> None:
    """Spread each sketch bin's count over the display ``edges`` in proportion to overlap.

    Mass outside ``[edges[0], edges[-1]]`` is left out, so ``out`` never holds more than the
    sketch; the last display bin is closed on the right.
    """
    n_neurons, n_bins = counts.shape
    n_out = edges.shape[0] - 1
    e_lo = edges[0]
    e_hi = edges[n_out]
    for n in range(n_neurons):
        for j in range(n_bins):
            c = counts[n, j]
            if c == 0:
                continue
            lo = max(lower[n, j], mins[n])
            hi = min(upper[n, j], maxs[n])
            if hi <= lo:
                if lo < e_lo or lo > e_hi:
                    continue
                k = np.searchsorted(edges, lo, side="right") - 1
                out[n, min(k, n_out - 1)] += c
                continue
            width = hi - lo
            k = max(np.searchsorted(edges, lo, side="right") - 1, 0)
            while k < n_out and edges[k] < hi:
                overlap = min(hi, edges[k + 1]) - max(lo, edges[k])
                if overlap > 0:
                    out[n, k] += c * overlap / width
                k += 1
