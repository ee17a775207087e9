"""Two distributions of each neuron, read side by side: the curves behind the contrast metrics
(:mod:`ndstream.sketch.contrast`), each with the interval the two sketches guarantee.

A neuron's bins that hold values become *pieces*: a point (a bin of one possible value, or
one clipped to a single value by the exact min or max) or a spread ``[a, b]`` whose count is
read by the shape :func:`~.queries._bin_shape` gives it. The pieces of both distributions cut
the line at their ends, the *breakpoints*. At each breakpoint ``x`` the sweep records, for
each distribution, its cumulative counts: estimated (``P(X <= x)``, and the point mass at
``x``) and guaranteed (what lies wholly at or below ``x``, and what may). Between two
breakpoints no piece starts or ends, so those numbers bound every ``x`` of the gap too, and
a metric's bounds follow from the breakpoints alone.
"""

from __future__ import annotations

import numpy as np

from ._base import jit
from .queries import _bin_shape, _shape_cdf, _single_value

_POINT = -1  # a piece's kind when it is a single value

# Columns of contrast_curves' output.
KS, KS_LO, KS_HI, W1, W1_LO, W1_HI, AUC, AUC_LO, AUC_HI = range(9)
N_OUT = 9


@jit
def _pieces(
    counts: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    vmin: float,
    vmax: float,
    a: np.ndarray,
    b: np.ndarray,
    c: np.ndarray,
    kind: np.ndarray,
    s0: np.ndarray,
    s1: np.ndarray,
) -> int:
    """A neuron's bins with values as pieces (ascending, disjoint but for shared ends);
    returns how many."""
    k = 0
    for j in range(counts.shape[0]):
        if counts[j] == 0:
            continue
        lo = max(lower[j], vmin)
        hi = min(upper[j], vmax)
        point = _single_value(lower[j], upper[j])
        if not np.isnan(point) or hi <= lo:
            v = point if not np.isnan(point) else lo
            a[k], b[k], kind[k] = v, v, _POINT
        else:
            kd, p, q = _bin_shape(j, counts, lower, upper, vmin, vmax)
            a[k], b[k], kind[k], s0[k], s1[k] = lo, hi, kd, p, q
        c[k] = counts[j]
        k += 1
    return k


@jit
def _sweep(
    xs: np.ndarray,
    m: int,
    a: np.ndarray,
    b: np.ndarray,
    c: np.ndarray,
    kind: np.ndarray,
    s0: np.ndarray,
    s1: np.ndarray,
    k: int,
    neginf: float,
    curves: np.ndarray,
) -> None:
    """One distribution's counts at the breakpoints ``xs[:m]``; ``curves[row, i]``:

    0 ``le``: estimated count at or below ``x``; 1 ``atom``: the point mass at ``x``;
    2 ``sure``: count of the pieces wholly at or below ``x``; 3 ``may``: count of the pieces
    that may hold a value at or below ``x``; 4 ``ends``: spread count ending at ``x``;
    5 ``starts``: spread count starting at ``x``. Values at -Inf count as below every ``x``.
    """
    jb = 0  # pieces [0, jb) end at or below x
    ja = 0  # pieces [0, ja) start at or below x
    sure = neginf
    may = neginf
    for i in range(m):
        x = xs[i]
        while jb < k and b[jb] <= x:
            sure += c[jb]
            jb += 1
        while ja < k and a[ja] <= x:
            may += c[ja]
            ja += 1
        atom = 0.0
        ends = 0.0
        j = jb - 1
        while j >= 0 and b[j] == x:
            if kind[j] == _POINT:
                atom += c[j]
            else:
                ends += c[j]
            j -= 1
        le = sure
        starts = 0.0
        for j in range(jb, ja):  # spread pieces that start at or below x and end above it
            if a[j] == x:
                starts += c[j]
            else:
                le += c[j] * _shape_cdf((x - a[j]) / (b[j] - a[j]), kind[j], s0[j], s1[j])
        curves[0, i] = le
        curves[1, i] = atom
        curves[2, i] = sure
        curves[3, i] = may
        curves[4, i] = ends
        curves[5, i] = starts


