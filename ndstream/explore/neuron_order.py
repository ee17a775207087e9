"""Neuron orders: how the dashboard sorts the neurons of a layer.

NeuralDivergence sorts by the median of a group, by an instance's activation, and by the
difference of two of these. ndstream adds the divergence of an instance from a group, the
spread (IQR) of a group, plain neuron index, and how two items' distributions differ: effect
size, KS distance, Wasserstein-1 and AUROC (:mod:`ndstream.sketch.contrast`), signed or by
size (``abs_``). A sort is a :class:`SortSpec`; its items are
strings, so that they fit in a URL:

- ``"group:<name>"``: the group's median (or, for ``iqr``, its interquartile range);
- ``"instance:<id>"``: the instance's activation (ids as in :func:`ndstream.explore.instance_ids`).

Divergence of an instance from a group is each neuron's contribution to the divergence score,
``|z|`` (:mod:`ndstream.divergence`): 0 at the group's median, growing past the group's edges
in units of its spread, so that neurons beyond the group's range do not tie.
Neurons whose key is NaN (a group without values, a NaN activation) come last either way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..sketch.contrast import METRICS, NEUTRAL, contrast
from ..sketch.summary import Pooled
from .frame import LayerFrame

__all__ = ["SORTS", "SortSpec", "item", "neuron_order", "sort_key"]

# What each sort takes: its items, in order.
SORTS: dict[str, tuple[str, ...]] = {
    "index": (),
    "median": ("group",),
    "instance": ("instance",),
    "difference": ("any", "any"),
    "divergence": ("instance", "group"),
    "iqr": ("group",),
    # How two items' distributions differ (ndstream.sketch.contrast); "abs_" sorts by the
    # size of the difference whatever its sign (for AUROC, the distance from 0.5).
    "abs_difference": ("any", "any"),
    "effect": ("any", "any"),
    "abs_effect": ("any", "any"),
    "ks": ("any", "any"),
    "wasserstein": ("any", "any"),
    "auroc": ("any", "any"),
    "abs_auroc": ("any", "any"),
}


def item(kind: str, name: str) -> str:
    """The item string of a group or instance, e.g. ``item("group", "cat")``."""
    if kind not in ("group", "instance"):
        raise ValueError(f"an item is a 'group' or an 'instance', got {kind!r}")
    return f"{kind}:{name}"


def _split(value: str) -> tuple[str, str]:
    kind, sep, name = value.partition(":")
    if not sep or kind not in ("group", "instance") or not name:
        raise ValueError(f"an item is 'group:<name>' or 'instance:<id>', got {value!r}")
    return kind, name


@dataclass(frozen=True)
class SortSpec:
    """One way of ordering neurons.

    Parameters
    ----------
    by
        One of :data:`SORTS`.
    a, b
        The items it takes (see the module docstring); unused ones are ignored.
    descending
        Largest key first.
    """

    by: str = "index"
    a: str = ""
    b: str = ""
    descending: bool = False

    def __post_init__(self) -> None:
        if self.by not in SORTS:
            raise ValueError(f"unknown sort {self.by!r}; choose one of {list(SORTS)}")
        for want, value in zip(SORTS[self.by], (self.a, self.b), strict=False):
            kind, _ = _split(value)
            if want != "any" and kind != want:
                raise ValueError(f"sort {self.by!r} takes a {want} item here, got {value!r}")

    @property
    def items(self) -> tuple[str, ...]:
        """The items this sort uses."""
        return (self.a, self.b)[: len(SORTS[self.by])]


def _value(frame: LayerFrame, value: str) -> np.ndarray:
    kind, name = _split(value)
    if kind == "group":
        return frame.group(name).median
    return frame.instance_values[frame.instance_row(name)]


def _distribution(frame: LayerFrame, value: str) -> Pooled:
    """A group's distribution per neuron, or an instance's values kept exactly."""
    kind, name = _split(value)
    if kind == "group":
        return frame.summary(name).pooled()
    return Pooled.from_values(frame.instance_values[frame.instance_row(name)])


def sort_key(frame: LayerFrame, spec: SortSpec) -> np.ndarray:
    """``[neuron]`` float64 key that ``spec`` sorts ``frame``'s neurons by."""
    if spec.by == "index":
        return np.arange(frame.n_neurons, dtype=np.float64)
    if spec.by in ("median", "instance"):
        return np.asarray(_value(frame, spec.a), dtype=np.float64)
    if spec.by in ("difference", "abs_difference"):
        diff = np.asarray(_value(frame, spec.a) - _value(frame, spec.b), dtype=np.float64)
        return np.abs(diff) if spec.by == "abs_difference" else diff
    metric = spec.by.removeprefix("abs_")
    if metric in METRICS:
        scores = contrast(_distribution(frame, spec.a), _distribution(frame, spec.b), metric)
        if spec.by.startswith("abs_"):
            return np.abs(scores.score - NEUTRAL[metric])
        return scores.score
    if spec.by == "iqr":
        return frame.group(_split(spec.a)[1]).iqr
    # divergence
    return frame.divergence(_split(spec.a)[1], _split(spec.b)[1])


def neuron_order(
    key: np.ndarray, descending: bool = False, exclude: Iterable[int] = ()
) -> np.ndarray:
    """Neuron ids sorted by ``key`` (ties by id), NaN keys last, ``exclude`` left out."""
    key = np.asarray(key, dtype=np.float64)
    ids = np.arange(key.shape[0])
    nan = np.isnan(key)
    # lexsort sorts by its last key first: NaN flag, then the key (negated to descend), then id.
    primary = np.where(nan, 0.0, -key if descending else key)
    order = np.lexsort((ids, primary, nan))
    drop = np.fromiter(exclude, dtype=np.int64)
    if drop.size:
        order = order[~np.isin(order, drop)]
    return order
