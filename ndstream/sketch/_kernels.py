"""Every Numba kernel of ndstream, in one place.

Kernels see only NumPy arrays and plain numbers: never torch, Zarr or xarray. One alias,
:data:`jit`, sets the JIT flags for all of them; ``cache=True`` matters because a cold compile
costs about a second per kernel, and every CLI start would pay it again.

State layout (see ``accumulator.py``): ``page[neuron, group]`` indexes a row of
``pool[page, slot]``, or is -1 while that (neuron, group) has seen nothing, so groups that a
neuron never sees cost 4 bytes. The
slots of a page are::

    [ZERO, NAN, POSINF, NEGINF, positive window (wp slots), negative window (wn slots)]

Window slot ``s`` of neuron ``n`` holds magnitude key ``pos_off[n] + s`` (or ``neg_off[n] + s``).
A magnitude key is the float32 bit pattern shifted right so that only the exponent and the top
``m`` mantissa bits remain, clamped to the grid's exponent window and rebased so that key 0 is
the underflow bin.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

jit = numba.njit(cache=True, nogil=True)
# The one parallel kernel: ``numba.prange`` loops run on Numba's threads
# (``NUMBA_NUM_THREADS``, ``numba.set_num_threads``), serially with one thread.
parallel_jit = numba.njit(cache=True, nogil=True, parallel=True)


def set_threads(n: int) -> None:
    """Run the parallel kernels called from this thread on at most ``n`` threads."""
    most = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
    numba.set_num_threads(max(1, min(n, most)))


ZERO, NAN, POSINF, NEGINF = 0, 1, 2, 3
N_SPECIAL = 4
EMPTY_LO = np.iinfo(np.int32).max  # key-range "min" of a neuron that saw no such values
BLOCK = 16  # neurons per block: one 64-byte cache line of float32 per row
_ABS_MASK = 0x7FFFFFFF
_INF_BITS = 0x7F800000
_F32_MAX = float(np.finfo(np.float32).max)
_ORDERED_MAX, _ORDERED_MIN = 0x7FFFFFFF, -0x80000000  # beyond every finite float's order


@jit
def plan_groups(gids: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counting-sort the rows of each grouping by group, once per batch.

    Returns ``order[p, j]`` (rows sorted by group in grouping ``p``, stable), and for each
    grouping its non-empty groups ``seg_group[p, i]`` with row spans
    ``order[p, seg_start[p, i]:seg_start[p, i + 1]]``; unused entries of ``seg_group`` are -1.
    """
    n_rows, n_part = gids.shape
    order = np.empty((n_part, n_rows), dtype=np.intp)
    seg_group = np.full((n_part, n_rows), -1, dtype=np.intp)
    seg_start = np.zeros((n_part, n_rows + 1), dtype=np.intp)
    start = np.zeros(n_groups + 1, dtype=np.intp)
    for p in range(n_part):
        start[:] = 0
        for r in range(n_rows):
            start[gids[r, p] + 1] += 1
        i = 0
        for g in range(n_groups):
            if start[g + 1]:
                seg_group[p, i] = g
                seg_start[p, i + 1] = seg_start[p, i] + start[g + 1]
                i += 1
            start[g + 1] += start[g]
        for r in range(n_rows):
            g = gids[r, p]
            order[p, start[g]] = r
            start[g] += 1
    return order, seg_group, seg_start


@jit
def new_pages_needed(page: np.ndarray, seg_group: np.ndarray) -> int:
    """How many (neuron, group) pairs of the batch's groups have no page yet."""
    n_neurons = page.shape[0]
    need = 0
    for p in range(seg_group.shape[0]):
        for i in range(seg_group.shape[1]):
            g = seg_group[p, i]
            if g < 0:
                break
            for n in range(n_neurons):
                need += page[n, g] < 0
    return need


@jit
def key_limits(m: int, exp_lo: int, exp_hi: int) -> tuple[int, int, int]:
    """Shift, underflow key and overflow key at resolution ``m`` (see ``grid.py``).

    ``exp_lo`` and ``exp_hi`` are the biased float32 exponents of the grid's window.
    """
    return 23 - m, (exp_lo << m) - 1, exp_hi << m


