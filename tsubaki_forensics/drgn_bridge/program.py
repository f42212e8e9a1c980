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
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import drgn

from ..contracts.debuginfo import DESCRIPTION, ORDER, DebugInfoProvider, DebugInfoReport, DeferredProvider
from ..contracts.dump import Dump, MemoryView
from ..contracts.frozen import Record
from ..contracts.needs import Need
from ..elfnotes import VMCOREINFO_NAME, VMCOREINFO_TYPE, Note, prstatus_notes
from ..errors import ExcludedPageError, FormatError, NotCollectedError, TsubakiError
from .chain import attach_debug_info
from .debuginfo import DEFAULT_DEBUG_DIRS, VmlinuxFiles, mismatch_error
from .notes import ELF_MACHINES, notes_only_core
from .vmcoreinfo import VmcoreInfo, parse_vmcoreinfo

__all__ = ["BRIDGE_PROVIDERS", "DumpProgram", "program_from_dump", "segment_reader", "excluded_span", "name_dump_file",
           "DUMPFILE_KEY"]

#: The chain when the caller gives none: the debug-info providers the bridge
#: owns (the crash lab's cache and symbol packs come from the plugin hook).
#: (The BTF reader is imported only when the chain reaches it: issue 21.)
BRIDGE_PROVIDERS: tuple[DebugInfoProvider, ...] = (
    VmlinuxFiles(),
    DeferredProvider("tsubaki_forensics.selfcontained.provider:BtfProvider", "btf", DESCRIPTION["btf"], ORDER["btf"]),
)

#: the architecture as dumps name it -> drgn's (the bridge, page classes and packs use it)
ARCHITECTURES = {
    "x86_64": drgn.Architecture.X86_64,
    "aarch64": drgn.Architecture.AARCH64,
    "arm64": drgn.Architecture.AARCH64,
}


class DumpProgram(Record):
    """A program and what the bridge learned while building it.

    :param debug_info: where the types and symbols came from (``None``: no
        debug info was asked for).
    """

    _fields = ("prog", "info", "vmlinux", "capabilities", "cpus_with_registers", "debug_info")
    prog: drgn.Program
    info: VmcoreInfo
    vmlinux: Path | None
    capabilities: frozenset[Need]
    cpus_with_registers: int
    debug_info: DebugInfoReport | None

    def __init__(self, prog: drgn.Program, info: VmcoreInfo, vmlinux: Path | None, capabilities: frozenset[Need],
                 cpus_with_registers: int, debug_info: DebugInfoReport | None = None) -> None:
        self.prog = prog
        self.info = info
        self.vmlinux = vmlinux
        self.capabilities = capabilities
        self.cpus_with_registers = cpus_with_registers
        self.debug_info = debug_info


#: Pages kept by the bridge's own small cache (4 MiB of 4 KiB pages).
PAGE_CACHE_PAGES = 1024
#: Whole reads (address, size) answered without entering Python: at most this
#: many, each at most one page, so at most 16 MiB (a few hundred KiB in practice).
READ_CACHE_READS = 4096


