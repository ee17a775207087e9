"""What every kernel shares: the JIT flags, the thread setting, the page layout's slots,
and the grid's rule (``grid.py``) compiled once."""

from __future__ import annotations

import numba
import numpy as np

from .. import grid

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

# The binning rule is grid.py's, compiled here, not restated.
key_limits = numba.njit(cache=True, nogil=True, inline="always")(grid.key_limits)
_rebased_key = numba.njit(cache=True, nogil=True, inline="always")(grid.rebased_key)
