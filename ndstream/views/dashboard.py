"""The NeuralDivergence dashboard: layers, groups and instances views around the Activation view.

:class:`NeuralDivergence` is a ``param.Parameterized`` whose parameters are the whole view
state (layers, groups, instances, sort, hidden and marked neurons, page). Its widgets are
built once from those parameters and stay bound to them; the URL mirrors them, so a link
reproduces a view. Each selected layer is a ``DynamicMap`` that redraws when the state
changes, with a ``Tap`` stream that hides or marks the clicked neuron.

Live mode: while an ingest writes the store, a periodic callback checks which checkpoint is
current (one ``readlink``) and, when it moved on, opens the new one and redraws. A reader
never sees a checkpoint in flight (see :mod:`ndstream.store.snapshots`).

Large layers are paged: the sort runs over all neurons, and a page of ``rows`` of them is
drawn, at 10 px a row; the page slider walks through the rest.
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import holoviews as hv
import numpy as np
import panel as pn
import param

from ..errors import NdstreamError
from ..layerframe import LayerFrame
from ..ordering import SORTS, SortSpec, neuron_order, sort_key
from ..store import Store, open_store, snapshots
from .activation import Axes, activation_layers, composite, panel_height, row_of
from .export import PanelImage, csv_text, png_bytes
from .fragments import legend_html, order_table_html, png_uri, status_html, thumbnails_html
from .palette import GROUP_COLOURS, group_colours, instance_colours

__all__ = ["NeuralDivergence", "dashboard"]

SORT_LABELS = {
    "median of a group": "median",
    "an instance's activation": "instance",
    "difference of two items": "difference",
    "divergence of an instance from a group": "divergence",
    "spread (IQR) of a group": "iqr",
    "neuron index": "index",
}
URL_PARAMS = {
    "layers": "layers", "groups": "groups", "instances": "instances", "sort": "sort",
    "sort_a": "a", "sort_b": "b", "descending": "desc", "hidden": "hidden",
    "marked": "marked", "page": "page", "rows": "rows",
}  # fmt: skip
_DEFAULT_LAYERS = 3
_CHECKBOX_GROUPS = 40  # more groups than this get a searchable multi-choice


class NeuralDivergence(param.Parameterized):
    """The dashboard over one store.

    Parameters
    ----------
    store
        Path of the store; it comes from the command line, never from the browser.
    live
        Follow an ingest that is writing the store.
    poll_seconds
        How often live mode checks for a new checkpoint.
    """

    layers = param.ListSelector(
        default=[], objects=[], check_on_set=True, doc="Layers shown, in store order."
    )
    groups = param.ListSelector(
        default=[], objects=[], check_on_set=True, doc="Groups drawn, bottom to top."
    )
    instances = param.ListSelector(
        default=[], objects=[], check_on_set=True, doc="Instances drawn as dots."
    )
    sort: Any = param.Selector(default="median", objects=list(SORTS), doc="What neurons sort by.")
    sort_a = param.String(default="", doc="First item of the sort (group:... or instance:...).")
    sort_b = param.String(default="", doc="Second item of the sort.")
    descending = param.Boolean(default=True, doc="Largest first.")
    hidden = param.Dict(default={}, doc="Hidden neuron ids per layer.")
    marked = param.Dict(default={}, doc="Marked neuron ids per layer.")
    page = param.Integer(default=0, bounds=(0, None), doc="Page of rows shown.")
    rows: Any = param.Selector(default=64, objects=[32, 64, 128, 256, 512], doc="Rows per page.")
    click: Any = param.Selector(default="hide", objects=["hide", "mark"], doc="What a click does.")
    live = param.Boolean(default=True, doc="Follow an ingest that writes the store.")

    def __init__(self, store: str | os.PathLike[str], *, poll_seconds: float = 1.0, **params: Any):
        self._ready = False  # parameter watchers wait until the widgets exist
        super().__init__(**params)
        self.path = Path(store)
        self.poll_seconds = poll_seconds
        self.store: Store = open_store(self.path)  # raises a clear StoreError on a bad path
        self._frames: dict[str, LayerFrame] = {}
        self._shown: dict[str, np.ndarray] = {}
        self._located: int | None = None
        self._redraw = hv.streams.Stream.define("Redraw", version=0)()
        self._layer_views: dict[tuple[str, int], pn.Column] = {}
        self._axes: dict[str, Axes] = {}
        self._tables: dict[str, pn.pane.HTML] = {}
        self._sorted: dict[str, tuple[Any, np.ndarray, np.ndarray]] = {}
        self._quiet = False  # set while the code, not the user, changes widgets
        self._refreshing = False
        self._thumbnail_uris: dict[str, str] = {}
        self._sync_choices(first=True)
        self._build_widgets()
        self._ready = True
        self._refresh()

    # -- store --------------------------------------------------------------------------

    def frame(self, layer: str) -> LayerFrame:
        """The statistics of ``layer`` in the checkpoint on screen."""
        if layer not in self._frames:
            self._frames[layer] = _shared_frame(self.store, layer)
        return self._frames[layer]

    def reload(self) -> bool:
        """Open the store's latest checkpoint if it moved on; returns whether it did."""
        if snapshots.current(self.path) == self.store.snapshot:
            return False
        self.store = open_store(self.path)
        self._frames.clear()
        self._sync_choices(first=False)
        self._refresh()
        return True

    def _sync_choices(self, first: bool) -> None:
        """Offer the store's layers, groups and instances; keep the selections that remain."""
        store = self.store
        counts = store.counts(store.layers[0])
        self._group_counts = counts
        sizes = {name: store.n_neurons(name) for name in store.layers}
        self.param.layers.objects = {f"{n} ({sizes[n]})": n for n in store.layers}
        self.param.groups.objects = {f"{g} (n={counts[g]})": g for g in store.groups}
        frame = self.frame(store.layers[0])
        table = frame.instances
        ids = frame.instance_ids
        self._instance_info = {
            iid: _instance_label(table, row, iid) for row, iid in enumerate(ids)
        } if table is not None else {}  # fmt: skip
        self.param.instances.objects = {label: iid for iid, label in self._instance_info.items()}
        self._conditions = {
            iid: str(table.condition[row]) for row, iid in enumerate(ids)
        } if table is not None else {}  # fmt: skip
        with param.parameterized.batch_call_watchers(self):
            if first:
                self._defaults()
            self.layers = [x for x in self.layers if x in store.layers]
            self.groups = [x for x in self.groups if x in store.groups]
            self.instances = [x for x in self.instances if x in ids]

    def _defaults(self) -> None:
        store = self.store
        self.layers = store.layers[-_DEFAULT_LAYERS:]
        first = store.groupings[0]
        self.groups = [g for g, k in zip(store.groups, store.groupings, strict=True) if k == first][
            :2
        ]
        ids = list(self._instance_info)
        self.instances = ids[:1]
        if self.groups:
            self.sort, self.sort_a = "median", f"group:{self.groups[0]}"

    # -- widgets ------------------------------------------------------------------------

    def _build_widgets(self) -> None:
        w = pn.widgets
        self._w_layers = w.CheckBoxGroup.from_param(
            self.param.layers, label="Layers", css_classes=["nd-layers"]
        )
        # Checkboxes read best for a few groups; ImageNet's thousands need a search.
        groups_widget = (
            w.CheckBoxGroup if len(self.store.groups) <= _CHECKBOX_GROUPS else w.MultiChoice
        )
        self._w_groups = groups_widget.from_param(
            self.param.groups, label="Groups", css_classes=["nd-groups"]
        )
        self._w_instances = w.MultiChoice.from_param(
            self.param.instances, label="Instances", css_classes=["nd-instances"]
        )
        self._w_sort = w.Select(
            label="Sort neurons by", options=SORT_LABELS, value=self.sort, css_classes=["nd-sort"]
        )
        self._w_a = w.Select(label="item", options={}, css_classes=["nd-sort-a"])
        self._w_b = w.Select(label="minus item", options={}, css_classes=["nd-sort-b"])
        self._w_desc = w.Checkbox.from_param(
            self.param.descending, label="descending", css_classes=["nd-desc"]
        )
        self._w_rows = w.Select.from_param(
            self.param.rows, label="rows per page", css_classes=["nd-rows"]
        )
        self._w_page = w.IntSlider(
            label="page", start=0, end=1, value=self.page, css_classes=["nd-page"]
        )
        self._w_click = w.RadioButtonGroup.from_param(
            self.param.click, label="click a neuron to", css_classes=["nd-click"]
        )
        self._w_find = w.TextInput(
            label="jump to neuron id", placeholder="e.g. 17", css_classes=["nd-find"]
        )
        self._w_show = w.Button(label="Show hidden", css_classes=["nd-show-hidden"])
        self._w_unmark = w.Button(label="Clear marks", css_classes=["nd-clear-marks"])
        self._w_live = w.Checkbox.from_param(
            self.param.live, label="live: follow the ingest", css_classes=["nd-live"]
        )
        self._w_png = w.FileDownload(
            callback=self._png,
            filename="ndstream-view.png",
            label="PNG of the view",
            embed=False,
            css_classes=["nd-png"],
        )
        self._w_csv = w.FileDownload(
            callback=self._csv, filename="ndstream-neurons.csv", label="CSV of sorted neurons",
            embed=False, css_classes=["nd-csv"],
        )  # fmt: skip
        self._status = pn.pane.HTML(sizing_mode="stretch_width", css_classes=["nd-status"])
        self._legend = pn.pane.HTML(sizing_mode="stretch_width", css_classes=["nd-legend"])
        self._thumbs = pn.pane.HTML(sizing_mode="stretch_width", css_classes=["nd-thumbs"])
        self._main = pn.Row(sizing_mode="stretch_width")

        self._w_sort.param.watch(self._from_widget("sort"), "value")
        self._w_a.param.watch(self._from_widget("sort_a"), "value")
        self._w_b.param.watch(self._from_widget("sort_b"), "value")
        self._w_page.param.watch(self._from_widget("page"), "value")
        self._w_find.param.watch(lambda e: self.locate(e.new), "value")
        self._w_show.on_click(lambda _: self.show_hidden())
        self._w_unmark.on_click(lambda _: self.clear_marks())

    def _from_widget(self, name: str) -> Callable[[Any], None]:
        """A watcher that copies a widget's value into parameter ``name``, unless the change
        came from the code (a Select resets its value when its options change)."""

        def copy(event: Any) -> None:
            if not self._quiet:
                setattr(self, name, event.new if event.new is not None else "")

        return copy

    # -- actions ------------------------------------------------------------------------

    def toggle_neuron(self, layer: str, neuron: int) -> None:
        """Hide (or mark/unmark, per :attr:`click`) a neuron of ``layer``."""
        if self.click == "hide":
            self.hidden = {**self.hidden, layer: sorted({*self.hidden.get(layer, []), neuron})}
        else:
            marks = set(self.marked.get(layer, []))
            marks ^= {neuron}
            self.marked = {**self.marked, layer: sorted(marks)}

    def show_hidden(self) -> None:
        """Bring back every hidden neuron of the layers shown."""
        self.hidden = {k: v for k, v in self.hidden.items() if k not in self.layers}

    def clear_marks(self) -> None:
        """Unmark every neuron of the layers shown."""
        self.marked = {k: v for k, v in self.marked.items() if k not in self.layers}

    def locate(self, text: str) -> None:
        """Jump to the page showing neuron ``text`` in the first shown layer that has it."""
        text = text.strip()
        if not text:
            self._located = None
            self._refresh()
            return
        try:
            neuron = int(text)
        except ValueError:
            self._status.object = self._status_html(f"'{text}' is not a neuron id (a number)")
            return
        for layer in self.layers:
            order = self.order(layer)
            hits = np.flatnonzero(order == neuron)
            if hits.size:
                self._located = neuron
                page = int(hits[0]) // self.rows
                if page != self.page:
                    self.page = page  # redraws
                else:
                    self._refresh()
                return
        self._status.object = self._status_html(
            f"neuron {neuron} is not shown: no selected layer has it, or it is hidden"
        )

    def sort_spec(self) -> SortSpec | None:
        """The sort in effect, or ``None`` while its items are incomplete."""
        try:
            return SortSpec(self.sort, self.sort_a, self.sort_b, self.descending)
        except ValueError:
            return None

    def sorted_layer(self, layer: str) -> tuple[np.ndarray, np.ndarray]:
        """``(key, order)`` of ``layer``: the sort key of every neuron, and the neuron ids in
        display order with the hidden ones left out. Kept until the sort, the hidden neurons
        or the checkpoint change: one view change asks for it several times."""
        frame = self.frame(layer)
        spec = self.sort_spec() or SortSpec("index")
        state = (spec, tuple(self.hidden.get(layer, [])), id(frame))
        cached = self._sorted.get(layer)
        if cached is None or cached[0] != state:
            try:
                key = sort_key(frame, spec)
            except KeyError:  # an item that this store (checkpoint) does not have
                key = sort_key(frame, SortSpec("index"))
            order = neuron_order(key, spec.descending, self.hidden.get(layer, []))
            cached = self._sorted[layer] = (state, key, order)
        return cached[1], cached[2]

    def order(self, layer: str) -> np.ndarray:
        """Neuron ids of ``layer`` in display order, hidden ones left out."""
        return self.sorted_layer(layer)[1]

    def page_start(self, layer: str) -> int:
        """Rank (0-based) of the first row of the current page of ``layer``."""
        n = len(self.order(layer))
        return min(self.page * self.rows, max(0, (n - 1) // self.rows * self.rows))

    def page_rows(self, layer: str) -> np.ndarray:
        """The neuron ids of the current page of ``layer``."""
        start = self.page_start(layer)
        return self.order(layer)[start : start + self.rows]

    # -- reactions ----------------------------------------------------------------------

    @param.depends(
        "layers", "groups", "instances", "sort", "sort_a", "sort_b", "descending", "hidden",
        "marked", "page", "rows", watch=True,
    )  # fmt: skip
    def _refresh(self) -> None:
        """Bring widgets, legend, tables and plots up to date with the state, once.

        It may itself change the state (the sort's items, the groups kept); the changes it
        makes re-enter here and return at once, since this call draws what they changed.
        """
        if not self._ready or self._refreshing:
            return
        self._refreshing = True
        try:
            message = ""
            if len(self.groups) > len(GROUP_COLOURS):
                # Past the palette, colours would repeat: keep those that can be told apart.
                self.groups = self.groups[: len(GROUP_COLOURS)]
                message = (
                    f"at most {len(GROUP_COLOURS)} groups can be told apart by colour; "
                    "deselect some to add others"
                )
            self._sort_items()
            n_max = max([self.store.n_neurons(layer) for layer in self.layers] or [1])
            last = (n_max - 1) // self.rows
            self._quiet = True
            try:
                # Bokeh sliders need end > start.
                self._w_page.param.update(
                    end=max(1, last), disabled=last == 0, value=min(self.page, last)
                )
            finally:
                self._quiet = False
            self._legend.object = self._legend_html()
            self._thumbs.object = self._thumbs_html()
            self._status.object = self._status_html(message)
            self._main.objects = [self._layer_view(layer) for layer in self.layers]
            self._redraw.event(version=self._redraw.version + 1)
            # The tables last: once a table shows a change, its plot has it too.
            for layer in self.layers:
                self._tables[layer].object = self._table_html(layer)
        finally:
            self._refreshing = False

    def _sort_items(self) -> None:
        """Offer the items the chosen sort takes, keeping the chosen ones that still fit."""
        groups = {f"median of {g}" if self.sort != "iqr" else f"IQR of {g}": f"group:{g}"
                  for g in self.groups}  # fmt: skip
        insts = {f"instance {i}": f"instance:{i}" for i in self.instances}
        kinds = SORTS[self.sort]
        options = [
            {"group": groups, "instance": insts, "any": {**groups, **insts}}[k] for k in kinds
        ]
        chosen = {}
        for opts, name in zip([*options, {}, {}][:2], ("sort_a", "sort_b"), strict=True):
            current = getattr(self, name)
            if opts and current not in opts.values():
                current = list(opts.values())[min(1, len(opts) - 1) if name == "sort_b" else 0]
            chosen[name] = current if opts else None
        self._quiet = True
        try:
            for widget, opts, name in zip(
                (self._w_a, self._w_b), [*options, {}, {}][:2], ("sort_a", "sort_b"), strict=True
            ):
                widget.param.update(options=opts, visible=bool(opts), value=chosen[name])
            self._w_a.label = {"difference": "item", "divergence": "instance"}.get(self.sort, "of")
            self._w_b.label = {"difference": "minus item", "divergence": "from group"}.get(
                self.sort, ""
            )
            self._w_sort.value = self.sort
        finally:
            self._quiet = False
        for name, value in chosen.items():
            if value is not None:
                setattr(self, name, value)

    def link(self) -> str:
        """The query string of the view: strings as they are, everything else as JSON."""
        query = {}
        for name, key in URL_PARAMS.items():
            value = getattr(self, name)
            query[key] = value if isinstance(value, str) else json.dumps(value)
        return "?" + urlencode(query)

    def _write_link(self, location: Any) -> None:
        location.search = self.link()

    def _apply_link(self, values: dict[str, Any]) -> None:
        """Apply a link's state: all at once if it fits the store, else one parameter at a
        time, saying which values were left out."""
        try:
            self.param.update(**values)
            return
        except (ValueError, TypeError, KeyError, NdstreamError):
            pass
        bad = []
        for name, value in values.items():
            try:
                setattr(self, name, value)
            except (ValueError, TypeError, KeyError, NdstreamError):
                bad.append(f"{URL_PARAMS.get(name, name)}={value!r}")
        if bad:
            self._status.object = self._status_html(
                "this link's state does not fit this store; ignored: " + ", ".join(bad)
            )

    def _poll(self) -> None:
        if not self.live:
            return
        try:
            self.reload()
        except NdstreamError as exc:  # e.g. the store was removed; keep showing the last one
            self._status.object = self._status_html(f"could not read the store: {exc}")

    # -- drawing ------------------------------------------------------------------------

    def _layer_view(self, layer: str) -> pn.Column:
        n_rows = min(self.rows, self.store.n_neurons(layer))
        key = (layer, n_rows)
        if key not in self._layer_views:
            dmap = hv.DynamicMap(self._drawer(layer), streams=[self._redraw])
            # A Tap on the DynamicMap's own overlay never fires; one on an empty element
            # overlaid beside it does. Titles and ticks change with every redraw, and options
            # of the inner overlay are lost in ``dmap * anchor``, so a hook sets them.
            anchor = hv.Curve([])
            tap = hv.streams.Tap(source=anchor, transient=True)
            tap.add_subscriber(lambda x, y, layer=layer: self._on_tap(layer, y))
            plot = (dmap * anchor).opts(
                hv.opts.Overlay(
                    width=380, height=panel_height(n_rows), xlabel="activation",
                    ylabel="neuron", show_legend=False, toolbar="above",
                    hooks=[lambda p, e, layer=layer: self._axes[layer].apply(p, e)],
                )
            )  # fmt: skip
            self._tables.setdefault(
                layer, pn.pane.HTML(max_height=240, styles={"overflow-y": "auto"})
            )
            self._layer_views[key] = pn.Column(
                pn.pane.HoloViews(plot, linked_axes=False), self._tables[layer],
                css_classes=["nd-layer"],
            )  # fmt: skip
        return self._layer_views[key]

    def _drawer(self, layer: str) -> Callable[..., hv.Overlay]:
        def draw(version: int = 0) -> hv.Overlay:
            rows = self.page_rows(layer)
            self._shown[layer] = rows
            n_hidden = len(self.hidden.get(layer, []))
            title = f"{layer} · {self.store.n_neurons(layer)} neurons" + (
                f" · {n_hidden} hidden" if n_hidden else ""
            )
            overlay, self._axes[layer] = activation_layers(
                self.frame(layer), rows, self.groups, group_colours(self.groups),
                self.instances, self._dot_colours(), self.marked.get(layer, []),
                self._located, title=title,
            )  # fmt: skip
            return overlay

        return draw

    def _on_tap(self, layer: str, y: float | None) -> None:
        shown = self._shown.get(layer)
        if y is None or shown is None:
            return
        row = row_of(y, len(shown))
        if row is not None:
            self.toggle_neuron(layer, int(shown[row]))

    def _dot_colours(self) -> dict[str, str]:
        return instance_colours([(i, self._conditions[i]) for i in self.instances])

    def _legend_html(self) -> str:
        colours, dots = group_colours(self.groups), self._dot_colours()
        return legend_html(
            {g: (colours[g], self._group_counts[g]) for g in self.groups},
            {i: (dots[i], self._instance_info[i]) for i in self.instances},
        )

    def _thumbs_html(self) -> str:
        frame = self.frame(self.store.layers[0])
        table = frame.instances
        if table is None or not len(table.thumbnail):
            return ""
        dots = self._dot_colours()
        for iid in self.instances:
            if iid not in self._thumbnail_uris:
                self._thumbnail_uris[iid] = png_uri(table.thumbnail[frame.instance_row(iid)])
        return thumbnails_html([(i, self._thumbnail_uris[i], dots[i]) for i in self.instances])

    def _status_html(self, message: str = "") -> str:
        return status_html(self.store.meta, message)

    def _table_html(self, layer: str) -> str:
        return order_table_html(
            layer, self.page_rows(layer), self.sorted_layer(layer)[0], self.page_start(layer),
            set(self.marked.get(layer, [])), self._located,
        )  # fmt: skip

    # -- export -------------------------------------------------------------------------

    def _png(self) -> io.BytesIO:
        colours = group_colours(self.groups)
        panels = []
        for layer in self.layers:
            frame, rows = self.frame(layer), self.page_rows(layer)
            dots = []
            for iid in self.instances:
                values = frame.instance_values[frame.instance_row(iid), rows]
                dots += [(i, float(v), self._dot_colours()[iid])
                         for i, v in enumerate(values) if np.isfinite(v)]  # fmt: skip
            panels.append(
                PanelImage(
                    title=layer, image=composite(frame, rows, self.groups, colours),
                    labels=[str(n) for n in rows.tolist()],
                    x_range=(float(frame.edges[0]), float(frame.edges[-1])), dots=dots,
                )
            )  # fmt: skip
        legend = {f"{g} (n={self._group_counts[g]})": colours[g] for g in self.groups}
        legend |= {self._instance_info[i]: self._dot_colours()[i] for i in self.instances}
        return io.BytesIO(png_bytes(panels, legend))

    def _csv(self) -> io.StringIO:
        header = ["layer", "rank", "neuron", "key", "marked"]
        header += [f"median {g}" for g in self.groups] + [f"iqr {g}" for g in self.groups]
        header += [f"instance {i}" for i in self.instances]
        out = []
        for layer in self.layers:
            frame = self.frame(layer)
            key, order = self.sorted_layer(layer)
            marks = set(self.marked.get(layer, []))
            stats = [frame.group(g) for g in self.groups]
            inst = [frame.instance_values[frame.instance_row(i)] for i in self.instances]
            for rank, n in enumerate(order.tolist()):
                out.append(
                    [layer, rank + 1, n, float(key[n]), int(n in marks)]
                    + [float(s.median[n]) for s in stats] + [float(s.iqr[n]) for s in stats]
                    + [float(v[n]) for v in inst]
                )  # fmt: skip
        return io.StringIO(csv_text(header, out))

    # -- layout -------------------------------------------------------------------------

    def panel(self) -> pn.viewable.Viewable:
        """The dashboard's layout; also syncs the state with the URL and starts live mode."""
        location = pn.state.location
        if location is not None:
            # The link's state first, then every change written back as a whole query. Not
            # Location.sync: it re-encodes values it parsed back with str(), so a dict in the
            # URL turns into a Python repr once another parameter changes.
            values = location.query_params
            self._apply_link({n: values[u] for n, u in URL_PARAMS.items() if u in values})
            self.param.watch(lambda *_: self._write_link(location), list(URL_PARAMS))
        if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
            pn.state.add_periodic_callback(self._poll, period=int(self.poll_seconds * 1000))
        md = pn.pane.Markdown
        views = {
            "layers": pn.Column(md("**Layers**"), self._w_layers),
            "groups": pn.Column(md("**Groups**"), self._w_groups),
            "instances": pn.Column(self._w_instances, self._thumbs),
            "sort": pn.Column(self._w_sort, self._w_a, self._w_b, self._w_desc),
            "neurons": pn.Column(
                md("**Neurons**"), self._w_click, pn.Row(self._w_show, self._w_unmark),
                self._w_find, self._w_rows, self._w_page,
            ),
            "export": pn.Column(self._w_png, self._w_csv),
        }  # fmt: skip
        for name, view in views.items():
            view.css_classes = [f"nd-view-{name}"]
        sidebar = pn.Column(
            md(f"### ndstream\n`{self.path.name}`"),
            self._status,
            self._w_live,
            *views.values(),
            width=300,
        )
        main = pn.Column(self._legend, self._main, css_classes=["nd-view-activation"])
        return pn.Row(sidebar, main)


# Browser sessions of one server share the frames of a checkpoint: what one session read and
# computed (per-group densities and quantiles) the next gets at once. A checkpoint never
# changes, so its frames never go stale; the oldest are dropped.
_FRAMES: OrderedDict[tuple[object, ...], LayerFrame] = OrderedDict()
_FRAMES_KEPT = 64
_FRAMES_LOCK = threading.Lock()


def _shared_frame(store: Store, layer: str) -> LayerFrame:
    # A store re-written with --overwrite numbers its snapshots afresh: the folder's inode and
    # time tell a new snapshot from an old one of the same name.
    info = store.snapshot.stat()
    key = (store.snapshot.resolve(), info.st_ino, info.st_mtime_ns, layer)
    with _FRAMES_LOCK:
        frame = _FRAMES.get(key)
        if frame is None:
            frame = _FRAMES[key] = LayerFrame(store, layer)
            while len(_FRAMES) > _FRAMES_KEPT:
                _FRAMES.popitem(last=False)
        _FRAMES.move_to_end(key)
        return frame


def _instance_label(table: Any, row: int, iid: str) -> str:
    label, pred = int(table.label[row]), int(table.predicted[row])
    cond = str(table.condition[row])
    return f"#{iid} · true {label} → pred {pred}" + (f" · {cond}" if cond else "")


def dashboard(store: str | os.PathLike[str]) -> pn.viewable.Viewable:
    """The dashboard for ``store``, or a page that says clearly why it cannot be shown."""
    try:
        return NeuralDivergence(store).panel()
    except NdstreamError as exc:
        return pn.pane.Alert(
            f"**ndstream cannot show `{store}`**: {exc}\n\nStart the dashboard on a store "
            "that `ndstream ingest` wrote, e.g. `ndstream serve stores/digits.zarr`.",
            alert_type="danger", css_classes=["nd-error"],
        )  # fmt: skip
