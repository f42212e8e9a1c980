"""Text from a dump made safe to print: the renderers' and the CLI's one escape.

Strings that come from a dump (task names, log lines, panic messages) are
untrusted: they pass through :func:`safe_text` before they reach a terminal so
that a crafted dump cannot inject escape sequences or reorder what is shown.

It lives in ``render/`` (below the CLI) because the text renderer and the triage
report need it too; ``cli/output.py`` re-exports it, so the CLI modules and
plugins that import it from there keep working (docs/ARCHITECTURE.md, Layers).
"""

from __future__ import annotations

import re

__all__ = ["safe_text"]

# C0/C1 controls (tab kept) and the bidi overrides, embeddings, isolates and
# marks that reorder what a terminal shows (U+202E makes "exe.txt" of "txt.exe").
# Compiled on first use (~0.25 ms each; issue 21: most commands use one or none).
_SOURCES = {
    False: "[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]",
    True: "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]",  # keep newlines
}
_PATTERNS: dict[bool, re.Pattern[str]] = {}


def _shown(m: re.Match) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def safe_text(value: object, *, keep_newlines: bool = False) -> str:
    """``value`` as text that cannot forge output: control characters, newlines and
    bidi controls shown as ``\\xNN`` / ``\\uNNNN``.

    :param keep_newlines: only for bodies rendered line by line with their own
        prefix (kernel log text), where a newline cannot pass for a new record.
    """
    keep = bool(keep_newlines)
    pattern = _PATTERNS.get(keep)
    if pattern is None:
        pattern = _PATTERNS[keep] = re.compile(_SOURCES[keep])
    return pattern.sub(_shown, str(value))