def segment_reader(read: Callable[[int, int], bytes], page_size: int = 4096) -> Callable[[int, int, int, bool], Any]:
    """A drgn ``read_fn`` over ``read(paddr, size)`` that turns gaps into faults.

    drgn does not cache: every virtual read walks the page tables again, so
    most calls are 8-byte reads of the same few page-table pages.  Two
    caches in C (``functools.lru_cache``) keep that off the Python path:

    - the function drgn calls *is* an LRU of whole reads by their arguments:
      a repeated read (84% of ~25,000 in one ``analyze`` of a lab crash,
      issue 21) is a dict hit with no Python frame at all; a failed read is
      never cached (it raises), and a read larger than a page empties the
      cache on the next miss, so it holds at most
      :data:`READ_CACHE_READS` page-sized results;
    - reads within one page are served from an LRU of whole pages in front
      of the reader's decompressed-chunk LRU.

    The dump's memory never changes, so a cached answer is always the answer.
    """
    shift = page_size.bit_length() - 1
    mask = page_size - 1
    big_cached = False

    @functools.lru_cache(maxsize=PAGE_CACHE_PAGES)
    def page(number: int) -> bytes:
        return read(number << shift, page_size)

    def read_uncached(address: int, count: int, offset: int, physical: bool) -> Any:
        nonlocal big_cached
        if big_cached:  # keep the whole-read cache small: a big answer is dropped at the next miss
            read_fn.cache_clear()
            big_cached = False
        try:
            start = address & mask
            if start + count <= page_size:
                try:
                    return page(address >> shift)[start : start + count]
                except NotCollectedError:
                    pass  # part of the page is missing: read just the bytes asked for
            big_cached = count > page_size
            return read(address, count)
        except ExcludedPageError as e:  # left out by the dump level: not damage, say why
            raise drgn.FaultError(e.reason, e.address) from None
        except NotCollectedError as e:
            raise drgn.FaultError("memory not collected in the dump", e.address) from None
        except TsubakiError as e:  # a damaged chunk: unreadable, never a crash
            raise drgn.FaultError(f"dump damaged: {e}", address) from None

    read_fn = functools.lru_cache(maxsize=READ_CACHE_READS)(read_uncached)
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
    providers: Sequence[DebugInfoProvider] | None = None,
    extra_debug_paths: Iterable[Path] = (),
    debug_dirs: Iterable[Path] = DEFAULT_DEBUG_DIRS,
    debug_info: bool = True,
    self_contained: bool = False,
) -> DumpProgram:
    """The program for ``dump`` with memory, VMCOREINFO, registers and debug info.

    :param dump: a :class:`~tsubaki_forensics.contracts.Dump` (``.vmcoreinfo``,
        ``.notes``, ``.memory``; ``.header.arch`` when it has one).
    :param vmlinux: the user's vmlinux: that file or a :class:`DebugInfoError`.
    :param providers: the debug-info chain (``Plugins.debug_info_providers()``:
        vmlinux files, the crash lab's cache, an embedded symbol pack, the
        dump's BTF, a plugin's); default: the bridge's own two, vmlinux files
        and the dump's BTF.
    :param extra_debug_paths: files or directories searched before ``debug_dirs``.
    :param debug_info: load debug info (``False``: memory and symbols only).
    :param self_contained: no vmlinux: take types, symbols and the unwinder
        from the BTF, kallsyms and ORC tables inside the dump
        (:mod:`tsubaki_forensics.selfcontained`; its limitations are listed
        in ``DumpProgram.debug_info``).
    :raises FormatError: the dump has no VMCOREINFO.
    :raises DebugInfoError: no provider has debug info for the dump.
    """
    raw = dump.vmcoreinfo
    if not raw:
        raise FormatError("the dump has no VMCOREINFO: drgn cannot locate the kernel in it")
    raw = bytes(raw)
    info = parse_vmcoreinfo(raw)
    arch = _arch(dump)
    if arch not in ARCHITECTURES:
        raise FormatError(f"architecture {arch!r} is not supported by the drgn bridge")
    prstatus = prstatus_notes(dump.notes)

    if vmlinux is not None and not Path(vmlinux).is_file():  # fail before any set-up
        raise mismatch_error(Path(vmlinux), info.build_id, info.release, arch)

    if prstatus:
        prog = drgn.Program()
        notes = [Note(VMCOREINFO_NAME, VMCOREINFO_TYPE, raw), *prstatus]
        fd = os.memfd_create("tsubaki-notes", os.MFD_CLOEXEC)
        try:
            os.write(fd, notes_only_core(notes, ELF_MACHINES[arch]))
            prog.set_core_dump(os.dup(fd))  # drgn owns the duplicate
        finally:
            os.close(fd)
        _add_segments(prog, dump.memory, _page_size(dump, info))
    else:
        flags = drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN
        prog = drgn.Program(drgn.Platform(ARCHITECTURES[arch], flags))
        _add_segments(prog, dump.memory, _page_size(dump, info))
        prog.set_linux_kernel_custom(raw, False)

    capabilities = {Need.REGISTERS} if prstatus else set()
    report = None
    if self_contained:  # the dump's BTF and nothing else (SelfContainedError is a DebugInfoError)
        from ..selfcontained import attach_selfcontained

        report = attach_selfcontained(prog).debug_info("btf")
    elif debug_info:
        chain = BRIDGE_PROVIDERS if providers is None else providers
        report = attach_debug_info(prog, dump, info, chain, vmlinux=vmlinux,
                                   search_paths=[*extra_debug_paths, *debug_dirs])
    if report is not None:
        capabilities.add(Need.DEBUG_INFO)
        _add_module_symbols(prog)
    return DumpProgram(prog, info, report.vmlinux if report is not None else None, frozenset(capabilities),
                       len(prstatus), report)


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
