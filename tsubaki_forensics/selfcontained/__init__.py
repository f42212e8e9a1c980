"""Self-contained dumps: analyse a kernel dump with no vmlinux.

A full dump of a modern distribution kernel carries what drgn needs to
understand it: the kernel's BTF types (``__start_BTF``..``__stop_BTF``), its
kallsyms tables (found through VMCOREINFO on Linux >= 6.0) and its ORC
unwind tables.  :func:`attach_selfcontained` serves all three to a
``drgn.Program`` built from memory and VMCOREINFO, so drgn's helpers
(``for_each_task``, ``get_dmesg``, ``stack_trace``...) and the bundled
analyses run unchanged.  What BTF cannot give (source file:line, inline
frames, types of most ordinary globals) is listed in the report, never
guessed.  Details: docs/SELFCONTAINED.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import drgn
from drgn.helpers.linux.kallsyms import load_vmlinux_kallsyms

from ..contracts.debuginfo import DebugInfoKind, DebugInfoReport
from ..errors import DebugInfoError
from .btf import Btf, BtfError
from .objects import GLOBAL_TYPES, BtfObjects
from .types import BtfTypes
from .unwind import UnwindSetup, enable_orc

__all__ = [
    "LIMITATIONS",
    "SelfContained",
    "SelfContainedError",
    "SelfContainedReport",
    "attach_selfcontained",
    "read_btf",
]

FINDER_NAME = "tsubaki_btf"
SYMBOL_FINDER_NAME = "tsubaki_kallsyms"

# What the DWARF view has and this one does not; every report carries it.
LIMITATIONS = (
    "no source file:line for frames or functions (BTF has no line tables)",
    "no inline frames: each real frame is named after the function that contains it",
    "frame names are kallsyms symbols, as the kernel's own oops prints them: the parts GCC splits "
    "or clones keep their suffix (__handle_sysrq.cold, .part.0, .constprop.0), and assembly code "
    "is named after the nearest label (entry_SYSCALL_64_after_hwframe where DWARF says entry_SYSCALL_64)",
    "no parameter or local variable values in frames (no DWARF location lists); parameter names of "
    "a function type may be those of another function with the same prototype (BTF shares prototypes)",
    "types of ordinary globals: BTF describes only per-CPU variables; "
    f"{len(GLOBAL_TYPES)} other globals are typed from a table this project maintains "
    "(tsubaki_forensics.selfcontained.objects.GLOBAL_TYPES); any other global is not found",
    "types, functions and enumerators that pahole left out of BTF are not found",
    "arrays: BTF stores T x[0] and T x[] alike (both incomplete here) and pahole flattens "
    "multi-dimensional arrays (char [2][40] reads as char [80])",
    "a struct/union/enum name defined differently in several places (e.g. struct irq_info) "
    "resolves to the first BTF definition; BTF has no file names to choose (report.ambiguous_types())",
    "loadable modules: no types from their own BTF; name their frames with drgn's load_module_kallsyms",
)


class SelfContainedError(DebugInfoError):
    """The dump cannot describe itself (no kallsyms in VMCOREINFO, no BTF)."""


@dataclass
class SelfContainedReport:
    """What :func:`attach_selfcontained` found in the dump and served to drgn."""

    kernel_release: str | None
    btf_bytes: int
    btf_types: int
    btf_var_count: int
    unwind: UnwindSetup | None
    unwind_error: str | None
    seconds: dict[str, float]
    limitations: tuple[str, ...] = LIMITATIONS
    table_globals: tuple[str, ...] = tuple(sorted(GLOBAL_TYPES))
    finders: SelfContained | None = field(default=None, repr=False, compare=False)
    frame_pointers: bool = False  # arm64: drgn unwinds by frame pointer, no ORC needed

    def object_sources(self) -> dict[str, str]:
        """Every global, function or constant served so far, and where its type came from:
        ``btf-var``, ``btf-func``, ``btf-enum`` or ``table`` (:data:`~.objects.GLOBAL_TYPES`)."""
        return dict(self.finders.objects.answered) if self.finders is not None else {}

    def ambiguous_types(self) -> list[str]:
        """Type names with several BTF definitions (see :data:`LIMITATIONS`)."""
        return self.finders.types.ambiguous() if self.finders is not None else []

    @property
    def can_unwind(self) -> bool:
        """Whether ``stack_trace`` works: drgn found the ORC tables, or unwinds by frame pointer (arm64)."""
        return self.unwind is not None or self.frame_pointers

    def summary(self) -> list[str]:
        """What was served, one line each (the limitations are apart: :meth:`debug_info`)."""
        out = [
            f"self-contained: no vmlinux; types from the dump's BTF ({self.btf_types} types, {self.btf_bytes} bytes), "
            "symbols from its kallsyms",
            f"unwinding: drgn's built-in ORC from the dump ({self.unwind.orc_entries} kernel entries, "
            f"{self.unwind.modules} loadable modules)" if self.unwind is not None
            else "unwinding: drgn's frame-pointer unwinder (arm64 kernels have no ORC)" if self.frame_pointers
            else f"unwinding: unavailable ({self.unwind_error})",
        ]
        if self.unwind is not None and self.unwind.modules_error:
            out.append(f"loadable modules: not listed ({self.unwind.modules_error}); their frames do not unwind")
        return out

    def debug_info(self, provider: str = "btf") -> DebugInfoReport:
        """This report as the one the drgn bridge keeps (``DumpProgram.debug_info``);
        its ``lines()`` are what a renderer prints."""
        return DebugInfoReport(DebugInfoKind.BTF, provider, summary=tuple(self.summary()),
                               limitations=tuple(self.limitations), details=self)


@dataclass
class SelfContained:
    """The finders attached to one program (kept for statistics and tests)."""

    btf: Btf
    types: BtfTypes
    objects: BtfObjects
    symbols: drgn.SymbolIndex


def read_btf(prog: drgn.Program, symbols) -> Btf:  # type: ignore[no-untyped-def]
    """The kernel's BTF, read between ``__start_BTF`` and ``__stop_BTF``.

    :raises SelfContainedError: no BTF symbols, BTF not in the dump, or malformed.
    """
    try:
        start = symbols(prog, "__start_BTF", None, True)
        stop = symbols(prog, "__stop_BTF", None, True)
        if not start or not stop:
            if not symbols(prog, "init_task", None, True):
                # Functions only: no data symbol has an address (Debian's arm64 kernels).
                raise SelfContainedError("the kernel's kallsyms lists functions only (built without "
                                         "CONFIG_KALLSYMS_ALL), so neither its BTF nor its variables can be "
                                         "found; a vmlinux or a symbol pack (symbols pack) is needed")
            raise SelfContainedError("the kernel has no BTF (kallsyms has no __start_BTF/__stop_BTF): "
                                     "it was built without CONFIG_DEBUG_INFO_BTF; a vmlinux is needed")
        return Btf(prog.read(start[0].address, stop[0].address - start[0].address))
    except drgn.FaultError as e:
        raise SelfContainedError(f"the kernel's BTF is not in the dump (address {e.address:#x})") from e
    except BtfError as e:
        raise SelfContainedError(f"the kernel's BTF is unreadable: {e}") from e


def _release(prog: drgn.Program) -> str | None:
    try:
        return prog["UTS_RELEASE"].string_().decode()
    except (LookupError, drgn.FaultError):
        return None


def attach_selfcontained(prog: drgn.Program) -> SelfContainedReport:
    """Serve drgn the kernel's types, objects, symbols and ORC from the dump itself.

    Call it on a Linux kernel program (``set_core_dump`` or
    ``set_linux_kernel_custom``) whose memory is attached and that has no
    vmlinux loaded.  It registers and enables a type finder and an object
    finder (``tsubaki_btf``) and a kallsyms symbol finder
    (``tsubaki_kallsyms``), then lets drgn's built-in ORC reader unwind
    (kernel address range from kallsyms, loadable modules listed).

    :returns: what was found; ``report.finders`` holds the attached finders.
    :raises SelfContainedError: kallsyms or BTF cannot be read from the dump,
        or this program already has them attached.
    """
    if FINDER_NAME in prog.registered_type_finders():
        raise SelfContainedError("self-contained debug info is already attached to this program")
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    try:
        symbols = load_vmlinux_kallsyms(prog)
    except (LookupError, ValueError, drgn.FaultError, drgn.MissingDebugInfoError) as e:
        raise SelfContainedError(
            f"cannot read kallsyms from the dump ({e}): self-contained analysis needs Linux >= 6.0 "
            "(kallsyms in VMCOREINFO) and the kernel image in the dump"
        ) from e
    seconds["kallsyms"] = time.perf_counter() - clock
    clock = time.perf_counter()
    btf = read_btf(prog, symbols)
    seconds["btf"] = time.perf_counter() - clock

    types = BtfTypes(prog, btf)
    objects = BtfObjects(prog, btf, types, symbols)
    prog.register_symbol_finder(SYMBOL_FINDER_NAME, symbols, enable_index=-1)
    prog.register_type_finder(FINDER_NAME, types.find, enable_index=-1)
    prog.register_object_finder(FINDER_NAME, objects.find, enable_index=-1)

    clock = time.perf_counter()
    unwind = unwind_error = None
    frame_pointers = prog.platform.arch == drgn.Architecture.AARCH64
    if not frame_pointers:
        try:
            unwind = enable_orc(prog, symbols)
        except (LookupError, ValueError, drgn.FaultError) as e:
            unwind_error = f"{type(e).__name__}: {e}"
    seconds["orc"] = time.perf_counter() - clock
    return SelfContainedReport(_release(prog), len(btf.data), len(btf) - 1, objects.var_count,
                               unwind, unwind_error, seconds,
                               finders=SelfContained(btf, types, objects, symbols), frame_pointers=frame_pointers)
