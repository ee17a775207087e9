"""Export the current view: a PNG of the Activation view and a CSV of the sorted neurons.

The PNG is drawn on the server with Pillow from the same plan (:class:`.layer_page.LayerPage`)
and composited images the browser shows, so it needs no browser and no plotting backend
besides; it holds every selected layer side by side with its page of rows, the instance dots,
neuron ids, the sort key, the activation axis, a caption and a legend.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .layer_page import LayerPage, beyond, key_fractions, page_image, row_labels, row_pixels
from .palette import rgb

__all__ = ["csv_text", "png_bytes"]

_BIN_PX, _LABEL_W, _PAD, _TITLE_H, _AXIS_H, _KEY_W = 5, 48, 16, 34, 34, 44


def _latin1(text: str) -> str:
    """Text Pillow's built-in bitmap font can draw (it has no arrows)."""
    return text.replace("→", "->").replace("·", "-").encode("latin-1", "replace").decode("latin-1")


def _panel_width(page: LayerPage) -> int:
    return _LABEL_W + page.axis.bins * _BIN_PX + (_KEY_W + 6 if page.key is not None else 0)


def png_bytes(pages: Sequence[LayerPage], legend: Mapping[str, str], caption: str = "") -> bytes:
    """A PNG of ``pages`` side by side, as the browser draws them, with ``legend`` (label ->
    colour) and ``caption`` (what the view is: the sort, the page, the axis) underneath.

    Each panel has its title, its rows at the browser's row height with the same neuron ids
    labelled, the bars, the marks of values beyond the axis, the instance dots, the sort-key
    strip and the activation axis with its ticks and label.
    """
    widths = [_panel_width(p) for p in pages] or [200]
    heights = [row_pixels(p.n_rows, len(p.tracks)) * p.n_rows for p in pages]
    height = max(heights or [0])
    captions = [line for line in caption.split("\n") if line]
    legend_h = 18 * (max(1, len(legend)) + len(captions))
    total_w = max(sum(widths) + _PAD * (len(widths) + 1), 360)
    total_h = _TITLE_H + height + _AXIS_H + legend_h + 2 * _PAD
    canvas = Image.new("RGB", (total_w, total_h), "white")
    draw = ImageDraw.Draw(canvas)
    left = _PAD
    for page, w in zip(pages, widths, strict=False):
        _draw_panel(canvas, draw, page, left)
        left += w + _PAD
    y = _PAD + _TITLE_H + height + _AXIS_H
    for line in captions:
        draw.text((_PAD, y + 2), _latin1(line), fill="black")
        y += 18
    for label, colour in legend.items():
        draw.rectangle((_PAD, y + 3, _PAD + 12, y + 13), fill=rgb(colour))
        draw.text((_PAD + 18, y + 2), _latin1(label), fill="black")
        y += 18
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    return out.getvalue()


def _draw_panel(canvas: Image.Image, draw: ImageDraw.ImageDraw, page: LayerPage, left: int) -> None:
    top = _PAD + _TITLE_H
    n = page.n_rows
    px = row_pixels(n, len(page.tracks))
    draw.text((left, _PAD), _latin1(page.title), fill="black")
    x_left, plot_w = left + _LABEL_W, page.axis.bins * _BIN_PX
    if n:
        image = Image.fromarray(page_image(page), "RGBA")
        bars = image.resize((plot_w, n * px), Image.Resampling.NEAREST)
        canvas.paste(bars, (x_left, top), bars)
    draw.rectangle((x_left, top, x_left + plot_w, top + n * px), outline="#888888")
    for y, label in row_labels(page.rows.tolist(), page.marked, page.located, px):
        draw.text((left, top + int(-y) * px + px // 2 - 6), _latin1(label), fill="#333333")
    lo, hi = page.axis.display_range

    def x_of(t: float) -> float:
        return x_left + (t - lo) / (hi - lo) * plot_w

    below, above = beyond(page)
    for i in np.flatnonzero(below).tolist():
        cy = top + (i + 0.5) * px
        draw.polygon([(x_left + 1, cy), (x_left + 6, cy - 3), (x_left + 6, cy + 3)], fill="#555555")
    for i in np.flatnonzero(above).tolist():
        cy, right = top + (i + 0.5) * px, x_left + plot_w - 1
        draw.polygon([(right, cy), (right - 5, cy - 3), (right - 5, cy + 3)], fill="#555555")
    rows = np.asarray(page.rows, dtype=np.int64)
    for dot in page.dots:
        values = dot.frame.instance_values[dot.frame.instance_row(dot.instance), rows]
        for i in np.flatnonzero(np.isfinite(values)).tolist():
            cx, cy = x_of(float(page.axis.to_display(values[i]))), top + (i + 0.5) * px
            draw.ellipse((cx - 3, cy - 3, cx + 3, cy + 3), fill=rgb(dot.colour), outline="white")
    axis_y = top + n * px
    for t, label in page.axis.ticks():
        draw.line((x_of(t), axis_y, x_of(t), axis_y + 4), fill="black")
        draw.text((x_of(t) - 3 * len(label), axis_y + 5), label, fill="black")
    draw.text((x_left, axis_y + 18), f"activation ({page.axis.kind} axis)", fill="black")
    if page.key is not None:
        k0 = x_left + plot_w + 6
        for i, frac in enumerate(key_fractions(page).tolist()):
            if np.isfinite(frac):
                y0 = top + i * px + px * 0.15
                draw.rectangle((k0, y0, k0 + max(1, frac * _KEY_W), y0 + px * 0.7), fill="#8A8A8A")
        draw.text((k0, axis_y + 5), _latin1(page.key_name[:9]), fill="black")


def csv_text(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """CSV text of a header and rows (floats written with full precision).

    Text that a spreadsheet would take for a formula (a group name such as ``=HYPERLINK(...)``
    comes from the data) is written with a leading apostrophe, which spreadsheets show as text.
    """
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([_as_text(h) for h in header])
    for row in rows:
        writer.writerow([repr(v) if isinstance(v, float) else _as_text(v) for v in row])
    return out.getvalue()


def _as_text(value: object) -> object:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
