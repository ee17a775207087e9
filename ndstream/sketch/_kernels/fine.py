"""Fine counts at the extremes: sliding a row to a new anchor in the update, and reading
them as bins of a neuron's axis (see ``grid.py``, ``FINE_BITS``; moving rows between sketches
is ``sketch/fine.py``, in NumPy).

A row of fine counts holds ``2 * F`` counters: ``row[i]`` counts the values whose fine key is
``lo + i`` (``lo`` the fine key of the min), ``row[F + i]`` those whose fine key is ``hi - i``
(``hi`` that of the max). Exact zeros and non-finite values are never in them.
"""

from __future__ import annotations

import numpy as np

from ..grid import FINE_BITS
from ._base import jit
from .edges import _magnitude_edges

# A bin is a fine one, or finer, when its width times this is below its largest magnitude:
# at 2**FINE_BITS bins per octave a bin is at most 2**-FINE_BITS of its lower edge wide,
# and a grid bin one bit coarser at least that of its upper edge.
FINE_SCALE = float(1 << FINE_BITS)


@jit
def is_fine(lower: float, upper: float) -> bool:
    """Whether bin ``[lower, upper]`` is at the resolution of the fine counts or finer."""
    return (upper - lower) * FINE_SCALE < max(abs(lower), abs(upper))


@jit
def slide(row: np.ndarray, start: int, width: int, by: int) -> None:
    """Move ``row[start : start + width]`` up by ``by`` slots, dropping what passes the end."""
    if by <= 0:
        return
    if by >= width:
        row[start : start + width] = 0
        return
    for i in range(width - 1, by - 1, -1):
        row[start + i] = row[start + i - by]
    row[start : start + by] = 0


@jit
def _fine_edges(key: int, exp_lo: int, exp_hi: int) -> tuple[float, float]:
    """Value edges of the bin of fine key ``key`` (see ``grid.fine_keys``)."""
    base = (exp_lo << FINE_BITS) - 1  # the grid's rebasing (grid.key_limits)
    if key >= 0:
        return _magnitude_edges(key - base, FINE_BITS, exp_lo, exp_hi)
    lo, hi = _magnitude_edges(-1 - key - base, FINE_BITS, exp_lo, exp_hi)
    return -hi, -lo


@jit
def _agree(fine: np.ndarray, counts: np.ndarray) -> bool:
    """Whether fine counts hold the values of the bins they would replace: not where the
    bins count a row more than once (groups of several groupings added up)."""
    return fine.sum() == counts.sum()


@jit
def refine(
    counts: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    use: np.ndarray,
    lo_key: np.ndarray,
    hi_key: np.ndarray,
    fine: np.ndarray,
    exp_lo: int,
    exp_hi: int,
    out_counts: np.ndarray,
    out_lower: np.ndarray,
    out_upper: np.ndarray,
) -> None:
    """Each neuron's bins with those next to its min and max split into their fine bins.

    ``counts[n]``, ``lower[n]``, ``upper[n]``: the bins of neuron ``n`` in ascending order
    (NaN edges for padding); ``fine[n]`` its fine counts, anchored at fine keys ``lo_key[n]``
    and ``hi_key[n]``, used where ``use[n]``. From the bin that holds the min up, every bin
    that the fine bins cover whole, and of one sign, becomes its fine bins (exact counts,
    so every guaranteed rank interval stays one); the same down from the max. The first bin
    they do not cover whole stays as it was, so each bin keeps its count exact. A side whose
    fine counts do not add up to the bins they would replace (bins that count a row twice,
    see ``_agree``) keeps its bins. The output
    arrays are ``2 * F`` bins wider, padded with NaN edges and zero counts.
    """
    width = fine.shape[1] // 2
    n_neurons, n_bins = counts.shape
    for n in range(n_neurons):
        out_counts[n, :] = 0.0
        out_lower[n, :] = np.nan
        out_upper[n, :] = np.nan
        last = n_bins - 1
        while last >= 0 and np.isnan(lower[n, last]):
            last -= 1
        first_kept, last_kept = 0, last  # grid bins [first_kept, last_kept] stay as they are
        below = 0  # set with last_kept on the max side
        o = 0
        if use[n] and last >= 0:
            # Min side: fine keys lo .. lo + F - 1 of the min's sign, ascending.
            lo = lo_key[n]
            top_key = lo + width - 1
            if lo < 0:
                top_key = min(top_key, -1)
            top = _fine_edges(top_key, exp_lo, exp_hi)[1]
            j = 0
            while j <= last and upper[n, j] <= top and not (lower[n, j] == 0 and upper[n, j] == 0):
                j += 1
            end = lo  # past the last fine key inside bins [0, j)
            while end <= top_key and j > 0:
                if _fine_edges(end, exp_lo, exp_hi)[0] >= upper[n, j - 1]:
                    break
                end += 1
            if _agree(fine[n, : end - lo], counts[n, :j]):
                first_kept = j
                for key in range(lo, end):
                    out_counts[n, o] = fine[n, key - lo]
                    out_lower[n, o], out_upper[n, o] = _fine_edges(key, exp_lo, exp_hi)
                    o += 1
            # Max side: fine keys hi - F + 1 .. hi of the max's sign, down to the min side's.
            hi = hi_key[n]
            bottom_key = hi - width + 1
            if hi >= 0:
                bottom_key = max(bottom_key, 0)
            bottom = _fine_edges(bottom_key, exp_lo, exp_hi)[0]
            j = last
            while (
                j >= first_kept
                and lower[n, j] >= bottom
                and not (lower[n, j] == 0 and upper[n, j] == 0)
            ):
                j -= 1
            below = hi  # below the lowest fine key inside bins (j, last]
            while below > hi - width and j < last:
                if _fine_edges(below, exp_lo, exp_hi)[1] <= lower[n, j + 1]:
                    break
                below -= 1
            if _agree(fine[n, width : width + hi - below], counts[n, j + 1 : last + 1]):
                last_kept = j
        for j in range(first_kept, last_kept + 1):
            out_counts[n, o] = counts[n, j]
            out_lower[n, o], out_upper[n, o] = lower[n, j], upper[n, j]
            o += 1
        if last_kept < last:  # the max side's fine keys below + 1 .. hi replace its bins
            hi = hi_key[n]
            for k in range(below + 1, hi + 1):
                flo, fhi = _fine_edges(k, exp_lo, exp_hi)
                out_counts[n, o] = fine[n, width + hi - k]
                out_lower[n, o], out_upper[n, o] = flo, fhi
                o += 1
