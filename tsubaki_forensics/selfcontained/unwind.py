"""Stack unwinding without a vmlinux: drgn's built-in ORC, given what it needs.

drgn 0.3.0 unwinds x86_64 kernels with ORC.  When a module has no debug
file it reads the ORC tables from kernel memory itself (libdrgn
``orc_info.c``, "built-in ORC"): for the kernel, between the symbols
``__start_orc_unwind_ip``/``__stop_orc_unwind_ip`` and
``__start_orc_unwind``/``__stop_orc_unwind`` (plus ``__start_orc_header``
since Linux 6.4), looked up through the program's symbol finders; for a
loadable module, from ``struct module``'s ``arch.num_orcs`` and section
addresses.  Two things are missing without a vmlinux, and this module
supplies them:

- the kernel module's address range, which drgn otherwise takes from the
  vmlinux file: here it is ``_text``..``_end`` from kallsyms;
- the list of loadable modules, which drgn builds by walking ``modules``
  with types that now come from BTF (``prog.create_loaded_modules()``).

With these, a PC anywhere in the kernel or a module maps to a drgn module
and drgn finds the ORC entry for it.  (An earlier version of this module
wrote the tables into a synthetic ELF debug file; drgn's own reader made
that unnecessary.)
"""

from __future__ import annotations

from dataclasses import dataclass

import drgn

__all__ = ["ORC_ENTRY_SIZE", "UnwindSetup", "enable_orc"]

ORC_ENTRY_SIZE = 6  # struct orc_entry: s16 sp_offset, s16 bp_offset, u16 flags
_ORC_SYMBOLS = ("__start_orc_unwind_ip", "__stop_orc_unwind_ip", "__start_orc_unwind", "__stop_orc_unwind")


@dataclass(frozen=True)
class UnwindSetup:
    """What :func:`enable_orc` found: ORC entries of the kernel, modules seen."""

    kernel_range: tuple[int, int]
    orc_entries: int
    orc_header: bool
    modules: int
    modules_error: str | None = None


def _address(prog: drgn.Program, symbols, name: str) -> int:  # type: ignore[no-untyped-def]
    found = symbols(prog, name, None, True)
    if not found:
        raise LookupError(f"kallsyms has no {name}")
    return found[0].address


def enable_orc(prog: drgn.Program, symbols) -> UnwindSetup:  # type: ignore[no-untyped-def]
    """Let drgn unwind with the ORC tables in the dump.

    Call after the BTF type finder is enabled (the module walk needs
    ``struct module``).

    :param symbols: the vmlinux kallsyms ``SymbolIndex``.
    :raises LookupError: kallsyms lacks the ORC bounds (a kernel without
        ``CONFIG_UNWINDER_ORC``) or ``_text``/``_end``.
    :raises ValueError: the two ORC tables disagree in length.
    :raises drgn.FaultError: the ORC tables are not in the dump.
    """
    ip_start, ip_stop, orc_start, orc_stop = (_address(prog, symbols, n) for n in _ORC_SYMBOLS)
    entries = (ip_stop - ip_start) // 4
    if (ip_stop - ip_start) % 4 or entries * ORC_ENTRY_SIZE != orc_stop - orc_start:
        raise ValueError(f"ORC tables disagree: {ip_stop - ip_start} bytes of .orc_unwind_ip, "
                         f"{orc_stop - orc_start} bytes of .orc_unwind")
    # drgn reads the tables lazily, at the first unwind; fail here instead.
    prog.read(ip_start, 4)
    prog.read(orc_stop - ORC_ENTRY_SIZE, ORC_ENTRY_SIZE)
    header = bool(symbols(prog, "__start_orc_header", None, True))

    kernel = prog.main_module("kernel", create=True)
    text, end = _address(prog, symbols, "_text"), _address(prog, symbols, "_end")
    if not kernel.address_ranges:
        kernel.address_range = (text, end)
    modules, modules_error = 0, None
    try:
        prog.create_loaded_modules()  # loadable modules: their ORC is read from struct module
        modules = sum(1 for m in prog.modules() if isinstance(m, drgn.RelocatableModule))
    except (LookupError, drgn.FaultError, ValueError) as e:
        modules_error = f"{type(e).__name__}: {e}"  # kernel frames still unwind
    return UnwindSetup((text, end), entries, header, modules, modules_error)
