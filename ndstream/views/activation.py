"""HoloViews elements of the Activation view: one panel per layer, one row per neuron.

A :class:`LayerPage` says what one layer's panel shows: its neurons top to bottom, the
activation axis, and the *tracks* of every row. A track is a sub-row in which one or more
(store, group) distributions are drawn as horizontal bars whose opacity encodes density, in
the group's colour, alpha-composited on the server into one RGBA image (thousands of rows in
one glyph; one rectangle per bin would be hundreds of thousands). Groups overlaid in one
track is the paper's view; one track per group keeps many groups readable; with a second
store, each store gets its own track, so a neuron's two distributions sit one above the other.

Beside the bars: instances as dots on their neuron's row, marks at an edge of the axis for
rows with values beyond it, a narrow bar per row showing the sort key, a band behind marked
neurons and an outline around the neuron jumped to. One invisible rectangle per row carries
the row's only tooltip, which also gives the dots' values, so that tooltips never pile up.

Rows run top to bottom in the order given; row ``i`` sits at ``y = -i``, so a click's ``y``
maps back to a row with ``round(-y)``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import holoviews as hv
import numpy as np
from bokeh.models import FixedTicker, HoverTool

from ..explore import TOOLTIP_QUANTILES, LayerFrame
from .layer_page import (
    LayerPage,
    beyond,
    key_fractions,
    page_image,
    panel_height,
    row_labels,
    row_pixels,
)

__all__ = ["Axes", "activation_layers", "activation_panel", "panel_height", "row_of"]

_MARK = "#FFE08A"
_KEY_GAP, _KEY_WIDTH = 0.03, 0.14  # the sort-key strip, in widths of the activation axis


def row_of(y: float, n_rows: int) -> int | None:
    """The row under a click at ``y``, or ``None`` outside the rows."""
    if not np.isfinite(y):  # a click event is the browser's to send: it may hold anything
        return None
    row = round(-y)
    return row if 0 <= row < n_rows else None


def _fmt(v: float) -> str:
    return "-" if not np.isfinite(v) else f"{v:.4g}"


def _per_neuron(
    frame: LayerFrame, key: tuple[str, ...], make: Callable[[], list[str]]
) -> np.ndarray:
    """Tooltip texts of every neuron, made once per frame (a checkpoint never changes)."""
    if key not in frame.memo:
        frame.memo[key] = np.asarray(make(), dtype=object)
    return frame.memo[key]


def _group_tooltip(frame: LayerFrame, g: str) -> np.ndarray:
    stats = frame.group(g)
    labels = [f"p{round(p * 100)}" for p in TOOLTIP_QUANTILES]
    return _per_neuron(frame, ("group", g), lambda: [
        f"n={stats.count} " + " ".join(f"{lab}={_fmt(v)}" for lab, v in zip(labels, row, strict=True))
        + _bound_text(bound)
        for row, bound in zip(stats.quantiles.tolist(), stats.rank_bound.tolist(), strict=True)
    ])  # fmt: skip


def _bound_text(bound: float) -> str:
    """How far in rank the neuron's quantiles may be off: nothing when they are exact."""
    if not np.isfinite(bound) or bound == 0:
        return ""
    return f" (rank ±{bound:.1%})" if bound >= 0.001 else " (rank ±<0.1%)"


def _rank_texts(frame: LayerFrame, inst: str, g: str) -> np.ndarray:
    ranks = frame.ranks(inst, g)
    return _per_neuron(frame, ("rank", inst, g), lambda: [f"{g}:{r:.2f}" for r in ranks.tolist()])


def _value_texts(frame: LayerFrame, inst: str) -> np.ndarray:
    values = frame.instance_values[frame.instance_row(inst)]
    return _per_neuron(frame, ("value", inst), lambda: [_fmt(v) for v in values.tolist()])


