"""The update: a batch's values counted into the pages of their (neuron, group), with each
neuron's key range, min and max; and the group plan and page assignment it needs."""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..grid import FINE_SHIFT
from ._base import (
    _ABS_MASK,
    _INF_BITS,
    _ORDERED_MAX,
    _ORDERED_MIN,
    EMPTY_LO,
    N_SPECIAL,
    NAN,
    ZERO,
    _rebased_key,
    jit,
    key_limits,
    parallel_jit,
)
from .fine import slide


@jit
def plan_groups(gids: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """The groups of a batch, once per batch.

    Returns ``row_group[p, r]``, the index of row ``r``'s group of grouping ``p`` among that
    grouping's groups in the batch, and ``seg_group[p, i]``, those groups in ascending order
    (unused entries are -1).
    """
    n_rows, n_part = gids.shape
    row_group = np.empty((n_part, n_rows), dtype=np.intp)
    seg_group = np.full((n_part, max(n_rows, 1)), -1, dtype=np.intp)
    index = np.empty(n_groups, dtype=np.intp)
    for p in range(n_part):
        index[:] = -1
        for r in range(n_rows):
            index[gids[r, p]] = 0
        i = 0
        for g in range(n_groups):
            if index[g] == 0:
                index[g] = i
                seg_group[p, i] = g
                i += 1
        for r in range(n_rows):
            row_group[p, r] = index[gids[r, p]]
    return row_group, seg_group


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


# int32 constants for the update's lane loops. Numba widens integer arithmetic to int64;
# written with these and cast back with np.int32, LLVM narrows the loops to 8-lane int32
# vectors (AVX2 has no 64-bit min or max).
_I0, _I1, _I31 = np.int32(0), np.int32(1), np.int32(31)
_I_ABS, _I_INF = np.int32(_ABS_MASK), np.int32(_INF_BITS)
_I_OMAX, _I_OMIN = np.int32(_ORDERED_MAX), np.int32(_ORDERED_MIN)
_KEY_MAX = (1 << (31 - FINE_SHIFT)) - 1  # fine keys that shift back into an int32
# Slots relative to the first window slot, where a lane's page base points.
_I_ZERO_REL, _I_NAN_REL = np.int32(ZERO - N_SPECIAL), np.int32(NAN - N_SPECIAL)
# Neurons per block of the update: each row of a block is two cache lines of float32, and
# a block's tables stay in L1.
LANES = 32
SCATTER_AHEAD = 4  # rows: the counters of row r + 4 are fetched while row r counts


@parallel_jit
def update_counts(
    x: np.ndarray,
    row_group: np.ndarray,
    seg_group: np.ndarray,
    neurons: np.ndarray,
    pool: np.ndarray,
    page: np.ndarray,
    mins: np.ndarray,
    maxs: np.ndarray,
    min_count: np.ndarray,
    max_count: np.ndarray,
    atom_bits: np.ndarray,
    atom_count: np.ndarray,
    fine: np.ndarray,
    neuron_min: np.ndarray,
    neuron_max: np.ndarray,
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
    the batch has a page (see :func:`assign_pages`); ``pool`` is C-contiguous. Neuron
    ``n``'s keys are taken at its resolution ``res[n]`` (see :func:`key_limits`). A neuron
    with a key outside its windows is left untouched and flagged in ``missed``; the caller
    widens its windows (see :func:`batch_key_ranges`) and calls again for those neurons
    only. A neuron above the coarsest resolution ``min_res`` may only use the first
    ``budget`` slots of a window: windows grow past the budget for neurons that cannot
    coarsen further, and a finer neuron whose keys spread that wide must coarsen instead.
    Returns the number of misses.

    ``min_count`` and ``max_count`` count the values equal to each (neuron, group)'s min and
    max: an atom at an extreme (a clipped activation, a bias reached whenever a unit's input
    is dead) that a bin would spread over its width. They are counted beside the min and max,
    in the same pass, branch-free. ``atom_count`` counts the values whose float32 bits are
    ``atom_bits[n]``: neuron ``n``'s atom inside its range (see ``sketch/atoms.py``; 0, the
    bits of an exact zero, which is never counted there, for none). Only a neuron with an
    atom looks for it, after the rows, in the block's copy of its values (``near``): a
    count per group in the first pass cost the update a fifth to a third.

    ``fine[n]`` (``2 * F`` counters a neuron, or none) holds the fine counts next to neuron
    ``n``'s min and max over every row, ``neuron_min[n]`` and ``neuron_max[n]`` (see
    ``fine.py``). Once a batch's extremes are known, each row whose extreme moved slides to
    its new anchor, dropping what is now more than ``F`` fine bins from it, and a third pass
    counts the batch's values that fall inside. A value inside the final row was inside it
    when it came (the min only falls), so the counts are those of the values in the final
    row, whatever the order of the data. Only a value within ``F`` fine bins of its neuron's
    extremes before the batch can be one: the first pass keeps each neuron's smallest and
    largest finite nonzero value of the batch, and a copy of the block's values as ordered
    integers, and the third reads that copy again only for the neurons for which one of
    them is that near (4 % of them a batch on a ReLU layer). A row counts once, whatever its
    groups.

    Blocks of :data:`LANES` neurons run in parallel on Numba's threads: neurons share no
    state. A block goes through the rows twice. The first pass reads each row's values of
    the block (two cache lines), finds their slots, whether any falls outside its window,
    and the min and max of each (neuron, group), all as int32 vectors across the block's
    neurons. The second increments the counters row by row, each row's into as many
    pages as the block has neurons, with the counters of a few rows ahead already on their
    way from memory: the pool is far larger than the caches, and waiting for each counter
    in turn would cost more than everything else together.
    """
    n_rows = x.shape[0]
    n_part = row_group.shape[0]
    width = pool.shape[1]
    wn = width - N_SPECIAL - wp
    xbits = x.view(np.int32)
    counts = pool.reshape(-1)
    n_fine = fine.shape[1] // 2
    n_seg = np.zeros(n_part, dtype=np.intp)
    for p in range(n_part):
        while n_seg[p] < seg_group.shape[1] and seg_group[p, n_seg[p]] >= 0:
            n_seg[p] += 1
    most_seg = max(1, n_seg.max())
    wp32 = np.int32(wp)
    n_blocks = (neurons.shape[0] + LANES - 1) // LANES
    block_missed = np.zeros(n_blocks, dtype=np.int64)
    for i_block in numba.prange(n_blocks):
        first = i_block * LANES
        n_block = min(LANES, neurons.shape[0] - first)
        # Per lane (neuron of the block): the key rule and the windows. A block of fewer
        # than LANES neurons repeats its last one in the spare lanes, which never count.
        cols = np.empty(LANES, dtype=np.intp)
        shift = np.empty(LANES, dtype=np.int32)
        key_base = np.empty(LANES, dtype=np.int32)
        key_top = np.empty(LANES, dtype=np.int32)
        po = np.empty(LANES, dtype=np.int32)
        neg_po = np.empty(LANES, dtype=np.int32)  # neg_off - pos_off
        lp = np.empty(LANES, dtype=np.int32)
        ln_lp = np.empty(LANES, dtype=np.int32)  # usable negative width - positive width
        atom = np.empty(LANES, dtype=np.int32)
        for t in range(LANES):
            n = neurons[first + min(t, n_block - 1)]
            cols[t] = n
            shift[t], key_base[t], key_top[t] = key_limits(res[n], exp_lo, exp_hi)
            po[t], neg_po[t] = pos_off[n], neg_off[n] - pos_off[n]
            atom[t] = atom_bits[n]
            usable_p, usable_n = (
                (wp, wn) if res[n] <= min_res else (min(wp, budget), min(wn, budget))
            )
            lp[t], ln_lp[t] = usable_p, usable_n - usable_p
        # Page base of each (grouping, group of the batch, lane), at the first window slot.
        base = np.empty((n_part, most_seg, LANES), dtype=np.int64)
        for p in range(n_part):
            for i in range(n_seg[p]):
                g = seg_group[p, i]
                for t in range(LANES):
                    base[p, i, t] = np.int64(page[cols[t], g]) * width + N_SPECIAL
        lo = np.full((n_part, most_seg, LANES), _I_OMAX, dtype=np.int32)
        hi = np.full((n_part, most_seg, LANES), _I_OMIN, dtype=np.int32)
        # How many of the batch group's values equal its running min and max so far.
        at_lo = np.zeros((n_part, most_seg, LANES), dtype=np.int32)
        at_hi = np.zeros((n_part, most_seg, LANES), dtype=np.int32)
        bad = np.zeros(LANES, dtype=np.int32)
        slots = np.empty((n_rows, LANES), dtype=np.int32)
        # Each value as an ordered int32, zeros and non-finite values as _I_OMAX: where the
        # fine counts read a neuron again, its column lies here 128 bytes a row apart, not a
        # whole batch row, and stays in the cache.
        near = np.empty((n_rows, LANES), dtype=np.int32)
        edge = np.empty(2, dtype=np.int32)  # a group's min and max, as float32 bits
        edge_f = edge.view(np.float32)
        # Per lane: the fine keys of the neuron's min and max before the batch, then after it.
        f_lo = np.empty(LANES, dtype=np.int64)
        f_hi = np.empty(LANES, dtype=np.int64)
        # Only a value within F fine bins of its neuron's extremes before the batch can end up
        # in its row (the min only falls): below near_lo or from near_hi up, as ordered bits.
        near_lo = np.full(LANES, _I_OMIN, dtype=np.int32)
        near_hi = np.full(LANES, _I_OMAX, dtype=np.int32)
        if n_fine:
            for t in range(LANES):
                edge_f[0] = neuron_min[cols[t]]
                edge_f[1] = neuron_max[cols[t]]
                f_lo[t] = _ordered(edge[0]) >> FINE_SHIFT
                f_hi[t] = _ordered(edge[1]) >> FINE_SHIFT
                # (the keys of the infinities clamped, to stay within int32)
                near_lo[t] = min(f_lo[t] + n_fine, _KEY_MAX) << FINE_SHIFT
                near_hi[t] = max(f_hi[t] - n_fine + 1, -_KEY_MAX) << FINE_SHIFT
        gathered = np.empty(LANES, dtype=np.int32)
        nz_lo = np.full(LANES, _I_OMAX, dtype=np.int32)
        nz_hi = np.full(LANES, _I_OMIN, dtype=np.int32)
        picked = np.empty(n_rows + 1, dtype=np.intp)  # rows near an extreme, of one lane
        ordered = np.empty(LANES, dtype=np.int32)
        # LANES as a run-time bound: LLVM unrolls loops of a constant count instead of
        # vectorising them.
        lanes = cols.shape[0]
        c0 = cols[0]
        contiguous = n_block == LANES and cols[LANES - 1] - c0 == LANES - 1
        for r in range(n_rows):
            if contiguous:
                row = xbits[r, c0 : c0 + lanes]
            else:
                row = gathered
                for t in range(lanes):
                    row[t] = xbits[r, cols[t]]
            slot = slots[r]
            near_row = near[r]
            # Branch-free, as int32 only (a name of another type here would widen the loop):
            # half of a ReLU layer is exact zeros, in no predictable order.
            for t in range(lanes):
                bits = row[t]
                mag = np.int32(bits & _I_ABS)
                special = np.int32(mag >= _I_INF)
                nonzero = np.int32(mag != _I0)
                counted = np.int32(nonzero & (_I1 - special))  # finite and nonzero: on the grid
                key = np.int32(_rebased_key(mag, shift[t] & _I31, key_base[t], key_top[t]))
                neg = np.int32(bits >> _I31)  # -1 for negative values: a mask for selects
                rel = np.int32(key - (po[t] + (neg & neg_po[t])))
                outside = np.int32((rel < _I0) | (rel >= np.int32(lp[t] + (neg & ln_lp[t]))))
                bad[t] = np.int32(bad[t] | (counted & outside))
                on_grid = np.int32(counted * np.int32(rel + (neg & wp32)))
                # NaN, or +Inf / -Inf by sign: NAN + 1 == POSINF, NAN + 2 == NEGINF
                off_grid = np.int32(_I_NAN_REL + np.int32(mag == _I_INF) * (_I1 - neg))
                zero = np.int32(_I_ZERO_REL * (_I1 - counted) * (_I1 - special))
                slot[t] = np.int32(on_grid + zero + special * off_grid)
                # float bits as an int32 that orders like the float, -0.0 as +0.0; NaN and
                # the infinities as _I_OMAX, which a min skips and a max is told to
                bz = np.int32(bits & -nonzero)
                o = np.int32(bz ^ (np.int32(bz >> _I31) & _I_ABS))
                o_min = o if mag < _I_INF else _I_OMAX
                ordered[t] = o_min
                # The lane's smallest and largest value that the fine counts could hold: the
                # zeros as _I_OMAX too, which + 1 wraps to _I_OMIN (the max, kept + 1).
                o_min = np.int32(o_min | ((nonzero - _I1) & _I_OMAX))
                nz_lo[t] = np.int32(min(nz_lo[t], o_min))
                nz_hi[t] = np.int32(max(nz_hi[t], np.int32(o_min + _I1)))
                near_row[t] = o_min
            for p in range(n_part):
                i = row_group[p, r]
                low, high, n_low, n_high = lo[p, i], hi[p, i], at_lo[p, i], at_hi[p, i]
                for t in range(lanes):
                    o = ordered[t]
                    oh = o if o != _I_OMAX else _I_OMIN
                    # Branch-free: a new extreme restarts its count at 1, a tie adds 1.
                    n_low[t] = np.int32(
                        np.int32(o < low[t])
                        + np.int32(o >= low[t]) * (n_low[t] + np.int32(o == low[t]))
                    )
                    n_high[t] = np.int32(
                        np.int32(oh > high[t])
                        + np.int32(oh <= high[t]) * (n_high[t] + np.int32(oh == high[t]))
                    )
                    low[t] = np.int32(min(low[t], o))
                    high[t] = np.int32(max(high[t], oh))
        any_bad = 0
        for t in range(n_block):
            any_bad |= bad[t]
        for r in range(n_rows):
            ahead = r + SCATTER_AHEAD
            if ahead < n_rows:
                slot = slots[ahead]
                for p in range(n_part):
                    at = base[p, row_group[p, ahead]]
                    for t in range(n_block):  # a missed lane's address may lie anywhere
                        _prefetch(counts, at[t] + slot[t])  # type: ignore[call-arg]
            slot = slots[r]
            for p in range(n_part):
                at = base[p, row_group[p, r]]
                if any_bad == 0:
                    for t in range(n_block):
                        counts[at[t] + slot[t]] += 1
                else:  # the neurons that missed are left for the caller's second call
                    for t in range(n_block):
                        if bad[t] == 0:
                            counts[at[t] + slot[t]] += 1
        for t in range(n_block):
            n = cols[t]
            if bad[t]:
                missed[n] = True
                block_missed[i_block] += 1
                continue
            for p in range(n_part):
                for i in range(n_seg[p]):
                    if lo[p, i, t] <= hi[p, i, t]:  # the group had a finite value
                        g = seg_group[p, i]
                        edge_f[0] = mins[n, g]
                        edge_f[1] = maxs[n, g]
                        now_lo, now_hi = _ordered(edge[0]), _ordered(edge[1])
                        if lo[p, i, t] < now_lo:
                            min_count[n, g] = at_lo[p, i, t]
                        elif lo[p, i, t] == now_lo:
                            min_count[n, g] += at_lo[p, i, t]
                        if hi[p, i, t] > now_hi:
                            max_count[n, g] = at_hi[p, i, t]
                        elif hi[p, i, t] == now_hi:
                            max_count[n, g] += at_hi[p, i, t]
                        edge[0] = _unordered(lo[p, i, t])
                        edge[1] = _unordered(hi[p, i, t])
                        mins[n, g] = min(mins[n, g], edge_f[0])
                        maxs[n, g] = max(maxs[n, g], edge_f[1])
        # The values equal to each lane's atom, from the block's copy of its values (finite
        # nonzero values there as ordered bits): only neurons with an atom look.
        for t in range(n_block):
            if bad[t] or atom[t] == _I0:
                continue
            n = cols[t]
            bz = atom[t]
            a_o = np.int32(bz ^ (np.int32(bz >> _I31) & _I_ABS))
            for r in range(n_rows):
                if near[r, t] == a_o:
                    for p in range(n_part):
                        atom_count[n, seg_group[p, row_group[p, r]]] += 1
        if n_fine:
            # Each row to its neuron's extremes after the batch (every row is in one group of
            # the first grouping), then the batch's values near an extreme counted into it:
            # a neuron's values (their copy in `near`) are read again only where the smallest
            # or largest of its finite nonzero values in the batch lies near an extreme it
            # had before.
            for t in range(n_block):
                if bad[t]:
                    continue
                batch_lo, batch_hi = _ORDERED_MAX, _ORDERED_MIN
                for i in range(n_seg[0]):
                    batch_lo, batch_hi = min(batch_lo, lo[0, i, t]), max(batch_hi, hi[0, i, t])
                if batch_lo > batch_hi:  # no finite value in the batch
                    continue
                n = cols[t]
                edge[0], edge[1] = _unordered(batch_lo), _unordered(batch_hi)
                neuron_min[n] = min(neuron_min[n], edge_f[0])
                neuron_max[n] = max(neuron_max[n], edge_f[1])
                edge_f[0], edge_f[1] = neuron_min[n], neuron_max[n]
                new_lo, new_hi = _ordered(edge[0]) >> FINE_SHIFT, _ordered(edge[1]) >> FINE_SHIFT
                if new_lo < f_lo[t]:  # (a row view only where one moves: most do not)
                    slide(fine[n], 0, n_fine, f_lo[t] - new_lo)
                if new_hi > f_hi[t]:
                    slide(fine[n], n_fine, n_fine, new_hi - f_hi[t])
                f_lo[t], f_hi[t] = new_lo, new_hi
                if nz_lo[t] >= near_lo[t] and nz_hi[t] <= near_hi[t]:
                    continue  # nothing in the batch near the extremes it had before
                # The rows near an extreme, gathered without a branch (half of a ReLU
                # layer's values are zeros, in no order a branch could predict), then
                # counted. Names of their own: see the first pass.
                n_picked = 0
                for r in range(n_rows):
                    v_ordered = near[r, t]
                    picked[n_picked] = r
                    n_picked += (v_ordered < near_lo[t]) | (
                        (v_ordered >= near_hi[t]) & (v_ordered != _ORDERED_MAX)
                    )
                for j in range(n_picked):
                    v_key = near[picked[j], t] >> FINE_SHIFT
                    d = v_key - f_lo[t]
                    if 0 <= d < n_fine:
                        fine[n, d] += 1
                    d = f_hi[t] - v_key
                    if 0 <= d < n_fine:
                        fine[n, n_fine + d] += 1
    return int(block_missed.sum())


@jit
def _ordered(bits: int) -> int:
    """An int32 that orders like the float32 of ``bits`` (-0.0 as +0.0); see
    :func:`update_counts`. The infinities order past every finite value."""
    bz = bits if bits & _ABS_MASK else 0
    return bz ^ ((bz >> 31) & _ABS_MASK)


@jit
def _unordered(o: int) -> int:
    """The float32 bits of an ordered int32 (see :func:`update_counts`; the map is its own
    inverse)."""
    return o ^ ((o >> 31) & _ABS_MASK)


@intrinsic
def _prefetch(typingctx: Any, arr: Any, i: Any) -> Any:
    """``_prefetch(arr, i)``: hint that ``arr[i]`` will be written soon (LLVM's
    ``llvm.prefetch``: it never faults and changes no value)."""
    sig = types.void(arr, i)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        idx = [context.cast(builder, args[1], signature.args[1], types.intp)]
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
            key = _rebased_key(mag, shift[i], key_base[i], key_top[i])
            side = 0 if b >= 0 else 2
            out[i, side] = min(out[i, side], key)
            out[i, side + 1] = max(out[i, side + 1], key)
