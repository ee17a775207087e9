"""Names, version and metadata of the on-disk store format (see ``docs/store-format.md``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import StoreError

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "LayerMeta", "StoreMeta"]

FORMAT_NAME = "ndstream"
FORMAT_VERSION = 2
ROOT_ATTR = "ndstream"  # key of ndstream's metadata in the root group's attributes

# Layer group arrays and their dimension names.
COUNTS = "counts"
DIMS: dict[str, tuple[str, ...]] = {
    "counts": ("neuron", "group", "bin"),
    "min": ("neuron", "group"),
    "max": ("neuron", "group"),
    "nan_count": ("neuron", "group"),
    "posinf_count": ("neuron", "group"),
    "neginf_count": ("neuron", "group"),
    "count": ("group",),
    "neuron": ("neuron",),
    "group": ("group",),
    "grouping": ("group",),
    "bin": ("bin",),
    "bin_lower": ("neuron", "bin"),
    "bin_upper": ("neuron", "bin"),
    "resolution": ("neuron",),
    "instance_values": ("instance", "value", "neuron"),
}
INSTANCES = "instances"  # root-level group of the recorded instances, when there are any
INSTANCE_DIMS: dict[str, tuple[str, ...]] = {
    "index": ("instance",),
    "position": ("instance",),
    "label": ("instance",),
    "predicted": ("instance",),
    "condition": ("instance",),
    "pair": ("instance",),
    "thumbnail": ("instance", "y", "x", "channel"),
}
NEURON_CHUNK = 1024  # a chunk holds up to 1,024 neurons (zarr writes chunks in parallel)...
CHUNK_BYTES = 4 << 20  # ...and as many groups as fit in about 4 MB of counts


@dataclass(frozen=True)
class LayerMeta:
    """What capture learned about one layer."""

    name: str
    module_type: str
    n_neurons: int
    channel_dim: int
    output_shape: tuple[int, ...]
    values_per_sample: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return {**asdict(self), "output_shape": list(self.output_shape)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerMeta:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**d, "output_shape": tuple(d["output_shape"])})


@dataclass(frozen=True)
class StoreMeta:
    """Everything in the root group's ``ndstream`` attribute."""

    layers: tuple[LayerMeta, ...]
    groups: tuple[str, ...]
    groupings: tuple[str, ...]
    reduction: str
    grid: dict[str, Any]
    model_fingerprint: str
    dataset_fingerprint: str
    samples_done: int
    samples_total: int | None
    complete: bool
    config: dict[str, Any] = field(default_factory=dict)
    order: dict[str, Any] = field(default_factory=dict)
    ndstream_version: str = ""
    format_version: int = FORMAT_VERSION
    created: str = ""
    updated: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, with ``format`` and ``format_version`` first."""
        d = asdict(self)
        d["layers"] = [layer.to_dict() for layer in self.layers]
        d["groups"] = list(self.groups)
        d["groupings"] = list(self.groupings)
        return {"format": FORMAT_NAME, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StoreMeta:
        """Inverse of :meth:`to_dict`; refuses formats this ndstream cannot read."""
        if d.get("format") != FORMAT_NAME:
            raise StoreError("the root attributes do not describe an ndstream store")
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise StoreError(
                f"store format version {version} is not supported by this ndstream "
                f"(it reads version {FORMAT_VERSION}); upgrade ndstream or re-run the ingest"
            )
        try:
            fields = {k: v for k, v in d.items() if k != "format"}
            fields["layers"] = tuple(LayerMeta.from_dict(x) for x in d["layers"])
            fields["groups"] = tuple(d["groups"])
            fields["groupings"] = tuple(d["groupings"])
            return cls(**fields)
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(
                f"the store's metadata is damaged ({type(exc).__name__}: {exc}); "
                "re-run the ingest with --overwrite"
            ) from exc

    @property
    def layer_names(self) -> list[str]:
        """Layer names in capture order."""
        return [layer.name for layer in self.layers]