@jit
def assign_pages(page: np.ndarray, seg_group: np.ndarray, n_pages: int) -> int:
    """Give a page to every (neuron, group) of the batch's groups that has none yet.

    Pages are numbered on from ``n_pages``; returns the new number of pages. The pool must
    have room (see :func:`new_pages_needed`).
    """
    # Neuron by neuron, so that a neuron's pages lie together: its updates touch them together.
    for n in range(page.shape[0]):
        for p in range(seg_group.shape[0]):
            for i in range(seg_group.shape[1]):
                g = seg_group[p, i]
                if g < 0:
                    break
                if page[n, g] < 0:
                    page[n, g] = n_pages
                    n_pages += 1
    return n_pages


@parallel_jit
def update_counts(
    x: np.ndarray,
    order: np.ndarray,
    seg_group: np.ndarray,
    seg_start: np.ndarray,
    neurons: np.ndarray,
    pool: np.ndarray,
    page: np.ndarray,
    mins: np.ndarray,
    maxs: np.ndarray,
    pos_off: np.ndarray,
    neg_off: np.ndarray,
    wp: int,
    res: np.ndarray,
    exp_lo: int,
    exp_hi: int,
    budget: int,
    min_res: int,
    missed: np.ndarray,
) -> int:
    """Fold a batch ``x[row, neuron]`` (float32) into the paged counts.

    The rows' groups come as the plan of :func:`plan_groups`, and every (neuron, group) of
    the batch has a page (see :func:`assign_pages`). Neuron ``n``'s keys are taken at its
    resolution ``res[n]`` (see :func:`key_limits`). A neuron with a key outside its windows
    is left untouched and flagged in ``missed``; the caller widens its windows (see
    :func:`batch_key_ranges`) and calls again for those neurons only. A neuron above the
    coarsest resolution ``min_res`` may only use the first ``budget`` slots of a window:
    windows grow past the budget for neurons that cannot coarsen further, and a finer
    neuron whose keys spread that wide must coarsen instead. Returns the number of
    misses.

    Blocks of neurons run in parallel on Numba's threads: neurons share no state.
    """
    n_rows = x.shape[0]
    n_part = order.shape[0]
    wn = pool.shape[1] - N_SPECIAL - wp
    xbits = x.view(np.int32)
    # Each row's position in the first grouping's order, for the other groupings.
    where = np.empty(n_rows, dtype=np.intp)
    for j in range(n_rows):
        where[order[0, j]] = j
    n_seg = 0  # groups in the first grouping
    while n_seg < seg_group.shape[1] and seg_group[0, n_seg] >= 0:
        n_seg += 1
    n_blocks = (neurons.shape[0] + BLOCK - 1) // BLOCK
    block_missed = np.zeros(n_blocks, dtype=np.int64)
    for i_block in numba.prange(n_blocks):
        first = i_block * BLOCK
        n_block = min(BLOCK, neurons.shape[0] - first)
        # The first grouping's min and max of each group, for the whole block at once.
        lo = np.empty((n_seg, n_block), dtype=np.int32)
        hi = np.empty((n_seg, n_block), dtype=np.int32)
        _group_min_max(xbits, order[0], seg_start[0], neurons[first : first + n_block], lo, hi)
        # Bits of a block of neurons, rows in the first grouping's group order, so that a
        # group's values lie side by side. Transposing through L1 beats walking down the
        # columns of x: a row of the block is one cache line.
        tbits = np.empty((BLOCK, n_rows), dtype=np.int32)
        slots = np.empty((BLOCK, n_rows), dtype=np.int32)
        bad = np.zeros(BLOCK, dtype=np.bool_)
        edge = np.empty(2, dtype=np.int32)  # a group's min and max, as float32 bits
        edge_f = edge.view(np.float32)
        for j in range(n_rows):
            r = order[0, j]
            for t in range(n_block):
                tbits[t, j] = xbits[r, neurons[first + t]]
        for t in range(n_block):
            n = neurons[first + t]
            lp, ln = (wp, wn) if res[n] <= min_res else (min(wp, budget), min(wn, budget))
            bad[t] = _slots(
                tbits[t], slots[t], res[n], exp_lo, exp_hi, pos_off[n], neg_off[n], lp, ln, wp
            )
        # The counters a neuron will touch are fetched while the one before it counts: they
        # are scattered over its pages, and each would otherwise be a cache miss in turn.
        if not bad[0]:
            _prefetch_counts(pool, page, neurons[first], slots[0], seg_group[0], seg_start[0])
        for t in range(n_block):
            n = neurons[first + t]
            if t + 1 < n_block and not bad[t + 1]:
                nxt = neurons[first + t + 1]
                _prefetch_counts(pool, page, nxt, slots[t + 1], seg_group[0], seg_start[0])
            if bad[t]:
                missed[n] = True
                block_missed[i_block] += 1
                continue
            bits = tbits[t]
            slot = slots[t]
            for p in range(n_part):
                for i_seg in range(seg_group.shape[1]):
                    g = seg_group[p, i_seg]
                    if g < 0:
                        break
                    pg = page[n, g]
                    j0, j1 = seg_start[p, i_seg], seg_start[p, i_seg + 1]
                    if p == 0:  # the group's values lie side by side
                        for j in range(j0, j1):
                            pool[pg, slot[j]] += 1
                        low, high = lo[i_seg, t], hi[i_seg, t]
                    else:
                        low, high = _ORDERED_MAX, _ORDERED_MIN
                        for i in range(j0, j1):
                            j = where[order[p, i]]
                            pool[pg, slot[j]] += 1
                            o = _ordered(bits[j])
                            low = min(low, o)
                            high = max(high, o if o != _ORDERED_MAX else _ORDERED_MIN)
                    if low <= high:  # the group had a finite value
                        edge[0] = _unordered(low)
                        edge[1] = _unordered(high)
                        mins[n, g] = min(mins[n, g], edge_f[0])
                        maxs[n, g] = max(maxs[n, g], edge_f[1])
    return int(block_missed.sum())


