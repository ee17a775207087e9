"""Built-in, offline demo models and datasets."""

from __future__ import annotations

from ndstream.builtin.digits import (
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
