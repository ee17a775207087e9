"""Exact mode: a layer's values kept as they are, until there are too many; their codes,
bin axes and counts."""

from __future__ import annotations

import numpy as np

from ._base import _ABS_MASK, _INF_BITS, BLOCK, _rebased_key, jit, key_limits

# A finite value's code is below 2**32 in magnitude; non-finite values sort after all of them,
# and ``code - NAN_CODE`` indexes ``(nan, posinf, neginf)``.
NAN_CODE = 1 << 33
POSINF_CODE = NAN_CODE + 1
NEGINF_CODE = NAN_CODE + 2
ZERO_CODE = -1
ENTRY_BITS = 28  # a packed code keeps the value's entry number in its low bits
MAX_ENTRIES = 1 << ENTRY_BITS


@jit
def exact_codes(x: np.ndarray, m: int, exp_lo: int, exp_hi: int, out: np.ndarray) -> None:
    """``out[n, e]``: the code of ``x[e, n]``'s bin at resolution ``m``, packed with ``e``.

    A positive value's code is its rebased magnitude key (0 and up), a negative value's is
    ``-2 - key`` (so larger magnitudes sort first), an exact zero's is :data:`ZERO_CODE`, and
    NaN, +Inf and -Inf get :data:`NAN_CODE`, :data:`POSINF_CODE` and :data:`NEGINF_CODE`.
    The packed value is ``code << ENTRY_BITS | e``: sorting a row sorts by code and keeps
    track of the entries. ``x`` may have at most :data:`MAX_ENTRIES` rows.
    """
    shift, key_base, key_top = key_limits(m, exp_lo, exp_hi)
    xbits = x.view(np.int32)
    n_neurons = x.shape[1]
    # A block of neurons at a time: each row of x is read a cache line at a time, and each
    # neuron's row of codes is written in order.
    for first in range(0, n_neurons, BLOCK):
        last = min(first + BLOCK, n_neurons)
        for e in range(x.shape[0]):
            for n in range(first, last):
                b = xbits[e, n]
                mag = b & _ABS_MASK
                if mag >= _INF_BITS:
                    code = NAN_CODE if mag > _INF_BITS else (POSINF_CODE if b >= 0 else NEGINF_CODE)
                elif mag == 0:
                    code = ZERO_CODE
                else:
                    key = _rebased_key(mag, shift, key_base, key_top)
                    code = key if b >= 0 else -2 - key
                out[n, e] = (code << ENTRY_BITS) | e


@jit
def exact_axes(
    packed: np.ndarray, uniq: np.ndarray, n_neg: np.ndarray, n_pos: np.ndarray, bins: np.ndarray
) -> None:
    """Each neuron's distinct finite codes, ascending, with the zero code always among them.

    ``packed[n]`` is neuron ``n``'s row of :func:`exact_codes`, sorted. Neuron ``n``'s bins
    are ``uniq[n, :n_neg[n] + 1 + n_pos[n]]``: ``n_neg[n]`` negative codes,
    :data:`ZERO_CODE`, then ``n_pos[n]`` positive codes; ``uniq`` needs one column more than
    ``packed``. ``bins[n, e]`` receives the bin of entry ``e``, or -1, -2, -3 for NaN, +Inf
    and -Inf.
    """
    mask = MAX_ENTRIES - 1
    for n in range(packed.shape[0]):
        k = 0
        zero = -1
        for p in packed[n]:
            c = p >> ENTRY_BITS
            e = p & mask
            if c >= NAN_CODE:
                bins[n, e] = -1 - (c - NAN_CODE)
                continue
            if zero < 0 and c >= ZERO_CODE:
                zero = k
                uniq[n, k] = ZERO_CODE
                k += 1
            if c == ZERO_CODE:
                bins[n, e] = zero
                continue
            if k == 0 or uniq[n, k - 1] != c:
                uniq[n, k] = c
                k += 1
            bins[n, e] = k - 1
        if zero < 0:
            zero = k
            uniq[n, k] = ZERO_CODE
            k += 1
        n_neg[n] = zero
        n_pos[n] = k - zero - 1


@jit
def exact_counts(
    bins: np.ndarray, gids: np.ndarray, slot: np.ndarray, dst: np.ndarray, specials: np.ndarray
) -> None:
    """Count each value ``[n, e]`` of group ``gids[e]`` in its bin (see :func:`exact_axes`).

    Group ``g`` lands at ``dst[n, slot[g], bin]`` (skipped when ``slot[g] < 0``), its
    non-finite values at ``specials[n, slot[g], (nan, posinf, neginf)]``; both must come in
    zeroed.
    """
    for n in range(bins.shape[0]):
        for e in range(bins.shape[1]):
            s = slot[gids[e]]
            if s < 0:
                continue
            b = bins[n, e]
            if b >= 0:
                dst[n, s, b] += 1
            else:
                specials[n, s, -1 - b] += 1


@jit
def fold_min_max(
    x: np.ndarray,
    gids: np.ndarray,
    mins: np.ndarray,
    maxs: np.ndarray,
    min_count: np.ndarray,
    max_count: np.ndarray,
) -> None:
    """Fold the finite values of ``x[row, neuron]`` into ``mins`` and ``maxs[neuron, group]``,
    with the number of values equal to each in ``min_count`` and ``max_count``.

    Row ``r`` counts in each group ``gids[r, p]``. -0.0 counts as +0.0, as in
    :func:`update_counts`, so the result does not depend on the order of the values.
    """
    for r in range(x.shape[0]):
        for p in range(gids.shape[1]):
            g = gids[r, p]
            for n in range(x.shape[1]):
                v = x[r, n] + np.float32(0.0)
                if v - v == 0:  # finite: NaN and infinities give NaN
                    if v < mins[n, g]:
                        mins[n, g] = v
                        min_count[n, g] = 1
                    elif v == mins[n, g]:
                        min_count[n, g] += 1
                    if v > maxs[n, g]:
                        maxs[n, g] = v
                        max_count[n, g] = 1
                    elif v == maxs[n, g]:
                        max_count[n, g] += 1
