"""Shared fixtures: the digits CNN (trained once per run), its data, raw activations taken
with plain forward hooks (independent of ndstream's capture), one digits store, the store of an
uninterrupted CLI run, and torchvision models (each built once per session).

Session stores are shared: a test that changes a store works on a copy (:func:`copy_store`).
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from runs import NO_CHECKPOINTS, ingest_cli, write_config
from torch import nn

import ndstream
from ndstream.demo import DigitsCNN, DigitsDataset, load_digits_cnn
from ndstream.ingestion.worker import ThreadBudget, available_cores

# The suite runs one worker per core (pyproject's addopts), and each worker's torch would start
# an OpenMP team of one thread per core: two teams spinning against each other on two cores
# made every forward pass and training step in the suite several times slower (the README's
# command took 7:08 against 5:50 with one thread a worker, 2026-12-07). So the cores are shared
# out among the workers, in each worker and in the processes it starts (they inherit
# OMP_NUM_THREADS). Numba keeps its threads: a test updates on several of them on purpose.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1 and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, available_cores() // _WORKERS))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

#: Every named submodule of the digits CNN that produces activations (flatten is a reshape).
DIGITS_LAYERS = ["conv1", "relu1", "conv2", "relu2", "pool", "fc1", "relu3", "fc2"]
DIGITS_GROUP_BY = ["label", "predicted", "correct"]
DIGITS_BATCH = 64


@pytest.fixture(scope="session")
def ndstream_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The cache folder of the run, holding the trained digits weights; exported for
    subprocesses too.

    The run's workers share it: one trains, under a lock, and the others wait for it and
    load the weights (each training its own took a worker 5-15 s under the suite's load).
    """
    base = tmp_path_factory.getbasetemp()
    root = base.parent if "PYTEST_XDIST_WORKER" in os.environ else base
    path = root / "ndstream-cache"
    with (root / "ndstream-cache.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        load_digits_cnn(path)
    old = os.environ.get("NDSTREAM_CACHE_DIR")
    os.environ["NDSTREAM_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("NDSTREAM_CACHE_DIR", None)
    else:
        os.environ["NDSTREAM_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def digits_model(ndstream_cache_dir: Path) -> DigitsCNN:
    """The trained digits CNN, from the run's cache (tests must not mutate it)."""
    return load_digits_cnn(ndstream_cache_dir)


@pytest.fixture(scope="session")
def digits_dataset() -> DigitsDataset:
    """All 1,797 digits."""
    return DigitsDataset("all")


@pytest.fixture(scope="session")
def digits_targets(digits_dataset: DigitsDataset) -> np.ndarray:
    """True labels in loader order."""
    return np.asarray(digits_dataset.targets, dtype=np.int64)


def digits_loader(
    dataset: DigitsDataset, batch_size: int = DIGITS_BATCH
) -> torch.utils.data.DataLoader:
    """A fixed-order DataLoader over ``dataset``."""
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)


def raw_activations(
    model: nn.Module, inputs: torch.Tensor, names: Sequence[str], batch_size: int = DIGITS_BATCH
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Full outputs of ``names`` (plain ``register_forward_hook``) and the model's outputs.

    Run with the batch size of the loader under test and with the torch threads of ingest's
    forward pass (``ThreadBudget.default``): torch's GEMM may change the last bit of a Linear
    output with either, which is not ndstream's doing.
    """
    modules = dict(model.named_modules())
    chunks: dict[str, list[np.ndarray]] = {n: [] for n in names}

    def hook(name: str):
        def fn(module: nn.Module, args: object, output: torch.Tensor) -> None:
            chunks[name].append(output.detach().cpu().numpy().copy())

        return fn

    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    outs = []
    threads = torch.get_num_threads()
    size = sum(p.numel() for p in model.parameters())
    torch.set_num_threads(ThreadBudget.default("cpu", parameters=size).forward)
    try:
        model.eval()
        with torch.no_grad():
            for start in range(0, inputs.shape[0], batch_size):
                outs.append(model(inputs[start : start + batch_size]).cpu().numpy())
    finally:
        torch.set_num_threads(threads)
        for h in handles:
            h.remove()
    return {n: np.concatenate(c) for n, c in chunks.items()}, np.concatenate(outs)


def per_neuron(raw: np.ndarray, reduction: str) -> np.ndarray:
    """Numpy reference of a reduction: ``[rows, neuron]`` from an output ``[N, C, ...]``.

    ``max``/``mean`` reduce every axis after the channel axis; ``none`` keeps each position
    as a row (sample-major, positions in row-major order).
    """
    if raw.ndim == 2:
        return raw
    flat = raw.reshape(raw.shape[0], raw.shape[1], -1)
    if reduction == "max":
        return flat.max(axis=2)
    if reduction == "mean":
        return flat.mean(axis=2, dtype=np.float64)
    return flat.transpose(0, 2, 1).reshape(-1, raw.shape[1])


@pytest.fixture(scope="session")
def digits_raw(
    digits_model: DigitsCNN, digits_dataset: DigitsDataset
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Raw outputs of every digits layer and the logits, over the whole dataset."""
    return raw_activations(digits_model, digits_dataset.images, DIGITS_LAYERS)


@pytest.fixture(scope="session")
def digits_predicted(digits_raw: tuple[dict[str, np.ndarray], np.ndarray]) -> np.ndarray:
    """Argmax of the logits, in loader order."""
    return digits_raw[1].argmax(axis=1)


@pytest.fixture(scope="session")
def digits_store_path(
    tmp_path_factory: pytest.TempPathFactory, digits_model: DigitsCNN, digits_dataset: DigitsDataset
) -> Path:
    """A store of every digits layer, max reduction, grouped by label, predicted and correct."""
    path = tmp_path_factory.mktemp("digits-store") / "digits.zarr"
    ndstream.ingest(
        digits_model,
        digits_loader(digits_dataset),
        path,
        layers=DIGITS_LAYERS,
        group_by=DIGITS_GROUP_BY,
        progress=False,
    )
    return path


@pytest.fixture(scope="session")
def digits_store(digits_store_path: Path) -> ndstream.Store:
    """The session digits store, opened for reading."""
    return ndstream.open_store(digits_store_path)


@pytest.fixture(scope="session")
def env(ndstream_cache_dir: Path, digits_model: object) -> dict[str, str]:
    """Environment of ingest subprocesses; the session cache holds the trained digits CNN."""
    return {**os.environ, "NDSTREAM_CACHE_DIR": str(ndstream_cache_dir)}


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> Path:
    """A store of an uninterrupted CLI run of ``runs.write_config``'s config.

    The command line runs in this process, committing only at the end: a store's arrays do
    not depend on its checkpoints (what the kill and resume tests compare with it).
    """
    folder = tmp_path_factory.mktemp("reference")
    store = folder / "ref.zarr"
    code, _, err = ingest_cli(write_config(folder, checkpoint=NO_CHECKPOINTS), store)
    assert code == 0, err
    assert ndstream.open_store(store).complete
    return store


def copy_store(source: Path, target: Path) -> Path:
    """A copy of a store (its checkpoint links kept as links), for a test that changes it."""
    shutil.copytree(source, target, symlinks=True)
    return target


#: The torchvision architectures under test (random weights, nothing downloaded), with what
#: each needs for 32 x 32 inputs.
TORCHVISION = {
    "resnet18": {},
    "vgg16": {},
    "mobilenet_v3_small": {},
    "vit_b_16": {"image_size": 32},
}


@pytest.fixture(scope="session")
def torchvision_model() -> Callable[[str], nn.Module]:
    """``arch -> model``: each of :data:`TORCHVISION` built once per session, in eval mode,
    with 10 classes and seeded weights. Tests must not change them (hooks they add, they
    remove)."""
    import torchvision

    built: dict[str, nn.Module] = {}

    def get(arch: str) -> nn.Module:
        if arch not in built:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = getattr(torchvision.models, arch)(
                    weights=None, num_classes=10, **TORCHVISION[arch]
                )
            built[arch] = model.eval()
        return built[arch]

    return get
