"""Renderers: the only code that turns analysis results into output.

``text`` (:mod:`.text_renderer`) prints tables close to what crash users
read; ``json`` (:mod:`.json_renderer`) writes the versioned schema of
docs/JSON.md.  Both are registered as plugins
(``tsubaki_register_renderers``) by the core's built-in plugin, and imported
only when used (``text`` needs rich); more can be added by any plugin.
"""

__all__: list[str] = []
