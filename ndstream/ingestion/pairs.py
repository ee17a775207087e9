"""Attacked and benign pairs of instances, added to a finished store.

The paper's scenario needs an attacked image beside its benign original. For the inputs
``attacks.pairs`` selects, each attack of ``attacks.methods`` runs once, and each input gives
one ``benign`` row and one ``attacked:<attack>`` row per attack, all with the input's ``pair``
id, its activations in every layer (reduced as the store's), its thumbnail and the
prediction on it; attacked rows record whether the attack succeeded, and the instances group
records each attack's parameters.

Pairs are made once the distributions are complete and never touch them: the store's
sketches are rebuilt bit for bit (as a resume rebuilds them) and written into a new
checkpoint with the instances of the run plus the pairs, committed atomically under the
store's lock. Making pairs again replaces the previous ones. An ingest whose config asks for
pairs makes them after its final checkpoint, and a re-run of the same command makes them if
an interruption came in between.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..attacks import attack, attack_name
from ..capture.instances import _thumbnails
from ..config import AttacksConfig, IngestConfig
from ..divergence import class_groups
from ..errors import ConfigError, StoreError
from ..store import Store, open_store
from ..store.instances import InstanceTable
from ..store.snapshots import StoreLock
from ..store.writer import write_checkpoint
from .fingerprint import model_fingerprint
from .identity import rebuild_sketches
from .recapture import recapture
from .sample_order import SampleOrder
from .sources import input_space, load_batch

__all__ = ["add_pairs", "attack_record", "select_pairs"]

BENIGN = "benign"


def select_pairs(
    model: nn.Module,
    dataset: Any,
    order: np.ndarray,
    cfg: AttacksConfig,
    n_classes: int,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """Dataset indices to attack and their positions in the visiting order (-1 if not in it).

    The listed indices, then the first ``per_class`` correctly classified inputs of each
    label and the first ``misclassified`` others, in the visiting order; the model runs on
    the order a batch at a time until every quota is full.

    Parameters
    ----------
    model
        The store's model.
    dataset
        Its dataset of ``(image, label)`` samples.
    order
        The visiting order (dataset indices).
    cfg
        The ``attacks`` section; its ``pairs`` says what to select.
    n_classes
        Labels there are, to know when every class is full.
    device
        The model's device.

    Returns
    -------
    tuple of numpy.ndarray
        ``(indices, positions)``, int64.

    Raises
    ------
    ConfigError
        If a listed index is not one of the dataset's.
    """
    spec = cfg.pairs
    wanted = list(dict.fromkeys(spec.indices))
    bad = [i for i in wanted if not 0 <= i < len(dataset)]
    if bad:
        raise ConfigError(
            f"attacks.pairs.indices {bad[:5]} are not indices of the dataset (0..{len(dataset) - 1})"
        )
    per_label: dict[int, int] = {}
    wrong = 0
    chosen = set(wanted)
    for start in range(0, len(order), 256):
        full = sum(1 for c in per_label.values() if c >= spec.per_class) >= n_classes
        if wrong >= spec.misclassified and (spec.per_class == 0 or full):
            break
        batch = order[start : start + 256]
        x, y = load_batch(dataset, batch, device)
        with torch.no_grad():
            pred = model(x).argmax(-1).cpu().numpy()
        for index, label, p in zip(batch.tolist(), y.cpu().tolist(), pred.tolist(), strict=True):
            if index in chosen:
                continue
            if p == label and per_label.get(label, 0) < spec.per_class:
                per_label[label] = per_label.get(label, 0) + 1
                wanted.append(index)
                chosen.add(index)
            elif p != label and wrong < spec.misclassified:
                wrong += 1
                wanted.append(index)
                chosen.add(index)
    where = {int(i): k for k, i in enumerate(order.tolist())}
    indices = np.asarray(wanted, dtype=np.int64)
    positions = np.asarray([where.get(int(i), -1) for i in indices], dtype=np.int64)
    return indices, positions


def attack_record(spec: AttacksConfig) -> dict[str, Any]:
    """What a store records of the attacks behind its pairs: every setting, methods by name.

    Parameters
    ----------
    spec
        The ``attacks`` section.

    Returns
    -------
    dict
        ``{"methods": {name: parameters}, "pairs": ..., "input": ..., "seed": ...}``, as JSON;
        a store adds ``"results": {name: {"success_rate": ..., "mean_queries": ...}}``.
    """
    record = spec.model_dump(mode="json")
    record["methods"] = {attack_name(m): m.model_dump(mode="json") for m in spec.methods}
    return record


def add_pairs(
    path: str | Path,
    cfg: IngestConfig,
    model: nn.Module,
    dataset: Any,
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> Store:
    """Attack the inputs ``cfg.attacks.pairs`` selects and add the pairs to a finished store.

    Parameters
    ----------
    path
        A complete store, made with ``model`` from ``dataset``.
    cfg
        The store's config; its ``attacks`` section says what to attack and how.
    model, dataset
        The model and dataset the config builds.
    device
        Where the model is.
    progress
        Show a progress bar.

    Returns
    -------
    Store
        The store, opened at its new checkpoint.

    Raises
    ------
    StoreError
        If the store is incomplete (finish the ingest first), was made with another model,
        or another process writes it.
    """
    spec = cfg.attacks or AttacksConfig()
    device = torch.device(device)
    store = open_store(path)
    if not store.complete:
        raise StoreError(
            f"{store.path} is not complete ({store.meta.samples_done} samples so far): pairs "
            "are added to finished stores. Re-run `ndstream ingest` on it first"
        )
    if store.meta.model_fingerprint != model_fingerprint(model):
        raise StoreError(
            f"{store.path} was made with another model (fingerprint "
            f"{store.meta.model_fingerprint}, this one {model_fingerprint(model)}): attack "
            "the model that made the store, with the config that made it"
        )
    model.eval()
    order = SampleOrder(len(dataset), cfg.seed, cfg.limit).indices()
    n_classes = len(class_groups(store)) or len(store.groups)
    indices, positions = select_pairs(model, dataset, order, spec, n_classes, device)
    if not len(indices):
        raise ConfigError(
            "attacks.pairs selects no input: give indices, per_class or misclassified"
        )
    space = input_space(cfg)
    x, y = load_batch(dataset, indices, device)
    parts = [_rows(model, store, x, y, indices, positions, BENIGN, None)]
    results: dict[str, dict[str, float]] = {}
    for method in _bar(spec.methods, progress):
        name = attack_name(method)
        result = attack(method, model, x, y, space=space, seed=spec.seed)
        results[name] = {"success_rate": result.success_rate, "mean_queries": result.mean_queries}
        parts.append(
            _rows(model, store, result.adversarial, y, indices, positions,
                  f"attacked:{name}", result.success.cpu().numpy())
        )  # fmt: skip
    pairs = InstanceTable.concat(parts)
    kept = store.instances()
    if kept is not None:
        kept = kept.take(np.flatnonzero(kept.pair < 0))  # earlier pairs are replaced
    tables = [t for t in (kept, pairs) if t is not None and len(t)]
    combined = InstanceTable.concat(tables) if tables else None
    if combined is not None:
        combined.attacks = {**attack_record(spec), "results": results}
    with StoreLock(store.path):
        current = open_store(store.path)  # what is on disk now, under the lock
        write_checkpoint(current.path, current.meta, rebuild_sketches(current), combined)
    return open_store(store.path)


def _rows(
    model: nn.Module,
    store: Store,
    x: torch.Tensor,
    y: torch.Tensor,
    indices: np.ndarray,
    positions: np.ndarray,
    condition: str,
    success: np.ndarray | None,
) -> InstanceTable:
    """One instance row per input of ``x``, with its activations in every layer."""
    n = len(indices)
    seen = recapture(store, model, x)
    return InstanceTable(
        index=indices.astype(np.int64),
        position=positions.astype(np.int64),
        label=y.cpu().numpy().astype(np.int64),
        predicted=seen.predicted,
        condition=np.full(n, condition),
        pair=np.arange(n, dtype=np.int64),
        thumbnail=_thumbnails(x, np.arange(n)),
        values=seen.values,
        success=np.zeros(n, bool) if success is None else success.astype(bool),
    )


def _bar(items: list[Any], progress: bool) -> Any:
    if not progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc="attack", unit="attack")
