"""One ``analyze`` run as a library call: dump -> program -> analyses -> report.

The CLI and the pytest plugin both go through here, so what a test checks is
what a user runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import drgn

from ..contracts.frozen import Record
from ..drgn_bridge.debuginfo import safe_build_id, safe_release
from ..drgn_bridge.program import DumpProgram, name_dump_file, program_from_dump
from ..drgn_bridge.vmcoreinfo import parse_vmcoreinfo
from ..errors import FormatError, TsubakiError
from ..plugin_system.manager import Plugins
from .report import DumpSummary, Report
from .runner import DEFAULT_TIMEOUT_S, run_analyses, select
from .spec import AnalysisContext

__all__ = ["OpenedDump", "open_program", "summarize", "analyze_dump", "MAX_GAPS_LISTED"]

MAX_GAPS_LISTED = 32  # missing ranges named one by one in a report's problems


class OpenedDump(Record):
    """A reassembled dump and the program built from it (keep both alive together)."""

    _fields = ("paths", "dump", "program")
    paths: tuple[Path, ...]
    dump: Any
    program: DumpProgram

    def __init__(self, paths: tuple[Path, ...], dump: Any, program: DumpProgram) -> None:
        self.paths = paths
        self.dump = dump
        self.program = program

    def close(self) -> None:
        close = getattr(self.dump, "close", None)
        if close is not None:
            close()


def open_program(
    paths: Sequence[Path],
    plugins: Plugins,
    *,
    vmlinux: Path | None = None,
    debug_dirs: Sequence[Path] | None = None,
    debug_info: bool = True,
    self_contained: bool = False,
) -> OpenedDump:
    """Reassemble ``paths`` (``tsubaki_reassemble``), build the program, run ``tsubaki_program_ready``."""
    dump = plugins.reassemble([Path(p) for p in paths])
    try:
        info = parse_vmcoreinfo(dump.vmcoreinfo or b"")
        # plugins get the dump's strings only if they are a hex id and a plain release name
        extra = plugins.debug_info_paths(safe_build_id(info.build_id), safe_release(info.release))
        kwargs: dict[str, Any] = {
            "vmlinux": vmlinux,
            "providers": plugins.debug_info_providers(),
            "extra_debug_paths": extra,
            "debug_info": debug_info,
            "self_contained": self_contained,
        }
        if debug_dirs is not None:
            kwargs["debug_dirs"] = list(debug_dirs)
        try:
            program = program_from_dump(dump, **kwargs)
        except (drgn.BadDataError, drgn.FaultError, drgn.ObjectAbsentError, ValueError,
                OverflowError, LookupError) as e:
            if isinstance(e, TsubakiError):
                raise
            # A damaged or crafted dump (VMCOREINFO, notes, page tables) that
            # drgn refuses: one line naming the files, not a traceback.
            raise FormatError(f"{', '.join(map(str, paths))}: drgn cannot use this dump: "
                              f"{type(e).__name__}: {e}") from None
        name_dump_file(program.prog, paths)  # crash's sys DUMPFILE: the user's file, not the notes memfd
        plugins.program_ready(program.prog, dump)
    except BaseException:
        close = getattr(dump, "close", None)
        if close is not None:
            close()
        raise
    return OpenedDump(tuple(Path(p) for p in paths), dump, program)


def summarize(opened: OpenedDump) -> DumpSummary:
    """What the report header says about the dump."""
    dump, program = opened.dump, opened.program
    memory = getattr(dump, "memory", None)
    problems = [str(p) for p in getattr(dump, "problems", ())]
    measure = getattr(dump, "completeness", None)  # a reassembled .tsd (a plugin's dump may lack it)
    c = measure() if callable(measure) else None
    if c is not None:
        if c.complete is False:
            problems.append(f"memory INCOMPLETE: {c.reason}")
        for g in c.gaps[:MAX_GAPS_LISTED]:
            why = f" ({g.reason})" if g.reason else ""
            problems.append(f"physical {g.start:#x}-{g.end:#x} not collected{why}")
        if len(c.gaps) > MAX_GAPS_LISTED:
            problems.append(f"... and {len(c.gaps) - MAX_GAPS_LISTED} more ranges not collected "
                            f"(`tsubaki-forensics inspect` lists them all)")
    elif memory is not None and hasattr(memory, "missing_ranges"):
        for r in memory.missing_ranges():
            problems.append(f"physical {r.start:#x}-{r.start + r.length:#x} not collected")
    return DumpSummary(
        paths=tuple(str(p) for p in opened.paths),
        dump_id=str(getattr(dump, "dump_id", "")) or None,
        kernel_release=program.info.release,
        build_id=program.info.build_id,
        vmlinux=str(program.vmlinux) if program.vmlinux else None,
        present_bytes=getattr(memory, "present_bytes", None),
        expected_bytes=c.expected_bytes if c is not None else None,
        dump_level=c.dump_level if c is not None else None,
        excluded_bytes=c.excluded_bytes if c is not None else 0,
        complete=c.complete if c is not None else None,
        completeness_percent=c.percent if c is not None else None,
        completeness=c.reason if c is not None else None,
        registers=program.cpus_with_registers > 0,
        problems=tuple(problems),
    )


def analyze_dump(
    opened: OpenedDump,
    plugins: Plugins,
    *,
    only: Sequence[str] = (),
    exclude: Sequence[str] = (),
    options: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    strict: bool = False,
) -> Report:
    """Run the selected analyses on an opened dump and return the report.

    :param timeout: seconds each analysis may run; :param strict: the first
        failed analysis raises :class:`~tsubaki_forensics.errors.PluginError`.
    """
    specs = select(plugins.analyses(), only, exclude)
    context = AnalysisContext(opened.program.prog, opened.dump, dict(options or {}), opened.program.capabilities)
    results = run_analyses(specs, context, progress, timeout=timeout, strict=strict)
    debug_info = opened.program.debug_info  # say what a pack or the dump's own BTF cannot give
    warnings = tuple(debug_info.lines()) if debug_info is not None else ()
    return Report(summarize(opened), tuple(results), warnings)
