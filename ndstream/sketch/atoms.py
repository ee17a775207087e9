"""Atoms inside a neuron's range: one exact float32 that many values share.

A bias reached whenever a unit's input is dead, a gate that saturates on some inputs, an
activation of quantised inputs: many samples land on one exact value that is neither the
neuron's min nor its max. A bin spreads its values over its width, so a quantile inside such
an atom comes out as some value near it, and the rank metric counts the whole atom against
it (the squeeze-and-excitation gates of RegNetY: 7-9 % in rank, the atom holding 12 % of the
images). The extremes are counted exactly already (``min_count``, ``max_count``).

Which value to count must be known before the values arrive: a count that starts late is
not a count. And it must be the same for every batch size, split and checkpoint schedule of the
data, so that stores of the same data are the same. So an ingest takes the candidates from a
window that the order alone fixes, the rows of its first samples
(:mod:`ndstream.ingestion.atom_window`): for each neuron, its most frequent finite nonzero value
there, if it occurs at least twice (ties: the smallest). Every sketch of the run then counts,
per (neuron, group), the values equal to its neuron's candidate, exactly, from the first value
on (:meth:`LayerSketch.track_atoms`), and a reader takes them out of their bin as one value.
Sketches that count different candidates merge without them (the bins still hold those
values). An atom that the window does not show stays spread over its bin, as before.
"""

from __future__ import annotations

import numpy as np

__all__ = ["NO_ATOM", "atom_candidates"]

#: A neuron without a candidate.
NO_ATOM = np.float32(np.nan)


def atom_candidates(values: np.ndarray) -> np.ndarray:
    """Each neuron's most frequent finite nonzero value among ``values``, if it repeats.

    Parameters
    ----------
    values
        ``[rows, neuron]`` activations (the rows of a run's first samples).

    Returns
    -------
    numpy.ndarray
        ``[neuron]`` float32: the value that occurs most often in the neuron's column, at
        least twice (the smallest of those tied), or NaN where no value repeats.
    """
    x = np.asarray(values, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"values must be [rows, neuron], got shape {list(x.shape)}")
    rows, n = x.shape
    out = np.full(n, NO_ATOM, dtype=np.float32)
    if rows < 2:
        return out
    flat = np.sort(x.T, axis=1).ravel()  # each neuron's values, ascending (NaN last)
    start = np.ones(flat.size, dtype=bool)
    start[1:] = flat[1:] != flat[:-1]  # NaN never equals: a run of one
    start[::rows] = True  # each neuron's first value starts a run
    begin = np.flatnonzero(start)
    length = np.diff(np.append(begin, flat.size))
    value = flat[begin]
    keep = (length >= 2) & np.isfinite(value) & (value != 0)
    begin, length, value = begin[keep], length[keep], value[keep]
    if not begin.size:
        return out
    neuron = begin // rows
    # Longest first, then the smallest value: runs of a neuron come in ascending order.
    order = np.lexsort((begin, -length, neuron))
    first = order[np.unique(neuron[order], return_index=True)[1]]
    out[neuron[first]] = value[first]
    return out
