"""Recording instances during an ingest: picks them from each batch of torch tensors.

The spec (:class:`~ndstream.store.instances.InstanceSpec`) and the stored table
(:class:`~ndstream.store.instances.InstanceTable`) live in :mod:`ndstream.store.instances`, which imports
no torch, so that reading a store does not either; this module holds the part that reads the
batches of an ingest (labels, predictions, thumbnails of image tensors, the text of text
batches).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..store.instances import TEXT_CHARS, InstanceSpec, InstanceTable
from .reduce import Reduced, per_sample
from .structure import model_scores

__all__ = ["THUMBNAIL_SIDE", "InstanceRecorder"]

THUMBNAIL_SIDE = 64  # longest side of a stored thumbnail, in pixels


class InstanceRecorder:
    """One rank's candidates, picked from each batch as it goes by.

    Parameters
    ----------
    spec
        What to record.
    prior
        Instances a resumed run recorded before; they count towards ``per_class``.
    """

    def __init__(self, spec: InstanceSpec, prior: InstanceTable | None = None) -> None:
        self.spec = spec
        self.wanted = set(spec.indices)
        self.parts: list[InstanceTable] = [prior] if prior is not None and len(prior) else []
        self.per_label: dict[int, int] = {}
        for label in prior.label.tolist() if prior is not None else []:
            self.per_label[label] = self.per_label.get(label, 0) + 1
        self.misclassified = 0
        if prior is not None:
            self.misclassified = int(
                (
                    (prior.label >= 0) & (prior.predicted >= 0) & (prior.label != prior.predicted)
                ).sum()
            )

    def add(
        self,
        positions: np.ndarray,
        indices: np.ndarray,
        inputs: object,
        targets: object,
        outputs: object,
        acts: Mapping[str, Reduced],
    ) -> None:
        """Keep the rows of a batch that the spec selects (``acts`` as ``pop()`` gives them;
        an instance keeps each neuron's largest value over its tokens where they vary)."""
        labels = _labels(targets, len(indices))
        predicted = _predicted(outputs, len(indices))
        rows = []
        pairs = zip(indices.tolist(), labels.tolist(), predicted.tolist(), strict=True)
        for row, (index, label, pred) in enumerate(pairs):
            take = index in self.wanted
            if (
                self.misclassified < self.spec.misclassified
                and label >= 0
                and pred >= 0
                and pred != label
            ):
                self.misclassified += 1
                take = True
            if (
                self.spec.per_class
                and label >= 0
                and self.per_label.get(label, 0) < self.spec.per_class
            ):
                self.per_label[label] = self.per_label.get(label, 0) + 1
                take = True
            if take:
                rows.append(row)
        if not rows:
            return
        sel = np.asarray(rows)
        n = sel.size
        self.parts.append(
            InstanceTable(
                index=indices[sel].astype(np.int64),
                position=positions[sel].astype(np.int64),
                label=labels[sel],
                predicted=predicted[sel],
                condition=np.full(n, "", dtype=str),
                pair=np.full(n, -1, dtype=np.int64),
                thumbnail=_thumbnails(inputs, sel),
                values={
                    name: np.array(per_sample(a, sel), dtype=np.float32) for name, a in acts.items()
                },
                text=_texts(inputs, sel),
            )
        )

    def table(self, shapes: Mapping[str, tuple[int, int]]) -> InstanceTable:
        """Everything kept so far (``shapes`` as in :meth:`InstanceTable.empty`)."""
        if not self.parts:
            return InstanceTable.empty(shapes)
        return InstanceTable.concat(self.parts)


def _labels(targets: object, n: int) -> np.ndarray:
    if isinstance(targets, torch.Tensor):
        if targets.is_floating_point() or targets.shape != (n,):
            return np.full(n, -1, dtype=np.int64)
        return targets.detach().cpu().numpy().astype(np.int64)
    if isinstance(targets, Sequence) and len(targets) == n:
        try:
            return np.asarray(targets, dtype=np.int64)
        except (TypeError, ValueError):
            pass
    return np.full(n, -1, dtype=np.int64)


def _predicted(outputs: object, n: int) -> np.ndarray:
    outputs = model_scores(outputs)
    if isinstance(outputs, torch.Tensor) and outputs.ndim == 2 and outputs.shape[0] == n:
        return outputs.detach().argmax(dim=1).cpu().numpy().astype(np.int64)
    return np.full(n, -1, dtype=np.int64)


def text_of(inputs: Any) -> list[str] | None:
    """The texts of a batch: its ``text`` entry (a mapping batch), or the batch itself when
    it is a list of strings; ``None`` for other inputs."""
    texts = inputs.get("text") if isinstance(inputs, Mapping) else inputs
    if isinstance(texts, list | tuple) and texts and all(isinstance(t, str) for t in texts):
        return list(texts)
    return None


def _texts(inputs: object, rows: np.ndarray) -> np.ndarray:
    texts = text_of(inputs)
    if texts is None:
        return np.full(rows.size, "", dtype=str)
    return np.array([texts[i][:TEXT_CHARS] for i in rows.tolist()], dtype=str)


def _thumbnails(inputs: object, rows: np.ndarray) -> np.ndarray:
    """``[rows, y, x, channel]`` uint8 images, each stretched to 0..255, longest side <= 64;
    empty unless the inputs are images ``[batch, 1 or 3, H, W]``."""
    if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4 or inputs.shape[1] not in (1, 3):
        return np.zeros((0, 0, 0, 0), dtype=np.uint8)
    x = inputs[torch.as_tensor(rows)].detach().float().cpu()
    h, w = x.shape[2:]
    if max(h, w) > THUMBNAIL_SIDE:
        scale = THUMBNAIL_SIDE / max(h, w)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        x = torch.nn.functional.interpolate(x, size=size, mode="area")
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    span = (x.amax(dim=(1, 2, 3), keepdim=True) - lo).clamp_min(1e-12)
    x = ((x - lo) / span * 255).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()
