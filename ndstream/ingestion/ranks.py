"""Scale-out on ``torch.distributed``: which rank this is, and the few collectives ingest needs.

Under ``torchrun`` every rank runs the same ingest over its own share of the order (see
:mod:`ndstream.ingestion.sample_order`); at each checkpoint the ranks' sketches go to rank 0, which merges them
(exact: integer addition) and alone writes the store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = ["Ranks", "init_from_env", "local_device"]

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ingest's processes."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Ranks:
        """The initialized default process group, or a single process."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        """Whether this process writes the store."""
        return self.rank == 0

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: T) -> list[T] | None:
        """Every rank's ``obj``, in rank order, on rank 0; ``None`` elsewhere."""
        if self.world == 1:
            return [obj]
        out: list[Any] | None = [None] * self.world if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out


def init_from_env(device: str) -> Ranks:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Uses gloo on CPU and nccl on CUDA devices; each rank takes the GPU of its local rank.
    Returns the single-process :class:`Ranks` when not launched by ``torchrun``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        return Ranks.current()
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Ranks.current()


def local_device(device: str) -> str:
    """``device`` for this rank: ``cuda`` becomes ``cuda:<LOCAL_RANK>`` under ``torchrun``."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return device