@jit
def _group_min_max(
    xbits: np.ndarray,
    rows: np.ndarray,
    seg_start: np.ndarray,
    cols: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
) -> None:
    """``lo[i, t]`` and ``hi[i, t]``: the least and greatest finite value (as
    :func:`_ordered` integers) of column ``cols[t]`` of ``xbits`` over the rows
    ``rows[seg_start[i]:seg_start[i + 1]]``; ``_ORDERED_MAX`` and ``_ORDERED_MIN`` if none.

    Row by row, across the columns: a group has a few dozen rows per batch, too few for a
    loop down one column to vectorise, while a row of the columns is one cache line.
    """
    n_cols = cols.shape[0]
    c0 = cols[0]
    contiguous = cols[n_cols - 1] - c0 == n_cols - 1  # unless re-running missed neurons
    for i in range(lo.shape[0]):
        low, high = lo[i], hi[i]
        low[:] = _ORDERED_MAX
        high[:] = _ORDERED_MIN
        for j in range(seg_start[i], seg_start[i + 1]):
            r = rows[j]
            if contiguous:
                row = xbits[r, c0 : c0 + n_cols]
                for t in range(n_cols):
                    o = _ordered(row[t])
                    low[t] = min(low[t], o)
                    high[t] = max(high[t], o if o != _ORDERED_MAX else _ORDERED_MIN)
            else:
                for t in range(n_cols):
                    o = _ordered(xbits[r, cols[t]])
                    low[t] = min(low[t], o)
                    high[t] = max(high[t], o if o != _ORDERED_MAX else _ORDERED_MIN)


