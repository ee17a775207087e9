"""Colours of the dashboard: colour-blind-safe, and unique among what is on screen.

Groups take colours in the order they are selected, from the Okabe-Ito palette and then Paul
Tol's "muted" one (both designed to stay apart under the common colour-vision deficiencies),
so every group shown has its own colour. Instances are dots drawn on top: attacked inputs red
and benign ones black, as in NeuralDivergence, and others from Tol's "bright" palette.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["GROUP_COLOURS", "group_colours", "instance_colours", "rgb", "swatch_css"]

# Okabe & Ito (2008), without black (benign instances) and vermillion (attacked ones), then
# Tol's muted set: 13 colours that stay distinct for the common colour-vision deficiencies.
GROUP_COLOURS: tuple[str, ...] = (
    "#E69F00", "#56B4E9", "#009E73", "#0072B2", "#CC79A7", "#F0E442",
    "#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#882255", "#AA4499",
)  # fmt: skip
ATTACKED = "#D62728"
BENIGN = "#000000"
# Other instances: dark colours, none of them red or black (those mean attacked and benign),
# apart from the light and mid tones of the groups.
_INSTANCE_COLOURS = ("#5E3C99", "#1B7837", "#8C510A", "#525252", "#01665E", "#762A83")


def group_colours(selected: Sequence[str]) -> dict[str, str]:
    """Colour of each selected group, by selection order; every one different.

    Raises
    ------
    ValueError
        If more groups are selected than there are distinguishable colours.
    """
    if len(selected) > len(GROUP_COLOURS):
        raise ValueError(
            f"{len(selected)} groups selected; at most {len(GROUP_COLOURS)} can be told apart "
            "by colour: deselect some"
        )
    return {g: GROUP_COLOURS[i] for i, g in enumerate(selected)}


def instance_colours(selected: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Dot colour of each selected ``(instance id, condition)``: attacked red, benign black,
    and the others dark colours, different from each other while there are enough."""
    out: dict[str, str] = {}
    for iid, condition in selected:
        # ``attacked:<attack>`` is what attacked pairs record (ingestion/pairs.py).
        cond = condition.lower().partition(":")[0]
        if cond in ("attacked", "adversarial", "attack"):
            out[iid] = ATTACKED
        elif cond in ("benign", "clean", "original"):
            out[iid] = BENIGN
    others = [iid for iid, _ in selected if iid not in out]
    for i, iid in enumerate(others):
        out[iid] = _INSTANCE_COLOURS[i % len(_INSTANCE_COLOURS)]
    return out


def rgb(colour: str) -> tuple[int, int, int]:
    """``"#RRGGBB"`` as three integers 0-255."""
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def swatch_css(colours: Sequence[str | None]) -> str:
    """A stylesheet for a checkbox group that puts a swatch before each box's label: the
    colour of the option in its place (``None``: not drawn, an empty swatch).

    The colours come from :data:`GROUP_COLOURS` (never from the data), and options are
    picked by position, so no name from the store reaches the stylesheet.
    """
    rules = [
        "label span::before { content: ''; display: inline-block; width: 11px; height: 11px;"
        " margin-right: 5px; vertical-align: -1px; border: 1px solid #999;"
        " background: transparent; }"
    ]
    for i, colour in enumerate(colours, start=1):
        if colour is not None:
            rules.append(
                f"label:nth-of-type({i}) span::before {{ background: {colour};"
                f" border-color: {colour}; }}"
            )
    return "\n".join(rules)
