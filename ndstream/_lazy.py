"""Lazy public names for ndstream's packages (PEP 562 module ``__getattr__``).

A package lists where each of its lazily imported names lives; :func:`attach` returns the
package's ``__getattr__`` and ``__dir__``. Start-up stays light this way: the command line's
``--help`` and reading a store import neither torch nor Numba (see ``tests/test_startup.py``).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any


def attach(
    package: str,
    lazy: Mapping[str, str],
    namespace: MutableMapping[str, Any],
    public: Sequence[str],
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``.

    Parameters
    ----------
    package
        The package's ``__name__``.
    lazy
        Each lazily imported name and the module (relative to ``package``) it comes from.
    namespace
        The package's ``globals()``: a name, once imported, is kept there, and later reads
        are plain attribute reads.
    public
        The package's ``__all__``, listed by ``dir()`` before they are imported.

    Returns
    -------
    tuple
        ``(__getattr__, __dir__)``. ``__getattr__`` also imports a submodule on access
        (``ndstream.store`` after ``import ndstream``), as the eager imports did, and raises
        :class:`AttributeError` for anything else.
    """

    def __getattr__(name: str) -> Any:
        if name in lazy:
            value = getattr(_load(package, lazy[name]), name)
            namespace[name] = value
            return value
        if not name.startswith("__") and importlib.util.find_spec(f"{package}.{name}"):
            return _load(package, f".{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(public))

    return __getattr__, __dir__


def _load(package: str, module: str) -> Any:
    try:
        return importlib.import_module(module, package)
    except AttributeError as exc:
        # Raised from inside __getattr__, `from ndstream import X` would report only
        # "cannot import name X" and drop this error: name the failed import instead.
        raise ImportError(f"importing {package}{module} failed: {exc}") from exc
