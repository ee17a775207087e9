"""A layer's Activation view in a notebook, and as a PNG, in one call.

:func:`layer_plot` is what :meth:`ndstream.Store.plot` returns: the dashboard's density bars
(opacity = density) of the chosen groups for a page of neurons in the chosen order, with
instances as dots, as a HoloViews overlay that renders inline. :func:`layer_png` draws the
same page with the dashboard's PNG export (Pillow, no browser).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import holoviews as hv

from ..explore import SORTS, LayerFrame, SortSpec, describe, neuron_order, sort_key
from ..explore.display_axis import AXES
from ..explore.neuron_order import KEY_NAMES
from ..store.reader import GroupSelector
from .activation import activation_panel
from .export import png_bytes
from .layer_page import LayerPage, layer_page
from .palette import GROUP_COLOURS, group_colours, instance_colours

if TYPE_CHECKING:
    from ..store.reader import Store

__all__ = ["layer_plot", "layer_png"]


def layer_plot(
    store: Store,
    layer: str,
    group: GroupSelector = None,
    instances: Sequence[str | int] = (),
    sort: str | SortSpec | None = None,
    *,
    rows: int = 64,
    width: int | None = 600,
    axis: str = "robust",
    layout: str = "overlay",
) -> hv.Overlay:
    """The Activation view of ``layer``: see :meth:`ndstream.Store.plot`."""
    return activation_panel(_plan(store, layer, group, instances, sort, rows, axis, layout)[0],
                            width=width)  # fmt: skip


def layer_png(
    store: Store,
    layer: str,
    group: GroupSelector = None,
    instances: Sequence[str | int] = (),
    sort: str | SortSpec | None = None,
    *,
    rows: int = 64,
    axis: str = "robust",
    layout: str = "overlay",
) -> bytes:
    """The same page as :func:`layer_plot`, drawn as the dashboard's PNG export draws it."""
    page, legend = _plan(store, layer, group, instances, sort, rows, axis, layout)
    caption = f"{store.path.name} - first {page.n_rows} neurons - axis: {AXES[axis]}"
    return png_bytes([page], legend, caption)


def _plan(
    store: Store,
    layer: str,
    group: GroupSelector,
    instances: Sequence[str | int],
    sort: str | SortSpec | None,
    rows: int,
    axis: str,
    layout: str,
) -> tuple[LayerPage, dict[str, str]]:
    """The plan of the first ``rows`` neurons in order, and its legend (label -> colour)."""
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    if group is None:
        first = store.groupings[0]
        groups = [g for g, k in zip(store.groups, store.groupings, strict=True) if k == first]
        groups = groups[:2]
    else:
        groups = [store.groups[i] for i in store.group_index(group)]
    if len(groups) > len(GROUP_COLOURS):
        raise ValueError(f"draw at most {len(GROUP_COLOURS)} groups at once, got {len(groups)}")
    frame = LayerFrame(store, layer)
    known = frame.instance_ids
    dots = [str(i) for i in instances]
    missing = [i for i in dots if i not in known]
    if missing:
        raise ValueError(f"no instances {missing} in this store; it has {known[:10]}")
    spec = _spec(sort, groups, dots)
    key = sort_key(frame, spec)
    colours = group_colours(groups)
    dot_colours = instance_colours([(i, "") for i in dots])
    page = layer_page(
        frame, neuron_order(key, spec.descending)[:rows], groups, colours,
        title=f"{layer}: {describe(spec)}", axis=axis, layout=layout,
        dots=[(i, dot_colours[i]) for i in dots], key=key if spec.by != "index" else None,
        key_name=KEY_NAMES[spec.by],
    )  # fmt: skip
    counts = store.group_counts(layer)
    legend = {f"{g} (n={counts[g]})": colours[g] for g in groups}
    legend |= {f"instance {i}": dot_colours[i] for i in dots}
    return page, legend


def _spec(sort: str | SortSpec | None, groups: list[str], dots: list[str]) -> SortSpec:
    """A sort by name, its items taken from the groups drawn (then the instances)."""
    if isinstance(sort, SortSpec):
        return sort
    by = sort or "median"
    if by not in SORTS:
        raise ValueError(f"unknown sort {by!r}; choose one of {', '.join(SORTS)}")
    items = {
        "group": [f"group:{g}" for g in groups],
        "instance": [f"instance:{i}" for i in dots],
    }
    items["any"] = items["group"] + items["instance"]
    chosen: list[str] = []
    for want in SORTS[by]:
        left = [x for x in items[want] if x not in chosen]
        if not left:
            raise ValueError(
                f"sort {by!r} takes {' and '.join(SORTS[by])} items: draw more groups (or "
                "instances), or pass a SortSpec"
            )
        chosen.append(left[0])
    a, b = [*chosen, "", ""][:2]
    return SortSpec(by, a, b, descending=by != "index")
