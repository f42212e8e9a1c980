"""The triage result cache: one record per dump id, in a small SQLite file.

Why SQLite: several triage runs (a cron job and a person) may share the cache,
and SQLite gives atomic upserts and locking for free, where a JSON-lines file
would need its own.  The file lives at
``$XDG_CACHE_HOME/tsubaki-forensics/triage/results.sqlite`` unless
``--cache-file`` says otherwise.

A cached record is reused only when all of these still match:

- the **dump id** (the key);
- the dump's **fingerprint** (its distinct files, see
  :mod:`~tsubaki_forensics.triage.discover`): a dump that gained a file is
  analysed again.  Copies of a file do not change it, so a copy of an
  analysed dump under another name costs nothing;
- the **options** that change a record (debug directories, self-contained
  mode, signature depth) and the record **version**.

Paths are never taken from the cache: each run lists the paths it found.
Failed analyses are not cached (the cause, e.g. a missing vmlinux, may be
fixed before the next run).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from ..errors import TsubakiError
from .scan import RECORD_VERSION

__all__ = ["ResultCache", "default_cache_path", "options_key"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    dump_id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    options TEXT NOT NULL,
    version INTEGER NOT NULL,
    analysed_at REAL NOT NULL,
    record TEXT NOT NULL
)
"""


def default_cache_path() -> Path:
    """``<tsubaki cache root>/triage/results.sqlite`` (the crash lab's root: XDG_CACHE_HOME, TSUBAKI_CACHE_DIR)."""
    from ..lab.cache import cache_root

    return cache_root() / "triage" / "results.sqlite"


def options_key(options: dict[str, Any]) -> str:
    """The options as canonical JSON: equal exactly when they would give equal records."""
    return json.dumps(options, sort_keys=True, separators=(",", ":"))


class ResultCache:
    """Records by dump id; ``get`` returns one only while it is still valid."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30)
            self._db.execute(_SCHEMA)
            self._db.commit()
        except (OSError, sqlite3.Error) as e:
            raise TsubakiError(f"{self.path}: cannot open the triage cache: {e}") from e

    def get(self, dump_id: str, fingerprint: str, options: str) -> dict[str, Any] | None:
        """The cached record of ``dump_id`` if it was made from the same files with the same options."""
        row = self._db.execute(
            "SELECT record FROM results WHERE dump_id = ? AND fingerprint = ? AND options = ? AND version = ?",
            (dump_id, fingerprint, options, RECORD_VERSION),
        ).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, dump_id: str, fingerprint: str, options: str, record: dict[str, Any]) -> None:
        """Store (or replace) the record of ``dump_id``; records with an ``error`` are not stored."""
        if record.get("error"):
            return
        self._db.execute(
            "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?)",
            (dump_id, fingerprint, options, RECORD_VERSION, time.time(), json.dumps(record)),
        )
        self._db.commit()

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
