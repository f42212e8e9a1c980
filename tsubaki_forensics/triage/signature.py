"""Crash signatures: what makes two crashes "the same bug", as pure functions.

A signature is the panic message with its variable parts stripped
(addresses, pids, counters: every number) plus the first few *meaningful*
frames of the crashed thread's backtrace, innermost first.  Meaningful means:

- the panic plumbing on top of every trace is skipped (the pvpanic notifier
  our lab's guests stop in, the notifier chain, ``panic`` itself, and the
  oops/exception path ``oops_end`` ... ``asm_exc_page_fault`` that leads to
  the faulting function when an oops ends in a panic);
- the walk stops at entry code (``entry_SYSCALL_64``, ``asm_exc_*``,
  ``ret_from_fork``, the syscall dispatcher, ``kthread``): every syscall
  and every kernel thread share those frames, so they tell bugs apart no
  better than noise;
- compiler clone suffixes (``.cold``, ``.part.0``, ``.constprop.0``,
  ``.isra.0``) are dropped and a function repeated by an inline frame and its
  out-of-line copy (``nmi_panic`` / ``nmi_panic.cold``) counts once, so the
  same bug on two kernel builds gets the same frames.

Three frames by default: deep enough to tell a sysrq crash from an OOM panic
from a hung task, shallow enough that the same OOM on kernel 6.1 and 6.12
(whose allocators were renamed below the third frame) stays one group.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import xxhash

__all__ = [
    "DEFAULT_DEPTH",
    "PANIC_PREFIX",
    "Signature",
    "normalize_message",
    "clean_function",
    "meaningful_frames",
    "make_signature",
]

DEFAULT_DEPTH = 3
PANIC_PREFIX = "Kernel panic - not syncing: "

# Functions that are on the stack because the kernel is dying, not because of
# the bug: skipped while they are on top of the trace.
_PLUMBING = frozenset({
    "panic", "vpanic", "nmi_panic_self_stop",
    "notifier_call_chain", "atomic_notifier_call_chain", "raw_notifier_call_chain",
    "blocking_notifier_call_chain", "srcu_notifier_call_chain",
    "crash_kexec", "__crash_kexec", "machine_crash_shutdown", "native_machine_crash_shutdown",
    "dump_stack", "dump_stack_lvl", "show_stack", "show_trace_log_lvl",
    "check_panic_on_warn", "__warn", "report_bug", "handle_bug",
    "oops_end", "die", "__die", "__die_body", "die_addr",
    "do_trap", "do_error_trap", "exc_invalid_op", "exc_general_protection", "exc_page_fault",
    "page_fault_oops", "kernelmode_fixup_or_oops", "no_context",
    "__bad_area_nosemaphore", "bad_area_nosemaphore", "do_kern_addr_fault", "do_user_addr_fault",
    "handle_page_fault", "fixup_exception",
    # arm64: the reset panic=-1 makes (where the lab's arm64 guests stop: their
    # kernels have no pvpanic), kdump's kexec, and the oops/BUG paths.
    "__arm_smccc_hvc", "__arm_smccc_smc", "psci_sys_reset", "do_kernel_restart", "machine_restart",
    "machine_emergency_restart", "emergency_restart", "machine_kexec",
    "arm64_notify_die", "do_mem_abort", "el1_abort", "__do_kernel_fault", "do_page_fault",
    "do_translation_fault", "do_bad_area", "die_kernel_fault", "bug_handler", "call_el1_break_hook",
    "brk_handler", "do_debug_exception", "el1_dbg", "el1h_64_sync_handler", "el1h_64_sync",
})
_PLUMBING_PREFIXES = ("pvpanic_", "asm_exc_")

# Entry code: the walk stops here (not included).
_ENTRY = frozenset({
    "do_syscall_64", "do_syscall_x64", "do_syscall_32_irqs_on", "x64_sys_call", "ia32_sys_call",
    "do_int80_syscall_32", "do_fast_syscall_32", "__do_fast_syscall_32",
    "kthread", "cpu_startup_entry", "start_secondary", "rest_init", "arch_call_rest_init",
    # arm64 syscall and boot entry
    "invoke_syscall", "__invoke_syscall", "el0_svc_common", "do_el0_svc", "secondary_start_kernel",
})
_ENTRY_PREFIXES = ("entry_", "asm_", "ret_from_fork", "secondary_startup", "start_kernel", "x86_64_start",
                   "el0t_", "el0_svc")

_CLONE_SUFFIX = re.compile(r"(?:\.(?:cold|part|constprop|isra|llvm|lto_priv|localalias)(?:\.\d+)?)+$")

# One pass over the message, first alternative wins at each position.
# Numbers are replaced only as whole words: a digit run glued to a letter,
# digit, underscore or dot on its left is part of a name (cloud-amd64,
# x86_64, ext4, vda1, v1.2) and is kept; one that starts a word is a value
# (22s -> <n>s, 6.1.0-57 -> <n>-<n>).  A kernel version a message requires
# ("needs Linux >= 6.0") is text, not a value, and is kept too.
_MESSAGE_TOKENS = re.compile(
    r"(?P<keep>\bLinux\s*(?:[<>]=?\s*)?\d+(?:\.\d+)*)"
    r"|(?P<hex>(?<![\w.])0[xX][0-9a-fA-F]+|(?<![\w.])[0-9a-fA-F]{8,}(?!\w))"  # 0x..., bare addresses
    r"|(?P<num>(?<![\w.])\d+(?:\.\d+)*)"  # pids, CPUs, counts, times, releases
)
_PLACEHOLDERS = {"hex": "<hex>", "num": "<n>"}
_SPACES = re.compile(r"\s+")


def _placeholder(match: re.Match[str]) -> str:
    return _PLACEHOLDERS.get(match.lastgroup or "", match.group(0))


@dataclass(frozen=True)
class Signature:
    """One crash signature: ``key`` is what groups compare, ``id`` its short hash.

    :param message: the normalised panic message.
    :param frames: the meaningful frames used, innermost first.
    """

    message: str
    frames: tuple[str, ...]

    @property
    def key(self) -> str:
        """``message | f1 < f2 < f3``: readable, and equal exactly when signatures are."""
        return f"{self.message} | {' < '.join(self.frames) or '<no frames>'}"

    @property
    def id(self) -> str:
        """16 hex digits of xxh64 over :attr:`key`: a stable name for files and anchors."""
        return xxhash.xxh64_hexdigest(self.key.encode("utf-8"))


def normalize_message(message: str | None) -> str:
    """Pure: the panic message with every number, address and pid replaced by a placeholder.

    Words are kept whole: only a number that starts a word is a value
    (``cloud-amd64``, ``x86_64``, ``vda1`` stay as they are).

    ``"Kernel panic - not syncing: Attempted to kill init! exitcode=0x00002a00"``
    becomes ``"Attempted to kill init! exitcode=<hex>"``: the prefix is the
    same for every panic, so it is dropped too.
    """
    if not message:
        return "<no panic message>"
    text = message.strip()
    if text.startswith(PANIC_PREFIX):
        text = text[len(PANIC_PREFIX):]
    text = _SPACES.sub(" ", _MESSAGE_TOKENS.sub(_placeholder, text))
    return text.strip() or "<no panic message>"


def clean_function(name: str | None) -> str | None:
    """Pure: a frame's function name without compiler clone suffixes (``foo.cold`` -> ``foo``)."""
    if not name:
        return None
    return _CLONE_SUFFIX.sub("", name) or name


def _is_plumbing(name: str) -> bool:
    return name in _PLUMBING or name.startswith(_PLUMBING_PREFIXES)


def _is_entry(name: str) -> bool:
    return name in _ENTRY or name.startswith(_ENTRY_PREFIXES)


def meaningful_frames(functions: Iterable[str | None], depth: int = DEFAULT_DEPTH) -> tuple[str, ...]:
    """Pure: up to ``depth`` meaningful function names of a backtrace (innermost first).

    ``None`` entries (a frame without a name) are shown as ``?``; they still
    count, since an unnamed frame is the same unnamed frame in every copy of
    the crash.
    """
    out: list[str] = []
    leading = True
    for raw in functions:
        name = clean_function(raw) or "?"
        if leading and _is_plumbing(name):
            continue
        if _is_entry(name):
            break
        leading = False
        if out and out[-1] == name:  # an inline frame and its out-of-line copy
            continue
        out.append(name)
        if len(out) >= depth:
            break
    return tuple(out)


def make_signature(message: str | None, functions: Sequence[str | None], depth: int = DEFAULT_DEPTH) -> Signature:
    """Pure: the :class:`Signature` of a crash from its raw panic message and backtrace."""
    return Signature(normalize_message(message), meaningful_frames(functions, depth))
