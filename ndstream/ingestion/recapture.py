"""Activations of new inputs, captured and reduced exactly as a store's own run did.

Attacked inputs, held-out inputs and any input scored against a store must be seen through
the same layers, reduction, neuron axes and per-call split as the store's distributions; this
reads them from the store's metadata, not from whatever config is at hand.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple, cast

import numpy as np
import torch
from torch import nn

from ..capture import ActivationCapture
from ..capture.hooks import Calls, Reduction
from ..capture.reduce import per_sample
from ..capture.structure import model_scores
from ..store import Store

__all__ = ["Recaptured", "recapture"]

_CALL = re.compile(r"@\d+$")  # the suffix of one call's layer (``relu@2``)


class Recaptured(NamedTuple):
    """What :func:`recapture` saw of a batch of inputs."""

    values: dict[str, np.ndarray]
    """``{layer: [input, value, neuron]}`` float32 activations."""
    predicted: np.ndarray
    """``[input]`` int64 argmax of the model's outputs (-1 where they are not logits)."""


def recapture(
    store: Store,
    model: nn.Module,
    inputs: torch.Tensor,
    batch_size: int = 256,
    *,
    layers: Sequence[str] | None = None,
    reduction: Reduction | None = None,
) -> Recaptured:
    """The activations of ``store``'s layers and the predictions, from one pass of ``model``.

    Parameters
    ----------
    store
        The store whose capture to repeat.
    model
        The model that made it (in ``eval()`` mode).
    inputs
        A batch of inputs, run ``batch_size`` at a time.
    batch_size
        Inputs per forward pass.
    layers
        Some of the store's layers; ``None``: all.
    reduction
        Another reduction than the store's (the Mahalanobis detector averages positions).

    Returns
    -------
    Recaptured
        Activations reduced as the store's were (or by ``reduction``), and predictions.
    """
    made = store.meta.config
    wanted = list(store.layers if layers is None else layers)
    modules = list(dict.fromkeys(_CALL.sub("", layer) for layer in wanted))
    with ActivationCapture(
        model, modules, reduction=reduction or cast(Reduction, store.meta.reduction),
        channel_dim=made.get("channel_dim") or {},
        calls=cast(Calls, made.get("calls") or "separate"),
        output_field=made.get("output_field") or {},
    ) as cap, torch.no_grad():  # fmt: skip
        outputs = [model(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
        acts = cap.pop()
    return Recaptured(
        {layer: np.asarray(per_sample(acts[layer]), dtype=np.float32) for layer in wanted},
        _predicted(outputs, len(inputs)),
    )


def _predicted(outputs: list[object], n: int) -> np.ndarray:
    outputs = [model_scores(o) for o in outputs]  # a ModelOutput's logits, as ingest reads them
    if outputs and all(isinstance(o, torch.Tensor) and o.ndim == 2 for o in outputs):
        return torch.cat(outputs).argmax(-1).cpu().numpy().astype(np.int64)  # type: ignore[arg-type]
    return np.full(n, -1, dtype=np.int64)
