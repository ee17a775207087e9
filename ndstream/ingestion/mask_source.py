"""Where an ingest finds each batch's token mask, and the warning when it finds none.

A tokenizer pads a batch to its longest text; the padded positions are not tokens, and
counted they would change every ``max``, ``mean`` and ``none`` distribution with the
batching. The mask comes from the batch as the loader gave it: the ``attention_mask`` entry
of a mapping batch by default, or a function of the inputs for other layouts.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..errors import ConfigError

__all__ = ["MaskSource"]

DEFAULT_KEY = "attention_mask"


class MaskSource:
    """Reads the ``[batch, tokens]`` mask of each batch.

    Parameters
    ----------
    source
        The key of the mask in mapping batches, a function ``fn(inputs) -> mask`` (a tensor,
        nonzero on real tokens, or ``None``), or ``None`` for no mask at all.
    """

    def __init__(self, source: str | Callable[[Any], Any] | None = DEFAULT_KEY) -> None:
        if source is not None and not isinstance(source, str) and not callable(source):
            raise ConfigError(
                f"token_mask must be a key, a function of the inputs or None, got {source!r}"
            )
        self.source = source
        self.warned = False

    @property
    def is_default(self) -> bool:
        """Whether this is the default (the ``attention_mask`` entry, where there is one)."""
        return self.source == DEFAULT_KEY

    def describe(self) -> str | None:
        """What a store records of the mask's source."""
        if self.source is None or isinstance(self.source, str):
            return self.source
        fn = self.source
        return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"

    def of(self, inputs: Any) -> torch.Tensor | None:
        """The mask of one batch of inputs (on their device), or ``None``."""
        if self.source is None:
            return None
        if callable(self.source):
            mask = self.source(inputs)
        elif isinstance(inputs, Mapping):
            mask = inputs.get(self.source)
        else:
            mask = None
        if mask is None:
            self._warn_if_tokens(inputs)
            return None
        if not isinstance(mask, torch.Tensor) or mask.ndim != 2:
            raise ConfigError(
                f"the token mask ({self.describe()}) must be a [batch, tokens] tensor, got "
                f"{type(mask).__name__}{list(getattr(mask, 'shape', []))}"
            )
        return mask

    def _warn_if_tokens(self, inputs: Any) -> None:
        """Warn once per run when the inputs are token ids but no mask says which are real."""
        ids = inputs.get("input_ids") if isinstance(inputs, Mapping) else inputs
        is_ids = isinstance(ids, torch.Tensor) and ids.ndim == 2 and not ids.is_floating_point()
        if is_ids and not self.warned and self.source is not None:
            self.warned = True
            where = (
                f"no {self.source!r} entry in the batches"
                if isinstance(self.source, str)
                else f"{self.describe()} returned None"
            )
            warnings.warn(
                f"the inputs are token ids but there is no token mask ({where}): padded "
                "positions, if any, enter every distribution and the results depend on the "
                "batching. Put the tokenizer's attention_mask in the batch, pass token_mask= "
                "(`data.token_mask` in the config), or token_mask=None if nothing is padded.",
                stacklevel=2,
            )
