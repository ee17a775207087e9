"""Neuron orders: how the dashboard sorts the neurons of a layer.

NeuralDivergence sorts by the median of a group, by an instance's activation, and by the
difference of two of these. ndstream adds the divergence of an instance from a group, the
spread (IQR) of a group, plain neuron index, and how two items' distributions differ: effect
size, KS distance, Wasserstein-1 and AUROC (:mod:`ndstream.sketch.contrast`), signed or by
size (``abs_``). A sort is a :class:`SortSpec`; its items are
strings, so that they fit in a URL:

- ``"group:<name>"``: the group's median (or, for ``iqr``, its interquartile range);
- ``"instance:<id>"``: the instance's activation (ids as in :func:`ndstream.explore.instance_ids`);
- ``"compared:<name>"``: a group of a second store, compared side by side with the first
  (``ndstream serve A --compare B``), where the sort takes any item: "which neurons moved
  between the stores" is a contrast of ``group:g`` against ``compared:g``.

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

__all__ = [
    "ITEM_KINDS",
    "KEY_NAMES",
    "SORTS",
    "SortSpec",
    "describe",
    "item",
    "neuron_order",
    "sort_key",
]

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


ITEM_KINDS = ("group", "instance", "compared")


def item(kind: str, name: str) -> str:
    """The item string of a group, an instance or a compared store's group, e.g.
    ``item("group", "cat")``."""
    if kind not in ITEM_KINDS:
        raise ValueError(f"an item is a 'group', an 'instance' or a 'compared' group, got {kind!r}")
    return f"{kind}:{name}"


def _split(value: str) -> tuple[str, str]:
    kind, sep, name = value.partition(":")
    if not sep or kind not in ITEM_KINDS or not name:
        raise ValueError(
            f"an item is 'group:<name>', 'instance:<id>' or 'compared:<name>', got {value!r}"
        )
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
            if kind == "compared" and want != "any":
                raise ValueError(f"sort {self.by!r} takes a {want} item here, got {value!r}")
            if want != "any" and kind != want:
                raise ValueError(f"sort {self.by!r} takes a {want} item here, got {value!r}")

    @property
    def items(self) -> tuple[str, ...]:
        """The items this sort uses."""
        return (self.a, self.b)[: len(SORTS[self.by])]


def _source(frame: LayerFrame, other: LayerFrame | None, kind: str) -> LayerFrame:
    if kind != "compared":
        return frame
    if other is None:
        raise KeyError("a 'compared' item needs a second store to compare with")
    return other


def _value(frame: LayerFrame, value: str, other: LayerFrame | None = None) -> np.ndarray:
    kind, name = _split(value)
    if kind == "instance":
        return frame.instance_values[frame.instance_row(name)]
    return _source(frame, other, kind).group(name).median


def _distribution(frame: LayerFrame, value: str, other: LayerFrame | None = None) -> Pooled:
    """A group's distribution per neuron, or an instance's values kept exactly."""
    kind, name = _split(value)
    if kind == "instance":
        return Pooled.from_values(frame.instance_values[frame.instance_row(name)])
    return _source(frame, other, kind).summary(name).pooled()


def sort_key(frame: LayerFrame, spec: SortSpec, other: LayerFrame | None = None) -> np.ndarray:
    """``[neuron]`` float64 key that ``spec`` sorts ``frame``'s neurons by.

    ``other`` is the same layer of a second store, for ``compared:`` items.

    Raises
    ------
    KeyError
        If an item is not in the store (or there is no second store for a ``compared:`` one).
    """
    if spec.by == "index":
        return np.arange(frame.n_neurons, dtype=np.float64)
    if spec.by in ("median", "instance"):
        return np.asarray(_value(frame, spec.a, other), dtype=np.float64)
    if spec.by in ("difference", "abs_difference"):
        diff = _value(frame, spec.a, other) - _value(frame, spec.b, other)
        diff = np.asarray(diff, dtype=np.float64)
        return np.abs(diff) if spec.by == "abs_difference" else diff
    metric = spec.by.removeprefix("abs_")
    if metric in METRICS:
        a, b = _distribution(frame, spec.a, other), _distribution(frame, spec.b, other)
        scores = contrast(a, b, metric)
        if spec.by.startswith("abs_"):
            return np.abs(scores.score - NEUTRAL[metric])
        return scores.score
    if spec.by == "iqr":
        return frame.group(_split(spec.a)[1]).iqr
    # divergence
    return frame.divergence(_split(spec.a)[1], _split(spec.b)[1])


# Short names of the sort keys, for the strip beside the rows and its tooltip.
KEY_NAMES = {
    "index": "id",
    "median": "median", "instance": "value", "difference": "diff", "abs_difference": "|diff|",
    "effect": "effect", "abs_effect": "|effect|", "ks": "KS", "wasserstein": "W1",
    "auroc": "AUROC", "abs_auroc": "|AUROC-.5|", "divergence": "|z|", "iqr": "IQR",
}  # fmt: skip

_SORT_WORDS = {
    "index": "neuron index", "median": "median", "instance": "activation",
    "difference": "median difference", "abs_difference": "size of the median difference",
    "divergence": "divergence", "iqr": "IQR", "effect": "effect size",
    "abs_effect": "size of the effect", "ks": "KS distance", "wasserstein": "Wasserstein-1",
    "auroc": "AUROC", "abs_auroc": "separation (|AUROC - 0.5|)",
}  # fmt: skip


def describe(spec: SortSpec, compared: str = "B") -> str:
    """The sort in words, for titles and captions: ``"sorted by KS distance of 3 vs 8,
    largest first"``; ``compared`` names the second store's groups."""
    if spec.by == "index":
        return "in neuron index order"
    names = []
    for value in spec.items:
        kind, name = _split(value)
        names.append(f"{compared}: {name}" if kind == "compared" else name)
    order = "largest first" if spec.descending else "smallest first"
    return f"sorted by {_SORT_WORDS[spec.by]} of {' vs '.join(names)}, {order}"


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
