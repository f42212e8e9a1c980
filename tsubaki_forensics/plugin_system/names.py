"""The plugin system's name: pluggy's project name and the entry-point group.

A leaf of its own so that the command line's start-up (:mod:`.discovery`,
the root ``--help``) reads it without importing pluggy (issue 21).
"""

from __future__ import annotations

__all__ = ["PROJECT_NAME"]

#: pluggy project name; also the entry-point group.
PROJECT_NAME = "tsubaki_forensics"
