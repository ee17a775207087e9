"""The YAML configuration of ``ndstream ingest``, validated by pydantic.

Relative paths are relative to the working directory. Every validation error is re-raised as
:class:`~ndstream.errors.ConfigError` naming the field and what it accepts. ``device`` is
checked twice: its spelling by the schema, and that this machine has it when a config is
loaded (:func:`check_device`), before anything touches the device.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_type_hints

import torch
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeInt,
    Tag,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from .errors import ConfigError
from .sketch.grid import GridSpec

__all__ = ["AttacksConfig", "IngestConfig", "check_device", "load_config", "parse_config"]

_DEVICE_HINT = "e.g. cpu, cuda, cuda:N or mps"


def _seed_field() -> Any:
    """A model's ``seed`` field: any seed ``torch.manual_seed`` takes, 0 by default."""
    return Field(
        default=0, ge=0, le=2**63 - 1, description="seed of the model's random initialisation"
    )


def _device_syntax(device: str) -> str:
    """A device string torch can parse; that this machine has it is :func:`check_device`'s."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"{device!r} is not a torch device ({exc}); use {_DEVICE_HINT}") from None
    if parsed.type == "meta":
        raise ValueError(f"{device!r} holds no data to capture; use {_DEVICE_HINT}")
    return device


def check_device(device: str) -> torch.device:
    """The device ``device`` names, checked against what this machine has.

    Under ``torchrun`` (``LOCAL_RANK`` set), ``cuda`` means this rank's GPU,
    ``cuda:<LOCAL_RANK>``, and that is the device checked.

    Parameters
    ----------
    device
        A torch device string: ``cpu``, ``cuda``, ``cuda:N``, ``mps``, ...

    Returns
    -------
    torch.device
        The parsed device.

    Raises
    ------
    ConfigError
        If torch does not know the device, or this machine does not have it; the message
        lists the devices it has.
    """
    try:
        parsed = torch.device(_device_syntax(device))
    except ValueError as exc:
        raise ConfigError(f"device: {exc}") from None
    index, of_rank = parsed.index, ""
    rank = os.environ.get("LOCAL_RANK", "")
    if parsed.type == "cuda" and index is None and rank.isdigit():
        # Under torchrun each rank takes the GPU of its local rank (ndstream.ingestion.ranks).
        index = int(rank)
        of_rank = f"this rank's device is cuda:{index} (LOCAL_RANK={rank}), but "
    why = _missing(parsed.type, index)
    if why:
        raise ConfigError(
            f"device {device!r} is not available on this machine ({of_rank}{why}); "
            f"available: {', '.join(_available())}. Set `device:` to one of those."
        )
    return parsed


def _missing(kind: str, index: int | None) -> str:
    """Why this machine lacks the device ``kind:index``; empty if it has it."""
    if kind == "cpu":
        return ""
    if kind == "cuda":
        if not torch.cuda.is_available():
            return "torch.cuda.is_available() is False"
        count = torch.cuda.device_count()
        if index is not None and index >= count:
            return f"it has {count} CUDA device{'s' if count != 1 else ''}"
        return ""
    if kind == "mps":
        has_mps = torch.backends.mps.is_available()
        return "" if has_mps else "torch.backends.mps.is_available() is False"
    # xpu, mtia, ...: torch's modules for other accelerators share this interface.
    try:
        module = getattr(torch, kind, None)
    except ImportError:  # torch names some backends it was not built with (hpu)
        module = None
    available = getattr(module, "is_available", None)
    if callable(available) and not available():
        return f"torch.{kind}.is_available() is False"
    if not callable(available):
        # A device type torch can name but has no module for (xla, meta, ...): the only
        # test left is to put something on it.
        try:
            torch.empty(0, device=torch.device(kind, index) if index is not None else kind)
        except (RuntimeError, NotImplementedError, ImportError) as exc:
            return f"torch cannot place a tensor there: {str(exc).splitlines()[0][:120]}"
    device_count = getattr(module, "device_count", None)
    if index is not None and callable(device_count) and index >= device_count():
        return f"it has {device_count()} {kind} device(s)"
    return ""


def _available() -> list[str]:
    """The devices of this machine, as device strings."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        out.append("mps")
    return out


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BuiltinModel(_Strict):
    """A model that ships with ndstream: ``digits_cnn`` trains in seconds and is cached.

    ``epochs`` below the demo's 15 gives the model part way through its training (cached
    apart), to compare with the trained one.
    """

    kind: Literal["builtin"]
    name: Literal["digits_cnn"] = "digits_cnn"
    epochs: int = Field(15, ge=1, le=100)


