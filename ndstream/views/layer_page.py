"""What one layer's panel of the Activation view shows, and its bars as an image.

A :class:`LayerPage` is the plan of a panel, shared by the browser's view
(:mod:`.activation`), the PNG export (:mod:`.export`) and ``Store.plot``: the neurons on the
page, the activation axis, the *tracks* of every row (sub-rows, each overlaying one or more
(store, group) distributions), the instances drawn as dots and the sort key. It holds no
plotting objects; :func:`page_image` composites the bars into one RGBA image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..explore import LayerFrame
from ..explore.display_axis import DisplayAxis
from .palette import rgb

__all__ = [
    "LAYOUTS",
    "Band",
    "Dot",
    "LayerPage",
    "beyond",
    "composite",
    "key_fractions",
    "layer_page",
    "page_image",
    "panel_height",
    "row_labels",
    "row_pixels",
]

_MIN_ALPHA = 0.12  # the faintest non-empty bin stays visible
_LABEL_PX = 10  # rows labelled on the neuron axis are at least this far apart


@dataclass(frozen=True)
class Band:
    """One distribution drawn in a track: group ``group`` of ``frame``, in ``colour``.

    ``label`` names it in the tooltip (the group, or ``store: group`` with two stores).
    """

    frame: LayerFrame
    group: str
    colour: str
    label: str


@dataclass(frozen=True)
class Dot:
    """An instance drawn as a dot in every row: its id, colour and the frame it is in."""

    frame: LayerFrame
    instance: str
    colour: str


@dataclass
class LayerPage:
    """What one layer's panel shows.

    Parameters
    ----------
    title
        The panel's title (the layer, its size and what it is sorted by).
    rows
        Neuron ids, top to bottom.
    axis
        The activation axis.
    tracks
        Sub-rows of every row, top to bottom; each overlays its bands, last on top.
    dots
        Instances drawn as dots.
    key, key_range
        The sort key of each row and the range of the key over the whole layer (the strip's
        bars are scaled to it); ``None`` for no strip.
    key_name
        What the key is, for its tooltip and the strip's label.
    marked, located
        Neuron ids to highlight with a band, and one to outline.
    """

    title: str
    rows: np.ndarray
    axis: DisplayAxis
    tracks: list[list[Band]]
    dots: list[Dot] = field(default_factory=list)
    key: np.ndarray | None = None
    key_range: tuple[float, float] | None = None
    key_name: str = "sort key"
    marked: Sequence[int] = ()
    located: int | None = None

    @property
    def n_rows(self) -> int:
        """Neurons on the page."""
        return int(np.asarray(self.rows).shape[0])


def composite(bands: Sequence[tuple[np.ndarray, str]]) -> np.ndarray:
    """``[row, bin, RGBA]`` uint8 image of density bars, each band ``(density, colour)``
    with ``density`` ``[row, bin]`` in [0, 1].

    Bands are layered in the order given ("over" compositing on a transparent background),
    so the last one is on top where they overlap.
    """
    shape = bands[0][0].shape if bands else (0, 0)
    alpha_out = np.zeros(shape, dtype=np.float32)
    colour_out = np.zeros((*shape, 3), dtype=np.float32)
    for density, colour in bands:
        a = np.where(density > 0, _MIN_ALPHA + (1 - _MIN_ALPHA) * density, 0.0).astype(np.float32)
        c = np.asarray(rgb(colour), dtype=np.float32) / 255.0
        keep = alpha_out * (1 - a)
        new_alpha = a + keep
        with np.errstate(invalid="ignore", divide="ignore"):
            colour_out = np.where(
                new_alpha[..., None] > 0,
                (c * a[..., None] + colour_out * keep[..., None]) / new_alpha[..., None],
                0.0,
            )
        alpha_out = new_alpha
    image = np.empty((*shape, 4), dtype=np.uint8)
    image[..., :3] = np.round(colour_out * 255)
    image[..., 3] = np.round(alpha_out * 255)
    return image


def page_image(page: LayerPage) -> np.ndarray:
    """``[row * track, bin, RGBA]``: the bars of every track of every row, the tracks of a
    row one under the other."""
    rows = np.asarray(page.rows, dtype=np.int64)
    images = [
        composite([(b.frame.density(b.group, page.axis).bars[rows], b.colour) for b in track])
        if track
        else np.zeros((rows.size, page.axis.bins, 4), np.uint8)
        for track in page.tracks
    ]
    if not images:
        return np.zeros((rows.size, page.axis.bins, 4), np.uint8)
    return np.stack(images, axis=1).reshape(-1, page.axis.bins, 4)


def beyond(page: LayerPage) -> tuple[np.ndarray, np.ndarray]:
    """``[row]`` whether any band of the row has values below, and above, the axis."""
    rows = np.asarray(page.rows, dtype=np.int64)
    below = np.zeros(rows.size, dtype=bool)
    above = np.zeros(rows.size, dtype=bool)
    for track in page.tracks:
        for b in track:
            d = b.frame.density(b.group, page.axis)
            below |= d.below[rows] > 0
            above |= d.above[rows] > 0
    return below, above


def key_fractions(page: LayerPage) -> np.ndarray:
    """``[row]`` the sort key as a fraction of its range over the layer (NaN: no bar)."""
    if page.key is None or page.key_range is None:
        return np.full(page.n_rows, np.nan)
    lo, hi = page.key_range
    key = np.asarray(page.key, dtype=np.float64)
    if not hi > lo:
        return np.where(np.isfinite(key), 1.0, np.nan)
    return np.clip((key - lo) / (hi - lo), 0.0, 1.0)


def row_pixels(n_rows: int, n_tracks: int = 1) -> int:
    """Height in pixels of one neuron's row: 10 px up to 100 rows a page, then smaller down
    to 4 px, and never under 4 px a track."""
    base = 10 if n_rows <= 100 else max(4, 1000 // max(n_rows, 1))
    return max(base, 4 * n_tracks)


def panel_height(n_rows: int, n_tracks: int = 1) -> int:
    """Plot height in pixels for ``n_rows`` rows of ``n_tracks`` tracks (see
    :func:`row_pixels`), with room for the title, the axis and the toolbar; at least 220."""
    return max(220, row_pixels(n_rows, n_tracks) * max(n_rows, 1) + 130)


def row_labels(
    rows: Sequence[int], marked: Sequence[int], located: int | None, px: int
) -> list[tuple[float, str]]:
    """``(y, label)`` of the rows labelled on the neuron axis, ``px`` pixels a row.

    Every ``k``-th row is labelled so that labels are :data:`_LABEL_PX` apart; the row jumped
    to and the marked rows always are (a ``*`` before a marked id), and the regular labels
    too close to one of them give way.
    """
    rows = list(rows)
    marks = set(marked)
    step = max(1, math.ceil(_LABEL_PX / max(px, 1)))
    must = [i for i, n in enumerate(rows) if n == located or n in marks]
    # The row jumped to first: a mark right beside it gives way to it.
    must.sort(key=lambda i: rows[i] != located)
    chosen: list[int] = []
    for i in must:
        if all(abs(i - j) >= step for j in chosen):
            chosen.append(i)
    for i in range(0, len(rows), step):
        if all(abs(i - j) >= step for j in chosen):
            chosen.append(i)
    return [(-i, ("* " if rows[i] in marks else "") + str(rows[i])) for i in sorted(chosen)]


LAYOUTS: dict[str, str] = {
    "overlay": "groups overlaid in one row",
    "rows": "one sub-row per group",
}


def layer_page(
    frame: LayerFrame,
    rows: np.ndarray,
    groups: Sequence[str],
    colours: dict[str, str],
    *,
    title: str,
    axis: str = "robust",
    layout: str = "overlay",
    other: LayerFrame | None = None,
    names: tuple[str, str] = ("A", "B"),
    dots: Sequence[tuple[str, str]] = (),
    key: np.ndarray | None = None,
    key_name: str = "sort key",
    marked: Sequence[int] = (),
    located: int | None = None,
) -> LayerPage:
    """The plan of one layer's panel.

    Parameters
    ----------
    frame
        The layer's statistics.
    rows
        Neuron ids on the page, top to bottom.
    groups, colours
        Groups drawn, bottom to top, and their colours.
    title
        The panel's title.
    axis
        One of :data:`~ndstream.explore.display_axis.AXES`.
    layout
        One of :data:`LAYOUTS`.
    other, names
        The same layer of a second store, drawn in a track of its own under the first's
        (the groups it has of ``groups``), and what to call the two stores.
    dots
        ``(instance id, colour)`` of the instances of ``frame`` drawn as dots.
    key, key_name
        Every neuron's sort key (``None``: no strip), and what it is.
    marked, located
        Neuron ids to highlight, and one to outline.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    frames = [frame] if other is None else [frame, other]
    extent = (min(f.extent[0] for f in frames), max(f.extent[1] for f in frames))
    robust = (min(f.robust_range[0] for f in frames), max(f.robust_range[1] for f in frames))
    drawn = [frame.instance_values[frame.instance_row(i)] for i, _ in dots]
    display = DisplayAxis.choose(
        axis, extent, robust, np.concatenate(drawn) if drawn else None, frame.bins
    )

    def band(f: LayerFrame, name: str, g: str) -> Band:
        return Band(f, g, colours[g], g if other is None else f"{name}: {g}")

    theirs = [g for g in groups if other is not None and g in other.store.groups]
    stores = [(frame, names[0], list(groups))]
    if other is not None:
        stores.append((other, names[1], theirs))
    if layout == "overlay":
        tracks = [[band(f, name, g) for g in gs] for f, name, gs in stores]
    else:
        tracks = [[band(f, name, g)] for g in groups for f, name, gs in stores if g in gs]
    rows = np.asarray(rows, dtype=np.int64)
    finite = key[np.isfinite(key)] if key is not None else np.zeros(0)
    return LayerPage(
        title=title,
        rows=rows,
        axis=display,
        tracks=tracks or [[]],
        dots=[Dot(frame, i, c) for i, c in dots],
        key=key[rows] if key is not None else None,
        key_range=(float(finite.min()), float(finite.max())) if finite.size else None,
        key_name=key_name,
        marked=marked,
        located=located,
    )
