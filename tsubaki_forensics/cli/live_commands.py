"""Commands for live mode: the monitor on a real running QEMU guest (filled in by its owner)."""

from __future__ import annotations

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
