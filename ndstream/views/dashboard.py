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

Whoever can open the page can write its link, and the store's names (groups, layers, instance
ids) are data: links are checked field by field (:mod:`.links`), every text put in HTML is
escaped, and an error shows as a short escaped text with its details in the server log
(:mod:`.error_page`, :mod:`.reporting`), never as a traceback.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any, TypeVar

import holoviews as hv
import numpy as np
import panel as pn
import panel.io.location as _panel_location
import param

from ..errors import StoreError
from ..explore import SORTS, LayerFrame, SortedLayers, SortSpec, describe, page_of, page_start
from ..explore.display_axis import AXES
from ..explore.neuron_order import KEY_NAMES
from ..explore.pages import shared_frame
from ..store import Store, open_store, snapshots
from .activation import Axes, activation_layers, panel_height, row_of
from .error_page import GuardedLayout, error_page, register_session
from .export import csv_text, png_bytes
from .fragments import (
    how_to_read_html,
    legend_html,
    order_table_html,
    png_uri,
    status_html,
    texts_html,
    thumbnails_html,
    title_html,
)
from .instance_menu import divergence_scores, instance_label, pairs_of
from .layer_page import LAYOUTS, LayerPage, layer_page
from .links import (
    MAX_LINK,
    URL_PARAMS,
    LinkChoices,
    parse_link,
    problems_text,
    shareable_query,
    shown,
)
from .palette import GROUP_COLOURS, group_colours, instance_colours, swatch_css
from .reporting import log, public_message

__all__ = ["URL_PARAMS", "NeuralDivergence", "check_comparable", "dashboard"]


def _lenient(parse: Callable[[str], dict[str, Any]]) -> Callable[[str], dict[str, Any]]:
    """Panel's query parser, made unable to fail a session.

    Panel reads every query value whose ``str.isdigit()`` holds with ``int()``, which refuses
    some of them ("²", "①", 5,000 digits): the session then fails before the page exists, a
    bare HTTP 500. The dashboard reads its link itself (``links.py``), so Panel's own reading
    may go without such a query.
    """

    def parse_query(query: str) -> dict[str, Any]:
        try:
            return parse(query)
        except ValueError:
            return {}

    parse_query.lenient = True  # type: ignore[attr-defined]
    return parse_query


if not getattr(_panel_location.parse_query, "lenient", False):
    _panel_location.parse_query = _lenient(_panel_location.parse_query)  # type: ignore[assignment]

T = TypeVar("T")

SORT_LABELS = {
    "median of a group": "median",
    "an instance's activation": "instance",
    "difference of two items": "difference",
    "size of the difference of two items": "abs_difference",
    "effect size, A against B": "effect",
    "size of the effect, A against B": "abs_effect",
    "KS distance, A against B": "ks",
    "Wasserstein-1, A against B": "wasserstein",
    "AUROC, A against B": "auroc",
    "separation (AUROC from 0.5), A against B": "abs_auroc",
    "divergence of an instance from a group": "divergence",
    "spread (IQR) of a group": "iqr",
    "neuron index": "index",
}
_DEFAULT_LAYERS = 3
_CHECKBOX_GROUPS = 40  # more groups than this get a searchable multi-choice
# Checkpoints read in turn when each goes before a read of it is done (the poll's, a redraw's,
# a plot's first draw): a run that commits every step of a small model keeps a checkpoint for
# under a second (snapshots.MOST of them), less than a page may take to draw: one retry lost
# that race, the next checkpoint gone as well.
_CATCH_UP_TRIES = 10