class TorchvisionModel(_Strict):
    """``torchvision.models.<name>`` with weights from a local file (or ``random``).

    The model is built under ``torch.manual_seed(seed)`` (the global RNG is left as it was),
    so ``weights: random`` gives the same model, and a resumable run, every time.
    """

    kind: Literal["torchvision"]
    name: str
    weights: str = Field(
        description="path to a local state_dict file, or 'random' for random initialisation"
    )
    num_classes: int | None = Field(default=None, gt=0)
    kwargs: dict[str, Any] = {}
    seed: int = _seed_field()


class FactoryModel(_Strict):
    """User code: ``package.module:function`` returning an ``nn.Module``.

    The function runs under ``torch.manual_seed(seed)`` (the global RNG is left as it was),
    so a model it initialises at random is the same every time.
    """

    kind: Literal["factory"]
    target: str = Field(pattern=r"^[\w.]+:[\w.]+$")
    kwargs: dict[str, Any] = {}
    weights: str | None = None
    seed: int = _seed_field()


class _LocalFolder(_Strict):
    """A local folder, given as a path or by a Python function that returns one."""

    path: str | None = Field(default=None, description="a local folder")
    path_from: str | None = Field(
        default=None,
        pattern=r"^[\w.]+:[\w.]+$",
        description="package.module:function returning the folder (a model a package ships)",
    )

    @model_validator(mode="after")
    def _one_source(self) -> _LocalFolder:
        if (self.path is None) == (self.path_from is None):
            raise ValueError("give exactly one of `path` (a local folder) and `path_from`")
        return self


class HuggingFaceModel(_LocalFolder):
    """A Hugging Face ``transformers`` model saved in a local folder; never downloaded.

    ``auto_class`` is the ``transformers`` class that loads it (``AutoModel`` for the bare
    encoder, ``AutoModelForSequenceClassification`` for one with a classifier head).
    """

    kind: Literal["huggingface"]
    auto_class: str = Field(default="AutoModel", pattern=r"^Auto\w+$")
    kwargs: dict[str, Any] = {}
    seed: int = _seed_field()


ModelConfig = Annotated[
    BuiltinModel | TorchvisionModel | FactoryModel | HuggingFaceModel, Field(discriminator="kind")
]


class TokenizerConfig(_LocalFolder):
    """A Hugging Face tokenizer from a local folder, and how it pads and truncates.

    Samples are strings, ``(text, label)`` pairs or mappings with a ``text`` key; batches
    become the tokenizer's tensors plus ``labels`` and the texts themselves (``text``), which
    instances keep.
    """

    max_length: int = Field(default=128, gt=0)
    padding: Literal["longest", "max_length"] = "longest"
    truncation: bool = True
    padding_side: Literal["right", "left"] | None = Field(
        default=None, description="null: the tokenizer's own"
    )


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


class _Batching(_Strict):
    """How samples become batches, and where a mapping batch keeps its labels and mask."""

    tokenizer: TokenizerConfig | None = Field(
        default=None, description="tokenize text samples into padded batches with a mask"
    )
    collate: str | None = Field(
        default=None,
        pattern=r"^[\w.]+:[\w.]+$",
        description="package.module:function, the DataLoader's collate_fn (not with tokenizer)",
    )
    label_key: str | None = Field(
        default=None, description="entry of mapping batches with the labels (labels, label)"
    )
    token_mask: str | None = Field(
        default="attention_mask",
        description="entry of mapping batches with the [batch, tokens] mask; null: none",
    )

    @model_validator(mode="after")
    def _one_collate(self) -> _Batching:
        if self.tokenizer is not None and self.collate is not None:
            raise ValueError("give `tokenizer` or `collate`, not both: a tokenizer collates")
        return self


class FactoryData(_Batching):
    """User code: ``package.module:function`` returning a ``Dataset``."""

    kind: Literal["factory"]
    target: str = Field(pattern=r"^[\w.]+:[\w.]+$")
    kwargs: dict[str, Any] = {}


