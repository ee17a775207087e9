"""Read an ndstream store: the public read API behind :func:`ndstream.open_store`."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np
import zarr

from ..errors import (
    GroupNotFoundError,
    LayerNotFoundError,
    NdstreamError,
    StoreDamageWarning,
    StoreError,
    listed,
    near_names,
)
from ..sketch import POOLED_GROUP, GridSpec, Summary
from ..sketch.summary import cdf_values, display_edges, holds_every_row, quantile_levels
from . import format as fmt
from . import snapshots
from .instances import InstanceTable
from .labelled import labelled, with_bounds

if TYPE_CHECKING:
    import holoviews as hv
    import xarray as xr

    from ..divergence import Divergence
    from ..explore import SortSpec
    from ..explore.contrast import Operand

__all__ = ["GroupSelector", "Store", "open_store"]

GroupSelector = str | int | Sequence[str | int] | None


def open_store(path: str | os.PathLike[str], *, deep: bool = False) -> Store:
    """Open an ndstream store for reading.

    The store's last checkpoint is read if it is whole; if it is damaged (a missing or
    truncated file, a broken ``.current`` link), the newest whole checkpoint before it is
    read instead, with a :class:`~ndstream.errors.StoreDamageWarning` that says which.

    Parameters
    ----------
    path
        Folder of a store written by :func:`ndstream.ingest`.
    deep
        Also check every byte of a checkpoint against its checksum before reading it (as
        ``ndstream verify`` does), so that a file whose bytes changed in place is a fallback
        too, not an error at the first read of it; costs a read of the whole checkpoint.

    Raises
    ------
    StoreError
        If the path does not exist, is not an ndstream store of a supported version, or
        holds no whole checkpoint.
    """
    return Store(path, deep=deep)


class Store:
    """A read-only view of one checkpoint of an ndstream store.

    Layers and groups are addressed by name. Wherever a method takes ``group``: ``None`` pools
    the groups of the first grouping (every sample once); a name or index selects one group;
    a list pools several, all of one grouping (a sample counts once in each grouping, so
    pooling across groupings would count it twice).

    Every read checks what it reads: chunk checksums (Zarr's ``crc32c`` codec) and, when the
    store is opened, the snapshot's manifest (:mod:`ndstream.store.integrity`). Damage is a
    :class:`StoreError`, never a number.

    Parameters
    ----------
    path
        Folder of the store.
    pinned
        The snapshot to read (see :func:`ndstream.store.snapshots.pin`); by default the
        last whole checkpoint, with a warning when that is not the last checkpoint.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        pinned: snapshots.Pinned | None = None,
        deep: bool = False,
    ) -> None:
        if isinstance(path, str) and not path.strip():
            # Path("") is the current folder: a blank argument would read whatever is here.
            raise StoreError("no store path given: name the folder that `ndstream ingest` wrote")
        self.path = Path(path)
        if not self.path.exists():
            raise StoreError(f"no store at {self.path}: the path does not exist")
        if not self.path.is_dir():
            raise StoreError(
                f"{self.path} is a file, not a store; point at the folder that "
                "`ndstream ingest` wrote"
            )
        warn = pinned is None  # a caller that pinned the snapshot itself reports a fallback
        if pinned is None:
            pinned = snapshots.pin(self.path, deep=deep, version=fmt.check_version)
        self.pinned = pinned
        # Every read of this object comes from this one checkpoint, even while an ingest
        # commits newer ones (see ndstream.store.snapshots).
        self.snapshot = pinned.folder
        try:
            # Not the root's inline consolidated metadata: parsing every array's document
            # costs 0.1 s on a 54-layer store; a read opens only the nodes it needs.
            self._root = zarr.open_group(
                self.snapshot, mode="r", zarr_format=3, use_consolidated=False
            )
        except Exception as exc:
            raise StoreError(
                f"{self.path} is not a Zarr v3 store ({type(exc).__name__}: {exc}); "
                "point at the folder that `ndstream ingest` wrote"
            ) from exc
        attrs = self._root.attrs.get(fmt.ROOT_ATTR)
        if not isinstance(attrs, dict):
            raise StoreError(
                f"{self.path} is a Zarr store but not an ndstream store (no '{fmt.ROOT_ATTR}' "
                "attribute); point at the folder that `ndstream ingest` wrote"
            )
        try:
            self.meta = fmt.StoreMeta.from_dict(attrs)
            self.grid = GridSpec.from_dict(self.meta.grid)
        except NdstreamError as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
        self._nodes = {layer.name: layer.node for layer in self.meta.layers}
        if warn and pinned.fallback:
            warnings.warn(self.fallback_note(), StoreDamageWarning, stacklevel=3)

    def fallback_note(self) -> str:
        """What was damaged and which checkpoint is read instead; empty if none was."""
        if not self.pinned.fallback:
            return ""
        committed = self.pinned.committed
        lost = _samples_done(committed) if committed is not None else None
        cost = f", {lost - self.meta.samples_done} fewer" if lost is not None else ""
        name = f"checkpoint {committed.name}" if committed is not None else "the last checkpoint"
        return (
            f"{self.path}: {name} is damaged ({snapshots.brief(list(self.pinned.damage))}); "
            f"reading checkpoint {self.snapshot.name} instead, the newest intact one "
            f"({self.meta.samples_done} samples{cost}). `ndstream verify {self.path}` lists "
            "the damage; re-running the ingest resumes from the intact checkpoint"
        )

    def __repr__(self) -> str:
        return (
            f"<ndstream.Store {str(self.path)!r}: {len(self.layers)} layers, "
            f"{len(self.groups)} groups, {self.meta.samples_done} samples>"
        )

    # -- what is in the store -----------------------------------------------------------------

    @property
    def layers(self) -> list[str]:
        """Layer names, in capture order."""
        return self.meta.layer_names

    @property
    def groups(self) -> list[str]:
        """Group names along the group axis."""
        return list(self.meta.groups)

    @property
    def groupings(self) -> list[str]:
        """Grouping of each group (``"label"``, ``"predicted"``, ...), aligned with groups."""
        return list(self.meta.groupings)

    @property
    def complete(self) -> bool:
        """Whether ingestion finished."""
        return self.meta.complete

    def layer_meta(self, layer: str) -> fmt.LayerMeta:
        """Module type, channel axis, output shape and values per sample of a layer."""
        if not isinstance(layer, str):
            raise LayerNotFoundError(
                f"a layer is named by a str, got {layer!r} ({type(layer).__name__}); name one "
                f"of the store's layers: {listed(self.layers)}"
            )
        for meta in self.meta.layers:
            if meta.name == layer:
                return meta
        raise LayerNotFoundError(_not_found("layer", layer, self.layers))

    def n_neurons(self, layer: str) -> int:
        """Number of neurons of ``layer``."""
        return self.layer_meta(layer).n_neurons

    def node(self, layer: str) -> str:
        """The path of ``layer``'s group in the store (its name, unless the name cannot be a
        store path; see :func:`ndstream.store.format.node_name`), as xarray wants it."""
        self.layer_meta(layer)
        return self._nodes[layer]

    def count(self, layer: str, group: GroupSelector = None) -> int:
        """Values each neuron of ``layer`` received in the selected groups (NaN, ±Inf included).

        With the ``max`` and ``mean`` reductions this is the number of samples.
        """
        idx = self.group_index(group, pool=True)
        return int(self._counts(layer)[idx].sum())

    def counts(self, layer: str) -> xr.DataArray:
        """:meth:`count` of every group of ``layer`` at once (one read): ``[group]``, with
        each group's ``grouping`` as a coordinate. ``dict(store.counts(layer).to_series())``
        gives them by name."""
        coords = self._coords(layer, np.arange(len(self.groups)))
        return labelled(self._counts(layer), ("group",), coords, "count", {"layer": layer})

    def group_counts(self, layer: str) -> dict[str, int]:
        """:meth:`counts` as a plain ``{group: count}`` dict."""
        values = self._counts(layer).tolist()
        return dict(zip(self.groups, (int(v) for v in values), strict=True))

    def _counts(self, layer: str) -> np.ndarray:
        self.layer_meta(layer)
        with self._reading():
            return np.asarray(self._array(layer, "count")[...], dtype=np.int64)

    def group_index(self, group: GroupSelector = None, *, pool: bool = False) -> np.ndarray:
        """Indices on the group axis selected by ``group`` (see the class docstring).

        Parameters
        ----------
        group
            What to select.
        pool
            The selection is pooled into one distribution: refuse groups of several
            groupings, in which every sample would count more than once.
        """
        groups = self.groups
        if group is None:
            first = self.meta.groupings[0]
            return np.array([i for i, g in enumerate(self.meta.groupings) if g == first])
        items = _group_items(group, groups)
        if not items:
            raise ValueError(
                "group=[] selects no group: name at least one, or pass group=None for every sample"
            )
        out = []
        for item in items:
            if isinstance(item, int | np.integer):
                if not -len(groups) <= item < len(groups):
                    raise IndexError(
                        f"group index {item} out of range for {len(groups)} groups; pass "
                        f"0..{len(groups) - 1} (or -{len(groups)}..-1), or the group's name"
                    )
                out.append(int(item) % len(groups))
            elif item in groups:
                out.append(groups.index(item))
            else:
                raise GroupNotFoundError(_not_found("group", str(item), groups))
        if len(set(out)) < len(out):
            twice = sorted({groups[i] for i in out if out.count(i) > 1})
            raise ValueError(
                f"groups {twice} are selected more than once (by name or index); a selection "
                "names each group once, or its samples would count twice"
            )
        kinds = dict.fromkeys(self.meta.groupings[i] for i in out)
        if pool and len(kinds) > 1:
            chosen = [groups[i] for i in out]
            raise ValueError(
                f"groups {chosen} belong to different groupings ({', '.join(kinds)}); every "
                "sample counts once in each grouping, so pooling them would count samples "
                "twice. Pool groups of one grouping, or ask for each group on its own"
            )
        return np.array(out, dtype=np.intp)

    # -- queries ------------------------------------------------------------------------------

    def summary(self, layer: str, group: GroupSelector = None) -> Summary:
        """The finalized sketch of ``layer`` restricted to the selected groups.

        ``group=None`` gives the layer's pooled summary: one group, ``"all"``, every sample
        once, at the resolution of a single group however many groups the store has: the
        layer's ``pooled`` subgroup where it kept a pooled sketch, else the groups of the first
        grouping added up (see ``docs/store-format.md``).
        """
        self.layer_meta(layer)  # a bad argument is the caller's error, not damage
        if group is None:
            with self._reading():
                return self._pooled(layer)
        idx = self.group_index(group)
        # Reading group by group touches only the chunks of the selected groups.
        sel = (slice(None), idx)
        with self._reading():
            return self._summary(layer, idx, sel)

    def _summary(self, layer: str, idx: np.ndarray, sel: tuple[Any, ...]) -> Summary:
        return Summary(
            counts=self._array(layer, "counts").get_orthogonal_selection(sel),
            lower=self._array(layer, "bin_lower")[...],
            upper=self._array(layer, "bin_upper")[...],
            mins=self._array(layer, "min").get_orthogonal_selection(sel),
            maxs=self._array(layer, "max").get_orthogonal_selection(sel),
            min_count=self._array(layer, "min_count").get_orthogonal_selection(sel),
            max_count=self._array(layer, "max_count").get_orthogonal_selection(sel),
            atom=self._array(layer, "atom")[...],
            atom_count=self._array(layer, "atom_count").get_orthogonal_selection(sel),
            nan=self._array(layer, "nan_count").get_orthogonal_selection(sel),
            posinf=self._array(layer, "posinf_count").get_orthogonal_selection(sel),
            neginf=self._array(layer, "neginf_count").get_orthogonal_selection(sel),
            totals=self._array(layer, "count")[...][idx],
            groups=tuple(self.groups[i] for i in idx),
            grid=self.grid,
            resolution=self.resolution(layer),
            # The fine counts are of every row: only a selection that holds every row has them.
            fine=(
                self._fine(layer, "")
                if holds_every_row(self.meta.groupings, len(self.groups), idx)
                else None
            ),
        )

    def _pooled(self, layer: str) -> Summary:
        if not self._has_pooled(layer):
            idx = self.group_index(None)
            return self._summary(layer, idx, (slice(None), idx)).collapsed(POOLED_GROUP)
        p = fmt.POOLED + "/"
        return Summary(
            counts=self._array(layer, p + "counts")[...],
            lower=self._array(layer, p + "bin_lower")[...],
            upper=self._array(layer, p + "bin_upper")[...],
            mins=self._array(layer, p + "min")[...],
            maxs=self._array(layer, p + "max")[...],
            min_count=self._array(layer, p + "min_count")[...],
            max_count=self._array(layer, p + "max_count")[...],
            atom=self._array(layer, p + "atom")[...],
            atom_count=self._array(layer, p + "atom_count")[...],
            nan=self._array(layer, p + "nan_count")[...],
            posinf=self._array(layer, p + "posinf_count")[...],
            neginf=self._array(layer, p + "neginf_count")[...],
            totals=self._array(layer, p + "count")[...],
            groups=(POOLED_GROUP,),
            grid=self.grid,
            resolution=np.asarray(self._array(layer, p + "resolution")[...], dtype=np.int32),
            fine=self._fine(layer, p),
        )

    def _fine(self, layer: str, prefix: str) -> np.ndarray | None:
        """The layer's fine counts, or None where it keeps none."""
        if f"{self.node(layer)}/{prefix}{fmt.FINE}" not in self._root:
            return None
        return self._array(layer, prefix + fmt.FINE)[...]

    @overload
    def quantile(
        self,
        layer: str,
        q: float | Sequence[float] | np.ndarray,
        group: GroupSelector = None,
        *,
        by_group: bool = False,
        bounds: Literal[False] = False,
    ) -> xr.DataArray: ...

    @overload
    def quantile(
        self,
        layer: str,
        q: float | Sequence[float] | np.ndarray,
        group: GroupSelector = None,
        *,
        by_group: bool = False,
        bounds: Literal[True],
    ) -> xr.Dataset: ...

    def quantile(
        self,
        layer: str,
        q: float | Sequence[float] | np.ndarray,
        group: GroupSelector = None,
        *,
        by_group: bool = False,
        bounds: bool = False,
    ) -> xr.DataArray | xr.Dataset:
        """Quantiles of each neuron: ``[neuron]`` for a scalar ``q``, else ``[neuron, quantile]``.

        NaN is left out; ±Inf sit at the ends. A neuron with no values gives NaN.

        Parameters
        ----------
        layer
            The layer.
        q
            Quantile levels in [0, 1]: one, or a 1-D list of several (the ``quantile``
            dimension).
        group
            The groups to read (see the class docstring): pooled into one distribution, or,
            with ``by_group``, each on its own.
        by_group
            One answer per selected group, along a ``group`` dimension after ``neuron``
            (``group=None``: every group of the store, in one read).
        bounds
            Return an :class:`xarray.Dataset` of the ``estimate`` and the ``lower`` and
            ``upper`` ends of the interval of ranks it is guaranteed to stand for.
        """
        qs = quantile_levels(q)  # before any read: a bad q is the caller's error

        def answer(s: Summary) -> tuple[np.ndarray, ...]:
            if bounds:
                b = s.quantile(qs, True)
                return b.estimate, b.lower, b.upper
            return (s.quantile(qs),)

        parts, idx = self._per_group(layer, group, by_group, answer)
        dims = ["neuron", *(["group"] if idx is not None else []), *(["quantile"] * qs.ndim)]
        coords = {**self._coords(layer, idx), "quantile": qs}
        return self._labelled(parts, dims, coords, "quantile", self._attrs(layer, group, idx))

    @overload
    def cdf(
        self,
        layer: str,
        values: np.ndarray | Sequence[float] | float,
        group: GroupSelector = None,
        *,
        by_group: bool = False,
        bounds: Literal[False] = False,
    ) -> xr.DataArray: ...

    @overload
    def cdf(
        self,
        layer: str,
        values: np.ndarray | Sequence[float] | float,
        group: GroupSelector = None,
        *,
        by_group: bool = False,
        bounds: Literal[True],
    ) -> xr.Dataset: ...

    def cdf(
        self,
        layer: str,
        values: np.ndarray | Sequence[float] | float,
        group: GroupSelector = None,
        *,
        by_group: bool = False,
        bounds: bool = False,
    ) -> xr.DataArray | xr.Dataset:
        """Quantile rank in [0, 1] of values within each neuron's distribution.

        Parameters
        ----------
        layer
            The layer.
        values
            A scalar (the same value for every neuron), ``[neuron]`` (one value per neuron;
            the answer is ``[neuron]``) or ``[neuron, k]`` (``k`` values per neuron at once;
            the answer is ``[neuron, value]``, the values as the ``at`` coordinate).
        group, by_group, bounds
            As for :meth:`quantile`; with ``bounds``, the interval in which each exact rank
            is guaranteed to lie.
        """
        vals = cdf_values(values)
        n = self.n_neurons(layer)
        if vals.ndim > 2 or (vals.ndim >= 1 and vals.shape[0] != n):
            raise ValueError(
                f"values must be a scalar, [{n}] or [{n}, k] for layer {layer!r} (one row per "
                f"neuron), got shape {list(vals.shape)}"
            )

        def answer(s: Summary) -> tuple[np.ndarray, ...]:
            if bounds:
                b = s.cdf(vals, True)
                return b.estimate, b.lower, b.upper
            return (s.cdf(vals),)

        parts, idx = self._per_group(layer, group, by_group, answer)
        dims = ["neuron", *(["group"] if idx is not None else [])]
        coords = self._coords(layer, idx)
        if vals.ndim == 2:
            dims.append("value")
            coords["at"] = (("neuron", "value"), vals)
        return self._labelled(parts, dims, coords, "cdf", self._attrs(layer, group, idx))

    def histogram(
        self,
        layer: str,
        group: GroupSelector = None,
        bins: int | np.ndarray = 64,
        *,
        by_group: bool = False,
    ) -> xr.DataArray:
        """Counts ``[neuron, bin]`` on display bins, the edges as the ``bin_lower`` and
        ``bin_upper`` coordinates.

        ``bins`` is a number of equal-width bins spanning the selected groups' finite min to
        max (one axis shared by all neurons), or explicit edges (finite, strictly ascending;
        ±Inf values are never in a display bin). Sketch bins are
        spread over display bins in proportion to overlap; no mass is invented. With
        ``by_group``, ``[neuron, group, bin]`` on one shared axis.
        """
        self.layer_meta(layer)
        if np.ndim(bins) == 0:
            if isinstance(bins, bool | np.bool_) or not isinstance(bins, int | np.integer):
                raise ValueError(
                    f"bins must be a whole number of bins (an int, at least 1) or the edges "
                    f"(a 1-D array, ascending), got {bins!r}"
                )
            n_bins = int(bins)
            if n_bins < 1:
                raise ValueError(f"bins must be at least 1, got {n_bins}")
            if by_group:
                every = list(range(len(self.groups)))
                lo, hi = self.extent(layer, every if group is None else group)
            else:
                self.group_index(group, pool=True)
                lo, hi = _finite_range(self.summary(layer, group))
            edges = np.linspace(lo, hi, n_bins + 1)
        else:
            edges = display_edges(bins)
        parts, idx = self._per_group(layer, group, by_group, lambda s: (s.histogram(edges),))
        dims = ["neuron", *(["group"] if idx is not None else []), "bin"]
        coords = {
            **self._coords(layer, idx),
            "bin_lower": ("bin", edges[:-1]),
            "bin_upper": ("bin", edges[1:]),
        }
        return labelled(parts[0], dims, coords, "count", self._attrs(layer, group, idx))

    def extent(self, layer: str, group: GroupSelector = None) -> tuple[float, float]:
        """Smallest and largest finite value of ``layer`` in the selected groups.

        Reads only the min and max arrays. A layer without finite values gives ``(-0.5, 0.5)``
        around 0; one with a single distinct value, ``(v - 0.5, v + 0.5)``.
        """
        self.layer_meta(layer)
        idx = self.group_index(group)
        sel = (slice(None), idx)
        with self._reading():
            mins = self._array(layer, "min").get_orthogonal_selection(sel)
            maxs = self._array(layer, "max").get_orthogonal_selection(sel)
        mins, maxs = mins[np.isfinite(mins)], maxs[np.isfinite(maxs)]
        lo = float(mins.min()) if mins.size else 0.0
        hi = float(maxs.max()) if maxs.size else lo
        return (lo, hi) if hi > lo else (lo - 0.5, lo + 0.5)

    def rank_bound(self, layer: str, group: GroupSelector = None) -> xr.DataArray:
        """``[neuron]`` (``[neuron, group]`` for a list of groups) the widest rank interval an
        answer of each neuron can have: no quantile or rank is off by more.

        It is the largest share of a neuron's values that one bin holding several distinct
        values counts (0 where every value is kept exactly; NaN for a group without values),
        computed when the store was written. ``group=None`` is the pooled summary's.
        """
        out, idx = self._rank_bound(layer, group)
        dims = ["neuron", *(["group"] if idx is not None else [])]
        attrs = self._attrs(layer, group, idx)
        return labelled(out, dims, self._coords(layer, idx), "rank_bound", attrs)

    def worst_rank_bound(self, layer: str) -> tuple[float, float]:
        """The widest :meth:`rank_bound` of ``layer``: pooled, and in its worst group (NaN
        where no neuron has values)."""
        pooled = self._rank_bound(layer, None)[0]
        groups = self._rank_bound(layer, list(range(len(self.groups))))[0]
        return tuple(  # type: ignore[return-value]
            float(np.nanmax(a)) if np.isfinite(a).any() else float("nan") for a in (pooled, groups)
        )

    def _rank_bound(self, layer: str, group: GroupSelector) -> tuple[np.ndarray, np.ndarray | None]:
        # The arguments are checked before the read: an error in them is the caller's, which
        # a read would report as damage.
        self.layer_meta(layer)
        idx = None if group is None else self.group_index(group)
        with self._reading():
            if idx is None and self._has_pooled(layer):
                return np.asarray(self._array(layer, f"{fmt.POOLED}/rank_bound")[...])[:, 0], None
            if idx is None:
                # The first grouping's groups added up, bounded by the rule the writer applies
                # to a pooled subgroup (in NumPy at this size: `info` loads no kernel).
                return self._pooled(layer).group_rank_bounds()[:, 0], None
            out = np.asarray(
                self._array(layer, "rank_bound").get_orthogonal_selection((slice(None), idx))
            )
        if isinstance(group, str | int | np.integer):
            return out[:, 0], None
        return out, idx

    def to_xarray(self, layer: str) -> xr.Dataset:
        """The layer as an :class:`xarray.Dataset` with dims ``neuron``, ``group``, ``bin``."""
        import xarray as xr

        return xr.open_zarr(self.snapshot, group=self.node(layer), consolidated=False)

    def resolution(self, layer: str) -> np.ndarray:
        """``[neuron]`` mantissa bits of each neuron's bins: ``2**resolution`` bins per octave."""
        self.layer_meta(layer)
        with self._reading():
            return np.asarray(self._array(layer, "resolution")[...], dtype=np.int32)

    def instances(self) -> InstanceTable | None:
        """The recorded instances with their values in every layer, or ``None`` if the run
        recorded none (see :class:`~ndstream.store.instances.InstanceSpec`)."""
        if fmt.INSTANCES not in self._root:
            return None
        with self._reading():
            group: Any = self._root[fmt.INSTANCES]
            # Arrays added to the format later are optional: older stores read as defaults.
            fields = {
                name: np.asarray(group[name][...])
                for name in fmt.INSTANCE_DIMS
                if name in fmt.INSTANCE_REQUIRED or name in group
            }
            attacks = dict(group.attrs.get("attacks", {}))
        values = {layer: self.instance_values(layer) for layer in self.layers}
        return InstanceTable(**fields, values=values, attacks=attacks)

    def instance_values(self, layer: str) -> np.ndarray:
        """``[instance, value, neuron]`` activations of the recorded instances in ``layer``
        (``value`` is 1 for the ``max`` and ``mean`` reductions, the positions for ``none``)."""
        n = self.n_neurons(layer)  # checks the name before the read
        if fmt.INSTANCES not in self._root:
            return np.zeros((0, 1, n), dtype=np.float32)
        with self._reading():
            return np.asarray(self._array(layer, "instance_values")[...])

    def divergence(
        self,
        inputs: InstanceTable | Mapping[str, np.ndarray] | None = None,
        group: str | Sequence[str] | None = None,
        layers: str | Sequence[str] | None = None,
        *,
        predicted: np.ndarray | None = None,
    ) -> Divergence:
        """Neural divergence of inputs from groups: per neuron, per layer and overall.

        Parameters
        ----------
        inputs
            Recorded instances (``None``: this store's), or new activations by layer, each
            ``[input, neuron]`` or ``[input, position, neuron]`` (as
            :class:`~ndstream.ActivationCapture` gives them with the store's reduction).
        group
            One group for every input, one per input, or ``None``: each input's predicted
            class (the true-label group of that class, else its ``predicted`` group).
        layers
            Layers to score (a name or a list); ``None``: every layer of the store for its
            instances, the layers given for new activations.
        predicted
            ``[input]`` predicted classes, for ``group=None`` with new activations.

        Returns
        -------
        Divergence
            Signed per-neuron normal scores with their bounds, per-layer and overall scores
            (definition and evidence: ``docs/divergence.md``).
        """
        from ..divergence import divergence

        table = self.instances() if inputs is None else inputs
        if table is None:
            raise StoreError(f"{self.path} recorded no instances; pass activations to score")
        return divergence(self, table, group, layers, predicted=predicted)

    def contrast(
        self,
        layer: str,
        a: Operand,
        b: Operand,
        metric: str = "effect",
        *,
        order: str = "abs",
        layer_b: str | None = None,
        align: Sequence[int] | np.ndarray | None = None,
    ) -> xr.Dataset:
        """Which neurons of ``layer`` differ between ``a`` and ``b``: every neuron's score,
        largest first, with the interval the sketches guarantee.

        Parameters
        ----------
        layer
            The layer.
        a, b
            Each a group selection of this store (a name, an index, a list of names or
            indices pooled, ``None`` for every sample), another :class:`Store` (the groups of
            the same names as the other side selects, whichever side it is on, or all of it
            where the other side selects none: ``None``, a store, activations),
            ``(store, group)``, or inputs' activations kept exactly, as a NumPy array or
            xarray DataArray: ``[neuron]`` or ``[input, neuron]``, such as
            ``store.instance_values(layer)[k]``. Activations are rounded to float32, the
            precision a store keeps. A list is always groups: pass activations as an array.
        metric
            ``"median"`` (median difference), ``"effect"`` (that difference over the mean
            of the two IQRs), ``"ks"`` (Kolmogorov-Smirnov distance), ``"wasserstein"``
            (Wasserstein-1) or ``"auroc"`` (``P(A > B) + P(A = B) / 2``); see
            ``docs/contrast.md``.
        order
            ``"abs"``: the largest difference first (for ``auroc``, the farthest from 0.5);
            ``"signed"``: the largest score first; ``"neuron"``: in neuron order.
        layer_b
            The layer's name in the other store (a side given as a store), where it differs.
        align
            For each neuron of ``layer``, its index on side ``b``, where the two do not
            match one to one.

        Returns
        -------
        xarray.Dataset
            ``score``, ``lower`` and ``upper`` over ``neuron`` (in ``order``): the exact score
            of the values behind the two sides lies in ``[lower, upper]``. Positive
            ``median`` and ``effect`` (``auroc`` above 0.5) mean larger values in ``a``.

        Raises
        ------
        LayerNotFoundError
            If the other store has no layer of that name (pass ``layer_b``).
        GroupNotFoundError
            If a store has no group of a name; the message names the store and its groups.
        SpecMismatchError
            If a side differs in width from ``layer`` (name the layer with ``layer_b``, or,
            for side ``b``, pass ``align``).
        ValueError
            If an argument is unknown, or ``layer_b`` is given with no other store.
        TypeError
            If a side is none of the above (a list of numbers, a tensor: pass an array).
        """
        from ..explore.contrast import contrast_layer

        return contrast_layer(self, layer, a, b, metric, order=order, layer_b=layer_b, align=align)

    def plot(
        self,
        layer: str,
        group: GroupSelector = None,
        instances: Sequence[str | int] = (),
        sort: str | SortSpec | None = None,
        *,
        rows: int = 64,
        width: int | None = 600,
        axis: str = "robust",
        layout: str = "overlay",
        png: bool = False,
    ) -> hv.Overlay | bytes:
        """The dashboard's Activation view of ``layer``, to show inline in a notebook.

        Parameters
        ----------
        layer
            The layer.
        group
            The groups to draw, each as its own density bar (a name or a list; ``None``: the
            first two groups of the first grouping).
        instances
            Instance ids to draw as dots (see ``store.instances()``; ids are the dataset
            indices, ``"<index>-<condition>"`` for the inputs of attacked pairs).
        sort
            A sort of ``ndstream.explore.SORTS`` by name (its items are the groups drawn,
            then the instances: ``"effect"`` sorts by the effect size of the first group
            against the second), or a :class:`~ndstream.explore.SortSpec`; by default the
            median of the first group, largest first.
        rows
            How many neurons, from the top of the order.
        width
            Plot width in pixels; ``None`` fills the cell.
        axis
            The activation axis: ``"robust"`` (1st to 99th percentile, rows with values
            beyond marked at the edges), ``"full"`` or ``"symlog"`` (see
            ``ndstream.explore.display_axis``).
        layout
            ``"overlay"`` (groups overlaid in each neuron's row) or ``"rows"`` (a sub-row per
            group).
        png
            Return the PNG bytes of the dashboard's export instead (no browser needed).
        """
        from ..views.plot import layer_plot, layer_png

        if png:
            return layer_png(self, layer, group, instances, sort, rows=rows, axis=axis,
                             layout=layout)  # fmt: skip
        return layer_plot(self, layer, group, instances, sort, rows=rows, width=width,
                          axis=axis, layout=layout)  # fmt: skip

    @property
    def checkpoint_time(self) -> str:
        """When the checkpoint this object reads was committed (ISO 8601, UTC)."""
        return self.meta.updated

    def _per_group(
        self,
        layer: str,
        group: GroupSelector,
        by_group: bool,
        answer: Callable[[Summary], tuple[np.ndarray, ...]],
    ) -> tuple[tuple[np.ndarray, ...], np.ndarray | None]:
        """``answer`` of the selection pooled, or of each selected group (stacked on axis 1,
        with the groups' indices); the counts are read once either way."""
        self.layer_meta(layer)
        if not by_group:
            self.group_index(group, pool=True)
            return answer(self.summary(layer, group)), None
        idx = np.arange(len(self.groups)) if group is None else self.group_index(group)
        with self._reading():
            summary = self._summary(layer, idx, (slice(None), idx))
        each = [answer(summary.select([k])) for k in range(idx.size)]
        return tuple(np.stack(part, axis=1) for part in zip(*each, strict=True)), idx

    def _coords(self, layer: str, idx: np.ndarray | None) -> dict[str, Any]:
        coords: dict[str, Any] = {"neuron": np.arange(self.n_neurons(layer))}
        if idx is not None:
            coords["group"] = [self.groups[i] for i in idx]
            coords["grouping"] = ("group", [self.groupings[i] for i in idx])
        return coords

    def _attrs(self, layer: str, group: GroupSelector, idx: np.ndarray | None) -> dict[str, Any]:
        """The layer, and for a pooled answer the groups it pools."""
        if idx is not None:
            return {"layer": layer}
        if group is None:
            return {"layer": layer, "group": POOLED_GROUP}
        names = [self.groups[i] for i in self.group_index(group)]
        return {"layer": layer, "group": " + ".join(names)}

    @staticmethod
    def _labelled(
        parts: tuple[np.ndarray, ...],
        dims: Sequence[str],
        coords: dict[str, Any],
        name: str,
        attrs: dict[str, Any],
    ) -> xr.DataArray | xr.Dataset:
        if len(parts) == 3:
            return with_bounds(*parts, dims, coords, attrs)
        return labelled(parts[0], dims, coords, name, attrs)

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Reads that fail, or that a vanished snapshot would turn into zeros, raise
        :class:`StoreError`: zarr reads a missing chunk file as its fill value."""
        try:
            yield
        except NdstreamError:
            raise
        except Exception as exc:
            if "checksum" in str(exc).lower():  # zarr's crc32c codec: bytes changed in place
                raise StoreError(
                    f"{self.path}: checkpoint {self.snapshot.name} is damaged: a chunk's bytes "
                    "no longer match its checksum. ndstream.open_store(path, deep=True) checks "
                    "every byte and reads the newest intact checkpoint instead; "
                    f"`ndstream verify {self.path}` names the damaged files"
                ) from exc
            raise StoreError(
                f"could not read {self.path} ({type(exc).__name__}: {exc}); the store is "
                f"damaged or was removed. Open it again; `ndstream verify {self.path}` lists "
                "any damage, and re-running the ingest resumes from an intact checkpoint"
            ) from exc
        if not (self.snapshot / "zarr.json").is_file():
            raise self._vanished()

    def _vanished(self) -> StoreError:
        return StoreError(
            f"the checkpoint of {self.path} that this Store was reading is gone (the store "
            "was deleted, replaced, or moved on by a running ingest); open it again with "
            "ndstream.open_store to read its latest checkpoint"
        )

    def _has_pooled(self, layer: str) -> bool:
        """Whether ``layer`` kept a pooled sketch of its own (a ``pooled`` subgroup)."""
        return f"{self.node(layer)}/{fmt.POOLED}" in self._root

    def _array(self, layer: str, name: str) -> Any:
        node = self.node(layer)
        try:
            return self._root[f"{node}/{name}"]
        except KeyError as exc:
            # Arrays are opened on first use, so a checkpoint that vanished since the
            # Store was opened shows up here as a missing node.
            if not (self.snapshot / "zarr.json").is_file():
                raise self._vanished() from exc
            raise StoreError(f"store {self.path} is missing array {node}/{name}") from exc


def _samples_done(folder: Path) -> int | None:
    """``samples_done`` of the snapshot in ``folder``, if its root document can be read."""
    try:
        doc = json.loads((folder / "zarr.json").read_bytes())
        return int(doc["attributes"][fmt.ROOT_ATTR]["samples_done"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _finite_range(summary: Summary) -> tuple[float, float]:
    with np.errstate(invalid="ignore"):
        mins, maxs = (
            summary.mins[np.isfinite(summary.mins)],
            summary.maxs[np.isfinite(summary.maxs)],
        )
    lo = float(mins.min()) if mins.size else 0.0
    hi = float(maxs.max()) if maxs.size else 1.0
    return (lo, hi) if hi > lo else (lo - 0.5, lo + 0.5)


def _group_items(group: Any, groups: Sequence[str]) -> list[str | int]:
    """The groups a selection names, each a name or an index; any other type is refused."""
    items: list[Any]
    if isinstance(group, str):
        items = [group]
    else:
        try:
            items = list(group)
        except TypeError:  # one item (an index), or something refused below
            items = [group]
    for item in items:
        if isinstance(item, bool | np.bool_) or not isinstance(item, str | int | np.integer):
            raise TypeError(
                f"group {item!r} ({type(item).__name__}) is no group: select groups by name "
                f"(a str, such as {groups[0]!r}), by index (an int), a list of them, or None "
                "for every sample"
            )
    return items


def _not_found(kind: str, name: str, valid: Sequence[str]) -> str:
    return f"no {kind} {name!r} in this store; {near_names(name, valid, kind + 's')}"