@jit
def _slots(
    bits: np.ndarray,
    out: np.ndarray,
    m: int,
    exp_lo: int,
    exp_hi: int,
    po: int,
    no: int,
    lp: int,
    ln: int,
    wp: int,
) -> bool:
    """Page slots of one neuron's values ``bits`` (float32 bits) at resolution ``m``, into
    ``out``; returns whether a nonzero finite value falls outside the windows (starting at
    keys ``po`` and ``no``, ``lp`` and ``ln`` slots wide).

    Branch-free, so that it vectorises: half the values of a ReLU layer are exact zeros in
    no predictable order.
    """
    shift, key_base, key_top = key_limits(m, exp_lo, exp_hi)
    bad = 0
    for j in range(bits.shape[0]):
        b = bits[j]
        mag = b & _ABS_MASK
        special = int(mag >= _INF_BITS)
        counted = int(mag != 0) & (1 - special)  # finite and nonzero: on the grid
        key = min(max(mag >> shift, key_base), key_top) - key_base
        neg = b >> 31  # -1 for negative values, else 0: a mask for branch-free selects
        rel = key - (po + (neg & (no - po)))
        bad |= counted & int((rel < 0) | (rel >= lp + (neg & (ln - lp))))
        on_grid = counted * (N_SPECIAL + rel + (neg & wp))
        # NaN, or +Inf / -Inf by sign: NAN + 1 == POSINF, NAN + 2 == NEGINF
        off_grid = NAN + int(mag == _INF_BITS) * (1 - neg)
        out[j] = on_grid + special * (off_grid - on_grid)
    return bad != 0


@jit
def _ordered(b: int) -> int:
    """float32 bits as an int32 that orders like the float: finite values only, -0 as +0.

    NaN and the infinities map to ``_ORDERED_MAX``, which no finite value reaches, so a
    min skips them directly and a max once told to. Integer min and max need no branches.
    """
    b = b & -int((b & _ABS_MASK) != 0)  # -0.0 -> +0.0: min and max do not depend on order
    o = b ^ ((b >> 31) & _ABS_MASK)
    return o if (b & _ABS_MASK) < _INF_BITS else _ORDERED_MAX


@jit
def _unordered(o: int) -> int:
    """The float32 bits of an :func:`_ordered` value (the map is its own inverse)."""
    return o ^ ((o >> 31) & _ABS_MASK)


@jit
def _prefetch_counts(
    pool: np.ndarray,
    page: np.ndarray,
    n: int,
    slots: np.ndarray,
    seg_group: np.ndarray,
    seg_start: np.ndarray,
) -> None:
    """Start fetching the counters neuron ``n`` will increment (``slots`` in the order of
    the groups ``seg_group``, with spans ``seg_start``) into cache."""
    for i_seg in range(seg_group.shape[0]):
        g = seg_group[i_seg]
        if g < 0:
            break
        pg = page[n, g]
        for j in range(seg_start[i_seg], seg_start[i_seg + 1]):
            _prefetch(pool, pg, slots[j])  # type: ignore[call-arg]