@jit
def _neuron(
    xs: np.ndarray,
    m: int,
    ca: np.ndarray,
    cb: np.ndarray,
    ta: float,
    tb: float,
    neg_a: float,
    neg_b: float,
    pos_a: float,
    pos_b: float,
    a_lo: np.ndarray,
    a_hi: np.ndarray,
    a_c: np.ndarray,
    ka: int,
    out: np.ndarray,
) -> None:
    """The metrics of one neuron from both distributions' curves (see contrast_curves)."""
    # KS: the largest gap between the two CDFs; below the first breakpoint only -Inf counts.
    gap0 = abs(neg_a / ta - neg_b / tb)
    ks, ks_lo, ks_hi = gap0, gap0, gap0
    for i in range(m):
        le_a, le_b = ca[0, i] / ta, cb[0, i] / tb
        lt_a, lt_b = (ca[0, i] - ca[1, i]) / ta, (cb[0, i] - cb[1, i]) / tb
        ks = max(ks, abs(le_a - le_b), abs(lt_a - lt_b))
        sure_a, may_a = ca[2, i] / ta, ca[3, i] / ta
        sure_b, may_b = cb[2, i] / tb, cb[3, i] / tb
        ks_hi = max(ks_hi, may_a - sure_b, may_b - sure_a)
        ks_lo = max(ks_lo, sure_a - may_b, sure_b - may_a)
    out[KS_LO], out[KS_HI] = ks_lo, ks_hi
    out[KS] = min(max(ks, ks_lo), ks_hi)

    # Wasserstein-1: the area between the CDFs; infinite if the infinite shares differ.
    if neg_a / ta != neg_b / tb or pos_a / ta != pos_b / tb:
        out[W1] = out[W1_LO] = out[W1_HI] = np.inf
    else:
        w1, w1_lo, w1_hi = 0.0, 0.0, 0.0
        for i in range(m - 1):
            w = xs[i + 1] - xs[i]
            sure_a, may_a = ca[2, i] / ta, ca[3, i] / ta
            sure_b, may_b = cb[2, i] / tb, cb[3, i] / tb
            w1_hi += w * max(may_a - sure_b, may_b - sure_a)
            w1_lo += w * max(0.0, sure_a - may_b, sure_b - may_a)
            left = ca[0, i] / ta - cb[0, i] / tb
            right = (ca[0, i + 1] - ca[1, i + 1]) / ta - (cb[0, i + 1] - cb[1, i + 1]) / tb
            if left * right >= 0.0:
                w1 += w * 0.5 * (abs(left) + abs(right))
            else:  # the CDFs cross inside the gap: two triangles
                w1 += w * 0.5 * (left * left + right * right) / (abs(left) + abs(right))
        out[W1_LO], out[W1_HI] = w1_lo, w1_hi
        out[W1] = min(max(w1, w1_lo), w1_hi)

    # AUROC: P(A > B) + P(A = B) / 2. g(x), B's mid-rank of x, weighs each value of A.
    inf_part = neg_a * 0.5 * neg_b / tb + pos_a * (1.0 - 0.5 * pos_b / tb)
    auc = inf_part
    for i in range(m):
        g = cb[0, i] - 0.5 * cb[1, i]
        auc += ca[1, i] * g / tb
        if i + 1 < m:
            mass = (ca[0, i + 1] - ca[1, i + 1]) - ca[0, i]
            auc += mass * 0.5 * (cb[0, i] + cb[0, i + 1] - cb[1, i + 1]) / tb
    auc_lo, auc_hi = inf_part, inf_part
    for p in range(ka):  # each piece of A lies between its ends; g only rises
        s = np.searchsorted(xs[:m], a_lo[p])
        e = np.searchsorted(xs[:m], a_hi[p])
        g_lo = cb[2, s] - 0.5 * cb[1, s] - 0.5 * cb[4, s]
        g_hi = cb[3, e] - 0.5 * cb[1, e] - 0.5 * cb[5, e]
        auc_lo += a_c[p] * g_lo / tb
        auc_hi += a_c[p] * g_hi / tb
    out[AUC_LO], out[AUC_HI] = auc_lo / ta, auc_hi / ta
    out[AUC] = min(max(auc / ta, out[AUC_LO]), out[AUC_HI])


