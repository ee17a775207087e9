"""Capture: forward hooks, per-neuron reductions, layer selection, groupings and the
instances recorded beside the distributions.

:mod:`.selection` turns selectors into module names; :mod:`.hooks` hooks the selected
modules, takes each output's tensor (:mod:`.structure`: tensors, tuples, mappings and
Hugging Face types), finds its neuron axis (:mod:`.neuron_axis`) and reduces it to one row
per sample (or position, or real token) and neuron (:mod:`.reduce`, under a token mask);
:mod:`.groupings` says which groups each row counts in; and :mod:`.instances` picks and
records single inputs during an ingest.
"""

from __future__ import annotations

from .hooks import ActivationCapture
from .selection import resolve_layers

__all__ = ["ActivationCapture", "resolve_layers"]
