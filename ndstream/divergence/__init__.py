"""Neural divergence: how far inputs' activations lie from a group's distributions.

:func:`divergence` (also :meth:`ndstream.Store.divergence`) scores recorded instances or new
activations per neuron, per layer and overall; :func:`neuron_scores` is the per-neuron
definition on one summary. The score reads only a store's sketches, so it works on every
store whatever its size. NumPy only, with the sketch's kernels for the ranks.
"""

from __future__ import annotations

from .score import Divergence, class_groups, divergence, neuron_scores

__all__ = ["Divergence", "class_groups", "divergence", "neuron_scores"]
