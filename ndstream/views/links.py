"""Shareable links: the dashboard's state as a URL query, and the query checked field by field.

A link holds ``layers``, ``groups``, ``instances``, ``sort``, ``a``, ``b``, ``desc``,
``hidden``, ``marked``, ``page``, ``rows``, ``axis`` and ``layout``: strings as they are, everything else as JSON
(:func:`link_query`). A link comes from anyone, so :func:`parse_link` trusts none of it: every
field is decoded and checked against the store (:class:`LinkChoices`), the parts that fit are
kept and each part that does not is named in :attr:`Link.problems`, as plain text (the page
escapes it). Of ``layers=["fc2","nope"]`` it keeps ``fc2`` and names ``nope``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

__all__ = [
    "URL_PARAMS",
    "Link",
    "LinkChoices",
    "link_query",
    "parse_link",
    "problems_text",
    "shareable_query",
    "shown",
]

#: Parameter of the dashboard -> its name in a link, in the order a link lists them.
URL_PARAMS = {
    "layers": "layers", "groups": "groups", "instances": "instances", "sort": "sort",
    "sort_a": "a", "sort_b": "b", "descending": "desc", "hidden": "hidden",
    "marked": "marked", "page": "page", "rows": "rows", "axis": "axis", "layout": "layout",
}  # fmt: skip
_STRINGS = ("sort", "sort_a", "sort_b", "axis", "layout")  # written as they are; the rest as JSON
_MAX_FIELDS = 64  # a link of ours has 13; parse_qsl refuses more than this many
_MAX_VALUE = 200_000  # characters; a layer of 100,000 hidden neurons fits
# Characters of a link the dashboard writes. Tornado, which serves it, drops a request whose
# first line and headers pass 64 KiB, so a longer address could not be opened again: the
# reload or the shared link would get no page at all. Half of that leaves room for headers.
MAX_LINK = 32_000
_SHOWN = 60  # characters of a bad value quoted in a message
_MAX_PROBLEMS = 12  # problems named one by one; the rest are counted


@dataclass(frozen=True)
class LinkChoices:
    """What a link may refer to in one store.

    Parameters
    ----------
    layers
        Layer name -> number of neurons, in store order.
    groups, instances
        Group names and instance ids of the store.
    sorts
        Sort name -> the kinds of item it takes (``"group"``, ``"instance"`` or ``"any"``).
    rows
        The page sizes offered.
    max_groups
        How many groups can be drawn at once (one colour each).
    axes, layouts
        The activation axes and group layouts offered.
    compared
        Group names of the store drawn beside this one, if any (``compared:`` sort items).
    """

    layers: Mapping[str, int]
    groups: Sequence[str]
    instances: Sequence[str]
    sorts: Mapping[str, tuple[str, ...]]
    rows: Sequence[int]
    max_groups: int
    axes: Sequence[str] = ()
    layouts: Sequence[str] = ()
    compared: Sequence[str] = ()


@dataclass
class Link:
    """A link's state as checked by :func:`parse_link`.

    Attributes
    ----------
    values
        Parameter name -> value, for the fields present that fit the store (whole, or the
        part of a list that fits).
    problems
        One plain-text line per part left out, naming the field and the value.
    present
        Whether the query held any field of a link at all.
    """

    values: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    present: bool = False


def link_query(state: Mapping[str, Any]) -> str:
    """The query string of a view state: strings as they are, everything else as JSON.

    Parameters
    ----------
    state
        Parameter name -> value, for every parameter of :data:`URL_PARAMS`.

    Returns
    -------
    str
        ``?layers=...&rows=...``, the fields in the order of :data:`URL_PARAMS`.
    """
    query = {}
    for name, key in URL_PARAMS.items():
        value = state[name]
        query[key] = value if isinstance(value, str) else json.dumps(value)
    return "?" + urlencode(query)


def shareable_query(state: Mapping[str, Any]) -> tuple[str, bool]:
    """:func:`link_query` of ``state``, or, past :data:`MAX_LINK` characters, of ``state``
    without its hidden and marked neurons (thousands of ids are what makes a link that long).

    Returns
    -------
    tuple of (str, bool)
        The query string, and whether the neuron lists were left out of it.
    """
    query = link_query(state)
    if len(query) <= MAX_LINK:
        return query, False
    return link_query({**state, "hidden": {}, "marked": {}}), True


def shown(value: Any) -> str:
    """A value as a message quotes it: its ``repr``, cut to a few dozen characters.

    Parameters
    ----------
    value
        Any value a link decoded to (plain text; the page escapes it).
    """
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # nested past the stack, an int past repr's limit
        return f"a {type(value).__name__} too large to show"
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _is_int(value: Any) -> bool:
    # JSON true is a Python bool, which is an int: a neuron id or a page is never a bool.
    return isinstance(value, int) and not isinstance(value, bool)


class _Parser:
    """Checks one link against the store and the state it starts from."""

    def __init__(self, choices: LinkChoices, current: Mapping[str, Any]) -> None:
        self.choices = choices
        self.current = current
        self.link = Link()

    def bad(self, key: str, text: str) -> None:
        self.link.problems.append(f"{key}: {text}")

    def run(self, search: str) -> Link:
        raw = self.fields(search)
        decoded: dict[str, Any] = {}
        for name, key in URL_PARAMS.items():
            if key not in raw:
                continue
            self.link.present = True
            text = raw[key]
            if len(text) > _MAX_VALUE:
                self.bad(key, f"{len(text):,} characters is too long for a link; left out")
                continue
            if name in _STRINGS:
                decoded[name] = text
                continue
            try:
                decoded[name] = json.loads(text)
            except (ValueError, RecursionError):  # broken JSON, a number past int's limit
                self.bad(key, f"{shown(text)} is not valid JSON; left out")
        # In an order where each field is checked against those it depends on.
        for name in (
            "layers",
            "groups",
            "instances",
            "sort",
            "descending",
            "rows",
            "axis",
            "layout",
        ):
            if name in decoded:
                getattr(self, f"check_{name}")(decoded[name])
        for name in ("hidden", "marked"):
            if name in decoded:
                self.check_neurons(name, decoded[name])
        for name in ("sort_a", "sort_b"):
            if name in decoded:
                self.check_item(name, decoded[name])
        if "page" in decoded:
            self.check_page(decoded["page"])
        return self.link

    def fields(self, search: str) -> dict[str, str]:
        query = search[1:] if search.startswith("?") else search
        try:
            pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=_MAX_FIELDS)
        except ValueError:
            self.link.present = True
            self.link.problems.append(
                f"the link has more than {_MAX_FIELDS} fields; none of it was applied"
            )
            return {}
        out: dict[str, str] = {}
        known = set(URL_PARAMS.values())
        for key, value in pairs:
            if key not in known:
                self.link.present = True
                self.link.problems.append(f"{shown(key)} is not a field of a link; left out")
            elif key in out:
                self.bad(key, "given more than once; all but the last left out")
            out[key] = value
        return out

    def state(self, name: str) -> Any:
        """The value ``name`` will have: the link's if it fits, else the current one."""
        return self.link.values.get(name, self.current[name])

    def names(self, name: str, key: str, value: Any, allowed: Sequence[str], what: str) -> None:
        """A JSON list of names, each among ``allowed``: keeps those that are."""
        if not isinstance(value, list):
            self.bad(key, f"{shown(value)} is not a JSON list of {what}s; left out")
            return
        known = set(allowed)
        kept: list[str] = []
        wrong = []
        for item in value:
            if isinstance(item, str) and item in known:
                if item not in kept:
                    kept.append(item)
            else:
                wrong.append(item)
        if wrong:
            listed = ", ".join(shown(w) for w in wrong[:5])
            more = f" and {len(wrong) - 5} more" if len(wrong) > 5 else ""
            self.bad(key, f"no such {what}: {listed}{more}; left out")
        if kept or not value:  # an empty list is a choice; a list of nothing that fits is not
            self.link.values[name] = kept

    def check_layers(self, value: Any) -> None:
        self.names("layers", "layers", value, list(self.choices.layers), "layer")

    def check_groups(self, value: Any) -> None:
        self.names("groups", "groups", value, self.choices.groups, "group")
        kept = self.link.values.get("groups", [])
        limit = self.choices.max_groups
        if len(kept) > limit:
            self.link.values["groups"] = kept[:limit]
            self.bad("groups", f"at most {limit} groups can be told apart by colour; "
                               f"the first {limit} apply")  # fmt: skip

    def check_instances(self, value: Any) -> None:
        self.names("instances", "instances", value, self.choices.instances, "instance")

    def check_sort(self, value: str) -> None:
        if value in self.choices.sorts:
            self.link.values["sort"] = value
        else:
            self.bad("sort", f"no sort {shown(value)}; one of {', '.join(self.choices.sorts)}")

    def check_descending(self, value: Any) -> None:
        if isinstance(value, bool):
            self.link.values["descending"] = value
        else:
            self.bad("desc", f"{shown(value)} is not true or false; left out")

    def check_rows(self, value: Any) -> None:
        if _is_int(value) and value in self.choices.rows:
            self.link.values["rows"] = value
        else:
            offered = ", ".join(str(r) for r in self.choices.rows)
            self.bad("rows", f"{shown(value)} is not one of {offered}; left out")

    def check_axis(self, value: str) -> None:
        self.choose("axis", value, self.choices.axes)

    def check_layout(self, value: str) -> None:
        self.choose("layout", value, self.choices.layouts)

    def choose(self, name: str, value: str, offered: Sequence[str]) -> None:
        if value in offered:
            self.link.values[name] = value
        else:
            self.bad(name, f"{shown(value)} is not one of {', '.join(offered)}; left out")

    def check_neurons(self, name: str, value: Any) -> None:
        """``{layer: [neuron id, ...]}``: ids are integers within the layer's neurons."""
        key = URL_PARAMS[name]
        if not isinstance(value, dict):
            self.bad(key, f"{shown(value)} is not a JSON object of layer: [neuron ids]")
            return
        kept: dict[str, list[int]] = {}
        for layer, ids in value.items():
            n = self.choices.layers.get(layer)
            if n is None:
                self.bad(key, f"no such layer: {shown(layer)}; left out")
                continue
            if not isinstance(ids, list):
                self.bad(key, f"{shown(layer)}: {shown(ids)} is not a JSON list of neuron ids")
                continue
            good = {i for i in ids if _is_int(i) and 0 <= i < n}
            wrong = [i for i in ids if not (_is_int(i) and 0 <= i < n)]
            if wrong:
                listed = ", ".join(shown(w) for w in wrong[:5])
                more = f" and {len(wrong) - 5} more" if len(wrong) > 5 else ""
                self.bad(key, f"{shown(layer)} has neurons 0 to {n - 1}, not {listed}{more}; "
                              "left out")  # fmt: skip
            if good:
                kept[layer] = sorted(good)
        self.link.values[name] = kept

    def check_item(self, name: str, value: str) -> None:
        """A sort item: empty, or a group or instance of the store that the sort can take."""
        key = URL_PARAMS[name]
        if value == "":
            self.link.values[name] = value
            return
        kind, _, item = value.partition(":")
        exists = (
            (kind == "group" and item in self.choices.groups)
            or (kind == "instance" and item in self.choices.instances)
            or (kind == "compared" and item in self.choices.compared)
        )
        if not exists:
            self.bad(key, f"{shown(value)} is not group:<a group> or instance:<an instance> "
                          "of this store (or compared:<a group> of the store beside it); "
                          "left out")  # fmt: skip
            return
        sort = self.state("sort")
        takes = self.choices.sorts.get(sort, ())
        slot = 0 if name == "sort_a" else 1
        if slot < len(takes):
            want = takes[slot]
            if want not in ("any", kind) or (kind == "compared" and want != "any"):
                self.bad(key, f"sort {shown(sort)} takes a {want} here, not {shown(value)}; "
                              "left out")  # fmt: skip
                return
            # The sort offers the selected items of the kind it takes; with none selected it
            # keeps the item it has (and the dashboard does the same).
            offered = [f"group:{g}" for g in self.state("groups")] if want != "instance" else []
            if want == "any":
                offered += [f"compared:{g}" for g in self.state("groups")
                            if g in self.choices.compared]  # fmt: skip
            if want != "group":
                offered += [f"instance:{i}" for i in self.state("instances")]
            if offered and value not in offered:
                self.bad(key, f"{shown(value)} is not selected, so the sort cannot use it; "
                              "left out")  # fmt: skip
                return
        self.link.values[name] = value

    def check_page(self, value: Any) -> None:
        layers = self.state("layers")
        rows = self.state("rows")
        n_max = max([self.choices.layers[x] for x in layers] or [1])
        last = (n_max - 1) // rows
        if _is_int(value) and 0 <= value <= last:
            self.link.values["page"] = value
        elif isinstance(value, float) and not math.isfinite(value):
            self.bad("page", f"{shown(value)} is not a page number; left out")
        else:
            self.bad("page", f"{shown(value)} is not a page from 0 to {last}; left out")


def parse_link(search: str, choices: LinkChoices, current: Mapping[str, Any]) -> Link:
    """Decode and check a link's query against a store.

    Parameters
    ----------
    search
        The query string, with or without its ``?``, as the address bar has it.
    choices
        What the store offers.
    current
        The view state the link applies to, by parameter name: the fields a link leaves out
        (or that do not fit) keep these values, and the others are checked against them (a
        sort item must be among the groups selected, a page within the layers selected).

    Returns
    -------
    Link
        The values that fit and a line naming each part left out. Nothing in a link raises.
    """
    return _Parser(choices, current).run(search)


def problems_text(problems: Sequence[str]) -> str:
    """One message naming the parts of a link left out (plain text, to be escaped).

    Parameters
    ----------
    problems
        :attr:`Link.problems`; past a dozen, the rest are counted.
    """
    listed = "; ".join(problems[:_MAX_PROBLEMS])
    more = f"; and {len(problems) - _MAX_PROBLEMS} more" if len(problems) > _MAX_PROBLEMS else ""
    return f"this link does not fit this store; applied what fits. Left out: {listed}{more}"