class HuggingFaceData(_Batching):
    """A Hugging Face ``datasets`` dataset saved with ``save_to_disk``; never downloaded."""

    kind: Literal["huggingface"]
    path: str
    split: str | None = Field(default=None, description="for a saved DatasetDict")
    text_field: str = "text"
    label_field: str = "label"


DataConfig = Annotated[
    BuiltinData | Cifar10Data | ImageFolderData | FactoryData | HuggingFaceData,
    Field(discriminator="kind"),
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


def _threads_kind(value: Any) -> str:
    return "parts" if isinstance(value, dict | BaseModel) else "cores"


class ThreadsConfig(_Strict):
    """Threads of each part of an ingest; a part left out gets the default share (see
    ``docs/threads.md``)."""

    forward: int | None = Field(default=None, gt=0, description="torch intra-op threads")
    sketch: int | None = Field(default=None, gt=0, description="Numba threads of the updates")
    write: int | None = Field(default=None, gt=0, description="threads writing checkpoints")


class InstancesConfig(_Strict):
    """Single inputs to record with their activations (the dots of the Instances view)."""

    indices: list[NonNegativeInt] = Field(default=[], description="dataset indices to record")
    per_class: int = Field(
        default=0, ge=0, description="also the first N of each true label in the sample order"
    )
    misclassified: int = Field(
        default=0, ge=0, description="also the first N the model gets wrong, in the sample order"
    )


class OnePixelAttackConfig(_Strict):
    """The one-pixel attack (Su et al.): differential evolution over ``pixels`` pixels."""

    kind: Literal["one_pixel"]
    name: str | None = Field(default=None, description="defaults to the kind")
    pixels: int = Field(default=1, ge=1, le=64, description="pixels it may change")
    target: int | None = Field(default=None, ge=0, description="a target class; null: untargeted")
    population: int = Field(default=400, ge=4, description="candidates per input (paper: 400)")
    iterations: int = Field(default=100, ge=0, description="generations at most (paper: 100)")


class FgsmAttackConfig(_Strict):
    """FGSM: one signed-gradient step of size ``eps``, a fraction of the valid range."""

    kind: Literal["fgsm"]
    name: str | None = None
    eps: float = Field(default=8 / 255, gt=0, le=1)


class PgdAttackConfig(_Strict):
    """PGD under an L∞ budget ``eps`` (a fraction of the valid range)."""

    kind: Literal["pgd"]
    name: str | None = None
    eps: float = Field(default=8 / 255, gt=0, le=1)
    steps: int = Field(default=10, ge=1)
    step_size: float | None = Field(default=None, gt=0, description="null: 2.5 eps / steps")
    random_start: bool = True


AttackConfig = Annotated[
    OnePixelAttackConfig | FgsmAttackConfig | PgdAttackConfig, Field(discriminator="kind")
]


class InputRangeConfig(_Strict):
    """The valid range of the raw inputs, and the normalisation the data applies after it."""

    range: tuple[float, float] = (0.0, 1.0)
    mean: list[float] | None = Field(
        default=None,
        description="per channel; empty: no normalisation; null: the built-in dataset's own "
        "(CIFAR-10's, ImageNet's for image folders, none for digits and factories)",
    )
    std: list[float] | None = None


class PairsConfig(_Strict):
    """Which inputs get attacked and kept as benign and attacked pairs of instances."""

    indices: list[NonNegativeInt] = Field(default=[], description="dataset indices to attack")
    per_class: int = Field(
        default=0, ge=0, description="the first N correctly classified inputs of each label"
    )
    misclassified: int = Field(
        default=0, ge=0, description="the first N misclassified inputs (attacked all the same)"
    )


def _default_attacks() -> list[AttackConfig]:
    return [
        OnePixelAttackConfig(kind="one_pixel"),
        FgsmAttackConfig(kind="fgsm"),
        PgdAttackConfig(kind="pgd"),
    ]


class AttacksConfig(_Strict):
    """Adversarial attacks: the pairs an ingest records and what ``ndstream evaluate`` runs."""

    input: InputRangeConfig = InputRangeConfig()
    methods: list[AttackConfig] = Field(default_factory=_default_attacks, min_length=1)
    pairs: PairsConfig = PairsConfig()
    seed: int = Field(default=0, ge=0, le=2**63 - 1)

    @model_validator(mode="after")
    def _unique_names(self) -> AttacksConfig:
        names = [m.name or m.kind for m in self.methods]
        if len(set(names)) != len(names):
            raise ValueError(
                f"attack names must be unique, got {names}; give repeated kinds a `name:`"
            )
        return self


# The grid section has GridSpec's fields, defaults and checks, taken from GridSpec itself.
if TYPE_CHECKING:
    _GridFields = _Strict
else:
    _GridFields = create_model(
        "_GridFields",
        __base__=_Strict,
        **{
            f.name: (get_type_hints(GridSpec)[f.name], f.default)
            for f in dataclasses.fields(GridSpec)
        },
    )


class GridConfig(_GridFields):
    """The sketch's log-linear grid: the fields of :class:`ndstream.GridSpec`, checked by it."""

    @model_validator(mode="after")
    def _a_grid_spec(self) -> GridConfig:
        GridSpec(**self.model_dump())  # its ConfigError is a ValueError: reported by field
        return self


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
    calls: Literal["separate", "pool"] = Field(
        default="separate",
        description="a module run k > 1 times per forward pass: one layer per call "
        "(<name>@1 ... <name>@k), or one layer pooling them",
    )
    group_by: list[Literal["label", "predicted", "correct", "all"] | CustomGroupingConfig] = [
        "label"
    ]
    channel_dim: dict[str, int] = {}
    output_field: dict[str, str | int] = Field(
        default={},
        description="per layer (name or glob): the field or index of a module output that is "
        "not a tensor (a ModelOutput, dict or tuple)",
    )
    grid: GridConfig = GridConfig()
    device: Annotated[str, AfterValidator(_device_syntax)] = "cpu"
    limit: int | None = Field(default=None, gt=0)
    seed: int | None = Field(
        default=0, ge=0, description="seed of the sample order; null keeps the dataset order"
    )
    checkpoint: CheckpointConfig = CheckpointConfig()
    instances: InstancesConfig = InstancesConfig()
    attacks: AttacksConfig | None = Field(
        default=None,
        description="attacks: the pairs an ingest records, and what `ndstream evaluate` runs "
        "(null: no pairs, and evaluate's defaults)",
    )
    threads: (
        Annotated[
            Annotated[int, Tag("cores")] | Annotated[ThreadsConfig, Tag("parts")],
            Discriminator(_threads_kind),
        ]
        | None
    ) = Field(
        default=None,
        description="cores for the run (split between forward, sketch and write as the "
        "default splits them), or per-part counts; null: picked from the machine",
    )

    @field_validator("threads", mode="before")
    @classmethod
    def _threads(cls, value: Any) -> Any:
        # One message for every wrong shape, rather than one per member of the union.
        if isinstance(value, bool) or not isinstance(value, int | dict | ThreadsConfig | None):
            raise ValueError(
                "threads must be a positive number of cores, or a mapping of forward, "
                "sketch and write thread counts"
            )
        if isinstance(value, int) and value < 1:
            raise ValueError(f"threads must be a positive number of cores, got {value}")
        return value


def load_config(path: str | os.PathLike[str], **overrides: Any) -> IngestConfig:
    """Read and validate a YAML config; ``overrides`` replace top-level fields.

    Parameters
    ----------
    path
        The YAML file.
    **overrides
        Top-level fields to replace (``None`` leaves a field as the file has it).

    Returns
    -------
    IngestConfig
        The validated config, whose device this machine has.

    Raises
    ------
    ConfigError
        If the file is missing, is not YAML, or does not validate, or this machine lacks
        its device. The message names each bad field and what it accepts.
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
    """Validate a config given as a dict; see :func:`load_config`.

    Parameters
    ----------
    raw
        The settings, as YAML would give them.
    source
        What to call the config in error messages (its file).

    Returns
    -------
    IngestConfig
        The validated config, whose device this machine has (:func:`check_device`).

    Raises
    ------
    ConfigError
        As :func:`load_config`.
    """
    try:
        cfg = IngestConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{source} is invalid:"]
        for err in exc.errors():
            field = ".".join(str(x) for x in err["loc"]) or "(top level)"
            got = err.get("input")
            got_text = "" if err["type"] == "missing" else f" (got {got!r:.80})"
            lines.append(f"  {field}: {err['msg']}{got_text}")
        raise ConfigError("\n".join(lines)) from None
    # Here, not in the schema: whether a device exists depends on the machine, and the
    # command line joins torchrun's process group on it right after loading the config.
    check_device(cfg.device)
    return cfg
