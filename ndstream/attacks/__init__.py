"""Adversarial attacks on classifiers: one-pixel, FGSM and PGD, seeded and batched.

Attacks work in the *unit space* (:class:`InputSpace`): the valid input range scaled to
[0, 1], whatever the model's normalisation, so that a budget means the same on every data
set. :func:`attack` runs one configured method on a batch of model inputs.
"""

from __future__ import annotations

from .gradient import fgsm, pgd
from .input_space import InputSpace, UnitModel
from .one_pixel import one_pixel
from .result import AttackResult
from .run import attack, attack_name

__all__ = [
    "AttackResult",
    "InputSpace",
    "UnitModel",
    "attack",
    "attack_name",
    "fgsm",
    "one_pixel",
    "pgd",
]
