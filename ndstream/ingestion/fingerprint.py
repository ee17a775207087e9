"""Fingerprints that tell whether a store was made from the same model and data."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

__all__ = ["dataset_fingerprint", "model_fingerprint"]


def model_fingerprint(model: torch.nn.Module) -> str:
    """A hash of the model's ``state_dict()``: names, dtypes, shapes and values.

    That is every parameter and persistent buffer; buffers registered with
    ``persistent=False`` are left out, as torch leaves them out of a checkpoint, so two
    models with the same fingerprint compute the same function given the same code and the
    same non-persistent buffers (which the code usually derives from the config).
    The bytes are hashed in pieces of 16 MiB, on as many threads as there are cores (hashlib
    releases the GIL), and the pieces' SHA-256 digests are hashed in order: a tree hash.
    """
    header = hashlib.sha256()
    pieces: list[np.ndarray] = []
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        header.update(f"{name}|{t.dtype}|{tuple(t.shape)}|{t.numel()}|".encode())
        if t.numel():
            data = t.reshape(-1).view(torch.uint8).numpy()  # the buffer itself, no copy
            pieces += [data[i : i + _PIECE] for i in range(0, data.size, _PIECE)]
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        digests = pool.map(lambda piece: hashlib.sha256(piece).digest(), pieces)
        for digest in digests:
            header.update(digest)
    return header.hexdigest()[:32]


_PIECE = 16 << 20


def dataset_fingerprint(dataset: Any, n_probe: int = 8) -> str:
    """A cheap identity of a dataset: its type, length, classes and a few evenly spaced items.

    It catches a different dataset, split or transform, not a change to one arbitrary item.
    Datasets without ``len`` (iterable datasets) are fingerprinted by type alone.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(type(dataset).__qualname__.encode())
    classes = getattr(dataset, "classes", None)
    if classes is not None:
        h.update(repr(list(classes)).encode())
    try:
        n = len(dataset)
    except TypeError:
        return h.hexdigest()
    h.update(str(n).encode())
    for i in sorted({int(j) for j in np.linspace(0, n - 1, num=min(n, n_probe))}):
        _update(h, dataset[i])
    return h.hexdigest()


def _update(h: Any, item: Any) -> None:
    if isinstance(item, torch.Tensor):
        # The raw bytes, as numpy would give them, but for every dtype: numpy has no
        # bfloat16 or float8.
        flat = item.detach().cpu().contiguous().reshape(-1)
        h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    elif isinstance(item, np.ndarray):
        h.update(np.ascontiguousarray(item).tobytes())
    elif isinstance(item, tuple | list):
        for part in item:
            _update(h, part)
    elif isinstance(item, dict):
        for key in sorted(item):
            h.update(str(key).encode())
            _update(h, item[key])
    elif hasattr(item, "tobytes"):  # PIL images
        h.update(item.tobytes())
    else:
        h.update(repr(item).encode())
