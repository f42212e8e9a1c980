"""Renderers: the only code that turns analysis results into output.

``text`` prints tables close to what crash users read; ``json`` writes the
versioned schema of docs/JSON.md.  Both are registered as plugins
(``tsubaki_register_renderers``) by the core's built-in plugin; more can be
added by any plugin.
"""

from . import json_renderer, text_renderer

__all__ = ["json_renderer", "text_renderer"]