class NeuralDivergence(param.Parameterized):
    """The dashboard over one store.

    Parameters
    ----------
    store
        Path of the store; it comes from the command line, never from the browser.
    compare
        Path of a second store with the same layers (the same model before and after
        fine-tuning, say), also from the command line: each neuron's row then holds both
        stores' distributions, the second under the first, in the first's neuron order.
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
    axis: Any = param.Selector(default="robust", objects=list(AXES), doc="The activation axis.")
    layout: Any = param.Selector(
        default="overlay", objects=list(LAYOUTS), doc="Groups overlaid, or a sub-row each."
    )
    live = param.Boolean(default=True, doc="Follow an ingest that writes the store.")

    def __init__(
        self,
        store: str | os.PathLike[str],
        *,
        compare: str | os.PathLike[str] | None = None,
        poll_seconds: float = 1.0,
        **params: Any,
    ):
        self._ready = False  # parameter watchers wait until the widgets exist
        super().__init__(**params)
        self.path = Path(store)
        self.poll_seconds = poll_seconds
        self.store: Store = open_store(self.path)  # raises a clear StoreError on a bad path
        self.other: Store | None = None
        if compare is not None:
            self.other = open_store(compare)
            check_comparable(self.store, self.other)
        # Short names in titles, sort items and tooltips; the legend says which store is which.
        self.names = ("A", "B")
        self._compared_name = Path(compare).name if compare is not None else ""
        # Checkboxes read best for a few groups; ImageNet's thousands need a search.
        self._search_groups = len(self.store.groups) > _CHECKBOX_GROUPS
        self._poll_failure = ""
        self._link_present = False  # whether the page's link held any field
        self._caught_up = False  # the store was reopened in a draw; reload() finishes it
        self._frames: dict[str, LayerFrame] = {}
        self._shown: dict[str, np.ndarray] = {}
        self._located: int | None = None
        self._redraw = hv.streams.Stream.define("Redraw", version=0)()
        self._layer_views: dict[tuple[str, int, int], pn.Column] = {}
        self._axes: dict[str, Axes] = {}
        self._tables: dict[str, pn.pane.HTML] = {}
        self._sorted = SortedLayers()
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
            self._frames[layer] = shared_frame(self.store, layer)
        return self._frames[layer]

    def other_frame(self, layer: str) -> LayerFrame | None:
        """The statistics of ``layer`` in the compared store, if there is one."""
        return shared_frame(self.other, layer) if self.other is not None else None

    def reload(self) -> bool:
        """Open the store's latest checkpoint if it moved on; returns whether it did."""
        if not self._caught_up and snapshots.current(self.path) == self.store.snapshot:
            return False
        if not self._caught_up:
            self.store = self._open_latest()
            self._frames.clear()
        # The checkpoint just opened can go before its first read, as any other can.
        self._read_through(self._resync)
        self._refresh()
        return True

    def _catch_up(self) -> bool:
        """Open the latest checkpoint if the one this view reads is gone; whether it did.

        A running ingest keeps the checkpoint before the last for slow readers and deletes
        older ones, so a page that takes long to draw can find its checkpoint gone. The
        store and its frames are replaced here; the status line and the choices follow in
        the next :meth:`reload`, which live mode calls every second.
        """
        try:
            if snapshots.current(self.path) == self.store.snapshot:
                return False  # the checkpoint is there: the error is another one
            store = self._open_latest()
        except Exception:  # the store itself is gone: the error stands
            return False
        log.info("ndstream dashboard of %s: its checkpoint went; reading the latest", self.path)
        self.store = store
        self._frames.clear()
        self._caught_up = True
        return True

    def _open_latest(self) -> Store:
        """The store at its latest checkpoint, opened again while the checkpoint it finds
        goes before it is read, up to :data:`_CATCH_UP_TRIES` times."""
        for attempt in range(1, _CATCH_UP_TRIES + 1):
            try:
                return open_store(self.path)
            except OSError:  # StoreError too
                if attempt == _CATCH_UP_TRIES:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _read_through(
        self, read: Callable[[], T], caught_up: Callable[[], None] | None = None
    ) -> T:
        """``read()``, again from the latest checkpoint each time the one it reads goes
        before it is done, up to :data:`_CATCH_UP_TRIES` times; ``caught_up`` runs after
        each catch-up. Every read of the store in a redraw or a draw goes through here."""
        for attempt in range(1, _CATCH_UP_TRIES + 1):
            try:
                return read()
            except OSError:  # StoreError too: a read of a checkpoint that went
                if attempt == _CATCH_UP_TRIES or not self._catch_up():
                    raise
                if caught_up is not None:
                    caught_up()
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _resync(self) -> None:
        """After a catch-up in a redraw: the choices follow the new checkpoint at once."""
        self._caught_up = False
        self._sync_choices(first=False)

    def _sync_choices(self, first: bool) -> None:
        """Offer the store's layers, groups and instances; keep the selections that remain."""
        store = self.store
        counts = store.group_counts(store.layers[0])
        self._group_counts = counts
        sizes = {name: store.n_neurons(name) for name in store.layers}
        self._sizes = sizes
        # Checkboxes show their labels as text; a multi-choice (Choices.js) as HTML, so its
        # labels are escaped: names come from the store and may hold markup.
        group_label = escape if self._search_groups else str
        self.param.layers.objects = {f"{n} ({sizes[n]})": n for n in store.layers}
        self.param.groups.objects = {group_label(f"{g} (n={counts[g]})"): g for g in store.groups}
        frame = self.frame(store.layers[0])
        table = frame.instances
        ids = frame.instance_ids
        scores = divergence_scores(store, table)
        self._instance_info = {
            iid: instance_label(table, row, iid, scores) for row, iid in enumerate(ids)
        } if table is not None else {}  # fmt: skip
        self._pairs = pairs_of(table, ids)
        if hasattr(self, "_w_pair"):  # widgets exist: a live update may have brought pairs
            self._w_pair.options = self._pair_options()
            self._w_pair.visible = bool(self._pairs)
        self.param.instances.objects = {
            escape(label): iid for iid, label in self._instance_info.items()
        }
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
        groups_widget = w.MultiChoice if self._search_groups else w.CheckBoxGroup
        self._w_groups = groups_widget.from_param(
            self.param.groups, label="Groups", css_classes=["nd-groups"]
        )
        self._w_instances = w.MultiChoice.from_param(
            self.param.instances, label="Instances", css_classes=["nd-instances"]
        )
        self._w_pair = w.Select(
            label="Select a pair", options=self._pair_options(), value="",
            visible=len(self._pairs) > 0, css_classes=["nd-pair"],
        )  # fmt: skip
        self._w_pair.param.watch(self._guard("selecting a pair", self._select_pair), "value")
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
        self._w_show = w.Button(label="Show all hidden", css_classes=["nd-show-hidden"])
        self._w_hidden = w.MultiChoice(
            label="Hidden neurons (x brings one back)", options={}, value=[],
            placeholder="none hidden", css_classes=["nd-hidden"],
        )  # fmt: skip
        self._w_axis = w.Select(
            label="activation axis", options={v: k for k, v in AXES.items()}, value=self.axis,
            css_classes=["nd-axis"],
        )  # fmt: skip
        self._w_layout = w.RadioButtonGroup(
            options={v: k for k, v in LAYOUTS.items()}, value=self.layout,
            css_classes=["nd-layout"],
        )  # fmt: skip
        self._w_unmark = w.Button(label="Clear marks", css_classes=["nd-clear-marks"])
        self._w_live = w.Checkbox.from_param(
            self.param.live, label="live: follow the ingest", css_classes=["nd-live"]
        )
        self._w_png = w.FileDownload(
            callback=self._export("the PNG export", self._png),
            filename="ndstream-view.png",
            label="PNG of the view",
            embed=False,
            css_classes=["nd-png"],
        )
        self._w_csv = w.FileDownload(
            callback=self._export("the CSV export", self._csv),
            filename="ndstream-neurons.csv", label="CSV of sorted neurons",
            embed=False, css_classes=["nd-csv"],
        )  # fmt: skip
        self._status = pn.pane.HTML(sizing_mode="stretch_width", css_classes=["nd-status"])
        self._legend = pn.pane.HTML(sizing_mode="stretch_width", css_classes=["nd-legend"])
        self._thumbs = pn.pane.HTML(sizing_mode="stretch_width", css_classes=["nd-thumbs"])
        self._main = pn.Row(sizing_mode="stretch_width")
        for widget in (self._w_find, self._w_rows, self._w_page):
            widget.width = 150
        self._w_hidden.width = 300

        self._w_sort.param.watch(self._from_widget("sort"), "value")
        self._w_axis.param.watch(self._from_widget("axis"), "value")
        self._w_layout.param.watch(self._from_widget("layout"), "value")
        self._w_hidden.param.watch(self._guard("bringing a neuron back", self._unhide), "value")
        self._w_a.param.watch(self._from_widget("sort_a"), "value")
        self._w_b.param.watch(self._from_widget("sort_b"), "value")
        self._w_page.param.watch(self._from_widget("page"), "value")
        self._w_find.param.watch(
            self._guard("the jump to a neuron", lambda e: self.locate(e.new)), "value"
        )
        self._w_show.on_click(self._guard("showing hidden neurons", lambda _: self.show_hidden()))
        self._w_unmark.on_click(self._guard("clearing marks", lambda _: self.clear_marks()))

    def _pair_options(self) -> dict[str, str]:
        """``pair 3: #182, true 7 · 1 of 3 attacks succeeded`` -> ``"3"``, for each pair."""
        options = {"(choose a pair)": ""}
        frame = self.frame(self.store.layers[0])
        table = frame.instances
        for pair, members in self._pairs.items():
            assert table is not None  # there are pairs
            rows = [frame.instance_row(m) for m in members]
            won = int(table.success[rows[1:]].sum())
            text = (
                f"pair {pair}: #{int(table.index[rows[0]])}, true {int(table.label[rows[0]])}"
                f" · {won} of {len(rows) - 1} attacks succeeded"
            )
            options[text] = str(pair)  # a Select shows its labels as text
        return options

    def _select_pair(self, event: Any) -> None:
        """Show a benign input and its attacked versions: their instances, and the classes
        the benign one is and the first attacked one is predicted as (when they are groups)."""
        if not event.new:
            return
        members = self._pairs.get(int(event.new), [])
        frame = self.frame(self.store.layers[0])
        table = frame.instances
        if not members or table is None:
            return
        rows = [frame.instance_row(m) for m in members]
        from ..divergence import class_groups  # here: the score module loads SciPy

        classes = class_groups(self.store)
        wanted = [int(table.label[rows[0]])] + [int(table.predicted[r]) for r in rows[1:]]
        groups = [classes[c] for c in dict.fromkeys(wanted) if 0 <= c < len(classes)]
        with param.parameterized.batch_call_watchers(self):
            self.instances = members
            if groups:
                self.groups = groups
        self._w_pair.value = ""  # ready for the next pair (this watcher ignores "")

    def _from_widget(self, name: str) -> Callable[[Any], None]:
        """A watcher that copies a widget's value into parameter ``name``, unless the change
        came from the code (a Select resets its value when its options change)."""

        def copy(event: Any) -> None:
            if not self._quiet:
                setattr(self, name, event.new if event.new is not None else "")

        return self._guard(f"setting {URL_PARAMS.get(name, name)}", copy)

    # -- errors -------------------------------------------------------------------------

    def _say(self, message: str) -> None:
        """Show ``message`` (plain text; escaped here) in the status line."""
        try:
            self._status.object = self._status_html(message)
        except Exception:  # the store's metadata itself may be what failed
            self._status.object = f'<div class="nd-message">{escape(message)}</div>'

    def _report(self, action: str, exc: BaseException) -> None:
        """Log ``exc`` with its traceback, and tell the page, in words and escaped."""
        log.error("ndstream dashboard of %s: %s failed", self.path, action, exc_info=exc)
        self._say(f"{action} failed: {public_message(exc)}. The server log has the details.")

    def _guard(self, action: str, callback: Callable[..., T]) -> Callable[..., T | None]:
        """``callback`` for a widget, stream or timer: an exception it raises is reported,
        never passed on to Panel and Bokeh (which would send its traceback to the browser)."""

        def run(*args: Any, **kwargs: Any) -> T | None:
            try:
                return callback(*args, **kwargs)
            except Exception as exc:
                self._report(action, exc)
                return None

        return run

    def _export(self, action: str, make: Callable[[], io.IOBase]) -> Callable[[], io.IOBase]:
        """A download callback: on failure, an empty file and a message instead of a
        traceback."""

        def run() -> io.IOBase:
            made = self._guard(action, make)()
            return made if made is not None else io.BytesIO(b"")

        return run

    # -- actions ------------------------------------------------------------------------

    def toggle_neuron(self, layer: str, neuron: int) -> None:
        """Hide (or mark/unmark, per :attr:`click`) a neuron of ``layer``."""
        if self.click == "hide":
            self.hidden = {**self.hidden, layer: sorted({*self.hidden.get(layer, []), neuron})}
        else:
            marks = set(self.marked.get(layer, [])) ^ {neuron}
            # A layer whose last mark went leaves the link, as after "clear marks".
            rest = {k: v for k, v in self.marked.items() if k != layer}
            self.marked = {**rest, layer: sorted(marks)} if marks else rest

    def _unhide(self, event: Any) -> None:
        """The hidden list lost items (the x of one was clicked): show those neurons again."""
        if self._quiet:
            return
        kept = set(event.new)
        hidden = {
            layer: [n for n in ids if layer not in self.layers or f"{layer}:{n}" in kept]
            for layer, ids in self.hidden.items()
        }
        self.hidden = {layer: ids for layer, ids in hidden.items() if ids}

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
            self._say(f"{shown(text)} is not a neuron id (a number)")
            return
        for layer in self.layers:
            page = page_of(self.order(layer), neuron, self.rows)
            if page is not None:
                self._located = neuron
                if page != self.page:
                    self.page = page  # redraws
                else:
                    self._refresh()
                return
        self._say(f"neuron {neuron} is not shown: no selected layer has it, or it is hidden")

    def sort_spec(self) -> SortSpec | None:
        """The sort in effect, or ``None`` while its items are incomplete."""
        try:
            return SortSpec(self.sort, self.sort_a, self.sort_b, self.descending)
        except ValueError:
            return None

    def sorted_layer(self, layer: str) -> tuple[np.ndarray, np.ndarray]:
        """``(key, order)`` of ``layer``: the sort key of every neuron, and the neuron ids in
        display order with the hidden ones left out. Kept until the sort, the hidden neurons
        or the checkpoint change (see :class:`~ndstream.explore.SortedLayers`)."""
        spec = self.sort_spec() or SortSpec("index")
        return self._sorted.get(
            self.frame(layer), spec, self.hidden.get(layer, []), self.other_frame(layer)
        )

    def order(self, layer: str) -> np.ndarray:
        """Neuron ids of ``layer`` in display order, hidden ones left out."""
        return self.sorted_layer(layer)[1]

    def page_start(self, layer: str) -> int:
        """Rank (0-based) of the first row of the current page of ``layer``."""
        return page_start(len(self.order(layer)), self.page, self.rows)

    def page_rows(self, layer: str) -> np.ndarray:
        """The neuron ids of the current page of ``layer``."""
        start = self.page_start(layer)
        return self.order(layer)[start : start + self.rows]

    # -- reactions ----------------------------------------------------------------------

    @param.depends(
        "layers", "groups", "instances", "sort", "sort_a", "sort_b", "descending", "hidden",
        "marked", "page", "rows", "axis", "layout", watch=True,
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
            self._read_through(self._redraw_all, caught_up=self._resync)
        except Exception as exc:
            self._report("redrawing the view", exc)
        finally:
            self._refreshing = False

    def _redraw_all(self) -> None:
        """The work of :meth:`_refresh`."""
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
        if self.page > last:
            # Fewer pages now (more rows a page, fewer layers): the page, and the link that
            # holds it, move to the last one, or the link would no longer apply whole.
            self.page = last
        self._quiet = True
        try:
            # Bokeh sliders need end > start.
            self._w_page.param.update(
                end=max(1, last), disabled=last == 0, value=min(self.page, last)
            )
        finally:
            self._quiet = False
        self._quiet = True
        try:
            self._w_axis.value, self._w_layout.value = self.axis, self.layout
            hidden = {
                escape(f"{layer} #{n}"): f"{layer}:{n}"
                for layer in self.layers for n in self.hidden.get(layer, [])
            }  # fmt: skip
            self._w_hidden.param.update(options=hidden, value=list(hidden.values()))
        finally:
            self._quiet = False
        if not self._search_groups:
            colours = group_colours(self.groups)
            order = list(self.param.groups.objects.values())
            self._w_groups.stylesheets = [swatch_css([colours.get(g) for g in order])]
        self._legend.object = self._legend_html()
        self._thumbs.object = self._thumbs_html()
        self._status.object = self._status_html(message)
        self._main.objects = [self._layer_view(layer) for layer in self.layers]
        self._redraw.event(version=self._redraw.version + 1)
        # The tables last: once a table shows a change, its plot has it too.
        for layer in self.layers:
            self._tables[layer].object = self._table_html(layer)

    def _sort_items(self) -> None:
        """Offer the items the chosen sort takes, keeping the chosen ones that still fit."""
        word = {"iqr": "IQR of ", "median": "median of ", "difference": "median of ",
                "abs_difference": "median of ", "divergence": "median of "}.get(self.sort, "group ")  # fmt: skip
        groups = {f"{word}{g}": f"group:{g}" for g in self.groups}
        insts = {f"instance {i}": f"instance:{i}" for i in self.instances}
        theirs = {}
        if self.other is not None:
            groups = {f"{self.names[0]}: {k}": v for k, v in groups.items()}
            theirs = {
                f"{self.names[1]}: {word}{g}": f"compared:{g}"
                for g in self.groups if g in self.other.groups
            }  # fmt: skip
        kinds = SORTS[self.sort]
        options = [
            {"group": groups, "instance": insts, "any": {**groups, **theirs, **insts}}[k]
            for k in kinds
        ]
        chosen: dict[str, str | None] = {}
        for opts, want, name in zip(
            [*options, {}, {}][:2], [*kinds, None, None][:2], ("sort_a", "sort_b"), strict=True
        ):
            current = getattr(self, name)
            if opts and current not in opts.values():
                current = list(opts.values())[min(1, len(opts) - 1) if name == "sort_b" else 0]
            if opts:
                chosen[name] = current
            elif want is not None and not _fits(current, want):
                # Nothing selected to offer: an item of the wrong kind goes (the sort falls
                # back to neuron index), one that fits stays for when its kind is selected.
                chosen[name] = ""
            else:
                chosen[name] = None
        self._quiet = True
        try:
            for widget, opts, name in zip(
                (self._w_a, self._w_b), [*options, {}, {}][:2], ("sort_a", "sort_b"), strict=True
            ):
                widget.param.update(
                    options=opts, visible=bool(opts), value=chosen[name] if opts else None
                )
            two = {"difference": ("item", "minus item"), "divergence": ("instance", "from group")}
            pair = two.get(self.sort.removeprefix("abs_"), ("A", "B"))
            self._w_a.label = pair[0] if SORTS[self.sort] and len(SORTS[self.sort]) > 1 else "of"
            self._w_b.label = pair[1]
            self._w_sort.value = self.sort
        finally:
            self._quiet = False
        for name, value in chosen.items():
            if value is not None:
                setattr(self, name, value)

    def link(self) -> str:
        """The query string of the view: strings as they are, everything else as JSON.

        Past :data:`~ndstream.views.links.MAX_LINK` characters it leaves the hidden and marked
        neurons out, so that the address still opens the view.
        """
        return self._shareable_link()[0]

    def _shareable_link(self) -> tuple[str, bool]:
        return shareable_query({name: getattr(self, name) for name in URL_PARAMS})

    def _write_link(self, location: Any) -> None:
        link, cut = self._shareable_link()
        if location.search != link:
            location.search = link
            if cut:
                self._say(
                    f"the address bar leaves out the hidden and marked neurons: with them, the "
                    f"link would pass {MAX_LINK:,} characters, more than the server takes back"
                )

    def link_choices(self) -> LinkChoices:
        """What a link may refer to in the checkpoint on screen."""
        return LinkChoices(
            layers=dict(self._sizes), groups=list(self.store.groups),
            instances=list(self._instance_info), sorts=SORTS,
            rows=list(self.param.rows.objects or []), max_groups=len(GROUP_COLOURS),
            axes=list(AXES), layouts=list(LAYOUTS),
            compared=list(self.other.groups) if self.other is not None else [],
        )  # fmt: skip

    def apply_link(self, search: str) -> list[str]:
        """Apply a link's query (``?layers=...``): the parts that fit this store.

        Every field is checked (:func:`~ndstream.views.links.parse_link`): of a list, the
        items that fit apply; a value that does not fit leaves its field as it was. The status
        line names each part left out.

        Returns
        -------
        list[str]
            One line per part left out (plain text); empty if the whole link applied.
        """
        current = {name: getattr(self, name) for name in URL_PARAMS}
        link = parse_link(search, self.link_choices(), current)
        self._link_present = link.present
        # Checked against the store, so the values fit the parameters; the widgets and the
        # plots follow in one refresh.
        self.param.update(**link.values)
        if link.problems:
            log.info("ndstream dashboard of %s: a link left out %s", self.path, link.problems)
            self._say(problems_text(link.problems))
        return link.problems

    def _poll(self) -> None:
        if not self.live:
            return
        try:
            self.reload()
            self._poll_failure = ""
        except Exception as exc:  # e.g. the store was removed; keep showing the last one
            text = public_message(exc)
            if text != self._poll_failure:  # once, not every second
                self._poll_failure = text
                self._report("reading the store's latest checkpoint", exc)

    # -- drawing ------------------------------------------------------------------------

    def _tracks(self) -> int:
        """Sub-rows of each neuron's row (:mod:`.layer_page`)."""
        stores = 2 if self.other is not None else 1
        return stores * (max(1, len(self.groups)) if self.layout == "rows" else 1)

    def _layer_view(self, layer: str) -> pn.Column:
        n_rows = min(self.rows, self.store.n_neurons(layer))
        key = (layer, n_rows, self._tracks())
        if key not in self._layer_views:
            dmap = hv.DynamicMap(self._drawer(layer), streams=[self._redraw])
            # A Tap on the DynamicMap's own overlay never fires; one on an empty element
            # overlaid beside it does. Titles and ticks change with every redraw, and options
            # of the inner overlay are lost in ``dmap * anchor``, so a hook sets them.
            anchor = hv.Curve([])
            tap = hv.streams.Tap(source=anchor, transient=True)
            tap.add_subscriber(
                self._guard("a click on a neuron", lambda x, y, layer=layer: self._on_tap(layer, y))
            )
            plot = (dmap * anchor).opts(
                hv.opts.Overlay(
                    responsive=True, min_width=360, height=panel_height(n_rows, key[2]),
                    xlabel="activation", ylabel="neuron", show_legend=False,
                    toolbar="below",
                    hooks=[lambda p, e, layer=layer: self._axes[layer].apply(p, e)],
                )
            )  # fmt: skip
            self._tables.setdefault(
                layer, pn.pane.HTML(max_height=240, styles={"overflow-y": "auto"})
            )
            self._layer_views[key] = pn.Column(
                pn.pane.HoloViews(plot, linked_axes=False, sizing_mode="stretch_width"),
                self._tables[layer], css_classes=["nd-layer"], sizing_mode="stretch_width",
                min_width=360,
            )  # fmt: skip
        return self._layer_views[key]

    def layer_page(self, layer: str) -> LayerPage:
        """The plan of ``layer``'s panel as the view stands (:mod:`.layer_page`)."""
        rows = self.page_rows(layer)
        n_neurons = self.store.n_neurons(layer)
        # The neurons left out of the order: ids that are not the layer's hide nothing.
        n_hidden = n_neurons - len(self.order(layer))
        spec = self.sort_spec() or SortSpec("index")
        title = f"{layer} · {n_neurons} neurons" + (f" · {n_hidden} hidden" if n_hidden else "")
        title += f"\n{describe(spec, self.names[1])}"
        dots = self._dot_colours()
        # A checkpoint read after a catch-up, or the older intact one a damaged checkpoint
        # falls back to, may lack an instance the selection holds: drawn without its dot
        # until the next poll offers that checkpoint's instances.
        frame = self.frame(layer)
        drawable = set(frame.instance_ids)
        return layer_page(
            frame, rows, self.groups, group_colours(self.groups), title=title,
            axis=self.axis, layout=self.layout, other=self.other_frame(layer),
            names=self.names, dots=[(i, dots[i]) for i in self.instances if i in drawable],
            key=self.sorted_layer(layer)[0] if spec.by != "index" else None,
            key_name=KEY_NAMES[spec.by], marked=self.marked.get(layer, []),
            located=self._located,
        )  # fmt: skip

    def _drawer(self, layer: str) -> Callable[..., hv.Overlay]:
        def draw(version: int = 0) -> hv.Overlay:
            return self._read_through(draw_once)

        def draw_once() -> hv.Overlay:
            page = self.layer_page(layer)
            self._shown[layer] = page.rows
            overlay, self._axes[layer] = activation_layers(page)
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
            (self.path.name, self._compared_name) if self.other is not None else None,
        )

    def _thumbs_html(self) -> str:
        frame = self.frame(self.store.layers[0])
        table = frame.instances
        if table is not None and (table.text != "").any():
            dots = self._dot_colours()
            texts = [str(table.text[frame.instance_row(i)]) for i in self.instances]
            return texts_html([(i, t, dots[i]) for i, t in zip(self.instances, texts, strict=True)])
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
        colours, dots = group_colours(self.groups), self._dot_colours()
        pages = [self.layer_page(layer) for layer in self.layers]
        legend = {f"{g} (n={self._group_counts[g]})": colours[g] for g in self.groups}
        legend |= {self._instance_info[i]: dots[i] for i in self.instances}
        return io.BytesIO(png_bytes(pages, legend, self._png_caption()))

    def _png_caption(self) -> str:
        """What the exported view is: the stores, the sort, the page and the axis."""
        spec = self.sort_spec() or SortSpec("index")
        n_max = max([self.store.n_neurons(layer) for layer in self.layers] or [1])
        stores = (
            f"A: {self.path.name} (upper sub-row) vs B: {self._compared_name} (lower)"
            if self.other is not None
            else self.path.name
        )
        return "\n".join([
            stores,
            describe(spec, self.names[1]),
            f"page {self.page + 1} of {(n_max - 1) // self.rows + 1}, {self.rows} rows a page",
            f"activation axis: {AXES[self.axis]}",
        ])  # fmt: skip

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

    def panel(self) -> pn.Row:
        """The dashboard's layout; also syncs the state with the URL and starts live mode."""
        location = pn.state.location
        if location is not None:
            # The link's state first, then every change written back as a whole query. Not
            # Location.sync, nor Location.query_params: they decode values with Panel's own
            # rules, which drop broken JSON without a word, and Location.sync re-encodes a dict
            # it parsed with str(), which turns it into a Python repr.
            self.apply_link(location.search)
            write = self._guard("updating the address bar", lambda *_: self._write_link(location))
            if self._link_present:
                # The address bar holds what applied, not the link as it came. A browser
                # reports its own address once the page is up (when depends on the load), so
                # it is written again then, and whenever the browser reports another one.
                write()
                pn.state.onload(write)
                location.param.watch(write, "search")
            self.param.watch(write, list(URL_PARAMS))
        curdoc = pn.state.curdoc
        if curdoc is not None:
            register_session(curdoc, self._report)
            if curdoc.session_context is not None:
                pn.state.add_periodic_callback(self._poll, period=int(self.poll_seconds * 1000))
        md = pn.pane.Markdown
        views = {
            "layers": pn.Column(md("**Layers**"), self._w_layers),
            "groups": pn.Column(md("**Groups**"), self._w_groups, self._w_layout),
            "instances": pn.Column(self._w_instances, self._w_pair, self._thumbs),
            "sort": pn.Column(self._w_sort, self._w_a, self._w_b, self._w_desc),
            "axis": pn.Column(self._w_axis),
            "export": pn.Column(self._w_png, self._w_csv),
        }  # fmt: skip
        for name, view in views.items():
            view.css_classes = [f"nd-view-{name}"]
        help_card = pn.Card(
            pn.pane.HTML(how_to_read_html(compare=self.other is not None)),
            title="How to read this", collapsed=self._link_present,
            css_classes=["nd-help"], sizing_mode="stretch_width",
        )  # fmt: skip
        sidebar = pn.Column(
            pn.pane.HTML(title_html(self.path.name, self._compared_name), css_classes=["nd-title"]),
            self._status,
            self._w_live,
            help_card,
            *views.values(),
            width=300,
        )
        # What acts on the rows stays in view above them while the page scrolls.
        neurons = pn.FlexBox(
            self._w_click, self._w_find, self._w_rows, self._w_page, self._w_show,
            self._w_unmark, self._w_hidden, css_classes=["nd-view-neurons"],
            align_items="end", sizing_mode="stretch_width",
            styles={"position": "sticky", "top": "0", "z-index": "10", "background": "white",
                    "border-bottom": "1px solid #ddd"},
        )  # fmt: skip
        main = pn.Column(
            neurons, self._legend, self._main, css_classes=["nd-view-activation"],
            sizing_mode="stretch_width",
        )  # fmt: skip
        return pn.Row(sidebar, main, sizing_mode="stretch_width")


