"""Run a validated :class:`~ndstream.config.IngestConfig`: build, then :func:`ndstream.ingest`."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from ..capture.groupings import Grouping, custom
from ..config import CustomGroupingConfig, IngestConfig, ThreadsConfig, check_device
from ..sketch import GridSpec
from ..store import Store
from ..store.instances import InstanceSpec
from .ranks import local_device
from .run import ingest
from .sources import build_dataset, build_model, import_target

__all__ = ["build_sources", "run_config"]


def build_sources(cfg: IngestConfig) -> tuple[torch.nn.Module, Any, str]:
    """The model (on its device), the dataset and the device a config names.

    Parameters
    ----------
    cfg
        A validated config.

    Returns
    -------
    tuple
        ``(model, dataset, device)``.

    Raises
    ------
    ConfigError
        As :func:`run_config`.
    """
    check_device(cfg.device)  # load_config checked it too; a config built in Python was not
    dataset = build_dataset(cfg.data)  # first: checking a data folder is cheaper than a model
    device = local_device(cfg.device)
    return build_model(cfg.model).to(device), dataset, device


def run_config(
    cfg: IngestConfig,
    *,
    overwrite: bool = False,
    progress: bool = True,
    sources: tuple[torch.nn.Module, Any, str] | None = None,
) -> Store:
    """Build the model, dataset and loader a config names, and ingest into its store.

    Parameters
    ----------
    cfg
        A validated config (:func:`~ndstream.config.load_config`).
    overwrite
        Start over, replacing an existing store.
    progress
        Show a progress bar.
    sources
        The config's ``(model, dataset, device)`` if the caller built them already
        (:func:`build_sources`).

    Returns
    -------
    Store
        The written store, opened for reading.

    Raises
    ------
    ConfigError
        If this machine lacks the config's device, or what the config names cannot be
        built (see :func:`~ndstream.ingestion.sources.build_model` and
        :func:`~ndstream.ingestion.sources.build_dataset`); and as :func:`~ndstream.ingest`.
    """
    grid = GridSpec(**cfg.grid.model_dump())  # validates the exponent window too
    model, dataset, device = sources if sources is not None else build_sources(cfg)
    loader = batched(cfg, dataset)
    group_by: list[str | Grouping] = [
        custom(import_target(g.target), g.names, g.name)
        if isinstance(g, CustomGroupingConfig)
        else g
        for g in cfg.group_by
    ]
    store = ingest(
        model,
        loader,
        cfg.store,
        layers=cfg.layers,
        reduction=cfg.reduction,
        calls=cfg.calls,
        group_by=group_by,
        grid=grid,
        channel_dim=cfg.channel_dim,
        output_field=cfg.output_field,
        label_key=getattr(cfg.data, "label_key", None),
        token_mask=getattr(cfg.data, "token_mask", "attention_mask"),
        limit=cfg.limit,
        device=device,
        overwrite=overwrite,
        progress=progress,
        config=cfg.model_dump(mode="json"),
        batch_size=cfg.loader.batch_size,
        num_workers=cfg.loader.num_workers,
        seed=cfg.seed,
        checkpoint_every=cfg.checkpoint.every_steps,
        checkpoint_seconds=cfg.checkpoint.every_seconds,
        instances=InstanceSpec(
            tuple(cfg.instances.indices), cfg.instances.per_class, cfg.instances.misclassified
        ),
        threads=cfg.threads if not isinstance(cfg.threads, ThreadsConfig) else dict(cfg.threads),
    )
    if _wants_pairs(cfg) and _is_main() and not _has_pairs(store, cfg):
        from .pairs import add_pairs

        store = add_pairs(store.path, cfg, model, dataset, device=device, progress=progress)
    return store


def batched(cfg: IngestConfig, dataset: Any) -> Any:
    """The dataset, or a DataLoader over it with the config's tokenizer or collate function.

    ndstream still picks the samples of each batch (and resumes, and splits ranks) from the
    loader's dataset; the loader gives the batch size and the collate function.
    """
    from torch.utils.data import DataLoader

    data = cfg.data
    if isinstance(dataset, DataLoader):
        if dataset.batch_size is not None and dataset.batch_size != cfg.loader.batch_size:
            warnings.warn(
                f"data.target returned a DataLoader of batch size {dataset.batch_size}, which "
                f"ingest keeps; loader.batch_size ({cfg.loader.batch_size}) is not used. "
                "Return the dataset instead to batch it by the config",
                stacklevel=2,
            )
        return dataset
    tokenizer = getattr(data, "tokenizer", None)
    collate_target = getattr(data, "collate", None)
    if tokenizer is None and collate_target is None:
        return dataset
    if tokenizer is not None:
        from .text import TextCollate, load_tokenizer

        collate: Any = TextCollate(
            load_tokenizer(tokenizer), max_length=tokenizer.max_length,
            padding=tokenizer.padding, truncation=tokenizer.truncation,
        )  # fmt: skip
    else:
        collate = import_target(str(collate_target))
    return DataLoader(
        dataset,
        batch_size=cfg.loader.batch_size,
        num_workers=cfg.loader.num_workers,
        collate_fn=collate,
    )


def _wants_pairs(cfg: IngestConfig) -> bool:
    pairs = cfg.attacks.pairs if cfg.attacks is not None else None
    return pairs is not None and bool(pairs.indices or pairs.per_class or pairs.misclassified)


def _is_main() -> bool:
    """Rank 0, or not under torchrun: the rank that writes the store."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _has_pairs(store: Store, cfg: IngestConfig) -> bool:
    """Whether the store holds the pairs of exactly these attacks (a re-run makes none)."""
    from .pairs import attack_record

    table = store.instances()
    if table is None or not (table.pair >= 0).any() or cfg.attacks is None:
        return False
    made = {k: v for k, v in table.attacks.items() if k != "results"}
    return made == attack_record(cfg.attacks)
