"""The drgn bridge: a ``drgn.Program`` from a dump, its registers and debug info."""

from .debuginfo import candidate_paths, read_build_id
from .notes import Note, iter_notes, notes_only_core
from .program import DumpProgram, program_from_dump, segment_reader
from .vmcoreinfo import VmcoreInfo, parse_vmcoreinfo

__all__ = [
    "DumpProgram",
    "Note",
    "VmcoreInfo",
    "candidate_paths",
    "iter_notes",
    "notes_only_core",
    "parse_vmcoreinfo",
    "program_from_dump",
    "read_build_id",
    "segment_reader",
]
