"""What building a program imports (issue 21): only what the run uses.

Not a timing test: the modules a fresh interpreter holds are checked.  The
times are in docs/BENCHMARKS.md ("Start-up and analyze speed").
"""

from __future__ import annotations

import json
import subprocess
import sys

from tsubaki_forensics.contracts.debuginfo import DESCRIPTION, ORDER, DeferredProvider
from tsubaki_forensics.plugin_system import Plugins

_CHAIN = (
    "import json, sys\n"
    "from tsubaki_forensics.plugin_system import Plugins\n"
    "chain = Plugins.load().debug_info_providers()\n"
    "print(json.dumps({'chain': [p.name for p in chain], 'modules': sorted(sys.modules)}))\n"
)


def test_the_debug_info_chain_imports_neither_the_lab_nor_the_btf_reader():
    """``analyze --vmlinux`` never asks them: listing the chain must not import them."""
    run = subprocess.run([sys.executable, "-c", _CHAIN], capture_output=True, text=True, timeout=120, check=True)
    got = json.loads(run.stdout)
    assert {"vmlinux-files", "lab-kernels", "btf"} <= set(got["chain"])
    heavy = [m for m in got["modules"] if m.startswith(("tsubaki_forensics.lab", "tsubaki_forensics.selfcontained",
                                                         "asyncio"))]
    assert not heavy, heavy


def test_a_deferred_provider_is_the_real_one_when_asked():
    chain = {p.name: p for p in Plugins.load().debug_info_providers()}
    for name in ("lab-kernels", "btf"):
        deferred = chain[name].provider  # as registered, inside its plugin's time limit
        assert isinstance(deferred, DeferredProvider)
        real = deferred.load()
        assert not isinstance(real, DeferredProvider) and callable(real.provide)
        assert (real.name, real.order, real.description) == (deferred.name, deferred.order, deferred.description)
        assert (real.order, real.description) == (ORDER[name], DESCRIPTION[name])
        assert deferred.load() is real  # built once
