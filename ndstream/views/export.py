"""Export the current view: a PNG of the Activation view and a CSV of the sorted neurons.

The PNG is drawn on the server with Pillow from the same composited images the browser shows,
so it needs no browser and no plotting backend besides; it holds every selected layer side by
side with its page of rows, the instance dots, neuron ids and a legend.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .palette import rgb

__all__ = ["PanelImage", "csv_text", "png_bytes"]

_ROW_PX, _BIN_PX, _LABEL_W, _PAD, _TITLE_H = 10, 5, 48, 16, 22


@dataclass
class PanelImage:
    """One layer as drawn: its title, composited ``[row, bin, RGBA]`` image, row labels, the
    display axis ends, and dots as ``(row, activation, colour)``."""

    title: str
    image: np.ndarray
    labels: list[str]
    x_range: tuple[float, float]
    dots: list[tuple[int, float, str]]


def _latin1(text: str) -> str:
    """Text Pillow's built-in bitmap font can draw (it has no arrows)."""
    return text.replace("→", "->").encode("latin-1", "replace").decode("latin-1")


def png_bytes(panels: Sequence[PanelImage], legend: Mapping[str, str]) -> bytes:
    """A PNG of ``panels`` side by side, with ``legend`` (label -> colour) underneath."""
    widths = [_LABEL_W + p.image.shape[1] * _BIN_PX for p in panels] or [200]
    height = max([p.image.shape[0] * _ROW_PX for p in panels] or [0])
    legend_h = 18 * max(1, len(legend))
    total_w = sum(widths) + _PAD * (len(widths) + 1)
    total_h = _TITLE_H + height + 30 + legend_h + 2 * _PAD
    canvas = Image.new("RGB", (total_w, total_h), "white")
    draw = ImageDraw.Draw(canvas)
    left = _PAD
    for p, w in zip(panels, widths, strict=False):
        top = _PAD + _TITLE_H
        draw.text((left, _PAD), _latin1(p.title), fill="black")
        rows, bins = p.image.shape[:2]
        if rows:
            bars = Image.fromarray(p.image, "RGBA").resize(
                (bins * _BIN_PX, rows * _ROW_PX), Image.Resampling.NEAREST
            )
            canvas.paste(bars, (left + _LABEL_W, top), bars)
        draw.rectangle((left + _LABEL_W, top, left + w, top + rows * _ROW_PX), outline="#888888")
        step = max(1, rows // 64)
        for i in range(0, rows, step):
            draw.text((left, top + i * _ROW_PX - 1), p.labels[i], fill="#333333")
        lo, hi = p.x_range
        span = hi - lo if hi > lo else 1.0
        for row, x, colour in p.dots:
            cx = left + _LABEL_W + (x - lo) / span * bins * _BIN_PX
            cy = top + (row + 0.5) * _ROW_PX
            draw.ellipse((cx - 3, cy - 3, cx + 3, cy + 3), fill=rgb(colour), outline="white")
        draw.text((left + _LABEL_W, top + rows * _ROW_PX + 4), f"{lo:.3g}", fill="black")
        draw.text((left + w - 40, top + rows * _ROW_PX + 4), f"{hi:.3g}", fill="black")
        left += w + _PAD
    y = _PAD + _TITLE_H + height + 30
    for label, colour in legend.items():
        draw.rectangle((_PAD, y + 3, _PAD + 12, y + 13), fill=rgb(colour))
        draw.text((_PAD + 18, y + 2), _latin1(label), fill="black")
        y += 18
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    return out.getvalue()


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
