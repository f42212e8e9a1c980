"""The bundled analyses of tsubaki-forensics: ``sys``, ``panic``, ``blocked``, ``tasks``, ``runq``, ``memory``,
``modules`` and ``dmesg``.

Each module is a pluggy plugin registered through the ``tsubaki_forensics``
entry-point group, exactly like a third-party package's, so the third-party
path is exercised on every run.  Each splits extraction (reading kernel
memory with drgn's helpers) from pure functions that build the result, so
most of the logic is tested without a kernel.
"""

__all__: list[str] = []
