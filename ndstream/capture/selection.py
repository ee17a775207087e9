"""Layer selection: turn names, globs and type selectors into module names, and read
per-layer settings keyed by names or globs.

A selector is an exact name from ``model.named_modules()``, a glob (``"features.*"``),
``"type:Conv2d,Linear"`` or an ``nn.Module`` subclass; a name that does not exist raises
:class:`~ndstream.errors.LayerNotFoundError` listing the closest names.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from ..errors import LayerNotFoundError, near_names

__all__ = ["LayerSelector", "per_layer", "resolve_layers"]

LayerSelector = str | type[nn.Module]

_HINT = (
    "List all names with [n for n, _ in model.named_modules()]; globs such as 'features.*' "
    "and type selectors such as 'type:Conv2d' (or 'type:Conv2d,Linear') are also accepted."
)

_Named = list[tuple[str, nn.Module]]


def _mro_names(module: nn.Module) -> set[str]:
    return {cls.__name__ for cls in type(module).__mro__}


def _typed(label: str, hits: set[str], named: _Named, where: str) -> set[str]:
    if not hits:
        types = ", ".join(sorted({type(m).__name__ for _, m in named}))
        raise LayerNotFoundError(f"No module of type {label} in {where}. Types present: {types}.")
    return hits


def _match(model: nn.Module, selector: object, named: _Named) -> set[str]:
    names = [n for n, _ in named]
    where = type(model).__name__
    if isinstance(selector, type) and issubclass(selector, nn.Module):
        hits = {n for n, m in named if isinstance(m, selector)}
        return _typed(selector.__name__, hits, named, where)
    if not isinstance(selector, str):
        raise TypeError(f"a layer selector is a str or nn.Module subclass, got {selector!r}")
    if selector.startswith("type:"):
        wanted = [t.strip() for t in selector[5:].split(",") if t.strip()]
        if not wanted:
            raise ValueError(f"{selector!r} names no type; write e.g. 'type:Conv2d,Linear'")
        found: set[str] = set()
        for t in wanted:  # each listed type must match, so a typo in one is not dropped
            found |= _typed(repr(t), {n for n, m in named if t in _mro_names(m)}, named, where)
        return found
    is_glob = bool(set("*?[") & set(selector))
    found = {n for n in names if fnmatch.fnmatchcase(n, selector)} if is_glob else {selector}
    if not found & set(names):
        what = "Glob {!r} matches no module" if is_glob else "No layer named {!r}"
        raise LayerNotFoundError(
            f"{what.format(selector)} in {where}; {near_names(selector, names, 'modules')}. "
            + _HINT
        )
    return found


def resolve_layers(model: nn.Module, layers: LayerSelector | Sequence[LayerSelector]) -> list[str]:
    """Turn layer selectors into module names.

    Parameters
    ----------
    model : nn.Module
        The model whose submodules are selected; the root (name ``""``) never is.
    layers : str, nn.Module subclass, or a sequence of them
        Each selector is an exact name from ``model.named_modules()``, a glob (contains one
        of ``*?[``, matched with :func:`fnmatch.fnmatchcase`), ``"type:Name[,Name...]"``
        or an ``nn.Module`` subclass. A type name matches a module when any class in the
        module's MRO has that ``__name__``, so subclasses match too.

    Returns
    -------
    list of str
        Unique names, in ``model.named_modules()`` order.

    Raises
    ------
    LayerNotFoundError
        A name does not exist (the message lists the closest), or a glob or type matches nothing.
    ValueError
        The selection is empty.
    """
    selectors = [layers] if isinstance(layers, str | type) else list(layers)
    if not selectors:
        raise ValueError(f"no layers selected; {_HINT}")
    named = [(n, m) for n, m in model.named_modules() if n]
    chosen: set[str] = set()
    for selector in selectors:
        chosen |= _match(model, selector, named)
    return [n for n, _ in named if n in chosen]


def per_layer(
    names: Sequence[str], mapping: Mapping[str, Any], what: str, kinds: type | tuple[type, ...]
) -> dict[str, Any]:
    """A per-layer setting keyed by layer names or globs: each selected layer's value.

    An exact name wins over globs; globs that disagree on a layer, keys that match no
    selected layer and values of the wrong type raise ValueError.
    """
    for key, value in mapping.items():
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise ValueError(f"{what}[{key!r}] must be {_kind_names(kinds)}, got {value!r}")
        if not any(fnmatch.fnmatchcase(n, key) for n in names):
            raise ValueError(f"{what} key {key!r} matches no selected layer {list(names)}")
    resolved: dict[str, Any] = {}
    for name in names:
        values = {v for key, v in mapping.items() if fnmatch.fnmatchcase(name, key)}
        if name not in mapping and len(values) > 1:
            plural = "axes" if kinds is int else "fields"
            raise ValueError(f"{what} globs give layer {name!r} different {plural} {values}")
        if values:  # an exact name is also a glob matching itself, so it is in `values`
            resolved[name] = mapping.get(name, values.pop())
    return resolved


def _kind_names(kinds: type | tuple[type, ...]) -> str:
    names = {"int": "an int axis", "str": "a field name"}
    items = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join(names.get(k.__name__, k.__name__) for k in items)
