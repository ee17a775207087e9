"""Every Numba kernel of ndstream, in one package: a module per concern.

``_base`` (flags, slots, the grid's rule compiled), ``update`` (a batch into the pages),
``windows`` (key ranges, moving windows, dense bin axes), ``fine`` (the fine counts at
the extremes), ``edges``, ``queries`` (quantiles, ranks, bounds, rebinning), ``contrast`` (two
distributions side by side), ``exact`` (the exact form) and ``spans`` (capture's reductions
over runs of real tokens).

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
``m`` mantissa bits remain, plus one (see ``grid.py``): every finite nonzero float32 has a key
of 1 or more, and the clamp in the kernels only tames the keys of zeros and non-finite values,
which are counted apart.
"""

from __future__ import annotations

from ._base import EMPTY_LO, N_SPECIAL, NAN, NEGINF, POSINF, ZERO, key_limits, set_threads
from .contrast import contrast_curves, quantile_ranges
from .edges import _magnitude_edges, bin_edges, exact_edges
from .exact import (
    ENTRY_BITS,
    MAX_ENTRIES,
    NAN_CODE,
    NEGINF_CODE,
    POSINF_CODE,
    ZERO_CODE,
    exact_axes,
    exact_codes,
    exact_counts,
    fold_min_max,
)
from .fine import refine
from .queries import quantiles, rank_bounds, ranks, rebin, widest_bins, widest_ranges
from .spans import span_maxima, span_sums
from .update import assign_pages, batch_key_ranges, new_pages_needed, plan_groups, update_counts
from .windows import add_pages, densify, move_windows, occupied_key_ranges, undensify

__all__ = [
    "EMPTY_LO",
    "ENTRY_BITS",
    "MAX_ENTRIES",
    "NAN",
    "NAN_CODE",
    "NEGINF",
    "NEGINF_CODE",
    "N_SPECIAL",
    "POSINF",
    "POSINF_CODE",
    "ZERO",
    "ZERO_CODE",
    "_magnitude_edges",
    "add_pages",
    "assign_pages",
    "batch_key_ranges",
    "bin_edges",
    "contrast_curves",
    "densify",
    "exact_axes",
    "exact_codes",
    "exact_counts",
    "exact_edges",
    "fold_min_max",
    "key_limits",
    "move_windows",
    "new_pages_needed",
    "occupied_key_ranges",
    "plan_groups",
    "quantile_ranges",
    "quantiles",
    "rank_bounds",
    "ranks",
    "rebin",
    "refine",
    "set_threads",
    "span_maxima",
    "span_sums",
    "undensify",
    "update_counts",
    "widest_bins",
    "widest_ranges",
]
