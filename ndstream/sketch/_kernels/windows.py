"""Windows: the occupied key ranges of each neuron, moving and adding windows between
layouts, and the dense per-neuron bin axes of a finalized summary (and back)."""

from __future__ import annotations

import numpy as np

from ._base import EMPTY_LO, N_SPECIAL, NAN, NEGINF, POSINF, ZERO, jit


@jit
def occupied_key_ranges(
    pool: np.ndarray,
    page: np.ndarray,
    neurons: np.ndarray,
    pos_off: np.ndarray,
    neg_off: np.ndarray,
    wp: int,
    out: np.ndarray,
) -> None:
    """``out[i]``: (pos min, pos max, neg min, neg max) keys of neuron ``neurons[i]`` with a
    nonzero count in any group; ``(EMPTY_LO, -1)`` where there are none.

    A neuron's pages are OR-ed into one first, a vectorised pass over each of them; then a
    single page is searched from both ends. Searching each page in turn would read a sparse
    or empty window of every group twice, a counter at a time.
    """
    wn = pool.shape[1] - N_SPECIAL - wp
    seen = np.empty(pool.shape[1], dtype=pool.dtype)
    for i in range(neurons.shape[0]):
        n = neurons[i]
        seen[:] = 0
        for g in range(page.shape[1]):
            pg = page[n, g]
            if pg >= 0:
                counts = pool[pg]
                for s in range(seen.shape[0]):
                    seen[s] |= counts[s]
        out[i, 0], out[i, 1] = _nonzero_span(seen[N_SPECIAL : N_SPECIAL + wp], pos_off[n])
        out[i, 2], out[i, 3] = _nonzero_span(seen[N_SPECIAL + wp : N_SPECIAL + wp + wn], neg_off[n])


@jit
def _nonzero_span(window: np.ndarray, offset: int) -> tuple[int, int]:
    """Keys ``offset + s`` of the first and last nonzero slot ``s`` of ``window``;
    ``(EMPTY_LO, -1)`` if every slot is zero."""
    for first in range(window.shape[0]):
        if window[first]:
            for last in range(window.shape[0] - 1, first - 1, -1):
                if window[last]:
                    return offset + first, offset + last
    return EMPTY_LO, -1


@jit
def add_pages(
    src: np.ndarray,
    src_page: np.ndarray,
    src_pos_off: np.ndarray,
    src_neg_off: np.ndarray,
    src_wp: int,
    src_res: np.ndarray,
    dst: np.ndarray,
    dst_page: np.ndarray,
    dst_pos_off: np.ndarray,
    dst_neg_off: np.ndarray,
    dst_wp: int,
    dst_res: np.ndarray,
    exp_lo: int,
) -> None:
    """Add every page of ``src`` into the page of the same (neuron, group) in ``dst``.

    Neuron ``n``'s keys go from resolution ``src_res[n]`` to the same or a coarser
    ``dst_res[n]``: the raw key loses its last bits and is rebased (resolutions nest). The
    windows may differ but ``dst``'s must hold the keys, and ``dst`` must have a page for
    every (neuron, group) that has one in ``src``.
    """
    n_neurons, n_groups = src_page.shape
    for n in range(n_neurons):
        for g in range(n_groups):
            a = src_page[n, g]
            if a < 0:
                continue
            b = dst_page[n, g]
            for s in range(N_SPECIAL):
                dst[b, s] += src[a, s]
            _add_windows(
                src[a], src_pos_off[n], src_neg_off[n], src_wp, src_res[n],
                dst[b], dst_pos_off[n], dst_neg_off[n], dst_wp, dst_res[n], exp_lo,
            )  # fmt: skip


@jit
def _add_windows(
    src: np.ndarray,
    src_pos: int,
    src_neg: int,
    src_wp: int,
    src_res: int,
    dst: np.ndarray,
    dst_pos: int,
    dst_neg: int,
    dst_wp: int,
    dst_res: int,
    exp_lo: int,
) -> None:
    """Add the windows of one page row into another, re-keyed to a same or coarser resolution."""
    src_base = (exp_lo << src_res) - 1
    dst_base = (exp_lo << dst_res) - 1
    drop = src_res - dst_res
    for s in range(src_wp):
        c = src[N_SPECIAL + s]
        if c:
            dst[N_SPECIAL + ((src_pos + s + src_base) >> drop) - dst_base - dst_pos] += c
    for s in range(src.shape[0] - N_SPECIAL - src_wp):
        c = src[N_SPECIAL + src_wp + s]
        if c:
            key = ((src_neg + s + src_base) >> drop) - dst_base
            dst[N_SPECIAL + dst_wp + key - dst_neg] += c


