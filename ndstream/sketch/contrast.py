"""How two distributions of each neuron differ, with the interval the sketches guarantee.

:func:`contrast` scores every neuron by one of :data:`METRICS` between two
:class:`~ndstream.sketch.summary.Pooled` distributions (two groups, two stores, or a group
and a few inputs kept exactly with :meth:`Pooled.from_values`). Each score comes with a
guaranteed interval: whatever the values behind the two sketches, the exact score on them
lies inside it. Where both sides keep every value exactly the interval is the score itself
(up to float rounding). Definitions, in ``docs/contrast.md``:

``median``
    ``median(A) - median(B)``.
``effect``
    The median difference over the mean of the two interquartile ranges: a robust effect
    size (the median and IQR analogue of Cohen's d).
``ks``
    The Kolmogorov-Smirnov distance, ``max |F_A(x) - F_B(x)|`` (0 to 1).
``wasserstein``
    The Wasserstein-1 (earth mover's) distance, ``integral |F_A(x) - F_B(x)| dx``; infinite
    when the two put different shares of their values at -Inf or +Inf.
``auroc``
    ``P(A > B) + P(A = B) / 2``: how well one value tells A from B (0.5: not at all).

NaN values are left out of both sides; ±Inf are values like any other.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from .summary import Pooled

__all__ = ["METRICS", "NEUTRAL", "Contrast", "contrast"]

METRICS = ("median", "effect", "ks", "wasserstein", "auroc")

#: The score of two equal distributions, from which "by absolute value" measures.
NEUTRAL = {"median": 0.0, "effect": 0.0, "ks": 0.0, "wasserstein": 0.0, "auroc": 0.5}


def _kernels() -> ModuleType:
    from . import _kernels

    return _kernels


@dataclass(frozen=True)
class Contrast:
    """Every neuron's score under one metric, with its guaranteed interval.

    Attributes
    ----------
    metric
        One of :data:`METRICS`.
    score, lower, upper
        ``[neuron]`` float64: the estimate and the interval in which the exact score lies
        (NaN where either side has no value).
    """

    metric: str
    score: np.ndarray
    lower: np.ndarray
    upper: np.ndarray

    def order(self, by: str = "abs") -> np.ndarray:
        """Neuron indices, largest difference first: ``by="abs"`` the distance from
        :data:`NEUTRAL`, ``"signed"`` the score itself; NaN scores last."""
        if by not in ("abs", "signed"):
            raise ValueError(f"by must be 'abs' or 'signed', got {by!r}")
        key = self.score - NEUTRAL[self.metric]
        key = np.abs(key) if by == "abs" else key
        key = np.where(np.isnan(key), -np.inf, key)
        return np.argsort(-key, kind="stable")


def contrast(a: Pooled, b: Pooled, metric: str = "effect") -> Contrast:
    """Score each neuron by how its distribution in ``a`` differs from the one in ``b``.

    Parameters
    ----------
    a, b
        One distribution per neuron each, with the same number of neurons (their bins may
        differ: two stores, or a sketch and exact values).
    metric
        One of :data:`METRICS` (see the module docstring).

    Returns
    -------
    Contrast
        The scores and their guaranteed intervals; positive ``median`` and ``effect``, and
        ``auroc`` above 0.5, mean larger values in ``a``.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    n = a.counts.shape[0]
    if b.counts.shape[0] != n:
        raise ValueError(f"the two sides have {n} and {b.counts.shape[0]} neurons")
    if metric in ("median", "effect"):
        return _by_quantiles(a, b, metric)
    k = _kernels()
    out = np.empty((n, k.contrast.N_OUT), dtype=np.float64)
    k.contrast_curves(*_arrays(a), *_arrays(b), out)
    col = {"ks": k.contrast.KS, "wasserstein": k.contrast.W1, "auroc": k.contrast.AUC}[metric]
    return Contrast(metric, out[:, col], out[:, col + 1], out[:, col + 2])


def _arrays(p: Pooled) -> tuple[np.ndarray, ...]:
    # The bins that hold each atom inside a range whole: the intervals must be guaranteed.
    counts, lower, upper = p.spread_bins()
    return (
        np.ascontiguousarray(counts, dtype=np.float64),
        lower, upper, p.mins, p.maxs, p.neginf, p.posinf,
    )  # fmt: skip


def _quantile_ranges(p: Pooled, qs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Estimates ``[neuron, len(qs)]`` and the values each quantile can take."""
    lo, hi = np.empty((p.counts.shape[0], qs.size)), np.empty((p.counts.shape[0], qs.size))
    _kernels().quantile_ranges(*_arrays(p), qs, lo, hi)
    return p.quantile(qs), lo, hi


def _by_quantiles(a: Pooled, b: Pooled, metric: str) -> Contrast:
    qs = np.array([0.5, 0.25, 0.75])
    (ea, la, ha), (eb, lb, hb) = _quantile_ranges(a, qs), _quantile_ranges(b, qs)
    with np.errstate(invalid="ignore"):  # Inf - Inf: no number
        diff, d_lo, d_hi = ea[:, 0] - eb[:, 0], la[:, 0] - hb[:, 0], ha[:, 0] - lb[:, 0]
    if metric == "median":
        return Contrast(metric, diff, d_lo, d_hi)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = 0.5 * ((ea[:, 2] - ea[:, 1]) + (eb[:, 2] - eb[:, 1]))
        s_lo = np.maximum(0.0, 0.5 * ((la[:, 2] - ha[:, 1]) + (lb[:, 2] - hb[:, 1])))
        s_hi = 0.5 * ((ha[:, 2] - la[:, 1]) + (hb[:, 2] - lb[:, 1]))
        score = _ratio(diff, scale)
        # The extremes of d / s over the box [d_lo, d_hi] x [s_lo, s_hi], s >= 0.
        corners = np.stack([_ratio(d, s) for d in (d_lo, d_hi) for s in (s_lo, s_hi)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a neuron without values: NaN
            lower, upper = np.nanmin(corners, axis=0), np.nanmax(corners, axis=0)
        # A scale that may be 0 leaves the ratio unbounded on the side of the difference.
        open_ = s_lo <= 0
        lower = np.where(
            open_, np.where(d_lo < 0, -np.inf, np.where(d_lo == 0, 0.0, d_lo / s_hi)), lower
        )
        upper = np.where(
            open_, np.where(d_hi > 0, np.inf, np.where(d_hi == 0, 0.0, d_hi / s_hi)), upper
        )
    missing = np.isnan(diff)
    lower, upper = np.where(missing, np.nan, lower), np.where(missing, np.nan, upper)
    return Contrast(metric, score, np.minimum(lower, score), np.maximum(upper, score))


def _ratio(d: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``d / s`` with ``0 / 0 = 0`` (no difference and no spread: no effect) and
    ``d / 0 = ±inf``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((d == 0) & (s == 0), 0.0, d / s)