# The limits Axes.apply last set on each figure (figures die with their sessions).
_APPLIED: weakref.WeakKeyDictionary[Any, tuple[tuple[float, float], tuple[float, float]]] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True)
class Axes:
    """What a redraw changes besides the glyphs: title, limits and the ticks of both axes.

    ``xticks`` are ``(position, label)`` in display coordinates; empty leaves Bokeh's own.
    """

    title: str
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    yticks: list[tuple[float, str]]
    xticks: list[tuple[float, str]] = field(default_factory=list)
    xlabel: str = "activation"

    def apply(self, plot: Any, element: Any = None) -> None:
        """A HoloViews plot hook: set these axes on the Bokeh figure of ``plot``.

        A limit is set only when it differs from the one this hook set last on that figure,
        so a zoom survives redraws that keep the same rows and axis (a live checkpoint
        that does not widen the axis, a new mark).
        """
        fig = plot.state
        fig.title.text = self.title
        last = _APPLIED.get(fig)
        if last is None or last[0] != self.xlim:
            fig.x_range.start, fig.x_range.end = self.xlim
        if last is None or last[1] != self.ylim:
            fig.y_range.start, fig.y_range.end = self.ylim
        _APPLIED[fig] = (self.xlim, self.ylim)
        axis = fig.yaxis[0]
        axis.ticker = FixedTicker(ticks=[t for t, _ in self.yticks])
        axis.major_label_overrides = dict(self.yticks)
        if self.xticks:
            xaxis = fig.xaxis[0]
            xaxis.ticker = FixedTicker(ticks=[t for t, _ in self.xticks])
            xaxis.major_label_overrides = dict(self.xticks)
            xaxis.axis_label = self.xlabel


def activation_layers(page: LayerPage) -> tuple[hv.Overlay, Axes]:
    """The elements of one layer's Activation view, and its axes."""
    rows = np.asarray(page.rows, dtype=np.int64)
    n, n_tracks = page.n_rows, max(1, len(page.tracks))
    x0, x1 = page.axis.display_range
    width = x1 - x0
    strip = page.key is not None
    k0 = x1 + _KEY_GAP * width
    right = k0 + _KEY_WIDTH * width if strip else x1
    image = hv.RGB(
        page_image(page), bounds=(x0, -(max(n, 1) - 0.5), x1, 0.5), kdims=["activation", "y"]
    )
    neuron_list = rows.tolist()
    marked_set = set(page.marked)
    px = row_pixels(n, n_tracks)
    xticks = page.axis.ticks()
    if strip:
        xticks = [*xticks, ((k0 + right) / 2, page.key_name)]
    axes = Axes(
        title=page.title,
        xlim=(x0, right),
        ylim=(-(max(n, 1) - 0.5), 0.5),
        yticks=row_labels(neuron_list, page.marked, page.located, px),
        xticks=xticks,
        xlabel=f"activation ({page.axis.kind} axis)",
    )

    # One rectangle per row, under the image: it carries the row's tooltip, the band of a
    # marked neuron and the outline of a located one. One element whatever is marked or
    # located, so that every frame of a DynamicMap has the same layers.
    rects: dict[str, list[Any]] = {
        "x0": [x0] * n, "y0": [-i - 0.5 for i in range(n)],
        "x1": [right] * n, "y1": [-i + 0.5 for i in range(n)],
        "neuron": neuron_list,
        "band": [0.6 if nid in marked_set else 0.0 for nid in neuron_list],
        "outline": [1.0 if nid == page.located else 0.0 for nid in neuron_list],
        "key": [_fmt(v) for v in (page.key if page.key is not None else np.full(n, np.nan)).tolist()],
    }  # fmt: skip
    tooltips = [("neuron", "@neuron")]
    if strip:
        tooltips.append((page.key_name, "@key"))
    bands = [b for track in page.tracks for b in track]
    for j, b in enumerate(bands):
        rects[f"g{j}"] = _group_tooltip(b.frame, b.group)[rows].tolist()
        tooltips.append((b.label, f"@g{j}"))
    for j, dot in enumerate(page.dots):
        values = _value_texts(dot.frame, dot.instance)[rows]
        groups = list(dict.fromkeys(b.group for b in bands if b.frame is dot.frame))
        ranks = [_rank_texts(dot.frame, dot.instance, g)[rows] for g in groups]
        rects[f"i{j}"] = [
            f"{v}" + (" · rank " + " ".join(parts) if parts else "")
            for v, *parts in zip(values.tolist(), *[r.tolist() for r in ranks], strict=True)
        ]
        tooltips.append((f"instance {dot.instance}", f"@i{j}"))
    rows_element = hv.Rectangles(rects, kdims=["x0", "y0", "x1", "y1"], vdims=list(rects)[4:]).opts(
        fill_color=_MARK, fill_alpha="band", line_color="#D55E00", line_alpha="outline",
        line_width=2, tools=[HoverTool(tooltips=tooltips)],
        hover_fill_alpha=0.15, hover_fill_color="#000000", hover_line_alpha=0,
        apply_ranges=False,
    )  # fmt: skip
    layers: list[hv.Element] = [rows_element, image, _edge_marks(page, x0, x1)]
    layers.append(_key_bars(page, k0, right))
    layers.append(_instance_points(page))
    return hv.Overlay(layers), axes


