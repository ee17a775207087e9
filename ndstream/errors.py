"""Every error ndstream raises on purpose.

Each message says what went wrong and what to do about it.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

__all__ = [
    "CaptureError",
    "CaptureWarning",
    "ConfigError",
    "DataError",
    "GroupNotFoundError",
    "IngestInterrupted",
    "LayerNotFoundError",
    "NdstreamError",
    "SpecMismatchError",
    "StoreDamageError",
    "StoreDamageWarning",
    "StoreError",
    "listed",
    "near_names",
]


class NdstreamError(Exception):
    """Base class of all ndstream errors."""


class ConfigError(NdstreamError, ValueError):
    """A configuration is invalid; the message names the field and what it accepts."""


class LayerNotFoundError(NdstreamError, KeyError):
    """A requested layer does not exist; the message lists the closest valid names."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class GroupNotFoundError(NdstreamError, KeyError):
    """A requested group does not exist in a store; the message lists the closest names."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class CaptureError(NdstreamError, TypeError):
    """A hooked module produced an output ndstream cannot turn into neuron activations."""


class SpecMismatchError(NdstreamError, ValueError):
    """Two sketches with different specs (grid, groups, neurons) cannot be merged."""


class StoreError(NdstreamError, OSError):
    """A path is not a readable ndstream store, or a store cannot be written."""


class StoreDamageError(StoreError):
    """A store's files are not what its writer wrote (missing, truncated or changed), and no
    intact checkpoint is left to fall back to; ``ndstream verify`` lists the damage."""


class CaptureWarning(UserWarning):
    """Activations that the store cannot keep as they are (float64 values outside float32's
    range); the message says what they count as."""


class StoreDamageWarning(UserWarning):
    """The last checkpoint of a store is damaged; an earlier, intact one is read instead."""


class DataError(NdstreamError, RuntimeError):
    """Loading the data failed (a dataset error, a DataLoader worker that died)."""


class IngestInterrupted(NdstreamError, KeyboardInterrupt):
    """Ingest stopped on request (Ctrl-C) after committing a checkpoint; re-run to resume."""


def near_names(name: str, valid: Sequence[str], kind: str) -> str:
    """What an error says of ``name``, which is none of the ``valid`` names of a ``kind``
    (a plural, e.g. ``"layers"``): ``closest: 'fc1', 'fc2'`` where some are near it, else
    ``its layers: 'a', 'b', ...`` (see :func:`listed`), or ``it has no layers``; never an
    empty list of close names."""
    close = difflib.get_close_matches(name, list(valid), n=5)
    if close:
        return "closest: " + listed(close)
    return f"its {kind}: {listed(valid)}" if valid else f"it has no {kind}"


def listed(names: Sequence[object], most: int = 20) -> str:
    """``'a', 'b', 'c'`` for an error message, and ``... N more`` past ``most``."""
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f", ... {len(names) - most} more" if len(names) > most else "")
