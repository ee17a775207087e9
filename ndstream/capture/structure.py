"""The shapes batches and outputs come in: tensors, tuples, dicts and Hugging Face types.

A Hugging Face tokenizer gives a ``BatchEncoding`` (a mapping of tensors) and a model a
``ModelOutput`` (an ordered mapping that also indexes like a tuple). These helpers treat
every :class:`~collections.abc.Mapping` alike, so nothing here imports ``transformers``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..errors import CaptureError, ConfigError

__all__ = [
    "batch_len", "call_model", "default_tensor", "model_scores", "move_to", "pick_output",
    "take_rows",
]  # fmt: skip

OutputField = str | int


def pick_output(output: Any, field: OutputField | None, name: str) -> torch.Tensor:
    """The tensor of a module's output that a layer captures.

    Parameters
    ----------
    output : Any
        What the module returned.
    field : str, int or None
        A mapping key or attribute (``"last_hidden_state"``) or a tuple index; ``None``
        takes the output itself if a tensor, ``last_hidden_state`` of a mapping that has
        one, else the first tensor of a tuple, list or mapping.
    name : str
        The layer's name, for error messages.

    Raises
    ------
    CaptureError
        The field does not exist or is not a tensor, or no tensor is found.
    """
    if field is None:
        found = default_tensor(output)
        if found is not None:
            return found
        raise CaptureError(
            f"layer {name!r} returned {type(output).__name__} without a tensor in it; select "
            "a submodule that returns a tensor, or name the field with output_field"
        )
    picked = _field(output, field)
    if not isinstance(picked, torch.Tensor):
        raise CaptureError(
            f"output_field {field!r} of layer {name!r} is not a tensor of its output "
            f"({type(output).__name__}); {_fields(output)}"
        )
    return picked


def default_tensor(output: Any) -> torch.Tensor | None:
    """The tensor a layer captures when no field is named: the output itself if a tensor,
    the ``last_hidden_state`` of a mapping that has one, else the first tensor of a tuple,
    list or mapping; ``None`` if there is none."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping) and isinstance(output.get("last_hidden_state"), torch.Tensor):
        return output["last_hidden_state"]
    values = list(output.values()) if isinstance(output, Mapping) else output
    if isinstance(values, tuple | list):
        return next((v for v in values if isinstance(v, torch.Tensor)), None)
    return None


def _field(output: Any, field: OutputField) -> Any:
    if isinstance(field, int) and isinstance(output, tuple | list):
        return output[field] if -len(output) <= field < len(output) else None
    if isinstance(output, Mapping):
        if isinstance(field, int):
            values = list(output.values())  # ModelOutput indexes its set fields like a tuple
            return values[field] if -len(values) <= field < len(values) else None
        return output.get(field)
    return getattr(output, field, None) if isinstance(field, str) else None


def _fields(output: Any) -> str:
    if isinstance(output, Mapping):
        return "its fields are " + ", ".join(map(repr, output))
    if isinstance(output, tuple | list):
        return f"it has {len(output)} elements (index them 0 .. {len(output) - 1})"
    return "name a field or an index of what it returns"


def model_scores(outputs: Any) -> Any:
    """The class scores in a model's outputs: a tensor, the first element of a tuple, or
    the ``logits`` of a mapping (a ``ModelOutput``); anything else as it is."""
    if isinstance(outputs, Mapping):
        return outputs.get("logits", outputs)
    if isinstance(outputs, tuple | list) and outputs:
        return outputs[0]
    return outputs


def call_model(model: torch.nn.Module, inputs: Any) -> Any:
    """Run ``model`` on a batch of inputs: the tensors of a mapping as keyword arguments (as
    Hugging Face models take a tokenizer's output; other entries, such as the texts, stay
    with the batch), anything else as the one positional argument."""
    if isinstance(inputs, Mapping):
        return model(**{k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)})
    return model(inputs)


def move_to(x: Any, device: torch.device) -> Any:
    """Every tensor in ``x`` (a tensor, or a tuple, list or mapping of them) on ``device``.

    A mapping comes back as a new ``dict``, so a model that adds keys to its keyword
    arguments never changes the batch the groupings see.
    """
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, Mapping):
        return {k: move_to(v, device) for k, v in x.items()}
    if isinstance(x, tuple | list):
        return type(x)(move_to(v, device) for v in x)
    return x


def _is_part(x: Any) -> bool:
    """Whether ``x`` is one part of a structured batch (else a list holds one item per row)."""
    return isinstance(x, torch.Tensor | Mapping | tuple | list)


def batch_len(inputs: Any) -> int:
    """Number of samples in a batch of inputs: a tensor, a list of one item per sample
    (strings), or a tuple, list or mapping whose first part has one row per sample."""
    if isinstance(inputs, torch.Tensor):
        return int(inputs.shape[0]) if inputs.ndim else 1
    values = list(inputs.values()) if isinstance(inputs, Mapping) else inputs
    if isinstance(values, tuple | list) and values:
        return batch_len(values[0]) if _is_part(values[0]) else len(values)
    raise ConfigError(f"cannot tell the batch size of inputs of type {type(inputs).__name__}")


def take_rows(x: Any, lo: int, hi: int) -> Any:
    """Rows ``lo:hi`` of a batch part, with the structure of :func:`batch_len`."""
    if x is None:
        return None
    if isinstance(x, Mapping):
        return {k: take_rows(v, lo, hi) for k, v in x.items()}
    if isinstance(x, tuple | list) and x and _is_part(x[0]):
        return type(x)(take_rows(v, lo, hi) for v in x)
    return x[lo:hi]
