"""Run a validated :class:`~ndstream.config.IngestConfig`: build, then :func:`ndstream.ingest`."""

from __future__ import annotations

from ..capture.groupings import Grouping, custom
from ..config import CustomGroupingConfig, IngestConfig, ThreadsConfig, check_device
from ..sketch import GridSpec
from ..store import Store
from ..store.instances import InstanceSpec
from .ranks import local_device
from .run import ingest
from .sources import build_dataset, build_model, import_target

__all__ = ["run_config"]


def run_config(cfg: IngestConfig, *, overwrite: bool = False, progress: bool = True) -> Store:
    """Build the model, dataset and loader a config names, and ingest into its store.

    Parameters
    ----------
    cfg
        A validated config (:func:`~ndstream.config.load_config`).
    overwrite
        Start over, replacing an existing store.
    progress
        Show a progress bar.

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
    check_device(cfg.device)  # load_config checked it too; a config built in Python was not
    grid = GridSpec(**cfg.grid.model_dump())  # validates the exponent window too
    dataset = build_dataset(cfg.data)  # first: checking a data folder is cheaper than a model
    device = local_device(cfg.device)
    model = build_model(cfg.model).to(device)
    group_by: list[str | Grouping] = [
        custom(import_target(g.target), g.names, g.name)
        if isinstance(g, CustomGroupingConfig)
        else g
        for g in cfg.group_by
    ]
    return ingest(
        model,
        dataset,
        cfg.store,
        layers=cfg.layers,
        reduction=cfg.reduction,
        calls=cfg.calls,
        group_by=group_by,
        grid=grid,
        channel_dim=cfg.channel_dim,
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
        instances=InstanceSpec(tuple(cfg.instances.indices), cfg.instances.per_class),
        threads=cfg.threads if not isinstance(cfg.threads, ThreadsConfig) else dict(cfg.threads),
    )