@intrinsic
def _prefetch(typingctx: Any, arr: Any, i: Any, j: Any) -> Any:
    """``_prefetch(arr, i, j)``: hint that ``arr[i, j]`` will be written soon (LLVM's
    ``llvm.prefetch``: it never faults and changes no value)."""
    sig = types.void(arr, i, j)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        idx = [
            context.cast(builder, v, t, types.intp)
            for v, t in zip(args[1:], signature.args[1:], strict=True)
        ]
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, idx, wraparound=False)
        i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p.type, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p.type], fnty)
        # write, keep in all cache levels (locality 3), data cache
        builder.call(fn, [i8p, i32(1), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@jit
def batch_key_ranges(
    x: np.ndarray, neurons: np.ndarray, res: np.ndarray, exp_lo: int, exp_hi: int, out: np.ndarray
) -> None:
    """``out[i]``: (pos min, pos max, neg min, neg max) rebased keys of neuron ``neurons[i]``.

    Keys are at each neuron's resolution ``res[n]``. Empty ranges are ``(EMPTY_LO, -1)``.
    Only needed when windows must grow.
    """
    xbits = x.view(np.int32)
    m = neurons.shape[0]
    shift = np.empty(m, dtype=np.int64)
    key_base = np.empty(m, dtype=np.int64)
    key_top = np.empty(m, dtype=np.int64)
    for i in range(m):
        shift[i], key_base[i], key_top[i] = key_limits(res[neurons[i]], exp_lo, exp_hi)
        out[i, 0], out[i, 1], out[i, 2], out[i, 3] = EMPTY_LO, -1, EMPTY_LO, -1
    # Row by row: x is row-major, and walking down its columns would miss the cache.
    for r in range(x.shape[0]):
        for i in range(m):
            b = xbits[r, neurons[i]]
            mag = b & _ABS_MASK
            if mag == 0 or mag >= _INF_BITS:
                continue
            key = min(max(mag >> shift[i], key_base[i]), key_top[i]) - key_base[i]
            side = 0 if b >= 0 else 2
            out[i, side] = min(out[i, side], key)
            out[i, side + 1] = max(out[i, side + 1], key)


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
    nonzero count in any group; ``(EMPTY_LO, -1)`` where there are none."""
    wn = pool.shape[1] - N_SPECIAL - wp
    for i in range(neurons.shape[0]):
        n = neurons[i]
        pmin, pmax, nmin, nmax = EMPTY_LO, -1, EMPTY_LO, -1
        for g in range(page.shape[1]):
            pg = page[n, g]
            if pg < 0:
                continue
            for s in range(wp):
                if pool[pg, N_SPECIAL + s]:
                    pmin = min(pmin, pos_off[n] + s)
                    break
            for s in range(wp - 1, -1, -1):
                if pool[pg, N_SPECIAL + s]:
                    pmax = max(pmax, pos_off[n] + s)
                    break
            for s in range(wn):
                if pool[pg, N_SPECIAL + wp + s]:
                    nmin = min(nmin, neg_off[n] + s)
                    break
            for s in range(wn - 1, -1, -1):
                if pool[pg, N_SPECIAL + wp + s]:
                    nmax = max(nmax, neg_off[n] + s)
                    break
        out[i, 0], out[i, 1], out[i, 2], out[i, 3] = pmin, pmax, nmin, nmax


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
    dst: np.ndarray,
    specials: np.ndarray,
) -> None:
    """Write the pages of ``page[:, groups]`` onto each neuron's bin axis ``[neg, zero, pos]``.

    Neuron ``n``'s axis has ``n_neg[n]`` negative bins, from its largest magnitude key
    ``neg_hi[n]`` down (ascending value), then the zero bin, then positive bins from key
    ``pos_lo[n]`` up. ``dst[neuron, group, bin]`` and
    ``specials[neuron, group, (nan, posinf, neginf)]`` must come in zeroed.
    """
    n_neurons, n_groups = page.shape
    wn = pool.shape[1] - N_SPECIAL - wp
    for n in range(n_neurons):
        zero = n_neg[n]
        for g in range(n_groups):
            pg = page[n, g]
            if pg < 0:
                continue
            dst[n, g, zero] = pool[pg, ZERO]
            specials[n, g, 0] = pool[pg, NAN]
            specials[n, g, 1] = pool[pg, POSINF]
            specials[n, g, 2] = pool[pg, NEGINF]
            for s in range(wp):
                c = pool[pg, N_SPECIAL + s]
                if c:
                    dst[n, g, zero + 1 + pos_off[n] + s - pos_lo[n]] = c
            for s in range(wn):
                c = pool[pg, N_SPECIAL + wp + s]
                if c:
                    dst[n, g, neg_hi[n] - (neg_off[n] + s)] = c


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


@jit
def bin_edges(
    res: np.ndarray,
    pos_lo: np.ndarray,
    neg_hi: np.ndarray,
    n_neg: np.ndarray,
    n_pos: np.ndarray,
    exp_lo: int,
    exp_hi: int,
    lower: np.ndarray,
    upper: np.ndarray,
) -> None:
    """Edges ``[neuron, bin]`` of each neuron's axis ``[neg bins, zero, pos bins, padding]``.

    The same rule as ``GridSpec.magnitude_edges``; ``lower`` and ``upper`` must come in NaN.
    """
    for n in range(res.shape[0]):
        m = res[n]
        z = n_neg[n]
        lower[n, z] = 0.0
        upper[n, z] = 0.0
        for b in range(z + 1 + n_pos[n]):
            if b == z:
                continue
            key = neg_hi[n] - b if b < z else pos_lo[n] + b - z - 1
            lo, hi = _magnitude_edges(key, m, exp_lo, exp_hi)
            if b < z:  # negative bins mirror positive ones
                lower[n, b], upper[n, b] = -hi, -lo
            else:
                lower[n, b], upper[n, b] = lo, hi


@jit
def _magnitude_edges(key: int, m: int, exp_lo: int, exp_hi: int) -> tuple[float, float]:
    """Lower and upper magnitude edges of rebased key ``key`` at resolution ``m``."""
    base = (exp_lo << m) - 1
    raw = key + base
    if key == 0:
        return 0.0, np.ldexp(1.0, exp_lo - 127)
    if raw >= exp_hi << m:
        return np.ldexp(1.0, exp_hi - 127), _F32_MAX
    per_octave = 1 << m
    scale = np.ldexp(1.0, (raw >> m) - 127)
    mantissa = raw & (per_octave - 1)
    lo = scale * (1.0 + mantissa / per_octave)
    # With max_exponent=128 the top bin ends at 2**128, past float32: all finite values
    # below it are at most float32 max, which is the exact edge.
    return lo, min(scale * (1.0 + (mantissa + 1) / per_octave), _F32_MAX)


@jit
def exact_edges(
    uniq: np.ndarray,
    n_bins: np.ndarray,
    m: int,
    exp_lo: int,
    exp_hi: int,
    lower: np.ndarray,
    upper: np.ndarray,
) -> None:
    """Edges of the bins of :func:`exact_axes` at resolution ``m``; both must come in NaN."""
    for n in range(uniq.shape[0]):
        for b in range(n_bins[n]):
            c = uniq[n, b]
            if c == ZERO_CODE:
                lower[n, b], upper[n, b] = 0.0, 0.0
            elif c >= 0:
                lower[n, b], upper[n, b] = _magnitude_edges(c, m, exp_lo, exp_hi)
            else:
                lo, hi = _magnitude_edges(ZERO_CODE - 1 - c, m, exp_lo, exp_hi)
                lower[n, b], upper[n, b] = -hi, -lo


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
    """The k-th smallest value (0-based), spreading a bin's values evenly over its extent."""
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
    return lo + (k - before + 0.5) / counts[j] * (hi - lo)


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
    """``out[n]``: the quantile rank of ``values[n]`` in neuron ``n``, (#below + #equal / 2) / N."""
    n_neurons, n_bins = counts.shape
    for n in range(n_neurons):
        v = values[n]
        total = neginf[n] + posinf[n]
        for j in range(n_bins):
            total += counts[n, j]
        if total == 0 or np.isnan(v):
            out[n] = np.nan
            continue
        if v == -np.inf:
            out[n] = 0.5 * neginf[n] / total
            continue
        if v == np.inf:
            out[n] = (total - 0.5 * posinf[n]) / total
            continue
        below = neginf[n]
        for j in range(n_bins):
            c = counts[n, j]
            if c == 0:
                continue
            lo = max(lower[n, j], mins[n])
            hi = min(upper[n, j], maxs[n])
            point = _single_value(lower[n, j], upper[n, j])
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
                below += c * (v - lo) / (hi - lo)
        out[n] = below / total


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


# -- exact mode: a layer's values kept as they are, until there are too many ------------------

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
                    key = min(max(mag >> shift, key_base), key_top) - key_base
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
def fold_min_max(x: np.ndarray, gids: np.ndarray, mins: np.ndarray, maxs: np.ndarray) -> None:
    """Fold the finite values of ``x[row, neuron]`` into ``mins`` and ``maxs[neuron, group]``.

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
                    if v > maxs[n, g]:
                        maxs[n, g] = v
