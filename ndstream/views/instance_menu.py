"""The dashboard's instance menu: a label for each stored instance, its divergence score and
the attacked pairs, read from a store's instances table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..store import Store
from ..store.integrity import MANIFEST

__all__ = ["divergence_scores", "instance_label", "pairs_of"]


def instance_label(table: Any, row: int, iid: str, scores: np.ndarray | None) -> str:
    """The menu text of instance ``iid`` (row ``row`` of the instances ``table``): its label
    and prediction, condition, first words (a text input) and divergence score."""
    label, pred = int(table.label[row]), int(table.predicted[row])
    cond = str(table.condition[row])
    text = f"#{iid} · true {label} → pred {pred}" + (f" · {cond}" if cond else "")
    words = str(table.text[row]) if len(table.text) else ""
    if words:  # a text input: its first words tell it apart in the menu (escaped there)
        text += f" · “{words[:40]}{'…' if len(words) > 40 else ''}”"
    if scores is not None and np.isfinite(scores[row]):
        text += f" · divergence {scores[row]:.2f}"
    return text


def divergence_scores(store: Store, table: Any) -> np.ndarray | None:
    """Each instance's overall divergence from its predicted class; ``None`` while an ingest
    still writes the store (the distributions move), or where the store has no group for a
    prediction (grouped neither by label nor by predicted class, or fewer classes)."""
    from ..divergence import class_groups

    if table is None or not len(table) or not store.complete:
        return None
    n_classes = len(class_groups(store))
    if not n_classes or table.predicted.min() < 0 or table.predicted.max() >= n_classes:
        return None
    # A checkpoint never changes once committed, so every session on it shares its scores;
    # its manifest's inode and time tell it from a later store's checkpoint of the same name.
    manifest = (Path(store.snapshot) / MANIFEST).stat()
    key = f"{store.snapshot}:{manifest.st_ino}:{manifest.st_mtime_ns}"
    if key not in _SCORES:
        if len(_SCORES) >= 8:
            _SCORES.pop(next(iter(_SCORES)))
        _SCORES[key] = store.divergence(table).overall
    return _SCORES[key]


_SCORES: dict[str, np.ndarray] = {}  # instance scores by checkpoint folder, the last 8


def pairs_of(table: Any, ids: list[str]) -> dict[int, list[str]]:
    """Instance ids by pair id, the benign one first."""
    out: dict[int, list[str]] = {}
    if table is None:
        return out
    for row in np.argsort(table.condition != "benign", kind="stable"):
        if table.pair[row] >= 0:
            out.setdefault(int(table.pair[row]), []).append(ids[row])
    return dict(sorted(out.items()))
