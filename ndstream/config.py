"""The YAML configuration of ``ndstream ingest``, validated by pydantic.

Relative paths are relative to the working directory. Every validation error is re-raised as
:class:`~ndstream.errors.ConfigError` naming the field and what it accepts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError

__all__ = ["IngestConfig", "load_config"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BuiltinModel(_Strict):
    """A model that ships with ndstream: ``digits_cnn`` trains in seconds and is cached."""

    kind: Literal["builtin"]
    name: Literal["digits_cnn"] = "digits_cnn"


class TorchvisionModel(_Strict):
    """``torchvision.models.<name>`` with weights from a local file (or ``random``)."""

    kind: Literal["torchvision"]
    name: str
    weights: str = Field(
        description="path to a local state_dict file, or 'random' for random initialisation"
    )
    num_classes: int | None = Field(default=None, gt=0)
    kwargs: dict[str, Any] = {}


class FactoryModel(_Strict):
    """User code: ``package.module:function`` returning an ``nn.Module``."""

    kind: Literal["factory"]
    target: str = Field(pattern=r"^[\w.]+:[\w.]+$")
    kwargs: dict[str, Any] = {}
    weights: str | None = None


ModelConfig = Annotated[BuiltinModel | TorchvisionModel | FactoryModel, Field(discriminator="kind")]


class BuiltinData(_Strict):
    """A dataset that ships with ndstream: the scikit-learn digits."""

    kind: Literal["builtin"]
    name: Literal["digits"] = "digits"
    split: Literal["all", "train", "test"] = "all"


class Cifar10Data(_Strict):
    """CIFAR-10 from a local folder holding ``cifar-10-batches-py``; never downloaded."""

    kind: Literal["cifar10"]
    root: str
    train: bool = False


class ImageFolderData(_Strict):
    """``torchvision.datasets.ImageFolder`` (one sub-folder per class), ImageNet-style."""

    kind: Literal["image_folder"]
    root: str
    resize: int = Field(default=256, gt=0)
    crop: int = Field(default=224, gt=0)


class FactoryData(_Strict):
    """User code: ``package.module:function`` returning a ``Dataset``."""

    kind: Literal["factory"]
    target: str = Field(pattern=r"^[\w.]+:[\w.]+$")
    kwargs: dict[str, Any] = {}


DataConfig = Annotated[
    BuiltinData | Cifar10Data | ImageFolderData | FactoryData, Field(discriminator="kind")
]


class LoaderConfig(_Strict):
    """DataLoader settings; they change the speed of a run, not what it counts."""

    batch_size: int = Field(default=128, gt=0)
    num_workers: int = Field(default=0, ge=0)


class CheckpointConfig(_Strict):
    """When ingest commits its state to the store (and always at the end)."""

    every_steps: int | None = Field(
        default=None, gt=0, description="every N steps (a batch on each rank); null: never"
    )
    every_seconds: float | None = Field(
        default=120.0, gt=0, description="N seconds after the last checkpoint; null: never"
    )


class InstancesConfig(_Strict):
    """Single inputs to record with their activations (the dots of the Instances view)."""

    indices: list[int] = Field(default=[], description="dataset indices to record")
    per_class: int = Field(
        default=0, ge=0, description="also the first N of each true label in the sample order"
    )


class GridConfig(_Strict):
    """The sketch's log-linear grid (see :class:`ndstream.GridSpec`)."""

    mantissa_bits: int = Field(default=23, ge=1, le=23)
    min_mantissa_bits: int = Field(default=1, ge=1, le=23)
    min_exponent: int = Field(default=-24, ge=-126, le=126)
    max_exponent: int = Field(default=48, ge=-125, le=128)
    max_bins: int | None = Field(default=None, ge=2)
    exact_values: int | None = Field(default=None, ge=0, le=2**28)


class CustomGroupingConfig(_Strict):
    """A user grouping: ``package.module:function(inputs, targets, outputs) -> ids``."""

    target: str = Field(pattern=r"^[\w.]+:[\w.]+$")
    names: list[str] = Field(min_length=1)
    name: str = "custom"


class IngestConfig(_Strict):
    """Everything ``ndstream ingest`` needs."""

    model: ModelConfig
    data: DataConfig
    layers: list[str] = Field(min_length=1)
    store: str
    loader: LoaderConfig = LoaderConfig()
    reduction: Literal["max", "mean", "none"] = "max"
    group_by: list[Literal["label", "predicted", "correct", "all"] | CustomGroupingConfig] = [
        "label"
    ]
    channel_dim: dict[str, int] = {}
    grid: GridConfig = GridConfig()
    device: str = "cpu"
    limit: int | None = Field(default=None, gt=0)
    seed: int | None = Field(
        default=0, ge=0, description="seed of the sample order; null keeps the dataset order"
    )
    checkpoint: CheckpointConfig = CheckpointConfig()
    instances: InstancesConfig = InstancesConfig()


def load_config(path: str | os.PathLike[str], **overrides: Any) -> IngestConfig:
    """Read and validate a YAML config; ``overrides`` replace top-level fields.

    Raises
    ------
    ConfigError
        If the file is missing, is not YAML, or does not validate. The message names each
        bad field and what it accepts.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{p} must hold a mapping of settings, got {type(raw).__name__}")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return parse_config(raw, source=str(p))


def parse_config(raw: dict[str, Any], source: str = "config") -> IngestConfig:
    """Validate a config given as a dict; see :func:`load_config`."""
    try:
        return IngestConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{source} is invalid:"]
        for err in exc.errors():
            field = ".".join(str(x) for x in err["loc"]) or "(top level)"
            got = err.get("input")
            got_text = "" if err["type"] == "missing" else f" (got {got!r:.80})"
            lines.append(f"  {field}: {err['msg']}{got_text}")
        raise ConfigError("\n".join(lines)) from None
