"""The ``tsubaki-forensics`` command line (typer).

One module per group of commands; :mod:`.app` assembles them and owns the
only place where a :class:`~tsubaki_forensics.errors.TsubakiError` becomes a
one-line message and an exit code.
"""
