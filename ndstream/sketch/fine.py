"""Fine counts at the extremes, moved between anchors (NumPy: a store's reader needs no Numba).

A row of fine counts holds ``2 * F`` counters (``grid.FINE_BINS``): ``row[i]`` counts the values
whose fine key (``grid.fine_keys``) is ``lo + i``, ``lo`` that of the min, and ``row[F + i]``
those whose fine key is ``hi - i``, ``hi`` that of the max. Two rows of the same neuron add up
once both are anchored at the lower min and the higher max: a count that then lies more than
``F`` fine bins from its extreme drops out, as it would have had the values come in one stream.
"""

from __future__ import annotations

import numpy as np

__all__ = ["add_realigned"]


def add_realigned(
    dst: np.ndarray,
    src: np.ndarray,
    src_lo: np.ndarray,
    src_hi: np.ndarray,
    dst_lo: np.ndarray,
    dst_hi: np.ndarray,
) -> None:
    """Add rows ``src[k]`` (anchored at fine keys ``src_lo[k]``, ``src_hi[k]``) into rows
    ``dst[k]`` (anchored at ``dst_lo[k] <= src_lo[k]`` and ``dst_hi[k] >= src_hi[k]``).

    Parameters
    ----------
    dst, src
        ``[rows, 2 * F]`` fine counts; ``dst`` is updated in place.
    src_lo, src_hi, dst_lo, dst_hi
        ``[rows]`` int64 anchors.
    """
    width = src.shape[1] // 2
    if src.shape[0] == 0 or width == 0:
        return
    rows = np.arange(src.shape[0])[:, None]
    slots = np.arange(width)[None, :]
    for side, shift in ((0, src_lo - dst_lo), (width, dst_hi - src_hi)):
        if np.any(shift < 0):
            raise ValueError("fine counts can only move to a lower min or a higher max")
        to = slots + np.minimum(shift, width)[:, None]
        inside = to < width
        # Within a row the target slots are distinct: a plain fancy += adds every count.
        dst[np.broadcast_to(rows, to.shape)[inside], side + to[inside]] += src[:, side:][:, :width][
            inside
        ]
