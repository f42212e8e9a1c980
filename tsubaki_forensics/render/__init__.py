"""Renderers: the only code that turns results into output.

``text`` (:mod:`.text_renderer`) prints ``analyze``'s tables close to what
crash users read; ``json`` (:mod:`.json_renderer`) writes the versioned
schema of docs/JSON.md.  Both are registered as plugins
(``tsubaki_register_renderers``) by the core's built-in plugin, and imported
only when used (``text`` needs rich); more can be added by any plugin.
:mod:`.collect`, :mod:`.inspect` and :mod:`.triage` print those commands'
typed results (``tsubaki_forensics.contracts``), :mod:`.json_stream` writes
JSON documents as they are made.  This package reads only ``contracts``
(and ``sizes``), so it sits below the plugin system (docs/ARCHITECTURE.md, Layers).
"""

__all__: list[str] = []