def _edge_marks(page: LayerPage, x0: float, x1: float) -> hv.Labels:
    """A grey arrowhead at an edge of the axis on each row with values beyond it."""
    below, above = beyond(page)
    inset = (x1 - x0) * 0.008
    n_below, n_above = int(below.sum()), int(above.sum())
    data = {
        "x": [x0 + inset] * n_below + [x1 - inset] * n_above,
        "y": [-float(i) for i in np.flatnonzero(below)]
        + [-float(i) for i in np.flatnonzero(above)],
        "text": ["\u25c0"] * n_below + ["\u25b6"] * n_above,
    }
    return hv.Labels(data, kdims=["x", "y"], vdims=["text"]).opts(
        text_color="#555555", text_font_size="8pt", apply_ranges=False
    )


def _key_bars(page: LayerPage, k0: float, right: float) -> hv.Rectangles:
    """The sort key of each row as a grey bar in a strip right of the activation axis."""
    frac = key_fractions(page)
    shown = np.flatnonzero(np.isfinite(frac))
    span = right - k0
    data = {
        "x0": [k0] * shown.size,
        "y0": [-float(i) - 0.35 for i in shown],
        "x1": [k0 + max(float(frac[i]), 0.02) * span for i in shown],
        "y1": [-float(i) + 0.35 for i in shown],
    }
    return hv.Rectangles(data, kdims=["x0", "y0", "x1", "y1"]).opts(
        color="#8A8A8A", line_alpha=0, apply_ranges=False
    )


def _instance_points(page: LayerPage) -> hv.Points:
    rows = np.asarray(page.rows, dtype=np.int64)
    xs: list[float] = []
    ys: list[float] = []
    colours: list[str] = []
    for dot in page.dots:
        values = dot.frame.instance_values[dot.frame.instance_row(dot.instance), rows]
        shown = np.flatnonzero(np.isfinite(values))  # NaN and ±Inf have no place on the axis
        xs += page.axis.to_display(values[shown]).tolist()
        ys += (-shown).astype(float).tolist()
        colours += [dot.colour] * len(shown)
    return hv.Points(
        {"x": xs, "y": ys, "colour": colours}, kdims=["x", "y"], vdims=["colour"]
    ).opts(color="colour", size=7, line_color="white", line_width=1, apply_ranges=False)


def activation_panel(page: LayerPage, *, width: int | None = None) -> hv.Overlay:
    """One layer's Activation view as a finished HoloViews overlay (e.g. in a notebook).

    ``width`` in pixels; ``None`` fills the width of the page or cell.
    """
    overlay, axes = activation_layers(page)
    size: dict[str, Any] = {"width": width} if width else {"responsive": True}
    return overlay.opts(
        hv.opts.Overlay(
            title=axes.title, height=panel_height(page.n_rows, len(page.tracks)),
            xlim=axes.xlim, ylim=axes.ylim, yticks=axes.yticks or [(0, "")],
            xticks=axes.xticks or None, xlabel=axes.xlabel, ylabel="neuron",
            show_legend=False, toolbar="above", **size,
        )
    )  # fmt: skip
