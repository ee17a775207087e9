"""The offline demo: the digits CNN (trained in seconds, weights cached) and its dataset.

Configs name them `kind: builtin`."""

from __future__ import annotations

from ndstream.demo.digits import (
    RECIPE_VERSION,
    DigitsCNN,
    DigitsDataset,
    default_cache_dir,
    digits_accuracy,
    load_digits_cnn,
    train_digits_cnn,
)

__all__ = [
    "RECIPE_VERSION",
    "DigitsCNN",
    "DigitsDataset",
    "default_cache_dir",
    "digits_accuracy",
    "load_digits_cnn",
    "train_digits_cnn",
]