@jit
def contrast_curves(
    counts_a: np.ndarray,
    lower_a: np.ndarray,
    upper_a: np.ndarray,
    mins_a: np.ndarray,
    maxs_a: np.ndarray,
    neginf_a: np.ndarray,
    posinf_a: np.ndarray,
    counts_b: np.ndarray,
    lower_b: np.ndarray,
    upper_b: np.ndarray,
    mins_b: np.ndarray,
    maxs_b: np.ndarray,
    neginf_b: np.ndarray,
    posinf_b: np.ndarray,
    out: np.ndarray,
) -> None:
    """``out[n, :]``: KS distance, Wasserstein-1 and AUROC of neuron ``n``'s distributions A
    and B, each as (estimate, guaranteed lower, guaranteed upper); see the columns above.

    Each distribution is ``counts[neuron, bin]`` (float64) on its own edges, as
    :class:`~ndstream.sketch.summary.Pooled` holds it; NaN values are not in it. A neuron with
    no values on either side gives NaN.
    """
    n_neurons = counts_a.shape[0]
    nba, nbb = counts_a.shape[1], counts_b.shape[1]
    pa = np.empty((5, nba))
    pb = np.empty((5, nbb))
    kinds_a = np.empty(nba, dtype=np.int64)
    kinds_b = np.empty(nbb, dtype=np.int64)
    xs = np.empty(2 * (nba + nbb))
    ca = np.empty((6, 2 * (nba + nbb)))
    cb = np.empty((6, 2 * (nba + nbb)))
    for n in range(n_neurons):
        ka = _pieces(
            counts_a[n], lower_a[n], upper_a[n], mins_a[n], maxs_a[n],
            pa[0], pa[1], pa[2], kinds_a, pa[3], pa[4],
        )  # fmt: skip
        kb = _pieces(
            counts_b[n], lower_b[n], upper_b[n], mins_b[n], maxs_b[n],
            pb[0], pb[1], pb[2], kinds_b, pb[3], pb[4],
        )  # fmt: skip
        ta = neginf_a[n] + posinf_a[n]
        tb = neginf_b[n] + posinf_b[n]
        for p in range(ka):
            ta += pa[2, p]
        for p in range(kb):
            tb += pb[2, p]
        if ta == 0 or tb == 0:
            out[n, :] = np.nan
            continue
        raw = np.concatenate((pa[0, :ka], pa[1, :ka], pb[0, :kb], pb[1, :kb]))
        raw.sort()
        m = 0
        for v in raw:
            if m == 0 or v != xs[m - 1]:
                xs[m] = v
                m += 1
        _sweep(xs, m, pa[0], pa[1], pa[2], kinds_a, pa[3], pa[4], ka, neginf_a[n], ca)
        _sweep(xs, m, pb[0], pb[1], pb[2], kinds_b, pb[3], pb[4], kb, neginf_b[n], cb)
        _neuron(
            xs, m, ca, cb, ta, tb, neginf_a[n], neginf_b[n], posinf_a[n], posinf_b[n],
            pa[0], pa[1], pa[2], ka, out[n],
        )  # fmt: skip


@jit
def quantile_ranges(
    counts: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    mins: np.ndarray,
    maxs: np.ndarray,
    neginf: np.ndarray,
    posinf: np.ndarray,
    qs: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
) -> None:
    """``lo[n, i]``, ``hi[n, i]``: the values that quantile ``qs[i]`` of neuron ``n`` (numpy's
    'linear' rule) can take, whatever the data behind the sketch.

    The quantile interpolates order statistics ``k`` and ``k + 1``; each lies in the bin that
    holds its rank, clipped to the exact min and max (a point where the bin holds one value),
    and the interpolation rises with both.
    """
    n_neurons, n_bins = counts.shape
    for n in range(n_neurons):
        cum = np.cumsum(counts[n])
        n_finite = cum[n_bins - 1] if n_bins else 0.0
        total = neginf[n] + n_finite + posinf[n]
        for i in range(qs.shape[0]):
            if total == 0:
                lo[n, i] = np.nan
                hi[n, i] = np.nan
                continue
            h = qs[i] * (total - 1)
            k0 = np.floor(h)
            frac = h - k0
            lo0, hi0 = _order_range(k0, cum, lower[n], upper[n], mins[n], maxs[n], neginf[n])
            if frac == 0.0:
                lo[n, i], hi[n, i] = lo0, hi0
                continue
            lo1, hi1 = _order_range(k0 + 1.0, cum, lower[n], upper[n], mins[n], maxs[n], neginf[n])
            lo[n, i] = _between(lo0, lo1, frac)
            hi[n, i] = _between(hi0, hi1, frac)


@jit
def _between(v0: float, v1: float, frac: float) -> float:
    """numpy's interpolation between two order statistics (rising in both)."""
    if v0 == v1 or np.isinf(v0):
        return v0
    if np.isinf(v1):
        return v1
    return v0 + frac * (v1 - v0)


@jit
def _order_range(
    k: float,
    cum: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    vmin: float,
    vmax: float,
    n_neginf: float,
) -> tuple[float, float]:
    """The values the k-th smallest (0-based) can take."""
    n_finite = cum[cum.shape[0] - 1] if cum.shape[0] else 0.0
    if k < n_neginf:
        return -np.inf, -np.inf
    k -= n_neginf
    if k >= n_finite:
        return np.inf, np.inf
    j = np.searchsorted(cum, k, side="right")
    point = _single_value(lower[j], upper[j])
    if not np.isnan(point):
        return point, point
    return max(lower[j], vmin), min(upper[j], vmax)
