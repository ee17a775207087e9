"""Build the model and the dataset a config names. Nothing is ever downloaded."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from .config import (
    BuiltinData,
    BuiltinModel,
    Cifar10Data,
    DataConfig,
    FactoryData,
    ImageFolderData,
    ModelConfig,
    TorchvisionModel,
)
from .errors import ConfigError

__all__ = ["build_dataset", "build_model", "import_target"]

# Statistics the paper's CIFAR-10 VGG16 and torchvision's ImageNet models were trained with.
_CIFAR10_MEAN, _CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def import_target(target: str) -> Any:
    """Import ``package.module:attribute`` and return the attribute."""
    module_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import {module_name!r} for {target!r}: {exc}; is it on PYTHONPATH?"
        ) from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{module_name!r} has no attribute {attr!r} (from {target!r})")
        obj = getattr(obj, part)
    return obj


def build_model(cfg: ModelConfig) -> torch.nn.Module:
    """The model a config names, with its weights loaded, in eval mode."""
    if isinstance(cfg, BuiltinModel):
        from .builtin import load_digits_cnn

        return load_digits_cnn()
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
        model = getattr(torchvision.models, cfg.name)(weights=None, **kwargs)
        if cfg.weights != "random":
            _load_weights(model, cfg.weights, "model.weights")
        return model.eval()
    factory = import_target(cfg.target)
    model = factory(**cfg.kwargs)
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(
            f"model.target {cfg.target!r} returned {type(model).__name__}, not a Module"
        )
    if cfg.weights is not None:
        _load_weights(model, cfg.weights, "model.weights")
    return model.eval()


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
    """The dataset a config names; local files only."""
    if isinstance(cfg, BuiltinData):
        from .builtin import DigitsDataset

        return DigitsDataset(cfg.split)
    if isinstance(cfg, FactoryData):
        return import_target(cfg.target)(**cfg.kwargs)
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
