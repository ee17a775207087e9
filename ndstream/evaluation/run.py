"""``ndstream evaluate``: can neural divergence detect adversarial inputs? The answer in numbers.

1. The config's sample order is split: the first part (80 % by default) is ingested into a
   *reference store* (``<out>/reference.zarr``, resumed or reused like any ingest); the rest
   is held out, so no score is computed against distributions that saw its input.
2. Each attack of ``attacks.methods`` runs on the held-out inputs the model classifies
   correctly (attacking a misclassified input proves nothing).
3. Three detectors score every benign input and every attacked version: the divergence from
   the predicted class (:meth:`ndstream.Store.divergence`), feature squeezing and the
   Mahalanobis detector (:mod:`ndstream.evaluation.detectors`).
4. For each attack and detector, the AUROC and the TPR at 5 % FPR, benign versus attacked,
   on successful attacks only and on all attempts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..attacks import AttackResult, attack, attack_name
from ..config import AttacksConfig, IngestConfig, InstancesConfig
from ..divergence import class_groups
from ..errors import ConfigError
from ..ingestion.from_config import build_sources, run_config
from ..ingestion.recapture import recapture
from ..ingestion.sample_order import SampleOrder
from ..ingestion.sources import input_space, load_batch
from ..store import Store
from .detectors import Mahalanobis, feature_squeezing
from .metrics import detection_metrics

__all__ = ["DETECTORS", "Evaluation", "evaluate"]

DETECTORS = ("divergence", "feature_squeezing", "mahalanobis")
_CHUNK = 64  # inputs per attack call: the progress bar moves at least this often
_MAX_FIT = 10_000  # reference inputs the Mahalanobis detector is fitted on, at most


@dataclass
class Evaluation:
    """What ``ndstream evaluate`` measured; :mod:`~ndstream.evaluation.report` writes it."""

    config: str
    reference: int
    held_out: int
    attacked: int  # held-out inputs classified correctly, hence attacked
    mahalanobis_layer: str
    attacks: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)


def evaluate(
    cfg: IngestConfig,
    out: str | Path,
    *,
    held_out: float = 0.2,
    max_inputs: int | None = 2000,
    overwrite: bool = False,
    progress: bool = True,
    name: str = "config",
) -> Evaluation:
    """Run attacks on held-out inputs and score three detectors on them.

    Parameters
    ----------
    cfg
        An ingest config; its ``attacks`` section (or the defaults) says what to run.
    out
        Folder for the reference store and the reports.
    held_out
        Share of the sample order held out from the reference store.
    max_inputs
        Attack at most this many held-out inputs (they are held in memory at once);
        ``None``: all.
    overwrite
        Rebuild the reference store from scratch.
    progress
        Show progress bars.
    name
        What to call the config in the report.

    Returns
    -------
    Evaluation
        Attack statistics, the metrics table and every score.

    Raises
    ------
    ConfigError
        If the split leaves no reference or no held-out input, or the inputs are not
        images of a classifier.
    """
    if not 0 < held_out < 1:
        raise ConfigError(f"held_out must lie strictly between 0 and 1, got {held_out}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = cfg.attacks or AttacksConfig()
    space = input_space(cfg)
    model, dataset, device_name = build_sources(cfg)
    model.eval()
    device = torch.device(device_name)
    order = SampleOrder(len(dataset), cfg.seed, cfg.limit).indices()
    n_test = round(held_out * len(order))
    n_ref = len(order) - n_test
    if n_ref < 1 or n_test < 1:
        raise ConfigError(
            f"{len(order)} samples cannot be split into reference and held-out parts with "
            f"held_out={held_out}; use more samples or another share"
        )
    reference = cfg.model_copy(  # the distributions only: no instances, no pairs
        update={
            "store": str(out / "reference.zarr"),
            "limit": n_ref,
            "instances": InstancesConfig(),
            "attacks": None,
        }
    )
    store = run_config(
        reference, overwrite=overwrite, progress=progress, sources=(model, dataset, device_name)
    )
    test_idx = order[n_ref:][:max_inputs]
    x, y = load_batch(dataset, test_idx, device)
    benign_pred = _predict(model, x)
    keep = benign_pred == y
    x, y, idx = x[keep], y[keep], test_idx[keep.cpu().numpy()]
    if len(y) == 0:
        raise ConfigError("the model classifies none of the held-out inputs correctly")

    layer = _mahalanobis_layer(store)
    chunks = sum(-(-len(y) // _CHUNK) for _ in spec.methods)
    with _bar(progress, chunks + 2 + len(spec.methods), "evaluate") as bar:
        bar.set_postfix_str(f"Mahalanobis fit on {layer}")
        features, labels = [], []
        for first in range(0, min(n_ref, _MAX_FIT), 256):  # a batch at a time: images are big
            fx, fy = load_batch(dataset, order[first : min(first + 256, n_ref, _MAX_FIT)], device)
            features.append(_mean_features(model, fx, layer, store))
            labels.append(fy.cpu().numpy())
        maha = Mahalanobis(np.concatenate(features), np.concatenate(labels))
        bar.update(1)

        def detect(inputs: torch.Tensor) -> dict[str, np.ndarray]:
            seen = recapture(store, model, inputs)
            div = store.divergence(seen.values, predicted=seen.predicted)
            return {
                "divergence": div.overall,
                "feature_squeezing": feature_squeezing(model, inputs, space),
                "mahalanobis": maha.score(_mean_features(model, inputs, layer, store)),
            }

        bar.set_postfix_str("scoring benign inputs")
        benign = detect(x)
        bar.update(1)
        report = Evaluation(name, n_ref, len(test_idx), len(y), layer)
        _record_scores(report, "benign", idx, np.zeros(len(y), bool), benign)
        for method in spec.methods:
            label = attack_name(method)
            bar.set_postfix_str(label)
            start = time.perf_counter()
            parts = []
            for begin in range(0, len(y), _CHUNK):
                part = slice(begin, begin + _CHUNK)
                parts.append(
                    attack(method, model, x[part], y[part], space=space, seed=spec.seed + begin)
                )
                bar.update(1)
            result = AttackResult.concat(parts)
            seconds = time.perf_counter() - start
            bar.set_postfix_str(f"scoring {label}")
            scores = detect(result.adversarial)
            bar.update(1)
            success = result.success.cpu().numpy()
            report.attacks.append(
                {
                    "attack": label,
                    "inputs": len(y),
                    "success_rate": result.success_rate,
                    "mean_queries": result.mean_queries,
                    "seconds": seconds,
                    "params": method.model_dump(mode="json"),
                }
            )
            _record_scores(report, label, idx, success, scores)
            for subset, rows in (("successful", success), ("all", np.ones_like(success))):
                for det in DETECTORS:
                    auroc, tpr = detection_metrics(benign[det], scores[det][rows])
                    report.results.append(
                        {
                            "attack": label,
                            "subset": subset,
                            "detector": det,
                            "benign": len(y),
                            "attacked": int(rows.sum()),
                            "auroc": auroc,
                            "tpr_at_5fpr": tpr,
                        }
                    )
    return report


def _record_scores(
    report: Evaluation,
    condition: str,
    idx: np.ndarray,
    success: np.ndarray,
    scores: dict[str, np.ndarray],
) -> None:
    for row, index in enumerate(idx.tolist()):
        report.scores.append(
            {
                "condition": condition,
                "index": index,
                "success": bool(success[row]),
                **{det: float(scores[det][row]) for det in DETECTORS},
            }
        )


def _predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    with torch.no_grad():
        return (
            torch.cat(
                [model(x[i : i + batch_size]).argmax(-1) for i in range(0, len(x), batch_size)]
            )
            if len(x)
            else torch.zeros(0, dtype=torch.long, device=x.device)
        )


def _mean_features(model: nn.Module, x: torch.Tensor, layer: str, store: Store) -> np.ndarray:
    """``[n, channels]`` spatially averaged outputs of ``layer``."""
    values = recapture(store, model, x, layers=[layer], reduction="mean").values[layer]
    return values.mean(axis=1)


def _mahalanobis_layer(store: Store) -> str:
    """The penultimate layer: the last one whose width is not the number of classes."""
    classes = len(class_groups(store)) or None
    for layer in reversed(store.layers):
        if store.n_neurons(layer) != classes:
            return layer
    return store.layers[-1]


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix_str(self, s: str) -> None: ...


def _bar(progress: bool, total: int, desc: str) -> Any:
    from contextlib import nullcontext

    if not progress:
        return nullcontext(_NoBar())
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)
