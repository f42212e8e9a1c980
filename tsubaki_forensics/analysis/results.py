"""What an analysis returns (re-exported from the bottom layer).

The types live in :mod:`tsubaki_forensics.contracts.results`: the renderers
(``render/``) read them and sit below the plugin system, which sits below
this layer (docs/ARCHITECTURE.md, "Layers").  This module, their old home,
re-exports them: plugins import them from here and from
``tsubaki_forensics.analysis``.
"""

from __future__ import annotations

from ..contracts import results as _results
from ..contracts.results import *  # noqa: F403  (the same names, re-exported)

__all__ = list(_results.__all__)
