"""Fleet triage: many dumps, analysed in parallel, grouped by crash signature.

The path of the data reads as the module list: :mod:`.discover` finds the
dumps (by dump id), :mod:`.cache` skips those already analysed, :mod:`.run`
analyses the rest on local processes or a Dask cluster with :mod:`.scan`
(one dump -> one record), :mod:`.signature` says which crashes are the same
bug, and :mod:`.report` groups and renders.  See docs/TRIAGE.md.
"""

from __future__ import annotations

__all__: list[str] = []
