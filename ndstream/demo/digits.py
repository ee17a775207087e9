"""A built-in, fully offline demo: scikit-learn's 8x8 digits and a small CNN.

The images ship inside scikit-learn and the CNN trains in seconds on a CPU, so
nothing is ever downloaded. Trained weights are cached on disk and shared.
"""

from __future__ import annotations

import functools
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = [
    "RECIPE_VERSION",
    "DigitsCNN",
    "DigitsDataset",
    "default_cache_dir",
    "digits_accuracy",
    "load_digits_cnn",
    "train_digits_cnn",
]

#: Bump on any change of architecture, split or recipe, so stale caches are never loaded.
RECIPE_VERSION = "v1"

_SPLITS = ("all", "train", "test")
_TEST_FRACTION = 0.2
# Private seed: the partition must not depend on global RNG state or the training seed.
_SPLIT_SEED = 20240601


@functools.lru_cache(maxsize=1)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """Return read-only ``(images [N, 8, 8] float32 in [0, 1], labels [N] int64)``."""
    # Imported here: sklearn.datasets pulls in pandas and scipy (a second at start-up).
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / np.float32(16.0)
    labels = np.asarray(bunch.target, dtype=np.int64)
    images.setflags(write=False)  # shared through the lru_cache, so must stay immutable
    labels.setflags(write=False)
    return images, labels


def _split_indices(split: str) -> np.ndarray:
    """Sorted sklearn indices of ``split``, stratified per class with a fixed seed."""
    _, labels = _raw_digits()
    if split == "all":
        return np.arange(len(labels), dtype=np.int64)
    rng = np.random.default_rng(_SPLIT_SEED)
    test_parts = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        test_parts.append(members[: round(len(members) * _TEST_FRACTION)])
    test = np.sort(np.concatenate(test_parts)).astype(np.int64)
    if split == "test":
        return test
    return np.setdiff1d(np.arange(len(labels), dtype=np.int64), test)


class DigitsDataset(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """The 1797 8x8 handwritten digits from :func:`sklearn.datasets.load_digits`.

    Parameters
    ----------
    split : {"all", "train", "test"}
        ``"train"``/``"test"`` are a fixed, stratified ~80/20 partition of ``"all"``.

    Attributes
    ----------
    classes : list of str
        Class names ``"0"`` to ``"9"``; the label is the index into this list.
    targets : list of int
        The label of every item, in item order.
    indices : numpy.ndarray
        For every item, its index in the original sklearn dataset.

    Raises
    ------
    ValueError
        If ``split`` is not one of the accepted values.
    """

    def __init__(self, split: str = "all") -> None:
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {', '.join(map(repr, _SPLITS))}; got {split!r}")
        images, labels = _raw_digits()
        self.split = split
        self.indices: np.ndarray = _split_indices(split)
        self.classes: list[str] = [str(d) for d in range(10)]
        self.targets: list[int] = [int(t) for t in labels[self.indices]]
        # One contiguous tensor keeps __getitem__ cheap and allows whole-split batching.
        self.images = torch.from_numpy(images[self.indices].copy()).unsqueeze(1)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], self.targets[index]


class DigitsCNN(nn.Module):
    """A small CNN for 1x8x8 digit images with one named submodule per layer.

    Each ReLU is its own instance so every activation can be captured by name.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``[B, 1, 8, 8]`` to class logits ``[B, 10]``."""
        x = self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))
        return self.fc2(self.relu3(self.fc1(self.flatten(x))))


def train_digits_cnn(*, seed: int = 0, epochs: int = 15, batch_size: int = 32) -> DigitsCNN:
    """Train a :class:`DigitsCNN` on the ``"train"`` split, deterministically.

    Parameters
    ----------
    seed : int
        Seeds weight initialisation and batch shuffling; global RNG state is untouched.
    epochs, batch_size : int
        Passes over the training split, and Adam's mini-batch size.

    Returns
    -------
    DigitsCNN
        The trained model, in ``eval()`` mode.
    """
    data = DigitsDataset("train")
    targets = torch.tensor(data.targets, dtype=torch.long)
    # fork_rng restores the global state afterwards; devices=[] avoids touching CUDA.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitsCNN()
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.train()
        for _ in range(epochs):
            # Manual batching over an in-memory tensor is much faster than a DataLoader here.
            order = torch.randperm(len(targets), generator=generator)
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(data.images[batch]), targets[batch]).backward()
                optimizer.step()
    return model.eval()


def default_cache_dir() -> Path:
    """Return ``$NDSTREAM_CACHE_DIR`` if set, else ``~/.cache/ndstream``."""
    env = os.environ.get("NDSTREAM_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ndstream"


def _save_atomic(state: dict[str, torch.Tensor], path: Path) -> None:
    # Same-directory temp file => os.replace is atomic: readers never see a partial file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_digits_cnn(
    cache_dir: str | os.PathLike[str] | None = None, *, retrain: bool = False, epochs: int = 15
) -> DigitsCNN:
    """Return a trained :class:`DigitsCNN`, training and caching it on first use.

    Parameters
    ----------
    cache_dir : str or os.PathLike, optional
        Where the weights file lives; defaults to :func:`default_cache_dir`.
    retrain : bool
        Train afresh and overwrite the cached weights even if they exist.
    epochs : int
        Training epochs: 15, the demo's, or fewer for a model part way through training
        (cached apart).

    Returns
    -------
    DigitsCNN
        The trained model, in ``eval()`` mode.

    Warns
    -----
    UserWarning
        If the cached file cannot be loaded; it is then retrained and replaced.
    """
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    suffix = "" if epochs == 15 else f"-{epochs}ep"
    path = directory / f"digits_cnn-{RECIPE_VERSION}{suffix}.pt"
    model = DigitsCNN()
    if path.exists() and not retrain:
        try:
            # weights_only=True: a cache file must never be able to execute code.
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
            return model.eval()
        except Exception as exc:  # any unreadable file means "retrain", never a crash
            msg = f"Cached digits CNN weights at {path} could not be loaded ({exc!r}); retraining."
            warnings.warn(msg, UserWarning, stacklevel=2)
    model = train_digits_cnn(epochs=epochs)
    directory.mkdir(parents=True, exist_ok=True)
    _save_atomic(model.state_dict(), path)
    return model


@torch.no_grad()
def digits_accuracy(model: nn.Module, split: str = "test") -> float:
    """Return the fraction of ``split`` that ``model`` classifies correctly.

    The model is evaluated in ``eval()`` mode, then put back in its previous mode.
    """
    data = DigitsDataset(split)
    was_training = model.training
    model.eval()
    try:
        predicted = model(data.images).argmax(dim=1)
    finally:
        model.train(was_training)
    return float((predicted == torch.tensor(data.targets)).float().mean())
