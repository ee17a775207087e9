"""Neurons in display order, a page at a time: what the dashboard shows, without Panel.

A layer's neurons are sorted by a :class:`~ndstream.explore.neuron_order.SortSpec`, the
hidden ones are left out, and the rest are cut into pages of ``rows`` neurons. The dashboard
keeps one :class:`SortedLayers` per session; notebooks can use it, or the functions below, to
reproduce a page exactly.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from ..store import Store
from .frame import LayerFrame
from .neuron_order import SortSpec, neuron_order, sort_key

__all__ = ["SortedLayers", "page_of", "page_start", "shared_frame"]


def page_start(n_shown: int, page: int, rows: int) -> int:
    """Rank (0-based) of the first row of ``page`` among ``n_shown`` neurons.

    A page past the end shows the last page, so that hiding neurons never leaves an empty one.
    """
    return min(page * rows, max(0, (n_shown - 1) // rows * rows))


def page_of(order: np.ndarray, neuron: int, rows: int) -> int | None:
    """The page (0-based) of ``rows`` neurons that shows ``neuron``, or ``None`` if hidden."""
    hits = np.flatnonzero(order == neuron)
    return int(hits[0]) // rows if hits.size else None


class SortedLayers:
    """Each layer's sort key and display order, kept until the sort, the hidden neurons or
    the checkpoint change: one view change asks for them several times."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[tuple[object, ...], np.ndarray, np.ndarray]] = {}

    def get(
        self,
        frame: LayerFrame,
        spec: SortSpec,
        hidden: Sequence[int],
        other: LayerFrame | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(key, order)`` of ``frame``'s layer: every neuron's sort key, and the neuron ids in
        display order with ``hidden`` left out. ``other`` is the same layer of a second store,
        for ``compared:`` items. A sort item that this checkpoint does not have (a group or
        instance of another store) falls back to neuron index."""
        state = (spec, tuple(hidden), id(frame), id(other))
        kept = self._kept.get(frame.layer)
        if kept is None or kept[0] != state:
            try:
                key = sort_key(frame, spec, other)
            except KeyError:
                key = sort_key(frame, SortSpec("index"))
            kept = self._kept[frame.layer] = (
                state,
                key,
                neuron_order(key, spec.descending, hidden),
            )
        return kept[1], kept[2]


_FRAMES: OrderedDict[tuple[object, ...], LayerFrame] = OrderedDict()
_FRAMES_KEPT = 64
_FRAMES_LOCK = threading.Lock()


def shared_frame(store: Store, layer: str) -> LayerFrame:
    """The :class:`LayerFrame` of ``layer`` in ``store``'s checkpoint, shared by every caller
    (every dashboard session) that reads the same checkpoint; the 64 last used are kept."""
    # A store re-written with --overwrite numbers its snapshots afresh: the folder's inode and
    # time tell a new snapshot from an old one of the same name.
    info = store.snapshot.stat()
    key = (store.snapshot.resolve(), info.st_ino, info.st_mtime_ns, layer)
    with _FRAMES_LOCK:
        frame = _FRAMES.get(key)
        if frame is None:
            frame = _FRAMES[key] = LayerFrame(store, layer)
            while len(_FRAMES) > _FRAMES_KEPT:
                _FRAMES.popitem(last=False)
        _FRAMES.move_to_end(key)
        return frame
