"""Names, version and metadata of the on-disk store format (see ``docs/store-format.md``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote

from ..errors import ConfigError, StoreError
from .integrity import MANIFEST

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "LayerMeta", "StoreMeta", "check_version", "node_name"]

FORMAT_NAME = "ndstream"
FORMAT_VERSION = 8
ROOT_ATTR = "ndstream"  # key of ndstream's metadata in the root group's attributes

# Layer group arrays and their dimension names.
COUNTS = "counts"
FINE = "fine_counts"  # counts at a fine resolution next to each min and max, where kept
POOLED = "pooled"  # a layer's subgroup: every sample once, at the resolution of one group
DIMS: dict[str, tuple[str, ...]] = {
    "counts": ("neuron", "group", "bin"),
    "fine_counts": ("neuron", "extreme", "fine_bin"),
    "min": ("neuron", "group"),
    "max": ("neuron", "group"),
    "min_count": ("neuron", "group"),
    "max_count": ("neuron", "group"),
    "atom": ("neuron",),
    "atom_count": ("neuron", "group"),
    "nan_count": ("neuron", "group"),
    "posinf_count": ("neuron", "group"),
    "neginf_count": ("neuron", "group"),
    "rank_bound": ("neuron", "group"),
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
    "success": ("instance",),
    "text": ("instance",),
}
# The instance arrays every store with instances has; the others came later (``success``
# with attacked pairs, ``text`` with text inputs) and read as their defaults where missing.
INSTANCE_REQUIRED = frozenset(
    {"index", "position", "label", "predicted", "condition", "pair", "thumbnail"}
)
NEURON_CHUNK = (
    1024  # a chunk holds up to 1,024 neurons (the writer compresses chunks in parallel)...
)
CHUNK_BYTES = 4 << 20  # ...and as many groups as fit in about 4 MB of counts


# Names at the top of a snapshot that are not layers; a layer of such a name is renamed.
_RESERVED = frozenset({"zarr.json", INSTANCES, MANIFEST})
_MAX_NODE_BYTES = 200  # a file name is at most 255 bytes; room for a temporary suffix


def node_name(layer: str) -> str:
    """The name of a layer's group in the store, for a layer (module) name.

    Module names may hold characters a store path cannot (``/``), or be a name the store
    uses itself (``instances``). ``%`` and ``/`` (and control characters) are
    percent-encoded, and so is the first character of a reserved name, of one starting with
    ``.`` or ``__`` (Zarr reserves those): ``"a/b"`` is stored as ``a%2Fb`` and
    ``"instances"`` as ``%69nstances``. Any other name, such as ``features.0`` or
    ``layer1.0.relu@2``, is its own node name. ``urllib.parse.unquote`` gives the layer name
    back.

    Raises
    ------
    ConfigError
        If the name is empty or too long to be a folder name.
    """
    node = quote(layer, safe="".join(chr(c) for c in range(32, 127) if chr(c) not in "%/"))
    if node in _RESERVED or node.startswith((".", "__")):
        node = f"%{ord(node[0]):02X}{node[1:]}"
    if not node or len(node.encode()) > _MAX_NODE_BYTES:
        raise ConfigError(
            f"layer name {layer[:60]!r}{'...' if len(layer) > 60 else ''} cannot name a folder "
            f"in the store (empty, or over {_MAX_NODE_BYTES} bytes); rename the module"
        )
    return node


@dataclass(frozen=True)
class LayerMeta:
    """What capture learned about one layer.

    ``node`` is the name of the layer's group in the store (see :func:`node_name`); it is
    derived from ``name`` when not given.
    """

    name: str
    module_type: str
    n_neurons: int
    channel_dim: int
    output_shape: tuple[int, ...]
    values_per_sample: int
    node: str = ""
    axis_rule: str = ""

    def __post_init__(self) -> None:
        if not self.node:
            object.__setattr__(self, "node", node_name(self.name))

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
    settings: dict[str, Any] = field(default_factory=dict)
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
        check_version(d)
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


def check_version(attrs: Any) -> None:
    """Refuse root ``ndstream`` attributes of a format this ndstream does not read.

    Raises
    ------
    StoreError
        If ``attrs`` is not ndstream's, or has another (or a malformed) format version.
    """
    if not isinstance(attrs, dict) or attrs.get("format") != FORMAT_NAME:
        raise StoreError("the root attributes do not describe an ndstream store")
    version = attrs.get("format_version")
    if type(version) is not int:
        raise StoreError(
            f"the store's format_version is {version!r}, not a version number; its metadata "
            "is damaged or was edited: re-run the ingest with --overwrite"
        )
    if version != FORMAT_VERSION:
        newer = version > FORMAT_VERSION
        raise StoreError(
            f"store format version {version} is not supported by this ndstream, which reads "
            f"version {FORMAT_VERSION}; "
            + ("upgrade ndstream to read it" if newer else "re-run the ingest with --overwrite")
        )
