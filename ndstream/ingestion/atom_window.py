"""The rows a run chooses its atoms from: those of the first samples of the order.

Each neuron's atom candidate (see :mod:`ndstream.sketch.atoms`) must be known before its sketch
counts anything, and must be the same whatever the batch size, the number of ranks and the
checkpoints, or stores of the same data would differ. So it comes from a window that the order
alone fixes: the rows of the first :data:`ATOM_SAMPLES` samples (fewer where a sample's rows
are many, so that the window holds at most :data:`WINDOW_BYTES`), the first
:data:`ATOM_ROWS` of them in each layer. Until the whole window has run, no sketch is updated
and no checkpoint is written: those rows wait in memory. Under ``torchrun`` each rank holds
its own rows of the window, and rank 0 gathers them in the order's order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..capture.hooks import LayerInfo
from ..capture.reduce import Reduced, sketch_rows
from ..sketch import atom_candidates

__all__ = ["ATOM_ROWS", "ATOM_SAMPLES", "WINDOW_BYTES", "AtomWindow", "window_samples"]

#: Samples whose rows the candidates come from: an atom holding 5 % of a channel's values
#: shows about thirteen times there, one of 1 % about three (one missed is spread over its
#: bin, as before); and the first checkpoint waits for no more than these.
ATOM_SAMPLES = 256
#: Rows of one layer the candidates are taken from, at most (sample after sample).
ATOM_ROWS = 4096
#: Bytes the window's rows may take, all layers together.
WINDOW_BYTES = 64 << 20
#: Rows a sample is counted for where they vary (one per real token).
_TOKEN_ROWS = 128

Rows = dict[str, tuple[np.ndarray, np.ndarray]]  # layer -> (order positions, values)


def window_samples(infos: Mapping[str, LayerInfo], total: int | None) -> int:
    """Samples in the window of a run whose layers are ``infos`` and that visits ``total``
    samples (None: unknown): a function of the layers' shapes and the run's length only."""
    per_sample = sum(
        (info.values_per_sample or _TOKEN_ROWS) * info.n_neurons * 4 for info in infos.values()
    )
    k = max(1, min(ATOM_SAMPLES, WINDOW_BYTES // max(1, per_sample)))
    return min(k, total) if total is not None else k


class AtomWindow:
    """One rank's batches of the window, as they came, until the candidates are chosen."""

    def __init__(self) -> None:
        self.batches: list[tuple[np.ndarray, Mapping[str, Reduced]]] = []

    def add(self, positions: np.ndarray, acts: Mapping[str, Reduced]) -> None:
        """Keep a batch whose samples are at ``positions`` of the order, if any is early."""
        if positions.size and int(positions.min()) < ATOM_SAMPLES:
            self.batches.append((positions, acts))

    def rows(self, samples: int) -> Rows:
        """Each layer's rows of the samples at positions below ``samples``, with them."""
        parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        for positions, acts in self.batches:
            for name, values in acts.items():
                x, at = sketch_rows(values, positions[:, None])  # a row's sample's position
                keep = at[:, 0] < samples
                parts.setdefault(name, []).append((at[keep, 0], x[keep]))
        self.batches = []
        return {
            name: (np.concatenate([p for p, _ in got]), np.concatenate([x for _, x in got]))
            for name, got in parts.items()
        }


def candidates(ranks_rows: Sequence[Rows]) -> dict[str, np.ndarray]:
    """Each layer's atom candidates from every rank's rows of the window."""
    out = {}
    for name in sorted(set().union(*ranks_rows)):
        found = [rows[name] for rows in ranks_rows if name in rows]
        at = np.concatenate([p for p, _ in found])
        x = np.concatenate([v for _, v in found])
        first = np.argsort(at, kind="stable")[:ATOM_ROWS]  # the order's, rows kept in order
        out[name] = atom_candidates(x[first])
    return out
