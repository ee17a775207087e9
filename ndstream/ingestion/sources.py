"""Build the model and the dataset a config names. Nothing is ever downloaded.

Models are built under a seed (``seed`` of the model config), so a randomly initialised one is
the same on every run and a re-run resumes its store; the global RNG is left as it was. A
user's factory that raises, or returns something else than a model or a dataset, is a
:class:`~ndstream.errors.ConfigError` naming the factory.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..config import (
    BuiltinData,
    BuiltinModel,
    Cifar10Data,
    DataConfig,
    FactoryData,
    HuggingFaceData,
    HuggingFaceModel,
    ImageFolderData,
    IngestConfig,
    ModelConfig,
    TorchvisionModel,
)
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..attacks import InputSpace

__all__ = ["build_dataset", "build_model", "import_target", "input_space", "load_batch"]

# Statistics the paper's CIFAR-10 VGG16 and torchvision's ImageNet models were trained with.
_CIFAR10_MEAN, _CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def import_target(target: str) -> Any:
    """Import ``package.module:attribute`` and return the attribute.

    Parameters
    ----------
    target
        ``package.module:attribute``; the attribute may be dotted (``module:Class.method``).

    Returns
    -------
    Any
        The attribute.

    Raises
    ------
    ConfigError
        If the module cannot be imported (or raises while it is), or has no such attribute.
    """
    module_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import {module_name!r} for {target!r}: {exc}; is it on PYTHONPATH?"
        ) from exc
    except Exception as exc:  # the user's module itself failed while being imported
        raise ConfigError(
            f"importing {module_name!r} for {target!r} raised {type(exc).__name__}: {exc}; "
            "fix that module"
        ) from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{module_name!r} has no attribute {attr!r} (from {target!r})")
        obj = getattr(obj, part)
    return obj


def build_model(cfg: ModelConfig) -> torch.nn.Module:
    """The model a config names, with its weights loaded, in eval mode.

    Parameters
    ----------
    cfg
        The ``model`` section of a config. Torchvision and factory models are built under
        ``torch.manual_seed(cfg.seed)`` with the global RNG saved and restored, so two builds
        of a config give the same parameters (and the same model fingerprint).

    Returns
    -------
    torch.nn.Module
        The model, in ``eval()`` mode, on the CPU unless a factory put it elsewhere.

    Raises
    ------
    ConfigError
        If torchvision has no such model, the factory cannot be imported, raises or returns
        no ``nn.Module``, or the weights file is missing or does not fit.
    """
    if isinstance(cfg, BuiltinModel):
        from ..demo import load_digits_cnn

        return load_digits_cnn(epochs=cfg.epochs)
    if isinstance(cfg, HuggingFaceModel):
        from .text import build_hf_model

        return build_hf_model(cfg)
    if isinstance(cfg, TorchvisionModel):
        import torchvision

        if not hasattr(torchvision.models, cfg.name) or not callable(
            getattr(torchvision.models, cfg.name)
        ):
            available = ", ".join(sorted(torchvision.models.list_models())[:12])
            raise ConfigError(
                f"model.name: torchvision has no model {cfg.name!r}; e.g. {available}, ..."
            )
        kwargs = dict(cfg.kwargs)
        if cfg.num_classes is not None:
            kwargs["num_classes"] = cfg.num_classes
        try:
            with seeded(cfg.seed):
                model = getattr(torchvision.models, cfg.name)(weights=None, **kwargs)
        except (TypeError, ValueError) as exc:  # torchvision's answer to a bad keyword
            raise ConfigError(
                f"model: torchvision's {cfg.name} cannot be built with {kwargs}: {exc}; "
                "fix model.kwargs or model.num_classes"
            ) from exc
        if cfg.weights != "random":
            _load_weights(model, cfg.weights, "model.weights")
        return model.eval()
    with seeded(cfg.seed):
        model = _call_factory("model", cfg.target, cfg.kwargs)
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(
            f"model.target {cfg.target!r} returned {type(model).__name__}, not a "
            "torch.nn.Module; make the factory return the model"
        )
    if cfg.weights is not None:
        _load_weights(model, cfg.weights, "model.weights")
    return model.eval()


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block under ``torch.manual_seed(seed)``, leaving the global RNG as it was.

    The CPU generator is forked and seeded; so is the current CUDA device's, if CUDA is
    already initialised (a model is normally built on the CPU and moved afterwards, and
    initialising CUDA here would put a context on the device of every ``torchrun`` rank).

    Parameters
    ----------
    seed
        The seed, as ``torch.manual_seed`` takes it.
    """
    cuda = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        torch.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.manual_seed(seed)  # the current device's generator
        yield


def _call_factory(section: str, target: str, kwargs: dict[str, Any]) -> Any:
    """Call the user's ``target(**kwargs)`` of config section ``section``; what it raises
    becomes a :class:`ConfigError` that names it."""
    factory = import_target(target)
    try:
        return factory(**kwargs)
    except Exception as exc:
        raise ConfigError(
            f"{section}.target {target!r} raised {type(exc).__name__}: {exc}; fix the factory "
            f"or its {section}.kwargs {kwargs}"
        ) from exc


def _is_dataset(obj: Any) -> bool:
    """Whether ingest can load samples from ``obj`` (see :class:`ndstream.ingestion.batches.Feed`)."""
    from torch.utils.data import DataLoader, Dataset

    if isinstance(obj, Dataset | DataLoader):
        return True
    # Strings and mappings index, but do not hold samples 0..n-1.
    if obj is None or isinstance(obj, str | bytes | dict):
        return False
    return hasattr(obj, "__getitem__") and hasattr(obj, "__len__")


