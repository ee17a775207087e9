"""Capture: forward hooks, per-neuron reductions, layer selection, groupings and the
instances recorded beside the distributions.

:mod:`.hooks` hooks the selected modules and reduces each output to one row per sample (or
position) and neuron; :mod:`.groupings` says which groups each row counts in; and
:mod:`.instances` picks and records single inputs during an ingest.
"""

from __future__ import annotations

from .hooks import ActivationCapture, resolve_layers

__all__ = ["ActivationCapture", "resolve_layers"]
