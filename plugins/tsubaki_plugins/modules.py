"""``modules``: the loaded kernel modules and their taint, like crash's ``mod`` and ``mod -t``.

The figures are those of drgn's own crash ``mod`` command
(``drgn.commands._crash._mod``): the kernel's modules (drgn's
``for_each_module``; each as drgn's module object,
``prog.linux_kernel_loadable_module``), each with its ``struct module``
address, the start of its text (``TEXT_BASE``), its size (the sum
of its address ranges) and the debug file drgn loaded for it, plus its taint
letters (drgn's ``module_taints``, crash's ``mod -t``).  The kernel's own
taint is the ``sys`` analysis's ``TAINT``; here the facts say how many
modules are tainted.  Each figure is read on its own: one that cannot be
read is a placeholder, and a module list that cannot be walked to its end
says so.
"""

# No ``from __future__ import annotations`` here: typing.NamedTuple would compile
# each field's annotation string on every import (issue 21, docs/PLUGINS.md).

from collections.abc import Sequence
from typing import NamedTuple

import drgn
from drgn.helpers.linux.module import for_each_module, module_taints

from tsubaki_forensics.analysis import (
    AnalysisContext,
    AnalysisResult,
    Column,
    Completeness,
    Missing,
    Need,
    NotCollected,
    Table,
    Value,
    is_placeholder,
)
from tsubaki_forensics.analysis.guard import READ_ERRORS, missing_for, read_value
from tsubaki_forensics.plugin_system import hookimpl

__all__ = ["ModuleRecord", "read_modules", "modules_result", "analyze"]


class ModuleRecord(NamedTuple):
    """One loaded module; any field but the name may be a placeholder.

    :param module: ``struct module *`` value (crash's ``MODULE`` column).
    """

    name: str
    module: Value
    text_base: Value
    size: Value
    taints: Value
    debug_file: Value = None

    @property
    def readable(self) -> bool:
        return not any(is_placeholder(v) for v in (self.module, self.text_base, self.size, self.taints))


def _size(module: drgn.Module) -> int:
    ranges = module.address_ranges
    return 0 if ranges is None else sum(end - start for start, end in ranges)


def _drgn_module(prog: drgn.Program, obj: drgn.Object) -> drgn.Module:
    """drgn's module for this ``struct module`` (its name, address ranges and debug file)."""
    return prog.linux_kernel_loadable_module(obj, create=True)


def read_modules(prog: drgn.Program) -> tuple[list[ModuleRecord], list[Missing], bool]:
    """Every loaded module in the kernel's list order (drgn's ``mod``).

    The kernel's ``modules`` list is walked with drgn's ``for_each_module``
    rather than ``prog.loaded_modules()``, which stops quietly (a logged
    warning) at a module it cannot read: here the gap is reported.

    :returns: the records, what could not be read, and whether the module
        list was walked to its end.
    """
    records: list[ModuleRecord] = []
    missing: list[Missing] = []
    try:
        for obj in for_each_module(prog):
            address = obj.value_()
            module = read_value(lambda: _drgn_module(prog, obj))
            if not isinstance(module, drgn.Module):
                name = read_value(lambda: obj.name.string_().decode("utf-8", "backslashreplace"))
                records.append(ModuleRecord(name if isinstance(name, str) else f"{address:#x}", address, module,
                                            module, read_value(lambda: module_taints(obj))))
                missing.append(Missing(records[-1].name, getattr(module, "address", None),
                                       isinstance(module, NotCollected), "module"))
                continue
            record = ModuleRecord(
                name=module.name,
                module=address,
                text_base=read_value(lambda: module.address),
                size=read_value(lambda: _size(module)),
                taints=read_value(lambda: module_taints(obj)),
                debug_file=module.debug_file_path,
            )
            records.append(record)
            if not record.readable:
                bad = next(v for v in (record.text_base, record.size, record.taints) if is_placeholder(v))
                missing.append(Missing(module.name, getattr(bad, "address", None), isinstance(bad, NotCollected),
                                       "module"))
    except READ_ERRORS as e:
        missing.append(missing_for("module list (modules)", e))
        return records, missing, False
    return records, missing, True


_COLUMNS = (
    Column("module", "MODULE", int, fmt="address"),
    Column("name", "NAME", str),
    Column("text_base", "TEXT_BASE", int, fmt="address"),
    Column("size", "SIZE", int, "right"),
    Column("taints", "TAINTS", str),
    Column("debug_file", "OBJECT FILE", str),
)


def modules_result(records: Sequence[ModuleRecord], missing: Sequence[Missing], complete: bool) -> AnalysisResult:
    """Pure: the ``modules`` result from what extraction read."""
    rows = [(r.module, r.name, r.text_base, r.size, r.taints, r.debug_file) for r in records]
    tainted = [r.name for r in records if isinstance(r.taints, str) and r.taints]
    facts: list[tuple[str, Value]] = [("modules", len(records)), ("tainted modules", len(tainted))]
    notes = []
    if not complete:
        notes.append("the module list could not be walked to its end: modules after the gap are not listed")
    return AnalysisResult(
        name="modules",
        title="Loaded modules",
        facts=tuple(facts),
        tables=(Table.build("modules", "Loaded modules", _COLUMNS, rows),),
        completeness=(Completeness("modules", sum(1 for r in records if r.readable),
                                   len(records) if complete else None, tuple(missing)),),
        notes=tuple(notes),
    )


def analyze(ctx: AnalysisContext) -> AnalysisResult:
    """Read the loaded modules of ``ctx.prog`` and build the result."""
    return modules_result(*read_modules(ctx.prog))


@hookimpl
def tsubaki_register_analyses(register) -> None:  # type: ignore[no-untyped-def]
    """Register ``modules``."""
    register("modules", analyze, "loaded modules: address, text base, size, taint letters (crash's mod, mod -t)",
             needs=[Need.DEBUG_INFO], facts=["modules", "tainted_modules"])
