"""The activation axis a layer is drawn on: its range, its scale and its ticks.

Activations are often heavy-tailed: a few neurons, or a few values of every neuron, reach far
past where most of the mass sits, and an axis over every value squashes the bars into a
sliver. Three axes are offered (:data:`AXES`):

``robust`` (the default)
    Linear, from the smallest 1st percentile to the largest 99th percentile of any neuron
    (all groups pooled), widened to take in the instances drawn. Mass beyond it is not lost:
    the views mark, at each edge, the rows that have values past it.
``full``
    Linear over every finite value.
``symlog``
    Every finite value, on ``sign(x) * log1p(|x| / c)``: linear within ``c`` of zero and
    logarithmic beyond, so sign and zero stay on the axis (a log axis would drop both). ``c``
    is a hundredth of the robust range's largest magnitude, so the bulk of the mass spans
    two decades of the log part and the tails the rest.

The bars are density on display bins of equal width *on the axis drawn*: on ``symlog`` the
bins are equal in ``log1p(|x| / c)``, so a decade of the tail gets as many bins as the bulk.
Nothing here imports Panel or HoloViews.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["AXES", "DisplayAxis", "nice_ticks"]

AXES: dict[str, str] = {
    "robust": "1st-99th percentile, outliers marked",
    "full": "every value, linear",
    "symlog": "every value, symmetric log",
}


@dataclass(frozen=True)
class DisplayAxis:
    """An activation axis: ``bins`` display bins from ``lo`` to ``hi``.

    Parameters
    ----------
    lo, hi
        The range drawn, in activation units (``lo < hi``).
    bins
        Number of display bins, of equal width in display coordinates.
    symlog
        ``None`` for a linear axis; else the linear threshold ``c`` of the symmetric log.
    kind
        The name it was made under (one of :data:`AXES`), for titles and links.
    """

    lo: float
    hi: float
    bins: int = 64
    symlog: float | None = None
    kind: str = "full"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lo) and math.isfinite(self.hi) and self.lo < self.hi):
            raise ValueError(f"an axis needs finite lo < hi, got {self.lo} and {self.hi}")
        if self.bins < 1:
            raise ValueError(f"an axis needs at least one bin, got {self.bins}")
        if self.symlog is not None and not (math.isfinite(self.symlog) and self.symlog > 0):
            raise ValueError(f"the symlog threshold must be finite and positive, got {self.symlog}")

    def to_display(self, values: np.ndarray | float) -> np.ndarray:
        """Activations in display coordinates (the identity on a linear axis)."""
        v = np.asarray(values, dtype=np.float64)
        if self.symlog is None:
            return v
        return np.sign(v) * np.log1p(np.abs(v) / self.symlog)

    def from_display(self, positions: np.ndarray | float) -> np.ndarray:
        """Display coordinates back in activations."""
        t = np.asarray(positions, dtype=np.float64)
        if self.symlog is None:
            return t
        return np.sign(t) * np.expm1(np.abs(t)) * self.symlog

    @property
    def display_range(self) -> tuple[float, float]:
        """The axis ends in display coordinates."""
        lo, hi = self.to_display(np.array([self.lo, self.hi])).tolist()
        return float(lo), float(hi)

    @property
    def edges(self) -> np.ndarray:
        """``bins + 1`` bin edges in activations, equally spaced in display coordinates."""
        lo, hi = self.display_range
        edges = self.from_display(np.linspace(lo, hi, self.bins + 1))
        edges[0], edges[-1] = self.lo, self.hi  # exact ends, whatever the round trip gives
        return edges

    def ticks(self, most: int = 8) -> list[tuple[float, str]]:
        """``(display position, label)`` of round activations along the axis."""
        if self.symlog is None:
            return [(v, _label(v)) for v in nice_ticks(self.lo, self.hi, most)]
        values = {0.0} if self.lo <= 0 <= self.hi else set()
        for sign in (-1.0, 1.0):
            edge = self.lo if sign < 0 else self.hi
            if sign * edge <= 0:
                continue
            top = math.floor(math.log10(abs(edge)))
            bottom = max(math.ceil(math.log10(self.symlog)), top - 12)
            decades = range(bottom, top + 1)
            # Within a decade or two, 2 and 5 times each power too, so that ticks show.
            steps = (1, 2, 5) if len(decades) < 3 else (1,)
            values |= {sign * m * 10.0**k for k in decades for m in steps}
        inside = sorted(v for v in values if self.lo <= v <= self.hi)
        if len(inside) > most:  # every other decade, keeping zero and the outermost
            step = math.ceil(len(inside) / most)
            inside = [v for i, v in enumerate(inside) if i % step == 0 or v == 0]
        return [(float(self.to_display(v)), _label(v)) for v in inside]

    @classmethod
    def choose(
        cls,
        kind: str,
        extent: tuple[float, float],
        robust: tuple[float, float],
        instances: np.ndarray | None = None,
        bins: int = 64,
    ) -> DisplayAxis:
        """The axis ``kind`` for a layer.

        Parameters
        ----------
        kind
            One of :data:`AXES`.
        extent
            The smallest and largest finite value of the layer.
        robust
            The smallest 1st and largest 99th percentile of any neuron.
        instances
            Activations of the instances drawn (non-finite ones are ignored); every axis
            takes them in.
        bins
            Number of display bins.
        """
        if kind not in AXES:
            raise ValueError(f"unknown axis {kind!r}; choose one of {', '.join(AXES)}")
        finite = np.asarray(instances if instances is not None else [], dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        lo, hi = robust if kind == "robust" else extent
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            lo, hi = extent  # a layer whose percentiles coincide: the extent is all there is
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
        if not hi > lo:
            lo, hi = lo - 0.5, lo + 0.5
        threshold = None
        if kind == "symlog":
            scale = max(abs(robust[0]), abs(robust[1]))
            scale = scale if math.isfinite(scale) and scale > 0 else max(abs(lo), abs(hi))
            threshold = scale / 100 if scale > 0 else 1.0
        return cls(lo, hi, bins, threshold, kind)


def nice_ticks(lo: float, hi: float, most: int = 8) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart) from ``lo`` to ``hi``."""
    span = hi - lo
    if not (math.isfinite(span) and span > 0):
        return [lo]
    raw = span / max(1, most - 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step)
    values = [k * step for k in range(first, math.floor(hi / step) + 1)]
    return [0.0 if abs(v) < step * 1e-9 else v for v in values]


def _label(value: float) -> str:
    return f"{value:.3g}"
