"""Measure what the analyses look up: the contents of :mod:`.lookups`.

Runs the bundled analyses (and every installed analysis plugin) on a real
crash with its DWARF vmlinux, as ``analyze`` does, with recording finders
registered first: every type, object and symbol name drgn is asked for --
by the analyses, by drgn's helpers, and by drgn itself (the unwinder asks
for ``struct pt_regs``, the module walk for ``struct module``) -- is
noted, then handed on to DWARF.  Names reached only through members of
another type are not lookups: :mod:`.extract` packs the closure of types.

    python -m tsubaki_forensics.symbolpack.record DUMP.tsd VMLINUX [...DUMP VMLINUX] > lookups.json
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import drgn

__all__ = ["Recorded", "record_lookups", "main"]

_PREFIXES = {drgn.TypeKind.STRUCT: "struct ", drgn.TypeKind.UNION: "union ", drgn.TypeKind.ENUM: "enum ",
             drgn.TypeKind.CLASS: "class "}


@dataclass
class Recorded:
    """Names asked for, in first-asked order."""

    types: dict[str, None] = field(default_factory=dict)
    objects: dict[str, None] = field(default_factory=dict)
    symbols: dict[str, None] = field(default_factory=dict)

    def attach(self, prog: drgn.Program) -> None:
        """Register the recording finders ahead of every other finder."""

        def types(prog, kinds, name, filename):  # type: ignore[no-untyped-def]
            for kind in kinds:
                self.types.setdefault(_PREFIXES.get(kind, "") + name, None)
            return None

        def objects(prog, name, flags, filename):  # type: ignore[no-untyped-def]
            self.objects.setdefault(name, None)
            return None

        def symbols(prog, name, address, one):  # type: ignore[no-untyped-def]
            if name is not None:
                self.symbols.setdefault(name, None)
            return []

        prog.register_type_finder("tsubaki_record", types, enable_index=0)
        prog.register_object_finder("tsubaki_record", objects, enable_index=0)
        prog.register_symbol_finder("tsubaki_record", symbols, enable_index=0)

    def as_dict(self) -> dict[str, list[str]]:
        return {"types": list(self.types), "objects": list(self.objects), "symbols": list(self.symbols)}


def record_lookups(dump_path: Path, vmlinux: Path, recorded: Recorded | None = None) -> Recorded:
    """Run every registered analysis on ``dump_path`` with ``vmlinux``; what it looked up."""
    from drgn.helpers.linux.kallsyms import load_module_kallsyms

    from ..analysis import AnalysisContext, run_analyses, select
    from ..contracts.needs import Need
    from ..drgn_bridge import program_from_dump
    from ..plugin_system import Plugins
    from ..tsd import open_dump

    recorded = recorded or Recorded()
    dump = open_dump([dump_path])
    try:
        program = program_from_dump(dump, debug_info=False)
        prog = program.prog
        recorded.attach(prog)
        prog.load_debug_info([str(vmlinux)])
        prog.register_symbol_finder("module_kallsyms", load_module_kallsyms(prog), enable_index=-1)
        prog.create_loaded_modules()  # as the self-contained unwinder does
        context = AnalysisContext(prog, dump, {}, frozenset(program.capabilities | {Need.DEBUG_INFO}))
        for result in run_analyses(select(Plugins.load().analyses()), context):
            if result.status.value != "ok":
                raise RuntimeError(f"analysis {result.name} was {result.status.value} while recording")
    finally:
        dump.close()
    return recorded


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or len(args) % 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    recorded = Recorded()
    for dump_path, vmlinux in zip(args[::2], args[1::2]):
        record_lookups(Path(dump_path), Path(vmlinux), recorded)
    json.dump(recorded.as_dict(), sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
