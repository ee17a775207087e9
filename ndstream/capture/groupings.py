"""Groupings: how each sample is assigned to groups along a sketch's group axis.

A grouping partitions the samples: label (true class), predicted class, correct/incorrect, or
a user callable. A store may hold several groupings at once; their groups are laid end to end
on one group axis, and each sample counts once in every grouping. Queries with ``group=None``
pool the groups of the first grouping only, so no sample is counted twice.

Group names are unique across the axis: true labels keep their class names (``"cat"``),
predicted classes are prefixed (``"pred:cat"``), correctness gives ``"correct"`` and
``"incorrect"``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import CaptureWarning, ConfigError
from .structure import batch_len, model_scores

__all__ = [
    "BUILTIN_GROUPINGS",
    "GroupLayout",
    "Grouping",
    "custom",
    "label_names",
    "resolve_groupings",
]

GroupFn = Callable[[Any, Any, Any], Any]
BUILTIN_GROUPINGS = ("label", "predicted", "correct", "all")


@dataclass(frozen=True)
class Grouping:
    """One partition of the samples into named groups.

    Parameters
    ----------
    name
        Name of the grouping (``"label"``, ``"predicted"``, ...).
    names
        Group names, or ``None`` to take them from the data on the first batch.
    fn
        ``fn(inputs, targets, outputs) -> group ids [batch]``, indices into ``names``.
    """

    name: str
    names: tuple[str, ...] | None
    fn: GroupFn

    def bind(
        self,
        classes: Sequence[str] | None,
        outputs: Any,
        labels: Sequence[str] | None = None,
    ) -> Grouping:
        """Fix the group names.

        Parameters
        ----------
        classes
            The dataset's class names (its ``classes`` attribute), if it has them.
        outputs
            The model's outputs on the first batch: without class names, predictions name
            one group per output.
        labels
            Names for the true labels when the dataset has no class names, from the labels
            it holds (see :func:`label_names`); without them, one per output.
        """
        if self.names is not None:
            return self
        if classes is not None:
            names = [str(c) for c in classes]
        elif self.name == "label" and labels is not None:
            names = [str(c) for c in labels]
        else:
            names = _output_classes(outputs)
        if self.name == "predicted":
            return Grouping(self.name, tuple(f"pred:{c}" for c in names), self.fn)
        return Grouping(self.name, tuple(names), self.fn)

    def ids(self, inputs: Any, targets: Any, outputs: Any, *, n_samples: int) -> np.ndarray:
        """Group ids of a batch, checked against the batch and the group names.

        Parameters
        ----------
        inputs, targets, outputs
            The batch as the loader gave it, and the model's outputs on it.
        n_samples
            The number of samples in the batch. Each batch is checked on its own: ids of the
            right total but the wrong batches would put samples in their neighbours' groups.

        Returns
        -------
        np.ndarray
            ``[n_samples]`` indices into :attr:`names`, as ``np.intp``.

        Raises
        ------
        ConfigError
            The ids are not one integer per sample, or one is not a group of this grouping;
            the message names the grouping and its function.
        """
        assert self.names is not None, "bind() the grouping first"
        raw = self.fn(inputs, targets, outputs)
        ids = raw.detach().cpu().numpy() if isinstance(raw, torch.Tensor) else np.asarray(raw)
        source = self._source()
        what = f"grouping {self.name!r}{source}"
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise ConfigError(
                f"{what} must give one group id per sample, as a 1-D integer tensor or "
                f"array of length {n_samples}; got dtype {ids.dtype} and shape "
                f"{list(ids.shape)}; make it return e.g. a torch.long tensor of shape "
                f"[batch] (.long(), .flatten())"
            )
        if ids.shape[0] != n_samples:
            raise ConfigError(
                f"{what} gave {ids.shape[0]} group ids for a batch of {n_samples} samples; it "
                "must give exactly one group id per sample, in the batch's order, for every "
                "batch"
            )
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.names)):
            bad = int(ids.min() if ids.min() < 0 else ids.max())
            fix = (
                "check the dataset's classes or the model's number of outputs"
                if not source
                else "ids are indices into its group names: list more names, or fix the function"
            )
            raise ConfigError(
                f"{what} gave group id {bad} but has only {len(self.names)} groups "
                f"{list(self.names)[:10]} (ids 0..{len(self.names) - 1}); {fix}"
            )
        return ids.astype(np.intp, copy=False)

    def _source(self) -> str:
        """`` (module:function)`` of a user's grouping function, to find it by; empty for
        the built-in groupings."""
        module = getattr(self.fn, "__module__", None)
        if module == __name__:
            return ""
        name = getattr(self.fn, "__qualname__", None) or type(self.fn).__qualname__
        return f" ({module}:{name})" if module else f" ({name})"


def _logits(outputs: Any) -> torch.Tensor:
    """The class scores of a model output: a tensor, the first element of a tuple, or the
    ``logits`` of a mapping (a Hugging Face ``ModelOutput``)."""
    outputs = model_scores(outputs)
    if not isinstance(outputs, torch.Tensor) or outputs.ndim != 2:
        raise ConfigError(
            "grouping by prediction needs model outputs of shape [batch, classes], got "
            f"{type(outputs).__name__}{list(getattr(outputs, 'shape', []))}; "
            "use group_by='label' or a custom grouping"
        )
    return outputs


#: Label groups read from a dataset's labels at most (labels 0 to 99,999): label ids such as
#: 10**9 would otherwise make a group axis of a billion names before the first batch.
MOST_LABEL_GROUPS = 100_000


def label_names(dataset: Any) -> list[str] | None:
    """Group names for the true labels of a dataset without class names: ``"0"`` up to its
    largest label, read from the labels it holds.

    Looks for integer labels in ``targets`` or ``labels`` (torchvision's and most datasets'
    convention), in the second tensor of a ``TensorDataset``, and through a ``Subset`` into
    its dataset (all of the parent's labels: groups stay the same for any subset). ``None``
    when none is found; label groups then follow the model's output width. A 1,000-output
    model on a ten-label dataset thus gets ten label groups, not 1,000.
    """
    for _ in range(8):  # Subset of a Subset ...: a few levels at most
        inner = getattr(dataset, "dataset", None)
        if inner is None or not hasattr(dataset, "indices"):
            break
        dataset = inner
    found: Any = None
    for attr in ("targets", "labels"):
        found = getattr(dataset, attr, None)
        if found is not None:
            break
    tensors = getattr(dataset, "tensors", None)
    if found is None and isinstance(tensors, tuple) and len(tensors) >= 2:
        found = tensors[1]
    if found is None:
        return None
    try:
        values = (
            found.detach().cpu().numpy() if isinstance(found, torch.Tensor) else np.asarray(found)
        )
    except (TypeError, ValueError):
        return None
    if values.ndim != 1 or values.size == 0 or not np.issubdtype(values.dtype, np.integer):
        return None
    if values.min() < 0:
        return None
    largest = int(values.max())
    if largest >= MOST_LABEL_GROUPS:
        raise ConfigError(
            f"the dataset's labels reach {largest}, and without class names the label groups "
            f"are 0 to the largest label: {largest + 1} groups, past the {MOST_LABEL_GROUPS} "
            "a store holds (each costs memory for every neuron). Give the dataset a `classes` "
            "attribute, or number its labels 0 to K - 1"
        )
    return [str(i) for i in range(largest + 1)]


def _output_classes(outputs: Any) -> list[str]:
    outputs = model_scores(outputs)
    if not isinstance(outputs, torch.Tensor) or outputs.ndim != 2:
        raise ConfigError(
            f"cannot infer class names from model outputs {type(outputs).__name__}"
            f"{list(getattr(outputs, 'shape', []))}; "
            "give the dataset a `classes` attribute or use a custom grouping"
        )
    return [str(i) for i in range(outputs.shape[1])]


def _targets(targets: Any) -> torch.Tensor:
    if targets is None:
        raise ConfigError(
            "grouping by label needs targets, but the DataLoader yields inputs only; "
            "yield (inputs, targets) or use group_by='predicted' or 'all'"
        )
    return torch.as_tensor(targets)


def _label(inputs: Any, targets: Any, outputs: torch.Tensor) -> torch.Tensor:
    return _targets(targets)


def _argmax(outputs: Any) -> torch.Tensor:
    """Each sample's predicted class; says so where NaN scores make the choice arbitrary."""
    logits = _logits(outputs)
    undecided = int(torch.isnan(logits).any(dim=1).sum())
    if undecided:
        warnings.warn(
            f"{undecided} sample(s) of a batch have NaN class scores: their predicted class "
            "(and whether it is correct) is the one torch.argmax picks, not the model's "
            "prediction. Their activations are counted as usual",
            CaptureWarning,
            stacklevel=2,
        )
    return logits.argmax(dim=1)


def _predicted(inputs: Any, targets: Any, outputs: Any) -> torch.Tensor:
    return _argmax(outputs)


def _correct(inputs: Any, targets: Any, outputs: torch.Tensor) -> torch.Tensor:
    wrong = _argmax(outputs).cpu() != _targets(targets).cpu()
    return wrong.long()


def _all(inputs: Any, targets: Any, outputs: Any) -> torch.Tensor:
    return torch.zeros(batch_len(inputs), dtype=torch.long)


def custom(fn: GroupFn, names: Sequence[str], name: str = "custom") -> Grouping:
    """A user grouping from a function and its group names.

    Parameters
    ----------
    fn
        ``fn(inputs, targets, outputs) -> ids``: for each batch, one integer group id per
        sample (a 1-D tensor or array), each an index into ``names``.
    names
        The group names, in id order; not empty.
    name
        The grouping's name, unique in ``group_by``.

    Returns
    -------
    Grouping
        The grouping; every batch's ids are checked when ingest runs it.
    """
    if not callable(fn):
        raise ConfigError(
            f"custom grouping {name!r} needs a function fn(inputs, targets, outputs) -> ids, "
            f"got {type(fn).__name__}"
        )
    if not names:
        raise ConfigError(f"custom grouping {name!r} needs a non-empty list of group names")
    return Grouping(name, tuple(str(n) for n in names), fn)


def resolve_groupings(group_by: str | Grouping | Sequence[str | Grouping]) -> list[Grouping]:
    """Turn ``group_by`` (a name, a :class:`Grouping`, or a list of them) into groupings.

    Built-in names: ``"label"`` (true class), ``"predicted"`` (argmax of the outputs),
    ``"correct"`` (correct / incorrect) and ``"all"`` (one group).
    """
    items = [group_by] if isinstance(group_by, str | Grouping) else list(group_by)
    if not items:
        raise ConfigError("group_by needs at least one grouping, e.g. 'label'")
    builtins: dict[str, Grouping] = {
        "label": Grouping("label", None, _label),
        "predicted": Grouping("predicted", None, _predicted),
        "correct": Grouping("correct", ("correct", "incorrect"), _correct),
        "all": Grouping("all", ("all",), _all),
    }
    out = []
    for item in items:
        if isinstance(item, Grouping):
            out.append(item)
        elif item in builtins:
            out.append(builtins[item])
        else:
            raise ConfigError(
                f"unknown grouping {item!r}; use one of {list(BUILTIN_GROUPINGS)} "
                "or ndstream.custom(fn, names)"
            )
    seen = [g.name for g in out]
    if len(set(seen)) != len(seen):
        raise ConfigError(f"each grouping may appear once in group_by, got {seen}")
    return out


@dataclass(frozen=True)
class GroupLayout:
    """Bound groupings laid end to end on one group axis."""

    groupings: tuple[Grouping, ...]

    def __post_init__(self) -> None:
        names = self.names
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"group names must be unique across groupings; repeated: {dupes}")

    @property
    def names(self) -> tuple[str, ...]:
        """All group names, in axis order."""
        return tuple(n for g in self.groupings for n in (g.names or ()))

    @property
    def grouping_of(self) -> tuple[str, ...]:
        """The grouping each group on the axis belongs to."""
        return tuple(g.name for g in self.groupings for _ in (g.names or ()))

    def ids(self, inputs: Any, targets: Any, outputs: Any, *, n_samples: int) -> np.ndarray:
        """Group ids ``[n_samples, groupings]`` as indices into the whole axis.

        Each grouping's ids are checked against the batch's ``n_samples`` (see
        :meth:`Grouping.ids`); a mismatch raises :class:`~ndstream.errors.ConfigError`.
        """
        cols, offset = [], 0
        for g in self.groupings:
            cols.append(g.ids(inputs, targets, outputs, n_samples=n_samples) + offset)
            offset += len(g.names or ())
        return np.stack(cols, axis=1)
