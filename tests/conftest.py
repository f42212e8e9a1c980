"""Shared fixtures: real crashed Debian kernels from the crash lab.

``real_crash`` is the default crash (sysrq, 512M, 2 vCPUs, Debian 12 cloud
kernel 6.1, idle workload); ``crash_lab(...)`` makes any other parameter set.
Both are session-scoped and cached on disk across sessions under
``$XDG_CACHE_HOME/tsubaki-forensics/crashes/<release>/...``: the first run on a
fresh machine downloads the kernel (~310 MB) and boots QEMU; later runs read
the cache.  Every test that uses them is marked ``realkernel`` (added here
automatically too), so ``pytest -m "not realkernel"`` runs without QEMU.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, settings

from tsubaki_forensics.lab import CrashParams, CrashResult, cached_crash

# Hypothesis: the same examples on every run and every machine (derandomize:
# seeded from each test), no example database carried between runs, no
# per-example deadline and no "too slow" health check: a verdict must not
# depend on the machine's speed or on what an earlier run found (issue 23).
# ``--hypothesis-profile explore`` searches with fresh random examples instead.
settings.register_profile("deterministic", derandomize=True, database=None, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("deterministic")

REAL_KERNEL_FIXTURES = {"real_crash", "crash_lab"}


def pytest_collection_modifyitems(config, items):
    """Mark every test that uses a real-crash fixture as ``realkernel``."""
    for item in items:
        if REAL_KERNEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.realkernel)


def _progress(message: str) -> None:
    sys.stderr.write(f"crash lab: {message}\n")


@pytest.fixture(scope="session")
def crash_lab() -> Callable[..., CrashResult]:
    """``crash_lab(scenario="sysrq", mem="512M", smp=2, workload="idle", kernel="6.1", ram_file=False, arch="x86_64")``."""
    made: dict[CrashParams, CrashResult] = {}

    def make(scenario: str = "sysrq", mem: str = "512M", smp: int = 2, workload: str = "idle",
             kernel: str = "6.1", ram_file: bool = False, arch: str = "x86_64") -> CrashResult:
        params = CrashParams(scenario, mem, smp, workload, kernel, ram_file, arch).normalized()
        if params not in made:
            made[params] = cached_crash(params, log=_progress)
        return made[params]

    return make


@pytest.fixture(scope="session")
def real_crash(crash_lab) -> CrashResult:
    """The default crash: sysrq-c, 512M, 2 vCPUs, Debian 12 cloud 6.1, idle."""
    return crash_lab()
