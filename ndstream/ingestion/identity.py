"""Decide what an ingest does with the store already at its path: start, resume, or refuse.

A run resumes a store only if the store was made by the same run: the same result-defining
configuration, the same settings that shape the sketches (layers, reduction, neuron axes,
groupings, grid), model parameters, dataset and sample order, whether the run came from a
config file or the Python API. Settings that change how fast a run goes but not what it
counts (batch size, loader workers, device, checkpoint interval, store path) may differ.

A resume builds on a checkpoint whose every file matches its checksum. If the last one is
damaged, it resumes from the newest intact one and says what that costs; if none is
intact, it refuses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..sketch import GridSpec, LayerSketch, SketchSpec
from ..store import Store, StoreMeta
from ..store.format import check_version
from ..store.snapshots import never_committed, pin
from ..store.writer import check_replaceable

__all__ = ["Prior", "RunIdentity", "prepare", "rebuild_sketches"]

# Config keys that do not change what a run counts. Attacked pairs are added once the
# distributions are complete, and replaced whenever they are made again (ingestion/pairs.py).
_RUNTIME_KEYS = frozenset({"store", "loader", "checkpoint", "device", "threads", "attacks"})
# Settings added after stores were written, at the default that changes nothing: a store
# written before them resumes under a config that leaves them there.
_LATER_DEFAULTS: dict[tuple[str, str], Any] = {("instances", "misclassified"): 0}


@dataclass(frozen=True)
class RunIdentity:
    """What must match for a run to continue a store."""

    config: Mapping[str, Any]
    model_fingerprint: str
    dataset_fingerprint: str
    order: Mapping[str, Any]
    settings: Mapping[str, Any]

    def diff(self, meta: StoreMeta) -> list[str]:
        """How the store's run differs from this one (empty when it is the same run)."""
        out = []
        for key in sorted(set(meta.settings) | set(self.settings)):
            old, new = meta.settings.get(key), self.settings.get(key)
            if old != new:
                out.append(f"{key} ({old!r} in the store, {new!r} now)")
        if meta.model_fingerprint != self.model_fingerprint:
            out.append(
                f"model parameters (fingerprint {meta.model_fingerprint} in the store, "
                f"{self.model_fingerprint} now)"
            )
        if meta.dataset_fingerprint != self.dataset_fingerprint:
            out.append(
                f"dataset (fingerprint {meta.dataset_fingerprint or '-'} in the store, "
                f"{self.dataset_fingerprint or '-'} now)"
            )
        if dict(meta.order) != dict(self.order):
            out.append(f"sample order ({meta.order} in the store, {dict(self.order)} now)")
        old, new = _result_config(meta.config), _result_config(self.config)
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                out.append(f"config {key!r} ({old.get(key)!r} in the store, {new.get(key)!r} now)")
        return out


@dataclass
class Prior:
    """A store this run continues: its samples counted and its sketches.

    ``note`` says which damaged checkpoint was passed over, and what that costs; it is
    empty when the run resumes from the last checkpoint.
    """

    store: Store
    samples_done: int
    note: str = ""

    def sketches(self) -> dict[str, LayerSketch]:
        """Each layer's sketch, rebuilt bit for bit from the store's last checkpoint."""
        return rebuild_sketches(self.store)


def rebuild_sketches(store: Store) -> dict[str, LayerSketch]:
    """Each layer's sketch, rebuilt bit for bit from a store's pinned checkpoint.

    Parameters
    ----------
    store
        An open store.

    Returns
    -------
    dict of str to LayerSketch
        By layer; finalizing one gives the store's summary back, bit for bit.
    """
    grid = GridSpec.from_dict(store.meta.grid)
    everything = range(len(store.groups))
    groupings = tuple(store.groupings)
    return {
        name: LayerSketch.from_summary(
            store.summary(name, group=everything),
            SketchSpec(store.n_neurons(name), tuple(store.groups), grid, groupings),
            pooled=store.summary(name),
        )
        for name in store.layers
    }


def prepare(path: Path, identity: RunIdentity, *, overwrite: bool) -> Prior | Store | None:
    """What to do with ``path``: ``None`` to start afresh, a :class:`Prior` to resume, or the
    complete :class:`Store` of this very run, which needs no more work.

    Raises
    ------
    StoreError
        If the path holds something else: a store of another run (the message lists what
        differs), or anything that is not an ndstream store.
    """
    if not path.exists() or (path.is_dir() and never_committed(path)):
        return None  # nothing, or a run that died before its first checkpoint
    check_replaceable(path)
    if overwrite:
        return None
    try:
        store = Store(path, pinned=pin(path, deep=True, version=check_version))
    except StoreError as exc:
        raise StoreError(
            f"{path} holds a store that cannot be resumed ({exc}); pass --overwrite "
            "(overwrite=True) to start over"
        ) from exc
    diff = identity.diff(store.meta)
    if diff:
        state = "a complete" if store.complete else "an incomplete"
        raise StoreError(
            f"{path} holds {state} store of a different run, so it is not "
            f"{'resumed' if not store.complete else 'reused'}. What differs:\n  - "
            + "\n  - ".join(diff)
            + "\nPass --overwrite (overwrite=True) to start over, or choose another store path."
        )
    if store.complete:
        return store
    note = store.fallback_note()
    if note:
        note += f"; this run goes on from sample {store.meta.samples_done}"
    return Prior(store, store.meta.samples_done, note)


def _result_config(config: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in config.items() if k not in _RUNTIME_KEYS}
    for (section, key), default in _LATER_DEFAULTS.items():
        part = out.get(section)
        if isinstance(part, Mapping) and part.get(key, default) == default:
            out[section] = {k: v for k, v in part.items() if k != key}
    return out
