"""Which neurons differ between A and B: every neuron of a layer scored, sorted, bounded.

A and B are each a group (or groups pooled) of a store, a group of another store, or a few
inputs' activations kept exactly. The metrics and their guaranteed intervals are
:mod:`ndstream.sketch.contrast`'s; this module finds the two distributions, checks that they
can be compared, and labels the answer (:meth:`ndstream.Store.contrast` calls it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from ..errors import LayerNotFoundError, SpecMismatchError
from ..sketch.contrast import METRICS, contrast
from ..sketch.summary import Pooled
from ..store.labelled import labelled

if TYPE_CHECKING:
    import xarray as xr

    from ..store.reader import GroupSelector, Store

__all__ = ["ORDERS", "Operand", "compare_stores", "contrast_layer"]

#: One side of a contrast: groups of the store itself, another store (its groups of the same
#: names, or all of it), ``(store, groups)``, or inputs' activations ``[neuron]`` or
#: ``[input, neuron]`` (such as ``store.instance_values(layer)[k]``), kept exactly.
Operand: TypeAlias = "GroupSelector | Store | tuple[Store, GroupSelector] | np.ndarray"

ORDERS = ("abs", "signed", "neuron")


def contrast_layer(
    store: Store,
    layer: str,
    a: Operand,
    b: Operand,
    metric: str = "effect",
    *,
    order: str = "abs",
    layer_b: str | None = None,
    align: Sequence[int] | np.ndarray | None = None,
) -> xr.Dataset:
    """Score every neuron of ``layer`` by how its distribution in ``a`` differs from ``b``.

    See :meth:`ndstream.Store.contrast` for the parameters.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}")
    n = store.n_neurons(layer)
    side_a, name_a = _side(store, layer, a, None, layer_b)
    side_b, name_b = _side(store, layer, b, a, layer_b)
    if align is not None:
        side_b = _aligned(side_b, np.asarray(align), n)
    for side, name in ((side_a, name_a), (side_b, name_b)):
        if side.counts.shape[0] != n:
            raise SpecMismatchError(
                f"{name} has {side.counts.shape[0]} neurons in layer {layer!r}, this store "
                f"{n}: compare layers of one width, or pass align= (for each neuron of "
                f"{layer!r}, its index on the other side)"
            )
    result = contrast(side_a, side_b, metric)
    keep = (
        np.arange(n) if order == "neuron" else result.order("abs" if order == "abs" else "signed")
    )
    coords = {"neuron": keep}
    attrs = {"layer": layer, "metric": metric, "a": name_a, "b": name_b, "order": order}
    import xarray as xr

    return xr.Dataset(
        {
            "score": labelled(result.score[keep], ("neuron",), coords, "score", {}),
            "lower": labelled(result.lower[keep], ("neuron",), coords, "lower", {}),
            "upper": labelled(result.upper[keep], ("neuron",), coords, "upper", {}),
        },
        attrs=attrs,
    )


def compare_stores(
    a: Store,
    b: Store,
    layers: Sequence[str] | dict[str, str] | None = None,
    groups: Sequence[str] | None = None,
    metric: str = "effect",
) -> list[tuple[str, str, xr.Dataset]]:
    """Each layer of ``a`` against the same layer of ``b``: ``(layer, group, contrast)``.

    ``layers`` names the layers (default: all, which must be the same in both), or maps a
    layer of ``a`` to its name in ``b``; ``groups`` names groups present in both (default:
    the pooled summary, every sample once).
    """
    if layers is None:
        if a.layers != b.layers:
            only_a = [x for x in a.layers if x not in b.layers]
            only_b = [x for x in b.layers if x not in a.layers]
            raise LayerNotFoundError(
                f"the two stores hold different layers (only in the first: {only_a[:5]}, only "
                f"in the second: {only_b[:5]}); name the layers to compare (--layers, or "
                "layers= with a mapping such as {'fc1': 'model.fc1'})"
            )
        layers = list(a.layers)
    pairs = dict(layers) if isinstance(layers, dict) else {x: x for x in layers}
    out = []
    selections: list[str | None] = list(groups) if groups else [None]
    for layer, other in pairs.items():
        for group in selections:
            result = contrast_layer(a, layer, group, (b, group), metric, layer_b=other)
            out.append((layer, group or "all", result))
    return out


def _side(
    store: Store,
    layer: str,
    operand: Any,
    partner: Any,
    layer_b: str | None,
) -> tuple[Pooled, str]:
    """One side as a distribution per neuron, and words for it."""
    from ..store.reader import Store

    if isinstance(operand, np.ndarray) or _is_labelled(operand):
        values = np.asarray(operand, dtype=np.float32)
        if values.ndim not in (1, 2):
            raise ValueError(
                f"activations must be [neuron] or [input, neuron], got shape {list(values.shape)}"
            )
        return Pooled.from_values(
            values
        ), f"{values.reshape(-1, values.shape[-1]).shape[0]} input(s)"
    if isinstance(operand, Store):
        # Another store: the groups the partner names, or all of it (pooled).
        group = None if isinstance(partner, np.ndarray | Store | tuple) else partner
        operand = (operand, group)
    if isinstance(operand, tuple) and len(operand) == 2 and isinstance(operand[0], Store):
        other, group = operand
        name = layer_b or layer
        if name not in other.layers:
            raise LayerNotFoundError(
                f"{other.path} has no layer {name!r}; pass layer_b= (--layers A:B) to name "
                "the layer that corresponds to it"
            )
        other.group_index(group, pool=True)  # refuses groups of several groupings
        return other.summary(name, group).pooled(), f"{_group_words(other, group)} of {other.path}"
    store.group_index(operand, pool=True)
    return store.summary(layer, operand).pooled(), _group_words(store, operand)


def _group_words(store: Store, group: Any) -> str:
    if group is None:
        return "all"
    idx = store.group_index(group)
    return " + ".join(store.groups[i] for i in idx)


def _is_labelled(x: Any) -> bool:
    return type(x).__module__.startswith("xarray")


def _aligned(side: Pooled, index: np.ndarray, n: int) -> Pooled:
    if index.shape != (n,) or index.dtype.kind not in "iu":
        raise ValueError(f"align must give an integer index for each of the {n} neurons")
    if index.size and (index.min() < 0 or index.max() >= side.counts.shape[0]):
        raise ValueError(f"align indexes neurons 0..{side.counts.shape[0] - 1} of the other side")
    return Pooled(
        counts=side.counts[index], lower=side.lower[index], upper=side.upper[index],
        mins=side.mins[index], maxs=side.maxs[index], nan=side.nan[index],
        posinf=side.posinf[index], neginf=side.neginf[index],
    )  # fmt: skip
