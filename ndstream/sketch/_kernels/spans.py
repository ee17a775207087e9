"""Per-sample reductions over runs of real tokens, for capture's masked ``max`` and ``mean``.

A tokenizer pads each text to its batch's longest, so sample ``i``'s real tokens are rows
``starts[i]:stops[i]`` of ``x[i]`` (``[batch, tokens, neurons]``, float32). One call reduces
every sample in place: torch would need an operation per sample (a few microseconds each),
or a masked copy of the whole output, and these outputs are read once either way.
"""

from __future__ import annotations

import numpy as np

from ._base import jit


@jit
def span_sums(x: np.ndarray, starts: np.ndarray, stops: np.ndarray, out: np.ndarray) -> None:
    """``out[i, d]`` (float64): the sum of ``x[i, starts[i]:stops[i], d]``, in float64."""
    n_samples, _, n_neurons = x.shape
    for i in range(n_samples):
        for d in range(n_neurons):
            out[i, d] = 0.0
        for t in range(starts[i], stops[i]):
            for d in range(n_neurons):
                out[i, d] += x[i, t, d]


@jit
def span_maxima(x: np.ndarray, starts: np.ndarray, stops: np.ndarray, out: np.ndarray) -> None:
    """``out[i, d]``: the largest of ``x[i, starts[i]:stops[i], d]``; NaN if one is NaN (as
    torch's ``amax``) or the run is empty."""
    n_samples, _, n_neurons = x.shape
    for i in range(n_samples):
        for d in range(n_neurons):
            out[i, d] = np.nan if stops[i] <= starts[i] else -np.inf
        for t in range(starts[i], stops[i]):
            for d in range(n_neurons):
                v = x[i, t, d]
                if v != v:
                    out[i, d] = np.nan
                elif v > out[i, d]:  # False once out[i, d] is NaN: NaN stays
                    out[i, d] = v