def _load_weights(model: torch.nn.Module, weights: str, field: str) -> None:
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"{field}: weights file {str(path)!r} does not exist. ndstream never downloads "
            "weights: save a state_dict there (torch.save(model.state_dict(), path)), "
            "or set `weights: random` for a randomly initialised model."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # common checkpoint layout
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"{field}: {path} does not fit the model: {exc}") from exc


def build_dataset(cfg: DataConfig) -> Any:
    """The dataset a config names; local files only.

    Parameters
    ----------
    cfg
        The ``data`` section of a config.

    Returns
    -------
    Any
        A map-style dataset (``__getitem__`` and ``__len__``), or for a factory also an
        ``IterableDataset`` or a ``DataLoader``.

    Raises
    ------
    ConfigError
        If the data folder is missing, or the factory cannot be imported, raises or returns
        no dataset.
    """
    if isinstance(cfg, BuiltinData):
        from ..demo import DigitsDataset

        return DigitsDataset(cfg.split)
    if isinstance(cfg, HuggingFaceData):
        from .text import load_hf_dataset

        return load_hf_dataset(cfg)
    if isinstance(cfg, FactoryData):
        dataset = _call_factory("data", cfg.target, cfg.kwargs)
        if not _is_dataset(dataset):
            raise ConfigError(
                f"data.target {cfg.target!r} returned {type(dataset).__name__}, not a dataset; "
                "make the factory return a torch Dataset (with __getitem__ and __len__), an "
                "IterableDataset or a DataLoader"
            )
        return dataset
    from torchvision import datasets, transforms

    root = Path(cfg.root).expanduser()
    if isinstance(cfg, Cifar10Data):
        if not (root / "cifar-10-batches-py").is_dir():
            raise ConfigError(
                f"data.root: {str(root)!r} holds no 'cifar-10-batches-py' folder. ndstream never "
                "downloads data: unpack cifar-10-python.tar.gz there, or point data.root at "
                "the folder that holds it."
            )
        tf = transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize(_CIFAR10_MEAN, _CIFAR10_STD)]
        )
        return datasets.CIFAR10(str(root), train=cfg.train, transform=tf, download=False)
    assert isinstance(cfg, ImageFolderData)
    if not root.is_dir():
        raise ConfigError(
            f"data.root: {str(root)!r} is not a folder; point it at a folder with one "
            "sub-folder of images per class (e.g. ImageNet's val/ after sorting into classes)."
        )
    tf = transforms.Compose(
        [
            transforms.Resize(cfg.resize),
            transforms.CenterCrop(cfg.crop),
            transforms.ToTensor(),
            transforms.Normalize(_IMAGENET_MEAN, _IMAGENET_STD),
        ]
    )
    return datasets.ImageFolder(str(root), transform=tf)


def load_batch(
    dataset: Any, indices: Sequence[int] | np.ndarray, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The samples of a map-style dataset at ``indices`` as one ``(images, labels)`` batch.

    Parameters
    ----------
    dataset
        Samples ``(input, label, ...)`` with image inputs ``[C, H, W]``.
    indices
        Which samples, in order.
    device
        Where the tensors go.

    Returns
    -------
    tuple of torch.Tensor
        ``[n, C, H, W]`` inputs and ``[n]`` int64 labels.

    Raises
    ------
    ConfigError
        If the samples are not (image, label) pairs: attacks and detectors need both.
    """
    from torch.utils.data import default_collate

    items = [dataset[int(i)] for i in indices]
    if not items:
        raise ConfigError("no samples to load: select at least one input")
    batch = default_collate(items)
    if not isinstance(batch, list | tuple) or len(batch) < 2:
        raise ConfigError(
            f"attacks need a dataset of (image, label) samples; its samples are "
            f"{type(items[0]).__name__}"
        )
    x, y = batch[0], batch[1]
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ConfigError(
            f"attacks need images [batch, C, H, W]; the inputs are {type(x).__name__}"
            f"{list(getattr(x, 'shape', []))}"
        )
    return x.to(device), torch.as_tensor(y, dtype=torch.long).to(device)


def input_space(cfg: IngestConfig) -> InputSpace:
    """The valid range and normalisation of a config's inputs, as its attacks see them.

    ``attacks.input`` sets them; where it leaves ``mean`` and ``std`` out, the built-in
    datasets' own normalisation applies (CIFAR-10's, ImageNet's for image folders), and none
    for the digits and for factories.

    Parameters
    ----------
    cfg
        A validated config.

    Returns
    -------
    InputSpace
        For :func:`ndstream.attacks.attack`.
    """
    from ..attacks import InputSpace

    spec = cfg.attacks.input if cfg.attacks is not None else None
    low, high = spec.range if spec is not None else (0.0, 1.0)
    if spec is not None and spec.mean is not None and spec.std is not None:
        mean, std = tuple(spec.mean), tuple(spec.std)
    else:
        own: dict[type, tuple[tuple[float, ...], tuple[float, ...]]] = {
            Cifar10Data: (_CIFAR10_MEAN, _CIFAR10_STD),
            ImageFolderData: (_IMAGENET_MEAN, _IMAGENET_STD),
        }
        mean, std = own.get(type(cfg.data), ((), ()))
    return InputSpace.from_lists((low, high), mean, std)
