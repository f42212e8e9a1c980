"""Package names loaded on first use (PEP 562), one way for every package.

Why: start-up is work a user waits for (issue 21).  ``analyze`` should not
pay for the writer's numpy and thread pool, ``import`` not for the reader's
tables, a ``.tsd`` sniff not for pyelftools.  A package lists what each of
its names lives in and gets a module ``__getattr__`` that imports the module
on first access and caches the value in the package, so later lookups are
plain attribute reads.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` serving ``where[name]``'s ``name``.

    ``where`` maps an exported name to the submodule (relative, no dot)
    that defines it: ``__getattr__ = lazy_exports(__name__, {"TsdWriter":
    "writer"})``.
    """

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