def check_comparable(store: Store, other: Store) -> None:
    """Refuse a second store whose layers or neuron counts differ from the first's.

    Raises
    ------
    StoreError
        Naming the layers that differ, and what to do.
    """
    problems = []
    for layer in store.layers:
        if layer not in other.layers:
            problems.append(f"{other.path.name} has no layer {layer!r}")
        elif other.n_neurons(layer) != store.n_neurons(layer):
            problems.append(
                f"layer {layer!r} has {store.n_neurons(layer)} neurons in {store.path.name} "
                f"and {other.n_neurons(layer)} in {other.path.name}"
            )
    if problems:
        listed = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5
                                           else "")  # fmt: skip
        raise StoreError(
            f"cannot draw {other.path.name} beside {store.path.name}: {listed}. Compare stores "
            "of the same model and layers, or align them in Python with Store.contrast(..., "
            "layer_b=..., align=...)"
        )


def _fits(item: str, want: str) -> bool:
    """Whether sort item ``item`` is of the kind ``want`` (``group``, ``instance``, ``any``)."""
    kind = item.partition(":")[0]
    return kind == want or (want == "any" and kind in ("group", "instance"))


def dashboard(
    store: str | os.PathLike[str], compare: str | os.PathLike[str] | None = None
) -> pn.viewable.Viewable:
    """The dashboard for ``store`` (beside ``compare``, if given), or a page that says
    clearly why it cannot be shown.

    Nothing raises from here: a store that cannot be read, a link that does not fit, or a
    bug give an escaped error page or message, with the details in the server log (logger
    ``ndstream.views``).
    """
    try:
        try:
            app = NeuralDivergence(store, compare=compare)
        except StoreError:
            # A running ingest may have deleted the checkpoint between opening and reading
            # it; the latest one is there. (A store that is not one fails again, and shows.)
            app = NeuralDivergence(store, compare=compare)
        layout = app.panel()
        return GuardedLayout(*layout.objects, store=store, sizing_mode="stretch_width")
    except Exception as exc:
        log.error("ndstream dashboard of %s: building the page failed", store, exc_info=exc)
        return error_page(store, exc)