@jit
def move_windows(
    pool: np.ndarray,
    page: np.ndarray,
    neurons: np.ndarray,
    pos_off: np.ndarray,
    neg_off: np.ndarray,
    res: np.ndarray,
    new_pos_off: np.ndarray,
    new_neg_off: np.ndarray,
    new_res: np.ndarray,
    wp: int,
    exp_lo: int,
) -> None:
    """Re-key and re-place, in place, the windows of ``neurons`` (same window widths).

    Each moved neuron's pages are copied out, cleared and added back at the new offsets and
    resolution, so the cost is that of the moved neurons only, not of the whole pool.
    """
    row = np.empty(pool.shape[1], dtype=pool.dtype)
    for i in range(neurons.shape[0]):
        n = neurons[i]
        for g in range(page.shape[1]):
            pg = page[n, g]
            if pg < 0:
                continue
            row[:] = pool[pg]
            pool[pg, N_SPECIAL:] = 0
            _add_windows(
                row, pos_off[n], neg_off[n], wp, res[n],
                pool[pg], new_pos_off[n], new_neg_off[n], wp, new_res[n], exp_lo,
            )  # fmt: skip


@jit
def densify(
    pool: np.ndarray,
    page: np.ndarray,
    pos_off: np.ndarray,
    neg_off: np.ndarray,
    wp: int,
    pos_lo: np.ndarray,
    neg_hi: np.ndarray,
    n_neg: np.ndarray,
    n_pos: np.ndarray,
    dst: np.ndarray,
    specials: np.ndarray,
) -> None:
    """Write the pages of ``page[:, groups]`` onto each neuron's bin axis ``[neg, zero, pos]``.

    Neuron ``n``'s axis has ``n_neg[n]`` negative bins, from its largest magnitude key
    ``neg_hi[n]`` down (ascending value), then the zero bin, then ``n_pos[n]`` positive bins
    from key ``pos_lo[n]`` up; its windows must hold those keys. ``dst[neuron, group, bin]``
    and ``specials[neuron, group, (nan, posinf, neginf)]`` must come in zeroed.
    """
    n_neurons, n_groups = page.shape
    for n in range(n_neurons):
        zero = n_neg[n]
        first_pos = N_SPECIAL + pos_lo[n] - pos_off[n]  # pool slot of the first positive bin
        last_neg = N_SPECIAL + wp + neg_hi[n] - neg_off[n]  # ...of the first (largest) negative
        for g in range(n_groups):
            pg = page[n, g]
            if pg < 0:
                continue
            counts = pool[pg]
            row = dst[n, g]
            row[zero] = counts[ZERO]
            specials[n, g, 0] = counts[NAN]
            specials[n, g, 1] = counts[POSINF]
            specials[n, g, 2] = counts[NEGINF]
            for b in range(n_pos[n]):  # plain copies of the occupied keys: they vectorise
                row[zero + 1 + b] = counts[first_pos + b]
            for b in range(n_neg[n]):
                row[b] = counts[last_neg - b]


@jit
def undensify(
    dense: np.ndarray,
    nan: np.ndarray,
    posinf: np.ndarray,
    neginf: np.ndarray,
    page: np.ndarray,
    n_neg: np.ndarray,
    n_pos: np.ndarray,
    wp: int,
    pool: np.ndarray,
) -> None:
    """The inverse of :func:`densify` onto windows that start at each neuron's first bin.

    Neuron ``n``'s positive window slot ``s`` takes bin ``n_neg[n] + 1 + s`` of its axis
    ``[neg, zero, pos]``, and negative window slot ``s`` (magnitudes ascending) takes bin
    ``n_neg[n] - 1 - s``. ``pool`` must come in zeroed.
    """
    n_neurons, n_groups = page.shape
    for n in range(n_neurons):
        zero = n_neg[n]
        for g in range(n_groups):
            pg = page[n, g]
            if pg < 0:
                continue
            pool[pg, ZERO] = dense[n, g, zero]
            pool[pg, NAN] = nan[n, g]
            pool[pg, POSINF] = posinf[n, g]
            pool[pg, NEGINF] = neginf[n, g]
            for s in range(n_pos[n]):
                pool[pg, N_SPECIAL + s] = dense[n, g, zero + 1 + s]
            for s in range(zero):
                pool[pg, N_SPECIAL + wp + s] = dense[n, g, zero - 1 - s]
