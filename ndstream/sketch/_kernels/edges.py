"""Bin edges of finalized summaries: on the grid, and of the exact form's distinct values."""

from __future__ import annotations

import numpy as np

from .. import grid
from ._base import jit
from .exact import ZERO_CODE


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

    The grid's edges; ``lower`` and ``upper`` must come in NaN.
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


# A bin's edges, written once in grid.py and compiled here.
_magnitude_edges = jit(grid.bin_edges_of)


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
