"""The workload and the numpy baseline that ``bench_accumulator.py`` and
``bench_ingest_sketch.py`` share: ReLU-like batches of [256 rows x 512 neurons] float32 with
10 classes, and a log-linear bincount over them in plain numpy."""

from __future__ import annotations

import numpy as np

ROWS, NEURONS, CLASSES = 256, 512, 10
# The numpy baseline's grid: 2**3 bins per octave, magnitudes 2**-24 .. 2**48, as the float32
# bits give them. It is fixed here, independent of ndstream's GridSpec (which may be finer).
NP_MANTISSA_BITS, NP_MIN_EXP, NP_MAX_EXP = 3, -24, 48
NP_SHIFT = 23 - NP_MANTISSA_BITS
NP_KEY_BASE = ((NP_MIN_EXP + 127) << NP_MANTISSA_BITS) - 1  # the underflow bin
NP_KEY_TOP = (NP_MAX_EXP + 127) << NP_MANTISSA_BITS  # the overflow bin


def make_batches(n_batches: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """ReLU-like batches: half exact zeros, lognormal magnitudes with a per-neuron scale."""
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.normal(0.0, 1.0, NEURONS)).astype(np.float32)
    batches = []
    for _ in range(n_batches):
        x = (rng.lognormal(0.0, 1.0, (ROWS, NEURONS)) * scale).astype(np.float32)
        x[rng.random((ROWS, NEURONS)) < 0.5] = 0.0
        gids = rng.integers(0, CLASSES, ROWS).astype(np.int64)
        batches.append((x, gids))
    return batches


def raw_keys(x: np.ndarray) -> np.ndarray:
    """Rebased log-linear keys of |x| from the float32 bits (ndstream's rule at m = 3), int64."""
    mag = x.view(np.int32) & np.int32(0x7FFFFFFF)
    key = np.clip(mag >> NP_SHIFT, NP_KEY_BASE, NP_KEY_TOP)
    return (key - NP_KEY_BASE).astype(np.int64)


class NumpyHistogram:
    """Dense int64 counts [neuron, group, bin] on the used key range, updated by bincount.

    Bin layout: ``[zero, positive keys lo..hi, negative keys lo..hi]``.
    """

    def __init__(self, batches: list[tuple[np.ndarray, np.ndarray]]) -> None:
        pos = np.concatenate([raw_keys(x)[(x > 0)] for x, _ in batches])
        neg = np.concatenate([raw_keys(x)[(x < 0)] for x, _ in batches])
        self.pos_lo, pos_hi = (int(pos.min()), int(pos.max())) if pos.size else (0, -1)
        self.neg_lo, neg_hi = (int(neg.min()), int(neg.max())) if neg.size else (0, -1)
        self.n_pos = pos_hi - self.pos_lo + 1
        self.n_neg = neg_hi - self.neg_lo + 1
        self.n_bins = 1 + self.n_pos + self.n_neg
        self.size = NEURONS * CLASSES * self.n_bins
        self.state = np.zeros(self.size, dtype=np.int64)
        self.base = (np.arange(NEURONS, dtype=np.int64) * CLASSES)[None, :]

    def update(self, x: np.ndarray, gids: np.ndarray) -> None:
        key = raw_keys(x)
        pos_bin = 1 + np.clip(key - self.pos_lo, 0, max(self.n_pos - 1, 0))
        neg_bin = 1 + self.n_pos + np.clip(key - self.neg_lo, 0, max(self.n_neg - 1, 0))
        bins = np.where(x > 0, pos_bin, np.where(x < 0, neg_bin, 0))
        flat = (self.base + gids[:, None]) * self.n_bins + bins
        self.state += np.bincount(flat.ravel(), minlength=self.size)
