"""Build a ``drgn.Program`` straight from a dump, never materialising memory.

One physical segment per present range of ``dump.memory`` (data and zero
ranges alike); drgn's reads go to ``PhysicalMemory.read`` (served from the
reader's decompressed-chunk LRU), and memory the dump does not hold becomes a
``drgn.FaultError`` carrying its address, exactly as a real fault would.

Registers: when the dump has NT_PRSTATUS notes, the program is set up from a
notes-only ELF core in a memfd (see :mod:`.notes`), so ``prog.threads()``,
``prog.crashed_thread().stack_trace()`` and drgn's own commands behave as on
the original vmcore.  Without registers it is a custom Linux target
(``set_linux_kernel_custom``) and analyses that need registers are skipped.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import drgn

from ..contracts.dump import Dump, MemoryView
from ..contracts.needs import Need
from ..errors import DebugInfoError, ExcludedPageError, FormatError, NotCollectedError, TsubakiError
from .debuginfo import DEFAULT_DEBUG_DIRS, candidate_paths, mismatch_error, needed, not_found_error
from .notes import ELF_MACHINES, NT_PRSTATUS, VMCOREINFO_NAME, Note, iter_notes, notes_only_core
from .vmcoreinfo import VmcoreInfo, parse_vmcoreinfo

__all__ = ["DumpProgram", "program_from_dump", "segment_reader", "excluded_span", "name_dump_file", "DUMPFILE_KEY"]

_PLATFORMS = {
    "x86_64": drgn.Architecture.X86_64,
    "aarch64": drgn.Architecture.AARCH64,
    "arm64": drgn.Architecture.AARCH64,
}


@dataclass
class DumpProgram:
    """A program and what the bridge learned while building it."""

    prog: drgn.Program
    info: VmcoreInfo
    vmlinux: Path | None
    capabilities: frozenset[Need]
    cpus_with_registers: int
    selfcontained: Any = None  # a SelfContainedReport when types came from the dump's BTF


#: Pages kept by the bridge's own small cache (4 MiB of 4 KiB pages).
PAGE_CACHE_PAGES = 1024


def segment_reader(read: Callable[[int, int], bytes], page_size: int = 4096) -> Callable[[int, int, int, bool], Any]:
    """A drgn ``read_fn`` over ``read(paddr, size)`` that turns gaps into faults.

    drgn does not cache: every virtual read walks the page tables again, so
    most calls are 8-byte reads of the same few page-table pages.  Reads
    within one page are served from a small LRU of whole pages (C-speed
    ``functools.lru_cache``) in front of the reader's decompressed-chunk LRU.
    """
    shift = page_size.bit_length() - 1
    mask = page_size - 1

    @functools.lru_cache(maxsize=PAGE_CACHE_PAGES)
    def page(number: int) -> bytes:
        return read(number << shift, page_size)

    def read_fn(address: int, count: int, offset: int, physical: bool) -> Any:
        try:
            start = address & mask
            if start + count <= page_size:
                try:
                    return page(address >> shift)[start : start + count]
                except NotCollectedError:
                    pass  # part of the page is missing: read just the bytes asked for
            return read(address, count)
        except ExcludedPageError as e:  # left out by the dump level: not damage, say why
            raise drgn.FaultError(e.reason, e.address) from None
        except NotCollectedError as e:
            raise drgn.FaultError("memory not collected in the dump", e.address) from None
        except TsubakiError as e:  # a damaged chunk: unreadable, never a crash
            raise drgn.FaultError(f"dump damaged: {e}", address) from None

    return read_fn


def _zero_reader(address: int, count: int, offset: int, physical: bool) -> bytes:
    return bytes(count)


def _page_size(dump: Dump, info: VmcoreInfo) -> int:
    size = getattr(getattr(dump, "header", None), "page_size", None) or info.page_size or 4096
    return int(size)


def _arch(dump: Dump) -> str:
    header = getattr(dump, "header", None)
    return str(getattr(header, "arch", None) or "x86_64")


def program_from_dump(
    dump: Dump,
    *,
    vmlinux: Path | None = None,
    extra_debug_paths: Iterable[Path] = (),
    debug_dirs: Iterable[Path] = DEFAULT_DEBUG_DIRS,
    lab_cache: bool = True,
    debug_info: bool = True,
    self_contained: bool = False,
) -> DumpProgram:
    """The program for ``dump`` with memory, VMCOREINFO, registers and debug info.

    :param dump: a :class:`~tsubaki_forensics.contracts.Dump` (``.vmcoreinfo``,
        ``.notes``, ``.memory``; ``.header.arch`` when it has one).
    :param debug_info: load vmlinux (``False``: memory and symbols only).
    :param self_contained: no vmlinux: take types, symbols and the unwinder
        from the BTF, kallsyms and ORC tables inside the dump
        (:mod:`tsubaki_forensics.selfcontained`; its limitations are listed
        in ``DumpProgram.selfcontained``).
    :raises FormatError: the dump has no VMCOREINFO.
    :raises DebugInfoError: no vmlinux matches the dump's build id.
    """
    raw = dump.vmcoreinfo
    if not raw:
        raise FormatError("the dump has no VMCOREINFO: drgn cannot locate the kernel in it")
    raw = bytes(raw)
    info = parse_vmcoreinfo(raw)
    arch = _arch(dump)
    if arch not in _PLATFORMS:
        raise FormatError(f"architecture {arch!r} is not supported by the drgn bridge")
    prstatus = [n for n in iter_notes(bytes(dump.notes or b"")) if n.type == NT_PRSTATUS and n.name == b"CORE"]

    if vmlinux is not None and not Path(vmlinux).is_file():  # fail before any set-up
        raise mismatch_error(Path(vmlinux), info.build_id, info.release)

    if prstatus:
        prog = drgn.Program()
        notes = [Note(VMCOREINFO_NAME, 0, raw), *prstatus]
        fd = os.memfd_create("tsubaki-notes", os.MFD_CLOEXEC)
        try:
            os.write(fd, notes_only_core(notes, ELF_MACHINES[arch]))
            prog.set_core_dump(os.dup(fd))  # drgn owns the duplicate
        finally:
            os.close(fd)
        _add_segments(prog, dump.memory, _page_size(dump, info))
    else:
        flags = drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN
        prog = drgn.Program(drgn.Platform(_PLATFORMS[arch], flags))
        _add_segments(prog, dump.memory, _page_size(dump, info))
        prog.set_linux_kernel_custom(raw, False)

    capabilities = {Need.REGISTERS} if prstatus else set()
    vmlinux_path = selfcontained = None
    if self_contained:
        from ..selfcontained import attach_selfcontained

        selfcontained = attach_selfcontained(prog)  # SelfContainedError is a DebugInfoError
        capabilities.add(Need.DEBUG_INFO)
        _add_module_symbols(prog)
    elif debug_info:
        try:
            vmlinux_path = _load_kernel_debug_info(prog, info, vmlinux, extra_debug_paths, debug_dirs, lab_cache)
        except DebugInfoError as missing:
            if vmlinux is not None:  # an explicit vmlinux that does not fit stays an error
                raise
            # No vmlinux anywhere: the dump can usually describe itself (BTF,
            # kallsyms and ORC are inside every full dump of a modern kernel).
            selfcontained = _describe_itself(prog, dump, missing)
        capabilities.add(Need.DEBUG_INFO)
        _add_module_symbols(prog)
    return DumpProgram(prog, info, vmlinux_path, frozenset(capabilities), len(prstatus), selfcontained)


#: ``prog.config`` key holding the user's dump file(s), what crash's ``sys`` calls DUMPFILE.
DUMPFILE_KEY = "tsubaki.dumpfile"


def name_dump_file(prog: drgn.Program, paths: Iterable[object]) -> None:
    """Make drgn's crash ``sys`` show the user's dump file(s) as DUMPFILE.

    drgn prints ``prog.core_dump_path``, which here is the memfd of notes
    (``/memfd:tsubaki-notes``), and a ``drgn.Program`` can neither be told
    another path nor subclassed; so the program carries the path in its
    config and drgn's DUMPFILE getter (``_sys._FIELDS``) is wrapped, once,
    to prefer it.  Any other program still shows ``core_dump_path``.
    """
    from drgn.commands._crash import _sys

    prog.config[DUMPFILE_KEY] = " ".join(map(str, paths))
    for i, (name, append, getter) in enumerate(_sys._FIELDS):
        if name == "DUMPFILE" and not getattr(getter, "_tsubaki", False):
            def dumpfile(p: drgn.Program, _drgn=getter) -> Any:
                return p.config.get(DUMPFILE_KEY) or _drgn(p)

            dumpfile._tsubaki = True  # type: ignore[attr-defined]
            _sys._FIELDS[i] = (name, append, dumpfile)


def _describe_itself(prog: drgn.Program, dump: Dump, missing: DebugInfoError) -> Any:
    """No vmlinux: serve drgn from what the dump carries, or explain both failures.

    A symbol pack embedded in the dump (``symbols pack``/``symbols attach``)
    wins, since it was cut from the kernel's own DWARF; otherwise the
    kernel's BTF, kallsyms and ORC tables that every full dump contains.
    """
    from ..selfcontained import SelfContainedError, attach_selfcontained
    from ..symbolpack import attach_symbolpack, pack_from_dump

    pack = pack_from_dump(dump)
    if pack is not None:
        return attach_symbolpack(prog, pack)
    try:
        return attach_selfcontained(prog)
    except SelfContainedError as e:
        raise DebugInfoError(f"{missing}; and the dump cannot describe itself: {e}") from e


def _load_kernel_debug_info(
    prog: drgn.Program,
    info: VmcoreInfo,
    vmlinux: Path | None,
    extra: Iterable[Path],
    debug_dirs: Iterable[Path],
    lab_cache: bool,
) -> Path:
    """Offer drgn the candidates; it loads the one whose build id matches the kernel's."""
    if vmlinux is not None:
        paths = [Path(vmlinux)]
    elif info.build_id is None:
        raise not_found_error(None, info.release, 0)
    else:
        paths = candidate_paths(info.build_id, info.release, extra, debug_dirs, lab_cache)
    if paths:
        try:
            prog.load_debug_info(paths)
        except drgn.MissingDebugInfoError as e:
            raise DebugInfoError(f"drgn could not load debug info ({e}); the dump needs {needed(info.build_id, info.release)}") from e
    try:
        debug_file = prog.main_module().debug_file_path
    except LookupError:  # no kernel module created: nothing was offered
        debug_file = None
    if debug_file is None:
        if vmlinux is not None:
            raise mismatch_error(Path(vmlinux), info.build_id, info.release)
        raise not_found_error(info.build_id, info.release, len(paths))
    return Path(debug_file)


