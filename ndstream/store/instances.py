"""Single inputs kept in a store beside the distributions: the dots of the Instances view.

An ingest records the inputs a :class:`InstanceSpec` selects, from the same forward passes
that feed the sketches (so recording them never changes a distribution): each one's dataset
index, its position in the visiting order, true and predicted labels, a thumbnail (images)
or its text (text inputs, truncated to :data:`TEXT_CHARS` characters), and its reduced
activations in every layer. ``condition``, ``pair`` and ``success`` describe inputs
that come in pairs (an attacked image and its benign original, see
:mod:`ndstream.ingestion.pairs`); ingest leaves them ``""``, -1 and False.

Selection is a function of the visiting order alone: the listed dataset indices, the first
``per_class`` samples of each true label in that order, and the first ``misclassified``
samples the model gets wrong. Ranks and resumed runs each
keep their own earliest candidates; :meth:`InstanceTable.merge` keeps the earliest overall,
so the result does not depend on how the run was split.

This module is the spec and the stored table, NumPy only, so that reading a store imports no
torch; :class:`~ndstream.capture.instances.InstanceRecorder`, which picks the instances from
torch batches during an ingest, lives in :mod:`ndstream.capture.instances`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["TEXT_CHARS", "InstanceSpec", "InstanceTable"]

TEXT_CHARS = 500  # longest text kept per instance: enough to read, bounded in the store


@dataclass(frozen=True)
class InstanceSpec:
    """Which inputs an ingest records as instances.

    Parameters
    ----------
    indices
        Dataset indices to record.
    per_class
        Also record the first ``per_class`` samples of each true label in the visiting order
        (a seeded random order, so a random choice per class).
    misclassified
        Also record the first ``misclassified`` samples whose prediction is not their label.
    """

    indices: tuple[int, ...] = ()
    per_class: int = 0
    misclassified: int = 0

    def __post_init__(self) -> None:
        if self.per_class < 0 or self.misclassified < 0:
            raise ValueError(
                f"per_class and misclassified must be >= 0, got {self.per_class} and "
                f"{self.misclassified}"
            )
        if any(i < 0 for i in self.indices):
            raise ValueError(f"instance indices must be >= 0, got {list(self.indices)}")

    def __bool__(self) -> bool:
        return bool(self.indices) or self.per_class > 0 or self.misclassified > 0


@dataclass
class InstanceTable:
    """Recorded instances, one row each, in order of their position in the visiting order."""

    index: np.ndarray
    position: np.ndarray
    label: np.ndarray
    predicted: np.ndarray
    condition: np.ndarray
    pair: np.ndarray
    thumbnail: np.ndarray
    values: dict[str, np.ndarray] = field(default_factory=dict)
    success: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # bool per row
    text: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))  # str per row
    #: The attacks behind the pairs: ``{"methods": {name: parameters}, "pairs": ..., ...}``;
    #: rows whose condition is ``attacked:<name>`` came from ``methods[name]``.
    attacks: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not len(self.success) and len(self.index):
            self.success = np.zeros(len(self.index), dtype=bool)  # not given: no attack
        if not len(self.text) and len(self.index):
            self.text = np.full(len(self.index), "", dtype=str)  # not given: not text

    @classmethod
    def empty(cls, shapes: Mapping[str, tuple[int, int]]) -> InstanceTable:
        """No instances; ``shapes`` gives each layer's (values per sample, neurons)."""
        none = np.zeros(0, dtype=np.int64)
        return cls(
            none, none, none, none, np.zeros(0, dtype=str), none,
            np.zeros((0, 0, 0, 0), dtype=np.uint8),
            {name: np.zeros((0, *shape), dtype=np.float32) for name, shape in shapes.items()},
            np.zeros(0, dtype=bool),
        )  # fmt: skip

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def take(self, rows: np.ndarray) -> InstanceTable:
        """The instances at ``rows``."""
        return InstanceTable(
            self.index[rows], self.position[rows], self.label[rows], self.predicted[rows],
            self.condition[rows], self.pair[rows],
            self.thumbnail[rows] if len(self.thumbnail) else self.thumbnail,
            {name: v[rows] for name, v in self.values.items()},
            self.success[rows], self.text[rows], dict(self.attacks),
        )  # fmt: skip

    @staticmethod
    def concat(tables: Sequence[InstanceTable]) -> InstanceTable:
        """The instances of all ``tables``; thumbnails only if every table has them alike."""
        first = tables[0]
        thumbs = [t.thumbnail for t in tables if len(t)]
        same = thumbs and all(t.shape[1:] == thumbs[0].shape[1:] and t.size for t in thumbs)
        rows = {f: np.concatenate([getattr(t, f) for t in tables]) for f in _ROW_FIELDS}
        return InstanceTable(
            **rows,
            thumbnail=np.concatenate(thumbs) if same else np.zeros((0, 0, 0, 0), np.uint8),
            values={n: np.concatenate([t.values[n] for t in tables]) for n in first.values},
            attacks={k: v for t in tables for k, v in t.attacks.items()},
        )

    def merge(self, others: Sequence[InstanceTable], spec: InstanceSpec) -> InstanceTable:
        """The instances ``spec`` selects from the candidates of all tables, by position."""
        every = InstanceTable.concat([self, *others])
        _, unique = np.unique(every.position, return_index=True)  # sorted by position
        every = every.take(unique)
        keep = np.isin(every.index, np.asarray(spec.indices, dtype=np.int64))
        wrong = np.flatnonzero(
            (every.label >= 0) & (every.predicted >= 0) & (every.label != every.predicted)
        )
        keep[wrong[: spec.misclassified]] = True
        if spec.per_class:
            seen: dict[int, int] = {}
            for row, label in enumerate(every.label.tolist()):
                if label >= 0 and seen.get(label, 0) < spec.per_class:
                    seen[label] = seen.get(label, 0) + 1
                    keep[row] = True
        return every.take(np.flatnonzero(keep))


_ROW_FIELDS = ("index", "position", "label", "predicted", "condition", "pair", "success", "text")
