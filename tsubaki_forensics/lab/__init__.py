"""The crash lab: real Debian kernels panicked under QEMU, on demand and cached.

``ensure_kernel(kernel)`` fetches and caches a Debian cloud kernel (bzImage,
guest modules, DWARF vmlinux): the newest of a series (``6.1``) or a pinned
release (``6.1.0-57``, see ``lab/pinning.py``); ``crash(...)`` boots it with a busybox
workload, panics it by a scenario, saves an ELF vmcore via QMP and computes
the ground truth with plain drgn.  See docs/LAB.md.
"""

from .debpkg import select_modules
from .crash import CrashParams, CrashResult, cached_crash, crash, load_crash
from .kernel import KernelArtifacts, ensure_kernel, resolve_release
from .scenarios import SCENARIOS, Scenario, get_scenario
from .sizes import format_size, parse_size
from .workloads import WORKLOADS, Workload, get_workload

__all__ = [
    "CrashParams",
    "CrashResult",
    "KernelArtifacts",
    "SCENARIOS",
    "Scenario",
    "WORKLOADS",
    "Workload",
    "cached_crash",
    "crash",
    "ensure_kernel",
    "format_size",
    "get_scenario",
    "get_workload",
    "load_crash",
    "parse_size",
    "select_modules",
    "resolve_release",
]
