"""HoloViews elements of the Activation view: one panel per layer, one row per neuron.

Each neuron's distribution in each selected group is a horizontal bar along the activation
axis whose opacity encodes density (:attr:`GroupStats.density`), in the group's colour; the
groups are alpha-composited on the server into one RGBA image, which draws thousands of rows
in one glyph (one rectangle per bin would be hundreds of thousands). Instances are dots on
their neuron's row. An invisible rectangle per row carries the tooltip, and marked neurons
get a band behind their row.

Rows run top to bottom in the order given; row ``i`` sits at ``y = -i``, so a click's ``y``
maps back to a row with ``round(-y)``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import holoviews as hv
import numpy as np
from bokeh.models import FixedTicker, HoverTool

from ..explore import TOOLTIP_QUANTILES, LayerFrame
from .palette import rgb

__all__ = ["Axes", "activation_layers", "activation_panel", "composite", "panel_height", "row_of"]

_MIN_ALPHA = 0.12  # the faintest non-empty bin stays visible
_MARK = "#FFE08A"
_MAX_TICKS = 64


def composite(
    frame: LayerFrame, rows: np.ndarray, groups: Sequence[str], colours: Mapping[str, str]
) -> np.ndarray:
    """``[row, bin, RGBA]`` uint8 image of the density bars of ``groups`` for neurons ``rows``.

    Groups are layered in the order given ("over" compositing on a transparent background),
    so the last one is on top where they overlap.
    """
    n_rows = int(rows.shape[0])
    alpha_out = np.zeros((n_rows, frame.bins), dtype=np.float32)
    colour_out = np.zeros((n_rows, frame.bins, 3), dtype=np.float32)
    for g in groups:
        d = frame.group(g).density[rows]
        a = np.where(d > 0, _MIN_ALPHA + (1 - _MIN_ALPHA) * d, 0.0).astype(np.float32)
        c = np.asarray(rgb(colours[g]), dtype=np.float32) / 255.0
        keep = alpha_out * (1 - a)
        new_alpha = a + keep
        with np.errstate(invalid="ignore", divide="ignore"):
            colour_out = np.where(
                new_alpha[..., None] > 0,
                (c * a[..., None] + colour_out * keep[..., None]) / new_alpha[..., None],
                0.0,
            )
        alpha_out = new_alpha
    image = np.empty((n_rows, frame.bins, 4), dtype=np.uint8)
    image[..., :3] = np.round(colour_out * 255)
    image[..., 3] = np.round(alpha_out * 255)
    return image


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
    """What a redraw changes besides the glyphs: title, limits and the neuron-id ticks."""

    title: str
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    yticks: list[tuple[float, str]]

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


def activation_layers(
    frame: LayerFrame,
    rows: np.ndarray,
    groups: Sequence[str],
    colours: Mapping[str, str],
    instances: Sequence[str] = (),
    instance_colours: Mapping[str, str] | None = None,
    marked: Sequence[int] = (),
    located: int | None = None,
    title: str | None = None,
) -> tuple[hv.Overlay, Axes]:
    """The elements of one layer's Activation view for neurons ``rows``, and its axes.

    Parameters
    ----------
    frame
        The layer's statistics.
    rows
        Neuron ids, top to bottom (a page of the sorted, unhidden neurons).
    groups, colours
        Groups to draw, bottom to top, and their colours.
    instances, instance_colours
        Instance ids to draw as dots, and their colours.
    marked
        Neuron ids to highlight with a band (their tick gets a ``*``).
    located
        A neuron id to outline (the result of a search).
    title
        Plot title; the layer name by default.
    """
    rows = np.asarray(rows, dtype=np.int64)
    n = int(rows.shape[0])
    x0, x1 = float(frame.edges[0]), float(frame.edges[-1])
    bounds = (x0, -(max(n, 1) - 0.5), x1, 0.5)
    image = hv.RGB(
        composite(frame, rows, groups, colours), bounds=bounds, kdims=["activation", "y"]
    )

    neuron_list = rows.tolist()
    marked_set = set(marked)
    labels = [("* " if nid in marked_set else "") + str(nid) for nid in neuron_list]
    step = max(1, int(np.ceil(n / _MAX_TICKS)))
    axes = Axes(
        title=title if title is not None else frame.layer,
        xlim=(x0, x1),
        ylim=(-(max(n, 1) - 0.5), 0.5),
        yticks=[(-i, labels[i]) for i in range(0, n, step)],
    )

    # One rectangle per row, under the image: it carries the tooltip, the band of a marked
    # neuron and the outline of a located one. One element whatever is marked or located,
    # so that every frame of a DynamicMap has the same layers.
    rects: dict[str, list[Any]] = {
        "x0": [x0] * n, "y0": [-i - 0.5 for i in range(n)],
        "x1": [x1] * n, "y1": [-i + 0.5 for i in range(n)],
        "neuron": neuron_list,
        "band": [0.6 if nid in marked_set else 0.0 for nid in neuron_list],
        "outline": [1.0 if nid == located else 0.0 for nid in neuron_list],
    }  # fmt: skip
    tooltips = [("neuron", "@neuron")]
    for j, g in enumerate(groups):
        rects[f"g{j}"] = _group_tooltip(frame, g)[rows].tolist()
        tooltips.append((g, f"@g{j}"))
    rows_element = hv.Rectangles(rects, kdims=["x0", "y0", "x1", "y1"], vdims=list(rects)[4:]).opts(
        fill_color=_MARK, fill_alpha="band", line_color="#D55E00", line_alpha="outline",
        line_width=2, tools=[HoverTool(tooltips=tooltips)],
        hover_fill_alpha=0.15, hover_fill_color="#000000", hover_line_alpha=0,
        apply_ranges=False,
    )  # fmt: skip
    layers: list[hv.Element] = [rows_element, image]
    layers.append(_instance_points(frame, rows, groups, instances, instance_colours or {}))
    return hv.Overlay(layers), axes


def panel_height(n_rows: int) -> int:
    """Plot height in pixels for ``n_rows`` rows: 10 px a row, within 220 to 1,100."""
    return int(np.clip(10 * n_rows + 80, 220, 1100))


def activation_panel(
    frame: LayerFrame,
    rows: np.ndarray,
    groups: Sequence[str],
    colours: Mapping[str, str],
    instances: Sequence[str] = (),
    instance_colours: Mapping[str, str] | None = None,
    marked: Sequence[int] = (),
    *,
    title: str | None = None,
    width: int = 380,
    height: int | None = None,
) -> hv.Overlay:
    """One layer's Activation view as a finished HoloViews overlay (e.g. in a notebook).

    The arguments are those of :func:`activation_layers`; ``width`` and ``height`` are in
    pixels, the height 10 px a row by default.
    """
    overlay, axes = activation_layers(
        frame, rows, groups, colours, instances, instance_colours, marked, title=title
    )
    return overlay.opts(
        hv.opts.Overlay(
            title=axes.title, width=width, height=height or panel_height(len(rows)),
            xlim=axes.xlim, ylim=axes.ylim, yticks=axes.yticks or [(0, "")],
            xlabel="activation", ylabel="neuron", show_legend=False, toolbar="above",
        )
    )  # fmt: skip


def _instance_points(
    frame: LayerFrame,
    rows: np.ndarray,
    groups: Sequence[str],
    instances: Sequence[str],
    colours: Mapping[str, str],
) -> hv.Points:
    data: dict[str, list[Any]] = {
        "activation": [], "y": [], "instance": [], "neuron": [], "value": [], "rank": [], "colour": []
    }  # fmt: skip
    for inst in instances:
        row = frame.instance_row(inst)
        values = frame.instance_values[row, rows]
        shown = np.flatnonzero(np.isfinite(values))  # NaN and ±Inf have no place on the axis
        at = rows[shown]
        ranks = [_rank_texts(frame, inst, g)[at] for g in groups]
        text = _value_texts(frame, inst)
        data["activation"] += values[shown].tolist()
        data["y"] += (-shown).tolist()
        data["instance"] += [inst] * len(shown)
        data["neuron"] += at.tolist()
        data["value"] += text[at].tolist()
        data["rank"] += (
            [" ".join(parts) for parts in zip(*ranks, strict=True)] if ranks else [""] * len(shown)
        )
        data["colour"] += [colours.get(inst, "#000000")] * len(shown)
    tooltips = [("instance", "@instance"), ("neuron", "@neuron"), ("value", "@value"),
                ("quantile rank", "@rank")]  # fmt: skip
    return hv.Points(data, kdims=["activation", "y"], vdims=list(data)[2:]).opts(
        color="colour", size=7, line_color="white", line_width=1,
        tools=[HoverTool(tooltips=tooltips)], apply_ranges=False,
    )  # fmt: skip
