"""Which neurons differ between A and B: every neuron of a layer scored, sorted, bounded.

A and B are each a group (or groups pooled) of a store, a group of another store, or a few
inputs' activations kept exactly. The metrics and their guaranteed intervals are
:mod:`ndstream.sketch.contrast`'s; this module finds the two distributions, checks that they
can be compared, and labels the answer (:meth:`ndstream.Store.contrast` calls it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

import numpy as np

from ..errors import GroupNotFoundError, LayerNotFoundError, SpecMismatchError, near_names
from ..sketch.contrast import METRICS, contrast
from ..sketch.summary import Pooled
from ..store.labelled import labelled

if TYPE_CHECKING:
    import xarray as xr

    from ..store.reader import GroupSelector, Store

__all__ = ["ORDERS", "Operand", "compare_stores", "contrast_layer"]

#: One side of a contrast: groups of the store itself (a name, an index, a list of them
#: pooled, ``None``), another store (the groups of the same names as the other side selects,
#: or all of it), ``(store, groups)``, or inputs' activations, a NumPy array ``[neuron]`` or
#: ``[input, neuron]`` (such as ``store.instance_values(layer)[k]``), kept exactly at float32.
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
    _check_operand(a, "a")
    _check_operand(b, "b")
    if layer_b is not None and not (_other_store(a) or _other_store(b)):
        raise ValueError(
            f"layer_b={layer_b!r} names the layer in another store, but neither a nor b is "
            "one: pass that store as a side (store_b, or (store_b, group)), or leave layer_b "
            "out"
        )
    side_a = _side(store, layer, a, b, layer_b)
    side_b = _side(store, layer, b, a, layer_b)
    width_a = side_a.pooled.counts.shape[0]
    if width_a != n:
        raise SpecMismatchError(
            f"a ({side_a.name}) has {width_a} neurons{side_a.where}, but layer "
            f"{layer!r} of {store.path} has {n}: {side_a.advice(n, aligned=False)}"
        )
    if align is not None:
        side_b = side_b._replace(pooled=_aligned(side_b.pooled, np.asarray(align), n))
    width_b = side_b.pooled.counts.shape[0]
    if width_b != n:
        raise SpecMismatchError(
            f"b ({side_b.name}) has {width_b} neurons{side_b.where}, but layer "
            f"{layer!r} of {store.path} has {n}: {side_b.advice(n, aligned=True)}"
        )
    result = contrast(side_a.pooled, side_b.pooled, metric)
    keep = (
        np.arange(n) if order == "neuron" else result.order("abs" if order == "abs" else "signed")
    )
    coords = {"neuron": keep}
    attrs = {"layer": layer, "metric": metric, "a": side_a.name, "b": side_b.name, "order": order}
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
    the pooled summary, every sample once). Every layer and group is checked in both stores
    before any score is computed.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
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
    for layer, other in pairs.items():
        for store, name in ((a, layer), (b, other)):
            if name not in store.layers:
                raise LayerNotFoundError(
                    f"{store.path} has no layer {name!r} ({near_names(name, store.layers, 'layers')}); "
                    "name the layers to compare, LAYER:LAYER_B "
                    "where B's name differs (--layers, or layers= with a mapping such as "
                    "{'fc1': 'model.fc1'})"
                )
        if a.n_neurons(layer) != b.n_neurons(other):
            raise SpecMismatchError(
                f"layer {layer!r} of {a.path} has {a.n_neurons(layer)} neurons, but layer "
                f"{other!r} of {b.path} has {b.n_neurons(other)}: compare layers of one width "
                "(--layers LAYER:LAYER_B, or layers= with a mapping); to map neurons of "
                "layers of different widths, use Store.contrast in Python with layer_b= and "
                "align="
            )
    for name in groups or ():
        for store in (a, b):
            _select(
                store, name,
                "compare groups present in both stores (--groups, or groups=), or leave them "
                "out to compare every sample",
            )  # fmt: skip
    out = []
    selections: list[str | None] = list(groups) if groups else [None]
    for layer, other in pairs.items():
        for group in selections:
            result = contrast_layer(a, layer, group, (b, group), metric, layer_b=other)
            out.append((layer, group or "all", result))
    return out


class _Side(NamedTuple):
    """One side: its distribution per neuron, words for it, and where it was read."""

    pooled: Pooled
    name: str
    where: str  # " in layer 'fc1' of PATH", or "" for activations
    kind: str  # "store" (this one), "other" (another store) or "values"

    def advice(self, n: int, *, aligned: bool) -> str:
        """What to do when this side is not ``n`` neurons wide (``aligned``: it is side b,
        which ``align=`` maps)."""
        if self.kind == "values":
            fix = f"pass activations of that layer, [{n}] or [input, {n}]"
            return fix + (", or align= (for each neuron, its index among them)" if aligned else "")
        if aligned:
            return (
                "name the layer of that width with layer_b=, or pass align= (for each neuron "
                "of the layer, its index on side b)"
            )
        return (
            "name the layer of that width with layer_b=, or, to map the neurons with align=, "
            "pass that store as b instead (align= maps side b only)"
        )


def _side(
    store: Store,
    layer: str,
    operand: Any,
    partner: Any,
    layer_b: str | None,
) -> _Side:
    """One side as a distribution per neuron, and words for it."""
    from ..store.reader import Store

    if _is_values(operand):
        values = np.asarray(operand, dtype=np.float32)
        if values.ndim not in (1, 2):
            raise ValueError(
                f"activations must be [neuron] or [input, neuron], got shape {list(values.shape)}"
            )
        k = values.reshape(-1, values.shape[-1]).shape[0]
        if k == 0:
            raise ValueError(
                f"activations of shape {list(values.shape)} hold no input: give at least one "
                "row of activations"
            )
        return _Side(Pooled.from_values(values), f"{k} input(s)", "", "values")
    if isinstance(operand, Store):
        # Another store: the groups the other side names (by name), or all of it (pooled).
        operand = (operand, _partner_groups(store, partner))
    if isinstance(operand, tuple) and len(operand) == 2 and isinstance(operand[0], Store):
        other, group = operand
        name = layer_b or layer
        if name not in other.layers:
            raise LayerNotFoundError(
                f"{other.path} has no layer {name!r} ({near_names(name, other.layers, 'layers')}); "
                "pass layer_b= (--layers A:B) to name the layer that corresponds to it"
            )
        _select(
            other, group,
            "name its groups with (store_b, group), or pass (store_b, None) for all of it",
        )  # fmt: skip
        words = f"{_group_words(other, group)} of {other.path}"
        where = f" in layer {name!r} of {other.path}"
        return _Side(other.summary(name, group).pooled(), words, where, "other")
    _select(store, operand, "name one of its groups, or pass None for every sample")
    where = f" in layer {layer!r} of {store.path}"
    return _Side(store.summary(layer, operand).pooled(), _group_words(store, operand), where,
                 "store")  # fmt: skip


def _check_operand(operand: Any, side: str) -> None:
    """Refuse what is no side, before anything is read; a list must name groups."""
    from ..store.reader import Store

    if operand is None or isinstance(operand, str | Store | np.ndarray):
        return
    if isinstance(operand, int | np.integer) and not isinstance(operand, bool):
        return
    if _is_labelled(operand):
        if type(operand).__name__ == "Dataset":
            raise TypeError(
                f"{side} is an xarray.Dataset: pass one of its arrays as activations, such "
                "as ds['estimate']"
            )
        return
    if isinstance(operand, tuple) and len(operand) == 2 and isinstance(operand[0], Store):
        return
    if isinstance(operand, list | tuple) and all(
        isinstance(x, str | int | np.integer) and not isinstance(x, bool) for x in operand
    ):
        return  # groups, pooled
    if isinstance(operand, list | tuple):
        raise TypeError(
            f"{side} is a {type(operand).__name__} of {_types(operand)}: a list names groups to "
            "pool (names or indices); pass activations as a NumPy array, np.asarray(values)"
        )
    if hasattr(operand, "__array__") or hasattr(operand, "__array_interface__"):
        raise TypeError(
            f"{side} is a {type(operand).__module__}.{type(operand).__name__}: pass activations "
            "as a NumPy array (a torch tensor: tensor.detach().cpu().numpy())"
        )
    raise TypeError(
        f"{side} is a {type(operand).__name__} ({operand!r}): a side is a group (a name, an "
        "index, a list pooled, None for every sample), another Store, (store, group), or "
        "activations as a NumPy array"
    )


def _is_values(operand: Any) -> bool:
    return isinstance(operand, np.ndarray) or _is_labelled(operand)


def _other_store(operand: Any) -> bool:
    """Whether a side is read from a store by name (where ``layer_b`` applies)."""
    from ..store.reader import Store

    return isinstance(operand, Store) or (
        isinstance(operand, tuple) and len(operand) == 2 and isinstance(operand[0], Store)
    )


def _partner_groups(store: Store, partner: Any) -> Any:
    """The groups a bare :class:`Store` side takes from the other side, by name: those it
    names (``None``: all of it, where the other side names none)."""
    from ..store.reader import Store

    if isinstance(partner, tuple) and len(partner) == 2 and isinstance(partner[0], Store):
        owner, group = partner
    elif partner is None or isinstance(partner, Store) or _is_values(partner):
        return None
    else:
        owner, group = store, partner
    if group is None:
        return None
    idx = _select(owner, group, "name one of its groups, or pass None for every sample")
    names = [owner.groups[i] for i in idx]
    return names[0] if isinstance(group, str | int | np.integer) else names


def _select(store: Store, group: Any, fix: str) -> np.ndarray:
    """``store.group_index(group, pool=True)``, a missing group named with the store's path
    and groups, and ``fix``: what to do."""
    if group is not None:
        items = [group] if isinstance(group, str) else group
        if isinstance(items, list | tuple):
            missing = [g for g in items if isinstance(g, str) and g not in store.groups]
            if missing:
                raise GroupNotFoundError(
                    f"{store.path} has no group {missing[0]!r} "
                    f"({near_names(missing[0], store.groups, 'groups')}); {fix}"
                )
    return store.group_index(group, pool=True)


def _group_words(store: Store, group: Any) -> str:
    if group is None:
        return "all"
    idx = store.group_index(group)
    return " + ".join(store.groups[i] for i in idx)


def _types(items: Sequence[Any]) -> str:
    return " and ".join(dict.fromkeys(type(x).__name__ for x in items)) or "nothing"


def _is_labelled(x: Any) -> bool:
    return type(x).__module__.startswith("xarray")


def _aligned(side: Pooled, index: np.ndarray, n: int) -> Pooled:
    if index.shape != (n,) or index.dtype.kind not in "iu":
        raise ValueError(f"align must give an integer index for each of the {n} neurons")
    if index.size and (index.min() < 0 or index.max() >= side.counts.shape[0]):
        raise ValueError(f"align indexes neurons 0..{side.counts.shape[0] - 1} of the other side")
    counts, lower, upper = side.spread_bins()  # what a contrast reads
    return Pooled(
        counts=counts[index], lower=lower[index], upper=upper[index],
        mins=side.mins[index], maxs=side.maxs[index], nan=side.nan[index],
        posinf=side.posinf[index], neginf=side.neginf[index],
    )  # fmt: skip
