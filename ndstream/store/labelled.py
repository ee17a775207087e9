"""Answers of the read API as labelled :mod:`xarray` objects.

Each answer names its dimensions and carries their coordinates: ``neuron`` (the neuron's
index in the layer), ``group`` (with each group's ``grouping``), ``quantile`` (the levels
asked for), ``bin`` (with the ``bin_lower`` and ``bin_upper`` edges) and ``value`` (several
values per neuron, with the values asked about as the ``at`` coordinate). ``np.asarray`` of
an answer gives the bare array. xarray is imported when the first answer is made, so that
opening a store and ``ndstream info`` do not pay for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["labelled", "with_bounds"]


def labelled(
    data: np.ndarray,
    dims: Sequence[str],
    coords: Mapping[str, Any],
    name: str,
    attrs: Mapping[str, Any],
) -> xr.DataArray:
    """``data`` as a DataArray over ``dims``, with the coordinates that apply to them."""
    import xarray as xr

    keep = {k: v for k, v in coords.items() if _dims_of(k, v, dims)}
    return xr.DataArray(data, dims=tuple(dims), coords=keep, name=name, attrs=dict(attrs))


def with_bounds(
    estimate: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    dims: Sequence[str],
    coords: Mapping[str, Any],
    attrs: Mapping[str, Any],
) -> xr.Dataset:
    """An estimate with its guaranteed interval: variables ``estimate``, ``lower``, ``upper``."""
    import xarray as xr

    parts = {
        "estimate": labelled(estimate, dims, coords, "estimate", {}),
        "lower": labelled(lower, dims, coords, "lower", {}),
        "upper": labelled(upper, dims, coords, "upper", {}),
    }
    return xr.Dataset(parts, attrs=dict(attrs))


def _dims_of(name: str, value: Any, dims: Sequence[str]) -> bool:
    """Whether a coordinate (a scalar, or ``(dims, values)``, or one named as its dim) fits."""
    if isinstance(value, tuple):
        named = (value[0],) if isinstance(value[0], str) else value[0]
        return all(d in dims for d in named)
    if np.ndim(value) == 0:
        return True
    return name in dims