def _add_module_symbols(prog: drgn.Program) -> None:
    """Name module functions from the modules' own kallsyms in kernel memory.

    The vmlinux has no DWARF for modules (``pvpanic_panic_notify`` is the
    innermost frame of a QEMU panic); drgn's helper reads their symbol
    tables from the dump.  It is tried after every other symbol finder.
    """
    from drgn.helpers.linux.kallsyms import load_module_kallsyms

    try:
        finder = load_module_kallsyms(prog)
    except (drgn.FaultError, LookupError, ValueError):
        return  # module list not collected: frames keep their addresses
    prog.register_symbol_finder("module_kallsyms", finder, enable_index=-1)


def excluded_span(memory: MemoryView) -> tuple[int, int] | None:
    """(start, length) spanning every page the dump level left out, or None.

    drgn faults with its own "could not find physical memory segment" where
    no segment is; the bridge registers this span first, and the present
    ranges over it (a later segment wins in drgn), so a read of an excluded
    page reaches the dump's reader and fails naming its class (format 1.4).
    """
    runs = getattr(memory, "excluded", None)
    if not runs:
        return None
    return runs[0].paddr, runs[-1].end - runs[0].paddr


def _add_segments(prog: drgn.Program, memory: MemoryView, page_size: int) -> None:
    reader = segment_reader(memory.read, page_size)
    span = excluded_span(memory)
    if span is not None:
        prog.add_memory_segment(span[0], span[1], reader, physical=True)
    for r in memory.ranges():
        read_fn = _zero_reader if getattr(r, "kind", "data") == "zero" else reader
        prog.add_memory_segment(r.start, r.length, read_fn, physical=True)
