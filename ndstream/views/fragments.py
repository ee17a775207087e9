"""HTML fragments of the dashboard: the legend, instance thumbnails, status line, the table of
the rows on screen and the error page. Pure functions of what they show; their classes and
``data-*`` attributes are what the browser tests read back.

Every text they put in HTML is escaped, whatever its source: group names, layer names and
instance ids come from the store, messages may quote a link, and either may hold markup.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from html import escape

import numpy as np
from PIL import Image

from ..store.format import StoreMeta

__all__ = [
    "error_html",
    "how_to_read_html",
    "legend_html",
    "order_table_html",
    "png_uri",
    "status_html",
    "texts_html",
    "thumbnails_html",
    "title_html",
]


def legend_html(
    groups: Mapping[str, tuple[str, int]],
    instances: Mapping[str, tuple[str, str]],
    stores: tuple[str, str] | None = None,
) -> str:
    """Swatches of the selected groups (name -> (colour, count)) and instances
    (id -> (colour, label)), in order; with ``stores``, the names of the two stores drawn
    (A in each row's upper sub-row, B in the lower)."""
    parts = [
        f'<span class="nd-group" data-group="{escape(g)}"><span style="display:inline-block;'
        f'width:12px;height:12px;background:{colour};margin-right:4px"></span>'
        f"{escape(g)} (n={count})</span>"
        for g, (colour, count) in groups.items()
    ]
    parts += [
        f'<span class="nd-instance" data-instance="{escape(i)}" data-colour="{colour}">'
        '<span style="display:'
        f"inline-block;width:10px;height:10px;border-radius:5px;background:{colour};"
        f'margin-right:4px"></span>{escape(label)}</span>'
        for i, (colour, label) in instances.items()
    ]
    if stores is not None:
        parts.insert(0, f'<span class="nd-stores"><b>A</b> = {escape(stores[0])} (upper '
                        f"sub-row), <b>B</b> = {escape(stores[1])} (lower)</span>")  # fmt: skip
    return "&nbsp;&nbsp; ".join(parts) or "<i>select groups or instances</i>"


def thumbnails_html(items: Sequence[tuple[str, str, str]]) -> str:
    """Thumbnails as ``(instance id, image URI, colour)``, framed in the instance's colour."""
    return "".join(
        '<figure style="display:inline-block;margin:2px;text-align:center">'
        f'<img src="{uri}" width="56" height="56" '
        f'style="image-rendering:pixelated;border:3px solid {colour}">'
        f'<figcaption style="font-size:10px">{escape(iid)}</figcaption></figure>'
        for iid, uri, colour in items
    )


def texts_html(items: Sequence[tuple[str, str, str]]) -> str:
    """Text instances as ``(instance id, text, colour)``: each text (escaped) in a box framed
    in the instance's colour, as a thumbnail is for an image."""
    return "".join(
        '<figure class="nd-text-instance" style="display:inline-block;vertical-align:top;'
        f'margin:2px;max-width:260px;border:3px solid {colour};padding:3px">'
        f'<blockquote style="margin:0;font-size:11px;white-space:normal">{escape(text)}'
        f'</blockquote><figcaption style="font-size:10px">{escape(iid)}</figcaption></figure>'
        for iid, text, colour in items
    )


def status_html(meta: StoreMeta, message: str = "") -> str:
    """Progress of the store on screen, and a message for the user if there is one."""
    state = "complete" if meta.complete else "ingesting…"
    done = int(meta.samples_done)
    # A run over an iterable without a length does not know its total.
    total = "?" if meta.samples_total is None else f"{int(meta.samples_total):,}"
    text = (
        f'<span class="nd-progress" data-samples="{done}" '
        f'data-complete="{str(bool(meta.complete)).lower()}">{done:,} / '
        f"{total} samples · {state} · checkpoint {escape(str(meta.updated))}</span>"
    )
    return text + (f'<div class="nd-message">{escape(message)}</div>' if message else "")


def order_table_html(
    layer: str,
    rows: np.ndarray,
    key: np.ndarray,
    start: int,
    marked: set[int],
    located: int | None,
) -> str:
    """The rows on screen of ``layer``: rank (from ``start`` + 1), neuron id and sort key."""
    body = "".join(
        f'<tr data-neuron="{n}" data-marked="{int(n in marked)}" '
        f'data-located="{int(n == located)}"><td>{start + i + 1}</td>'
        f"<td>{'★ ' if n in marked else ''}{n}</td><td>{key[n]:.4g}</td></tr>"
        for i, n in enumerate(rows.tolist())
    )
    return (
        f'<table class="nd-order-table" data-layer="{escape(layer)}" style="font-size:11px">'
        f"<tr><th>rank</th><th>neuron</th><th>key</th></tr>{body}</table>"
    )


def png_uri(thumbnail: np.ndarray) -> str:
    """A ``data:`` URI of a ``[y, x, channel]`` uint8 thumbnail."""
    image = thumbnail[..., 0] if thumbnail.shape[-1] == 1 else thumbnail
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def title_html(store_name: str, compared: str = "") -> str:
    """The sidebar's heading: ndstream and the name of the store's folder.

    Parameters
    ----------
    store_name
        The last part of the store's path (never the whole path: it is the server's).
    compared
        The last part of the compared store's path, if there is one.
    """
    other = f' vs <code class="nd-compared">{escape(compared)}</code>' if compared else ""
    return f"<h3>ndstream</h3><code>{escape(store_name)}</code>{other}"


def how_to_read_html(compare: bool = False) -> str:
    """The "how to read this" panel: the encoding, in a few lines, for a first-time user.

    Parameters
    ----------
    compare
        Whether a second store is drawn under the first (``serve A --compare B``).
    """
    items = [
        "Each <b>row</b> is one neuron (its id on the left); each <b>panel</b> one layer.",
        "A <b>bar</b> is the neuron's distribution of activations in a group: the darker a "
        "stretch of the bar, the more of the group's values lie there. Each group has its "
        "colour (the swatches beside the group names).",
        "<b>Groups</b>: overlaid in one row, or each in its own sub-row (the buttons under "
        "the groups), which stays readable with many groups.",
        "<b>Dots</b> are single inputs (instances): red attacked, black benign. The row's "
        "tooltip gives each one's value and its rank within each group.",
        "The grey <b>strip</b> right of the bars is the key the rows are sorted by, scaled "
        "over the whole layer; the title says which sort.",
        "The <b>axis</b> spans the 1st to 99th percentile by default: a grey triangle at an "
        "edge marks a row with values beyond it. Switch to every value, or a symmetric log "
        "axis for heavy tails, under <i>activation axis</i>.",
        "<b>Click</b> a row to hide (or mark) its neuron; the hidden ones are listed above "
        "the plots, each with an x to bring it back.",
    ]
    if compare:
        items.insert(2, "Two stores: in every row, the first store's bars are on top and the "
                        "compared store's under them, in the first store's neuron order; the "
                        "sorts can contrast a group of one with a group of the other.")  # fmt: skip
    return (
        "<ul style='padding-left:18px;margin:0'>"
        + "".join(f"<li>{i}</li>" for i in items)
        + "</ul>"
    )


def error_html(headline: str, detail: str, advice: str = "") -> str:
    """A page-wide error: a headline, what went wrong and what to do, all escaped.

    Parameters
    ----------
    headline, detail, advice
        Plain text: what could not be done, why, and what to do (optional).
    """
    parts = [f"<b>{escape(headline)}</b>", f"<p>{escape(detail)}</p>"]
    if advice:
        parts.append(f"<p>{escape(advice)}</p>")
    return (
        '<div role="alert" style="border:1px solid #f5c2c7;background:#f8d7da;color:#842029;'
        'padding:12px 16px;border-radius:4px">' + "".join(parts) + "</div>"
    )
